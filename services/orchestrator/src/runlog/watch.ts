// Serving run logs to watchers. One Redis subscriber connection per process fans out "run X has
// new events" notifications; each watcher then reads with XRANGE. No watcher holds a blocking
// Redis connection, so thousands of watchers cost a listener each, not a connection each.
import { TERMINAL_EVENTS, type Redis } from '@agent-mesh/common';
import type { RunEvent } from '@agent-mesh/common/gen/orchestrator/v1/orchestrator';
import { keys } from '../runs/keys';
import type { RunLog } from './runlog';

/** How long a watcher waits for a notification before reading anyway (covers a lost publish). */
const POLL_FALLBACK_MS = 2_000;

interface Listener {
  dirty: boolean;
  wake?: () => void;
}

export class RunNotifications {
  private readonly byRun = new Map<string, Set<Listener>>();
  private readonly channelPrefix = 'runlog:{';

  constructor(private readonly subscriber: Redis, private readonly extraHandler?: (channel: string, message: string) => void) {
    subscriber.on('message', (channel: string, message: string) => {
      if (channel.startsWith(this.channelPrefix)) {
        const runId = channel.slice(this.channelPrefix.length, -1);
        for (const l of this.byRun.get(runId) ?? []) {
          l.dirty = true;
          l.wake?.();
        }
      } else {
        this.extraHandler?.(channel, message);
      }
    });
  }

  get watchedRuns(): number {
    return this.byRun.size;
  }

  async listen(runId: string): Promise<{ wait(ms: number, signal: AbortSignal): Promise<void>; close(): void }> {
    const listener: Listener = { dirty: false };
    let set = this.byRun.get(runId);
    if (!set) {
      set = new Set();
      this.byRun.set(runId, set);
      set.add(listener);
      await this.subscriber.subscribe(keys.notify(runId));
    } else {
      set.add(listener);
    }
    return {
      wait: (ms, signal) =>
        new Promise<void>((resolve) => {
          if (listener.dirty || signal.aborted) {
            listener.dirty = false;
            return resolve();
          }
          const done = () => {
            clearTimeout(t);
            signal.removeEventListener('abort', done);
            listener.wake = undefined;
            listener.dirty = false;
            resolve();
          };
          const t = setTimeout(done, ms);
          signal.addEventListener('abort', done, { once: true });
          listener.wake = done;
        }),
      close: () => {
        const s = this.byRun.get(runId);
        if (!s) return;
        s.delete(listener);
        if (s.size === 0) {
          this.byRun.delete(runId);
          void this.subscriber.unsubscribe(keys.notify(runId)).catch(() => undefined);
        }
      },
    };
  }
}

export function lostEvent(runId: string, afterSeq: number, firstAvailableSeq: number): RunEvent {
  return { runId, seq: firstAvailableSeq - 1, type: 'events.lost', dataJson: JSON.stringify({ afterSeq, firstAvailableSeq }) };
}

/** The run's events after `afterSeq`, then the live ones, until a terminal event or abort. */
export async function* watchRun(log: RunLog, notes: RunNotifications, runId: string, afterSeq: number, signal: AbortSignal): AsyncGenerator<RunEvent> {
  const listener = await notes.listen(runId);
  try {
    let last = afterSeq;
    while (!signal.aborted) {
      const events = await log.read(runId, last);
      for (const e of events) {
        if (e.seq > last + 1) yield lostEvent(runId, last, e.seq);
        yield e;
        last = e.seq;
        if (TERMINAL_EVENTS.has(e.type)) return;
      }
      if (events.length === 0) await listener.wait(POLL_FALLBACK_MS, signal);
    }
  } finally {
    listener.close();
  }
}
