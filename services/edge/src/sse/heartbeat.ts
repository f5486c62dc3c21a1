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

export class HeartbeatHub {
  private readonly members = new Set<Beating>();
  private timer?: NodeJS.Timeout;
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
    if (!this.timer && !this.stopped) this.schedule();
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
      for (const m of this.members) m.heartbeat();
      if (this.members.size > 0 && !this.stopped) this.schedule();
    }, this.intervalMs);
    this.timer.unref();
  }
}
