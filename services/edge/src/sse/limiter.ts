// The SSE limiter: at most `maxStreams` open streams per process. Over it, a client gets a queue
// token, its position and an estimated wait instead of a dropped connection; retrying with the
// token keeps its place (first come, first served: a freed slot goes to the head of the queue).
// The estimate predicts when slots free up: each open stream is expected to end at its start plus
// the mean stream duration (EWMA of measured durations), the oldest first; queue position k waits
// for the k-th predicted end, and positions past the open streams for the streams that will take
// those slots (one more mean duration per wave).
import { randomUUID } from 'node:crypto';

export interface Slot {
  /** Frees the slot (idempotent). */
  release(): void;
}

export type Admission =
  | { ok: true; slot: Slot }
  | { ok: false; draining: true }
  | { ok: false; draining: false; queueToken: string; position: number; estimatedWaitMs: number };

interface Ticket {
  token: string;
  expiresAt: number;
}

export interface StreamLimiterOptions {
  maxStreams: number;
  /** Wait assumed per queue position before any stream duration was measured (duration = this × maxStreams). */
  initialIntervalMs?: number;
  /** Weight of the newest sample in the moving averages (0..1). */
  alpha?: number;
  /** A token not presented again within 2 × its estimate + this grace is dropped. */
  tokenGraceMs?: number;
  now?: () => number;
}

export class StreamLimiter {
  private openCount = 0;
  private readonly queue: Ticket[] = [];
  private draining = false;
  private readonly now: () => number;
  private readonly alpha: number;
  private readonly grace: number;
  /** EWMA of stream durations. */
  private durationMs?: number;
  /** Start times of the open streams, oldest first (Map keeps insertion order). */
  private readonly starts = new Map<number, number>();
  private nextSlotId = 0;

  constructor(private readonly opts: StreamLimiterOptions) {
    this.now = opts.now ?? Date.now;
    this.alpha = opts.alpha ?? 0.2;
    this.grace = opts.tokenGraceMs ?? 10_000;
  }

  get open(): number {
    return this.openCount;
  }

  get queued(): number {
    this.prune();
    return this.queue.length;
  }

  get max(): number {
    return this.opts.maxStreams;
  }

  /** Expected duration of a stream (measured, or the initial assumption). */
  get meanDurationMs(): number {
    return this.durationMs ?? (this.opts.initialIntervalMs ?? 5_000) * this.opts.maxStreams;
  }

  /** Stops admitting (graceful drain): every later request is refused without a token. */
  drain(): void {
    this.draining = true;
    this.queue.length = 0;
  }

  /** Admits a stream, or queues the caller. `token` is the caller's X-Queue-Token, if any. */
  acquire(token?: string): Admission {
    if (this.draining) return { ok: false, draining: true };
    this.prune();
    const free = this.opts.maxStreams - this.openCount;
    const index = token ? this.queue.findIndex((t) => t.token === token) : -1;
    if (index >= 0) {
      // Only the first `free` tickets may take a slot: nobody overtakes an earlier ticket.
      if (index < free) {
        this.queue.splice(index, 1);
        return { ok: true, slot: this.take() };
      }
      return this.refuse(this.queue[index]!, index + 1);
    }
    if (this.queue.length === 0 && free > 0) return { ok: true, slot: this.take() };
    const ticket: Ticket = { token: randomUUID(), expiresAt: 0 };
    this.queue.push(ticket);
    return this.refuse(ticket, this.queue.length);
  }

  /** Estimated wait for a queue position (1 = next). */
  estimateFor(position: number): number {
    const free = this.opts.maxStreams - this.openCount;
    if (position <= free || this.starts.size === 0) return 0;
    const k = position - free; // the k-th slot to free up is this position's
    const d = this.meanDurationMs;
    const index = (k - 1) % this.starts.size;
    const wave = Math.floor((k - 1) / this.starts.size);
    let start = 0;
    let i = 0;
    for (const s of this.starts.values()) {
      if (i++ === index) {
        start = s;
        break;
      }
    }
    const now = this.now();
    // A stream already past the mean is expected to end any moment.
    const firstFree = Math.max(start + d, now);
    return Math.round(firstFree + wave * d - now);
  }

  private refuse(ticket: Ticket, position: number): Admission {
    const estimatedWaitMs = this.estimateFor(position);
    ticket.expiresAt = this.now() + 2 * estimatedWaitMs + this.grace;
    return { ok: false, draining: false, queueToken: ticket.token, position, estimatedWaitMs };
  }

  private take(): Slot {
    const started = this.now();
    const id = this.nextSlotId++;
    this.openCount += 1;
    this.starts.set(id, started);
    let released = false;
    return {
      release: () => {
        if (released) return;
        released = true;
        this.openCount -= 1;
        this.starts.delete(id);
        this.durationMs = ewma(this.durationMs, this.now() - started, this.alpha);
      },
    };
  }

  private prune(): void {
    const now = this.now();
    for (let i = this.queue.length - 1; i >= 0; i--) if (this.queue[i]!.expiresAt < now) this.queue.splice(i, 1);
  }
}

function ewma(prev: number | undefined, sample: number, alpha: number): number {
  return prev === undefined ? sample : prev + alpha * (sample - prev);
}
