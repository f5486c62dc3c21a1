// Background responses (the Responses API's `background: true`): the call runs on in the edge that
// took it after the caller was answered `queued`, and its end is written to the store, where the
// caller reads it (GET /v1/responses/{id}). A cancel (POST …/cancel) may reach any edge: it is
// written to the store first, then told to every edge (Redis pub/sub), and the edge running the
// call stops it. At shutdown the calls still running are given the drain's time, then stopped and
// written as failed (before the store's client closes), so that no response stays in progress for good. (One whose edge died
// without that is answered as failed once its call could no longer be running: see responses.ts.)
// A background response's events (the Responses API's, with their sequence numbers) are followed
// where the call runs (EventFeed: the caller who created it with `stream: true`, or who streams it
// there later) and kept in a Redis stream per response (ResponseEventLog), where an edge that does
// not run the call follows them (GET /v1/responses/{id}?stream=true&starting_after=N): each append
// is announced on a Pub/Sub channel of the response (LogNotices), which wakes the followers of
// that response, and only those, to read it.
import { onShardSubscribersSettled, onSpreadMessage, publishSpread, SUBSCRIBE_RETRY_MS, subscribeSpread, unsubscribeSpread, untilWoken, type Logger, type Redis } from '@agent-mesh/common';

/** Why a background call was stopped. */
export type StopReason = 'cancelled' | 'shutdown';

/** How a cancel reaches the other edges; absent: this edge only (tests, one edge). */
export interface CancelBroadcast {
  publish(responseId: string): Promise<unknown>;
  /** Calls `onCancel` with each id any edge publishes (and goes on doing so across reconnects). */
  subscribe(onCancel: (responseId: string) => void): Promise<unknown>;
  close(): Promise<unknown>;
}

/** The Redis channel a cancel is published on. */
export const CANCEL_CHANNEL = 'mesh:responses:cancel';

/** An event of a background response: its place (`sequence_number`), its SSE frame, whether it ends the response. */
export interface ResponseEvent {
  seq: number;
  frame: string;
  last: boolean;
}

/** Where a background response's events are kept for the edges that do not run its call. */
export interface ResponseEventLog {
  append(responseId: string, event: ResponseEvent): Promise<unknown>;
  /** The events after sequence number `after`, in order, at most `count`. */
  read(responseId: string, after: number, count: number): Promise<ResponseEvent[]>;
}

/** Adds a background response's next event (`last`: it ends the response). */
export type Emit = (type: string, data: Record<string, unknown>, last?: boolean) => void;

/** A response's event as the Responses API streams it. */
export const eventFrame = (type: string, seq: number, data: Record<string, unknown>): string =>
  `event: ${type}\ndata: ${JSON.stringify({ type, sequence_number: seq, ...data })}\n\n`;

/**
 * A response's event log (a stream) and the channel its appends are announced on: the same hash tag,
 * so that in a Redis Cluster both are on one node, the channel sharded (see publishSpread), and an
 * announcement leaves after its entry on the same connection.
 */
export const eventsKey = (responseId: string): string => `mesh:responses:{${responseId}}:events`;
export const appendedChannel = (responseId: string): string => `mesh:responses:{${responseId}}:appended`;
/** How long a background response's events are kept after its end (and after its start, beyond the longest a call can run). */
export const EVENTS_KEPT_S = 3600;

/**
 * The events in a Redis stream per response, entry `0-(n+1)` the event numbered n (so that a read
 * after n starts at `0-(n+2)`), expiring EVENTS_KEPT_S after the response's end.
 */
export function redisEventLog(redis: Redis, longestCallS: number): ResponseEventLog {
  return {
    append: (responseId, { seq, frame, last }) => {
      const key = eventsKey(responseId);
      const added = redis.xadd(key, `0-${seq + 1}`, 'frame', frame, ...(last ? ['last', '1'] : []));
      // After the entry, on the same connection: a follower woken by it finds the entry there.
      const announced = publishSpread(redis, appendedChannel(responseId), '');
      // The expiry is set with the first event (and renewed now and then: a first one lost while Redis was away sets none), and shortened by the last.
      if (!last && seq % 64 !== 0) return Promise.all([added, announced]);
      return Promise.all([added, announced, redis.expire(key, last ? EVENTS_KEPT_S : longestCallS + EVENTS_KEPT_S)]);
    },
    read: async (responseId, after, count) =>
      (await redis.xrange(eventsKey(responseId), `0-${after + 2}`, '+', 'COUNT', count)).map(([id, fields]) => ({
        seq: Number(id.slice(2)) - 1,
        frame: fields[1] ?? '',
        last: fields[2] === 'last',
      })),
  };
}

/** The announcements of appends to the responses' logs, for the followers in this edge. */
export interface LogNotices {
  /** Listens for appends to `responseId`'s log, until its close(). */
  watch(responseId: string): LogWatch;
}

export interface LogWatch {
  /** True while appends are announced to it (its subscription in place): false until then, and while the subscriber is away. */
  readonly live: boolean;
  /** True at once if an append was announced since the last call (or the watch went live), else at the next; false after `ms` or when `signal` fires. */
  next(ms: number, signal: AbortSignal): Promise<boolean>;
  close(): void;
}

/** One watcher of a response's appends. */
class AppendWatcher implements LogWatch {
  private news = false;
  private wake?: () => boolean;

  constructor(private readonly sub: { live: boolean }, readonly close: () => void) {}

  get live(): boolean {
    return this.sub.live;
  }

  notify(): void {
    this.news = true;
    if (this.wake?.()) this.news = false;
  }

  next(ms: number, signal: AbortSignal): Promise<boolean> {
    if (this.news || signal.aborted) {
      this.news = false;
      return Promise.resolve(!signal.aborted);
    }
    return untilWoken(ms, signal, (wake) => (this.wake = wake));
  }
}

/**
 * LogNotices on a Pub/Sub connection (its own: a subscribed connection runs no other command). A
 * response's channel is subscribed to while it has a watcher here, and given up with the last.
 * The watchers go live once the subscription is answered (and after the connection is back: ioredis
 * subscribes again), and then read the log once more: an announcement made before that was not heard.
 * A subscription refused (in a Cluster, asked while its shard's primary is down) is asked again
 * once the shard subscribers have settled, or a second later; its watchers read every 100 ms meanwhile.
 */
export function redisLogNotices(subscriber: Redis, logger: Logger): LogNotices {
  type Subscription = { state: 'asked' | 'refused' | 'subscribed'; live: boolean; watchers: Set<AppendWatcher> };
  const subs = new Map<string, Subscription>();
  const goLive = (sub: Subscription) => {
    sub.live = true;
    for (const w of sub.watchers) w.notify();
  };
  const askAgain = (responseId: string, sub: Subscription) => {
    if (sub.state === 'refused' && subs.get(responseId) === sub && subscriber.status !== 'end') subscribe(responseId, sub);
  };
  const subscribe = (responseId: string, sub: Subscription) => {
    sub.state = 'asked';
    subscribeSpread(subscriber, appendedChannel(responseId)).then(
      () => {
        sub.state = 'subscribed';
        if (subs.get(responseId) === sub) goLive(sub);
      },
      (err: unknown) => {
        sub.state = 'refused';
        setTimeout(() => askAgain(responseId, sub), SUBSCRIBE_RETRY_MS).unref();
        logger.warn({ err: (err as Error).message, responseId }, 'background response: no subscription to its events yet (its log is read every 100 ms until there is)');
      },
    );
  };
  onSpreadMessage(subscriber, (channel: string) => {
    const id = /^mesh:responses:\{(.+)\}:appended$/.exec(channel)?.[1];
    for (const w of (id !== undefined && subs.get(id)?.watchers) || []) w.notify();
  });
  subscriber.on('close', () => subs.forEach((sub) => (sub.live = false)));
  subscriber.on('ready', () => subs.forEach((sub) => sub.state === 'subscribed' && goLive(sub)));
  // In a Cluster the channels are sharded: the Cluster stays ready while ioredis replaces a shard's
  // subscriber (its node was lost), then subscribes every channel again (not which ones moved).
  subscriber.on('-subscriber', () => subs.forEach((sub) => (sub.live = false)));
  onShardSubscribersSettled(subscriber, () => subs.forEach((sub, responseId) => (sub.state === 'subscribed' ? goLive(sub) : askAgain(responseId, sub))));
  return {
    watch(responseId) {
      let sub = subs.get(responseId);
      if (!sub) {
        sub = { state: 'asked', live: false, watchers: new Set() };
        subs.set(responseId, sub);
        subscribe(responseId, sub);
      }
      const owner = sub;
      const watcher: AppendWatcher = new AppendWatcher(owner, () => {
        owner.watchers.delete(watcher);
        if (owner.watchers.size > 0 || subs.get(responseId) !== owner) return;
        subs.delete(responseId);
        unsubscribeSpread(subscriber, appendedChannel(responseId)).catch(() => undefined);
      });
      owner.watchers.add(watcher);
      return watcher;
    },
  };
}

/**
 * A running background response's events in the edge that runs it, followed there as they come:
 * the last `window` of them (from `window` to twice that, then cut back), so that a long answer
 * costs this edge a bounded memory; a follower that falls further behind reads on from the log.
 */
export class EventFeed {
  private events: ResponseEvent[] = [];
  /** The sequence number of events[0]. */
  private first = 0;
  private waiting: (() => boolean)[] = [];

  constructor(private readonly window = FEED_WINDOW) {}

  /** How many events were pushed. */
  get size(): number {
    return this.first + this.events.length;
  }

  get ended(): boolean {
    return this.events.at(-1)?.last === true;
  }

  push(frame: string, last: boolean): ResponseEvent {
    const event = { seq: this.size, frame, last };
    this.events.push(event);
    if (this.events.length >= 2 * this.window) {
      this.first += this.events.length - this.window;
      this.events = this.events.slice(-this.window);
    }
    const waiting = this.waiting;
    this.waiting = [];
    for (const wake of waiting) wake();
    return event;
  }

  /**
   * The events after `after`, then each as it comes, until the last or `signal`; `undefined` after
   * each `idleMs` without one (a keep-alive's turn). Returns early when the next event it would
   * give is no longer held (the follower is behind the window): the rest is in the log.
   */
  async *follow(after: number, signal: AbortSignal, idleMs: number): AsyncGenerator<ResponseEvent | undefined> {
    for (let next = Math.max(0, after + 1); !signal.aborted;) {
      if (next < this.first) return;
      const event = this.events[next - this.first];
      if (event) {
        next++;
        yield event;
        if (event.last) return;
      } else if (!(await this.next(signal, idleMs))) yield undefined;
    }
  }

  /** True when an event came, false when `idleMs` passed or `signal` fired first. */
  private next(signal: AbortSignal, idleMs: number): Promise<boolean> {
    return untilWoken(idleMs, signal, (wake) => this.waiting.push(wake));
  }
}

/** How many of a running response's latest events its edge holds at least (twice as many at most). */
export const FEED_WINDOW = 1024;

/**
 * How often a follower of the log reads it while no event comes: every LOG_POLL_MS while no append
 * is announced to it (no LogNotices, or its subscription not in place), else every
 * LOG_FALLBACK_MS (an announcement lost while the subscriber reconnected); and how often it then
 * asks the store whether the response ended.
 */
export const LOG_POLL_MS = 100;
export const LOG_FALLBACK_MS = 1_000;
export const LOG_END_CHECK_MS = 2_000;

export class BackgroundCalls {
  private readonly running = new Map<string, AbortController>();
  private readonly feeds = new Map<string, EventFeed>();
  private readonly tasks = new Set<Promise<void>>();

  constructor(
    private readonly logger: Logger,
    private readonly broadcast?: CancelBroadcast,
    private readonly log?: ResponseEventLog,
    private readonly notices?: LogNotices,
  ) {}

  /** Listens for cancels from other edges (not awaited: an edge starts while Redis is down, and the subscription follows). */
  start(): void {
    this.broadcast?.subscribe((id) => this.stopHere(id, 'cancelled')).catch((err: unknown) => this.logger.warn({ err: (err as Error).message }, 'background responses: no subscription to cancels from other edges'));
  }

  /**
   * Runs `task` on its own; `abort` stops it (a cancel, the shutdown), with the StopReason as the
   * signal's reason. The events it emits are followed here and kept in the log; its feed is ended
   * (with an `error` event) if the task did not end it.
   */
  run(responseId: string, abort: AbortController, task: (emit: Emit) => Promise<void>): void {
    const feed = new EventFeed();
    let unlogged = false;
    const emit: Emit = (type, data, last = false) => {
      if (feed.ended) return;
      const event = feed.push(eventFrame(type, feed.size, data), last);
      this.log?.append(responseId, event).catch((err: unknown) => {
        if (!unlogged) this.logger.warn({ err: (err as Error).message, responseId }, 'background response: its events could not all be kept (streamed from this edge only)');
        unlogged = true;
      });
    };
    this.running.set(responseId, abort);
    this.feeds.set(responseId, feed);
    const done = task(emit)
      .catch((err: unknown) => this.logger.error({ err, responseId }, 'background response: its end could not be written'))
      .finally(() => {
        emit('error', { code: 'server_error', message: 'the response ended without its last event', param: null }, true);
        this.running.delete(responseId);
        this.feeds.delete(responseId);
        this.tasks.delete(done);
      });
    this.tasks.add(done);
  }

  /** The events of a response whose call runs here. */
  feed(responseId: string): EventFeed | undefined {
    return this.feeds.get(responseId);
  }

  /**
   * The events after `after` of a background response: as they come from its feed while its call
   * runs here (and the follower keeps within the feed's window), else from the log (followLog).
   * `undefined`: a keep-alive's turn.
   */
  async *follow(
    responseId: string, after: number, signal: AbortSignal, idleMs: number, ended: () => Promise<((seq: number) => string) | undefined>, stop: () => boolean,
  ): AsyncGenerator<ResponseEvent | undefined> {
    let cursor = after;
    const feed = this.feeds.get(responseId);
    if (feed) {
      for await (const event of feed.follow(after, signal, idleMs)) {
        yield event;
        if (!event) continue;
        cursor = event.seq;
        if (event.last) return;
      }
    }
    if (!signal.aborted) yield* this.followLog(responseId, cursor, signal, ended, stop);
  }

  /**
   * The events after `after` of a response whose call runs on another edge (or has ended), from the
   * log: read again when an append is announced (see LOG_POLL_MS). After each LOG_END_CHECK_MS without one,
   * `ended` is asked (the store) for the frame of its end at a sequence number: a response that
   * ended without its last event in the log (its edge died, or Redis was away) is ended with it.
   * Stops (without an end) when `signal` fires or `stop()` is true. `undefined`: a keep-alive's turn.
   */
  async *followLog(
    responseId: string, after: number, signal: AbortSignal, ended: () => Promise<((seq: number) => string) | undefined>, stop: () => boolean,
  ): AsyncGenerator<ResponseEvent | undefined> {
    let cursor = after;
    let quietSince = Date.now();
    let end: ((seq: number) => string) | undefined;
    const watch = this.notices?.watch(responseId);
    try {
      while (!signal.aborted && !stop()) {
        const events = this.log ? await this.log.read(responseId, cursor, 256).catch(() => []) : [];
        for (const event of events) {
          yield event;
          cursor = event.seq;
          if (event.last) return;
        }
        if (events.length > 0) {
          quietSince = Date.now();
          continue;
        }
        // Its end, read from the store a read ago, is not in the log: it will not come.
        if (end) {
          yield { seq: cursor + 1, frame: end(cursor + 1), last: true };
          return;
        }
        if (Date.now() - quietSince >= LOG_END_CHECK_MS) {
          end = await ended();
          quietSince = Date.now();
          if (!end) yield undefined;
        }
        const untilEndCheck = Math.max(1, quietSince + LOG_END_CHECK_MS - Date.now());
        if (watch) await watch.next(Math.min(watch.live ? LOG_FALLBACK_MS : LOG_POLL_MS, untilEndCheck), signal);
        else await new Promise((resolve) => setTimeout(resolve, LOG_POLL_MS));
      }
    } finally {
      watch?.close();
    }
  }

  /** Stops the call on whichever edge runs it. */
  async cancel(responseId: string): Promise<void> {
    if (this.stopHere(responseId, 'cancelled') || !this.broadcast) return;
    await this.broadcast.publish(responseId);
  }

  get size(): number {
    return this.running.size;
  }

  /** Waits for the calls under way until they end or `phaseEnd` fires (the shutdown's drain phase). */
  async drain(phaseEnd: AbortSignal): Promise<void> {
    if (this.tasks.size === 0 || phaseEnd.aborted) return;
    let onEnd: (() => void) | undefined;
    await Promise.race([Promise.all([...this.tasks]), new Promise<void>((resolve) => phaseEnd.addEventListener('abort', (onEnd = () => resolve()), { once: true }))]);
    if (onEnd) phaseEnd.removeEventListener('abort', onEnd);
  }

  /** Stops the calls still running (after the drain: their ends are written as failed, while the store's client is open) and waits for those writes. */
  async stop(): Promise<void> {
    if (this.running.size > 0) this.logger.warn({ calls: this.running.size }, 'background responses still running at shutdown: stopped, written as failed');
    for (const id of [...this.running.keys()]) this.stopHere(id, 'shutdown');
    await Promise.all([...this.tasks]);
    await this.broadcast?.close();
  }

  private stopHere(responseId: string, reason: StopReason): boolean {
    const abort = this.running.get(responseId);
    if (!abort) return false;
    abort.abort(reason);
    return true;
  }
}
