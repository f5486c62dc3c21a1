// The SSE limiter: at most `maxStreams` open streams per process. Over it, a client gets a queue
// token, its position and an estimated wait instead of a dropped connection; retrying with the
// token keeps its place (first come, first served: a freed slot goes to the head of the queue).
// The estimate comes from the measured rate at which slots free up while the limiter is full.
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
  /** Wait assumed per queue position before any slot release was measured. */
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
  /** EWMA of the time between slot releases while the limiter was full. */
  private releaseIntervalMs?: number;
  /** EWMA of stream durations (fallback estimate: duration / maxStreams). */
  private durationMs?: number;
  private lastRelease?: number;
  /** When the limiter last became full (intervals only count while it stays full). */
  private fullSince?: number;

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

  /** Expected milliseconds between two freed slots. */
  get slotIntervalMs(): number {
    if (this.releaseIntervalMs !== undefined) return this.releaseIntervalMs;
    if (this.durationMs !== undefined) return this.durationMs / this.opts.maxStreams;
    return this.opts.initialIntervalMs ?? 5_000;
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
    if (position <= free) return 0;
    return Math.round((position - free) * this.slotIntervalMs);
  }

  private refuse(ticket: Ticket, position: number): Admission {
    const estimatedWaitMs = this.estimateFor(position);
    ticket.expiresAt = this.now() + 2 * estimatedWaitMs + this.grace;
    return { ok: false, draining: false, queueToken: ticket.token, position, estimatedWaitMs };
  }

  private take(): Slot {
    const started = this.now();
    this.openCount += 1;
    if (this.openCount >= this.opts.maxStreams && this.fullSince === undefined) this.fullSince = started;
    let released = false;
    return {
      release: () => {
        if (released) return;
        released = true;
        this.onRelease(this.now() - started);
      },
    };
  }

  private onRelease(durationMs: number): void {
    const now = this.now();
    const wasFull = this.openCount >= this.opts.maxStreams;
    this.openCount -= 1;
    this.durationMs = ewma(this.durationMs, durationMs, this.alpha);
    if (wasFull && this.fullSince !== undefined) {
      // Only time spent full measures the release rate; idle time would make it look slower.
      const since = Math.max(this.lastRelease ?? this.fullSince, this.fullSince);
      this.releaseIntervalMs = ewma(this.releaseIntervalMs, now - since, this.alpha);
    }
    this.lastRelease = now;
    // Still full only if someone takes the slot at once; re-armed in take().
    this.fullSince = undefined;
    if (this.openCount >= this.opts.maxStreams) this.fullSince = now;
  }

  private prune(): void {
    const now = this.now();
    for (let i = this.queue.length - 1; i >= 0; i--) if (this.queue[i]!.expiresAt < now) this.queue.splice(i, 1);
  }
}

function ewma(prev: number | undefined, sample: number, alpha: number): number {
  return prev === undefined ? sample : prev + alpha * (sample - prev);
}
