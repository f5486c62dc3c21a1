// Serving run logs to watchers. One Redis subscriber connection per process fans out "run X has
// new events up to seq N" notifications; a watcher then reads what it lacks with XRANGE. No
// watcher holds a blocking Redis connection, so thousands of watchers cost a listener each, not a
// connection each. The events this process appends itself (its own runs: every StartRun stream is
// served by the replica that runs it) reach its watchers in memory, once written: they need no
// read, and the notification of their own write finds them up to date.
import { onShardSubscribersSettled, onSpreadMessage, SUBSCRIBE_RETRY_MS, subscribeSpread, TERMINAL_EVENTS, unsubscribeSpread, untilWoken, type Redis } from '@agent-mesh/common';
import type { RunEvent } from '@agent-mesh/common/gen/orchestrator/v1/orchestrator';
import { keys, NOTIFY_PREFIX } from '../runs/keys';
import type { RunLog } from './runlog';

/** How long a watcher waits for a notification before reading anyway (covers a lost publish). */
const POLL_FALLBACK_MS = 2_000;

/** Events read from the log at once. */
const READ_PAGE = 500;

/** Events a watcher may hold from local appends before it falls back to reading the log. */
const MAX_LOCAL_EVENTS = 1_000;

/** One watcher's view of its run's news. */
class Listener {
  /** Set by news since the last wait (a notification, or events appended here). */
  dirty = false;
  /** Ends the watcher's wait, if one is under way (see untilWoken). */
  wake?: () => boolean;
  /** The highest seq this watcher was told is in the log. */
  announced = 0;
  /** Events appended by this process and not yet taken, in seq order. */
  local: RunEvent[] = [];
  /** Set when the log must be read again, whatever was announced (see readAgain). */
  stale = false;

  notify(seq: number): void {
    if (seq > this.announced) this.announced = seq;
    this.dirty = true;
    // Taken by the wait it ends; kept for the next wait when none is under way.
    if (this.wake?.()) this.dirty = false;
  }

  /** Tells the watcher to read the log again: an announcement may have been missed. */
  readAgain(): void {
    this.stale = true;
    this.notify(0);
  }

  push(events: readonly RunEvent[]): void {
    // A watcher that does not keep up reads the log instead of holding more.
    if (this.local.length + events.length > MAX_LOCAL_EVENTS) this.local = [];
    else this.local.push(...events);
    this.notify(events[events.length - 1]!.seq);
  }

  /** The local events that follow `last` without a gap (none when they do not start at last + 1). */
  takeAfter(last: number): RunEvent[] {
    let i = 0;
    while (i < this.local.length && this.local[i]!.seq <= last) i++;
    const next = this.local[i];
    if (next === undefined || next.seq !== last + 1) {
      if (i > 0) this.local = this.local.slice(i);
      return [];
    }
    const out = i === 0 ? this.local : this.local.slice(i);
    this.local = [];
    return out;
  }
}

export interface RunWatch {
  /** Waits for news, at most `ms`; true when news came (false: the time ran out, or the watch was aborted). */
  wait(ms: number, signal: AbortSignal): Promise<boolean>;
  /** What the log holds beyond `last` that the watcher has in memory (see Listener.takeAfter). */
  takeAfter(last: number): RunEvent[];
  /** The highest seq the watcher was told about. */
  readonly announced: number;
  /** Whether the watcher was told to read the log again since it last asked (see Listener.readAgain). */
  takeStale(): boolean;
  close(): void;
}

export class RunNotifications {
  private readonly byRun = new Map<string, Set<Listener>>();
  /** Watched runs whose subscription was refused (in a Cluster, asked while its shard's primary was down). */
  private readonly refused = new Set<string>();

  constructor(private readonly subscriber: Redis, private readonly extraHandler?: (channel: string, message: string) => void) {
    // A run's channel is sharded in a Cluster (on its keys' node, where the append script publishes);
    // the fleet-wide one (the cancels) is classic.
    onSpreadMessage(subscriber, (channel: string, message: string) => {
      if (!channel.startsWith(NOTIFY_PREFIX)) return;
      const runId = channel.slice(NOTIFY_PREFIX.length);
      // The message is the log's last seq after the write (see runlog.ts).
      const seq = Number(message) || 0;
      for (const l of this.byRun.get(runId) ?? []) l.notify(seq);
    });
    subscriber.on('message', (channel: string, message: string) => {
      if (!channel.startsWith(NOTIFY_PREFIX)) this.extraHandler?.(channel, message);
    });
    // Once the connection is back (ioredis subscribes every channel again), and in a Cluster once
    // the shard subscribers have settled after a failover, the granted subscriptions' watchers read
    // the log again (an announcement made meanwhile was not heard), not at their poll fallback. The
    // refused ones are asked again then, or a second later (their watchers read within
    // POLL_FALLBACK_MS meanwhile), and their watchers read the log once granted.
    subscriber.on('ready', () => this.resubscribed());
    onShardSubscribersSettled(subscriber, () => this.resubscribed());
  }

  private resubscribed(): void {
    for (const [runId, listeners] of this.byRun) {
      if (this.refused.has(runId)) void this.subscribe(runId);
      else for (const l of listeners) l.readAgain();
    }
  }

  /** Subscribes to a run's notices; a refusal is remembered (see `refused`), not thrown: the watch goes on, reading the log within POLL_FALLBACK_MS. */
  private async subscribe(runId: string): Promise<void> {
    const retry = this.refused.delete(runId);
    try {
      await subscribeSpread(this.subscriber, keys.notify(runId));
    } catch {
      // Not asked again once the connection is closed for good (the process stops).
      if (!this.byRun.has(runId) || this.subscriber.status === 'end') return;
      this.refused.add(runId);
      setTimeout(() => this.refused.has(runId) && void this.subscribe(runId), SUBSCRIBE_RETRY_MS).unref();
      return;
    }
    if (retry) for (const l of this.byRun.get(runId) ?? []) l.readAgain();
  }

  get watchedRuns(): number {
    return this.byRun.size;
  }

  /**
   * Events this process wrote to a run's log, seqs from `firstSeq` (RunLog's `onAppended`), handed
   * to its watchers here.
   */
  appended(runId: string, firstSeq: number, written: readonly { type: string; dataJson: string }[]): void {
    const listeners = this.byRun.get(runId);
    if (!listeners || written.length === 0) return;
    const events = written.map((e, i): RunEvent => ({ runId, seq: firstSeq + i, type: e.type, dataJson: e.dataJson }));
    for (const l of listeners) l.push(events);
  }

  async listen(runId: string): Promise<RunWatch> {
    const listener = new Listener();
    let set = this.byRun.get(runId);
    if (!set) {
      set = new Set();
      this.byRun.set(runId, set);
      set.add(listener);
      await this.subscribe(runId);
    } else {
      set.add(listener);
    }
    return {
      wait: (ms, signal) => {
        if (listener.dirty || signal.aborted) {
          listener.dirty = false;
          return Promise.resolve(!signal.aborted);
        }
        return untilWoken(ms, signal, (wake) => (listener.wake = wake));
      },
      takeAfter: (last) => listener.takeAfter(last),
      get announced() {
        return listener.announced;
      },
      takeStale: () => {
        const stale = listener.stale;
        listener.stale = false;
        return stale;
      },
      close: () => {
        const s = this.byRun.get(runId);
        if (!s) return;
        s.delete(listener);
        if (s.size === 0) {
          this.byRun.delete(runId);
          this.refused.delete(runId);
          void unsubscribeSpread(this.subscriber, keys.notify(runId)).catch(() => undefined);
        }
      },
    };
  }
}

export function lostEvent(runId: string, afterSeq: number, firstAvailableSeq: number): RunEvent {
  return { runId, seq: firstAvailableSeq - 1, type: 'events.lost', dataJson: JSON.stringify({ afterSeq, firstAvailableSeq }) };
}

/**
 * The run's events after `afterSeq`, then the live ones, until a terminal event or abort. The log
 * is read first, then whenever the watcher was told of events it does not hold in memory, and when
 * no news came for POLL_FALLBACK_MS.
 */
export async function* watchRun(log: Pick<RunLog, 'read'>, notes: RunNotifications, runId: string, afterSeq: number, signal: AbortSignal): AsyncGenerator<RunEvent> {
  const watch = await notes.listen(runId);
  try {
    let last = afterSeq;
    // Read the log on this pass: the first one, after a full page, and when no news came for a while.
    let read = true;
    while (!signal.aborted) {
      if (watch.takeStale()) read = true;
      let events = watch.takeAfter(last);
      if (events.length === 0 && !read && watch.announced > last) {
        // Told of events this process wrote, before the write's own answer came back (the
        // notification travels on another connection): let that answer land first.
        await new Promise((resolve) => setImmediate(resolve));
        events = watch.takeAfter(last);
      }
      let fullPage = false;
      if (events.length === 0 && (read || watch.announced > last)) {
        events = await log.read(runId, last, READ_PAGE);
        fullPage = events.length === READ_PAGE;
      }
      for (const e of events) {
        if (e.seq > last + 1) yield lostEvent(runId, last, e.seq);
        yield e;
        last = e.seq;
        if (TERMINAL_EVENTS.has(e.type)) return;
      }
      read = fullPage;
      if (events.length === 0) read = !(await watch.wait(POLL_FALLBACK_MS, signal));
    }
  } finally {
    watch.close();
  }
}
