// Many run watches over one WatchRuns call per orchestrator channel: an SSE client costs this edge
// a subscription (an id in a map and a small queue), not a gRPC call with its HTTP/2 stream, retry
// buffer, deadline timer and interceptor chain. Each watch behaves as a WatchRun call would: its
// events, then either the end (after the terminal event) or the error WatchRun would have failed
// with. When the shared call is lost, every watch on it fails with UNAVAILABLE, which the relay
// treats as a lost stream and resumes from the run log on a fresh call; a watch that its replica
// ends UNAVAILABLE moves the next watches to a fresh call too (on another replica).
import { Metadata, status, type ClientDuplexStream, type ServiceError } from '@grpc/grpc-js';
import { REASON_KEY, RETRY_AFTER_KEY } from '@agent-mesh/common';
import { SLOW_CONSUMER, type CancelSignal, type PushSource, type RunEventSink } from './types';
import type { RunEvent, WatchRunRequest, WatchRunsEnd, WatchRunsRequest, WatchRunsResponse } from '@agent-mesh/common/gen/orchestrator/v1/orchestrator';

export type WatchRunsCall = ClientDuplexStream<WatchRunsRequest, WatchRunsResponse>;

export interface WatchMuxOptions {
  /**
   * New watches go to a fresh call once the current one is this old; the old call ends when its
   * last watch does. Keeps calls from outliving the server's connection recycling.
   * @default 5 minutes
   */
  rotateAfterMs?: number;
  /**
   * Events one watch may hold while its consumer is busy. Past it the watch fails with
   * RESOURCE_EXHAUSTED / reason `slow_consumer` (the relay's slow-consumer path: the client is told
   * and resumes from its last event), so a stalled consumer cannot grow the edge's memory.
   * @default 1000
   */
  maxQueuedEvents?: number;
  now?: () => number;
}

/** The least age of a call that a watch ended UNAVAILABLE rotates out (see the 'end' handler). */
const UNAVAILABLE_ROTATE_MS = 1_000;

/** One WatchRuns call and the watches it carries. */
interface SharedCall {
  stream: WatchRunsCall;
  watches: Map<number, Watch>;
  openedAt: number;
  lost: boolean;
}

export class WatchMux {
  private current?: SharedCall;
  private nextId = 1;
  private readonly rotateAfterMs: number;
  private readonly maxQueuedEvents: number;
  private readonly now: () => number;

  constructor(
    private readonly openCall: () => WatchRunsCall,
    opts: WatchMuxOptions = {},
  ) {
    this.rotateAfterMs = opts.rotateAfterMs ?? 5 * 60_000;
    this.maxQueuedEvents = opts.maxQueuedEvents ?? 1_000;
    this.now = opts.now ?? Date.now;
  }

  /** Like WatchRun: the run's events; aborting the signal (or returning early) unsubscribes. */
  watch(req: WatchRunRequest, signal: CancelSignal): AsyncIterable<RunEvent> {
    const shared = this.callForNewWatch();
    const id = this.nextId++;
    const watch = new Watch(this, shared, id);
    if (signal.aborted) {
      watch.fail(cancelled());
      return watch;
    }
    shared.watches.set(id, watch);
    watch.listen(signal);
    shared.stream.write({ subscriptionId: id, action: { $case: 'subscribe', subscribe: req } });
    return watch;
  }

  /** Ends every call (shutdown); open watches fail with CANCELLED. */
  close(): void {
    const c = this.current;
    this.current = undefined;
    if (c) this.lose(c, cancelled());
  }

  private callForNewWatch(): SharedCall {
    const c = this.current;
    if (c && !c.lost && this.now() - c.openedAt < this.rotateAfterMs) return c;
    if (c && !c.lost && c.watches.size === 0) c.stream.end();
    const stream = this.openCall();
    const shared: SharedCall = { stream, watches: new Map(), openedAt: this.now(), lost: false };
    stream.on('data', (msg: WatchRunsResponse) => {
      const w = shared.watches.get(msg.subscriptionId);
      if (!w) return; // unsubscribed meanwhile
      if (msg.item?.$case === 'event') {
        if (!w.push(msg.item.event, this.maxQueuedEvents)) {
          // Overflowed: the watch has failed; stop the orchestrator sending its events.
          this.unsubscribe(shared, msg.subscriptionId);
        }
      }
      else if (msg.item?.$case === 'end') {
        shared.watches.delete(msg.subscriptionId);
        const code = msg.item.end.code;
        // The replica says it cannot serve watches right now (its Redis is unreachable, say): the
        // relay's retry, and every watch after it, go to a new call, which the balancer places
        // on the next replica; at most once a second, so an outage of every replica causes no churn.
        if (code === status.UNAVAILABLE && this.current === shared && this.now() - shared.openedAt >= UNAVAILABLE_ROTATE_MS) this.current = undefined;
        w.finish(code === status.OK ? undefined : errorOf(msg.item.end));
        this.endIfIdle(shared);
      }
    });
    stream.on('error', (err: ServiceError) => this.lose(shared, unavailable(`orchestrator watch stream failed: ${err.details || err.message}`)));
    stream.on('end', () => this.lose(shared, unavailable('orchestrator watch stream ended')));
    this.current = shared;
    return shared;
  }

  /** @internal (Watch) */
  unsubscribe(shared: SharedCall, id: number): void {
    if (!shared.watches.delete(id) || shared.lost) return;
    shared.stream.write({ subscriptionId: id, action: { $case: 'unsubscribe', unsubscribe: {} } });
    this.endIfIdle(shared);
  }

  /** A rotated-out call is ended (half-closed) once it carries no watch. */
  private endIfIdle(shared: SharedCall): void {
    if (shared !== this.current && shared.watches.size === 0 && !shared.lost) {
      shared.lost = true;
      shared.stream.end();
    }
  }

  private lose(shared: SharedCall, err: ServiceError): void {
    const wasLost = shared.lost;
    shared.lost = true;
    if (this.current === shared) this.current = undefined;
    const watches = [...shared.watches.values()];
    shared.watches.clear();
    for (const w of watches) w.finish(err);
    if (!wasLost) shared.stream.cancel();
  }
}

/**
 * One subscription, as an async iterator — or, once `pipe`d, a push source handing each event to
 * its sink as it arrives (what the relay uses: no promise per event). While pulled, events wait in
 * `queue` only while the consumer is busy (the relay pulls continuously and bounds its own SSE
 * buffer), so it is empty most of the time and costs nothing until used.
 */
class Watch implements AsyncIterableIterator<RunEvent>, PushSource {
  private queue?: RunEvent[];
  /** The consumer once piped (then nothing is queued and no next() is pending). */
  private sink?: RunEventSink;
  /** The pending next()'s resolve and reject (two fields rather than an object per wait). */
  private resolveNext?: (r: IteratorResult<RunEvent>) => void;
  private rejectNext?: (e: unknown) => void;
  private done = false;
  private error?: ServiceError;
  /** The consumer's signal while subscribed (this watch is its listener: see `handleEvent`). */
  private signal?: CancelSignal;

  // The mux, call and id rather than a closure over them: a watch lives as long as its stream.
  constructor(
    private readonly mux: WatchMux,
    private readonly shared: SharedCall,
    private readonly id: number,
  ) {}

  /** Aborting the signal ends the watch (as `return()` does). */
  listen(signal: CancelSignal): void {
    this.signal = signal;
    signal.addEventListener('abort', this, { once: true });
  }

  /** The signal aborted (the watch listens as an object, not with a closure per watch). */
  handleEvent(): void {
    void this.return();
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  /** Queues or hands over one event; false when the queue overflowed (the watch then failed). */
  push(ev: RunEvent, maxQueued: number): boolean {
    if (this.done) return true;
    const sink = this.sink;
    if (sink) {
      sink.onEvent(ev);
      return true;
    }
    const resolve = this.resolveNext;
    if (resolve) {
      this.resolveNext = this.rejectNext = undefined;
      resolve({ done: false, value: ev });
      return true;
    }
    const q = (this.queue ??= []);
    if (q.length >= maxQueued) {
      // What is queued was never handed to the client, which resumes from before it.
      this.queue = undefined;
      this.finish(slowConsumer(maxQueued));
      return false;
    }
    q.push(ev);
    return true;
  }

  /** The subscription ended: after the queued events, end (no error) or fail. */
  finish(err?: ServiceError): void {
    if (this.done) return;
    this.done = true;
    this.error = err;
    this.signal?.removeEventListener('abort', this);
    this.signal = undefined;
    const sink = this.sink;
    if (sink) {
      this.sink = undefined;
      sink.onEnd(err);
      return;
    }
    const resolve = this.resolveNext;
    const reject = this.rejectNext;
    this.resolveNext = this.rejectNext = undefined;
    if (resolve && reject && !this.queue?.length) this.settle({ resolve, reject });
  }

  /** Pushes from now on: first what is queued, then each event as it arrives, then the end. */
  pipe(sink: RunEventSink): void {
    if (this.resolveNext) throw new Error('Watch.pipe while a next() is pending');
    const queued = this.queue;
    this.queue = undefined;
    if (this.done) {
      for (const ev of queued ?? []) sink.onEvent(ev);
      sink.onEnd(this.error);
      return;
    }
    this.sink = sink;
    // The sink may end the watch (return()) on any of these: stop handing it events then.
    for (const ev of queued ?? []) {
      if (this.sink !== sink) return;
      sink.onEvent(ev);
    }
  }

  fail(err: ServiceError): void {
    this.finish(err);
  }

  next(): Promise<IteratorResult<RunEvent>> {
    const ev = this.queue?.shift();
    if (ev) {
      if (this.queue!.length === 0) this.queue = undefined;
      return Promise.resolve({ done: false, value: ev });
    }
    if (this.done) return new Promise((resolve, reject) => this.settle({ resolve, reject }));
    return new Promise((resolve, reject) => {
      this.resolveNext = resolve;
      this.rejectNext = reject;
    });
  }

  /** The consumer stopped early: unsubscribe. */
  return(): Promise<IteratorResult<RunEvent>> {
    if (!this.done) {
      this.finish(cancelled());
      this.mux.unsubscribe(this.shared, this.id);
    }
    this.queue = undefined;
    return Promise.resolve({ done: true, value: undefined });
  }

  private settle(w: { resolve(r: IteratorResult<RunEvent>): void; reject(e: unknown): void }): void {
    if (this.error) w.reject(this.error);
    else w.resolve({ done: true, value: undefined });
  }
}

/** The error a WatchRun call ending with this status would have raised (same code, reason, details). */
export function errorOf(end: WatchRunsEnd): ServiceError {
  const metadata = new Metadata();
  if (end.reason) metadata.set(REASON_KEY, end.reason);
  if (end.retryAfterMs > 0) metadata.set(RETRY_AFTER_KEY, String(end.retryAfterMs));
  return statusError(end.code, end.message, metadata);
}

function statusError(code: status, details: string, metadata = new Metadata()): ServiceError {
  return Object.assign(new Error(`${code} ${status[code]}: ${details}`), { code, details, metadata });
}

const unavailable = (details: string) => statusError(status.UNAVAILABLE, details);
const slowConsumer = (max: number) => {
  const metadata = new Metadata();
  metadata.set(REASON_KEY, SLOW_CONSUMER);
  return statusError(status.RESOURCE_EXHAUSTED, `more than ${max} events waiting for a slow consumer`, metadata);
};
const cancelled = () => statusError(status.CANCELLED, 'watch cancelled');
