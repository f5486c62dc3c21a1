// One timer for every open stream's heartbeat (a timer per stream costs memory at 20k streams).
// The interval lengthens under load as the brief says: 1-minute load average > 4 → 20 s, > 8 → 30 s.
import os from 'node:os';

export function heartbeatInterval(baseMs: number, loadAvg1: number): number {
  if (loadAvg1 > 8) return Math.max(baseMs, 30_000);
  if (loadAvg1 > 4) return Math.max(baseMs, 20_000);
  return baseMs;
}

export interface Beating {
  heartbeat(): void;
}

/**
 * Streams beaten per turn of the event loop. A response write's chunks and write request live
 * until the next tick (Node corks the socket and uncorks it on process.nextTick), so 20,000 beats
 * in one go held ~10 MB at once — promoted to the old generation by the scavenges they caused, to
 * die there — and blocked the loop for ~100 ms in which no event was relayed. A batch at a time,
 * with setImmediate between batches, lets each batch's writes finish before the next.
 */
const BEAT_BATCH = 256;

export class HeartbeatHub {
  private readonly members = new Set<Beating>();
  private timer?: NodeJS.Timeout;
  /** A round of beats is under way (its batches are scheduled with setImmediate). */
  private beating = false;
  private stopped = false;

  constructor(
    private readonly baseMs: number,
    private readonly loadAvg: () => number = () => os.loadavg()[0] ?? 0,
  ) {}

  /** The interval in effect now. */
  get intervalMs(): number {
    return heartbeatInterval(this.baseMs, this.loadAvg());
  }

  add(s: Beating): void {
    this.members.add(s);
    if (!this.timer && !this.beating && !this.stopped) this.schedule();
  }

  delete(s: Beating): void {
    this.members.delete(s);
    if (this.members.size === 0 && this.timer) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
  }

  get size(): number {
    return this.members.size;
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }

  private schedule(): void {
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.beating = true;
      this.beat(this.members.values());
    }, this.intervalMs);
    this.timer.unref();
  }

  /** Beats the next batch of a round (a Set iterator stays valid as members come and go). */
  private beat(round: Iterator<Beating>): void {
    if (!this.stopped) {
      for (let i = 0; i < BEAT_BATCH; i++) {
        const r = round.next();
        if (r.done) break;
        r.value.heartbeat();
        if (i === BEAT_BATCH - 1) {
          // Not unref'd: an unref'd immediate waits for the loop's next wake-up (a quiet server's
          // beats would stall). It holds the process only for the few ms a round takes.
          setImmediate(() => this.beat(round));
          return;
        }
      }
    }
    this.beating = false;
    if (this.members.size > 0 && !this.stopped) this.schedule();
  }
}
