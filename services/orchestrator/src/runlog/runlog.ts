// The run's ordered event log: a bounded Redis stream per run, entries `<seq>-0`. Appends are
// batched, fenced by the run's lease (a replica that lost the run can no longer write to it) and
// idempotent by seq (a retried append of the same seq is a no-op), all in one Lua script. A
// terminal event starts the log's retention clock; the run's end of ownership (its lease, its
// conversation's active-run slot: the registry's) goes in the same transaction, from the caller.
import { spreadPublishCommand, TERMINAL_EVENTS, type Redis } from '@agent-mesh/common';
import type { RunEvent } from '@agent-mesh/common/gen/orchestrator/v1/orchestrator';
import { RunStopped } from '../pipeline/errors';
import { keys } from '../runs/keys';

/** How long a run-log write is retried before the run fails (a Redis failover takes a few seconds). */
const APPEND_RETRY_MS = 10_000;

// KEYS: log seq lease
// ARGV: owner maxlen channel retentionS firstSeq [type data]...
// The channel has the run's hash tag: in a Cluster, SPUBLISH to it from the node of its keys.
const append = (publish: 'SPUBLISH' | 'PUBLISH') => `
local owner = redis.call('GET', KEYS[3])
if owner and owner ~= ARGV[1] then return -1 end
local cur = tonumber(redis.call('GET', KEYS[2]) or '0')
local first = tonumber(ARGV[5])
local n = (#ARGV - 5) / 2
local last = first + n - 1
if first > cur + 1 then return -2 end
if last > cur then
  for i = 0, n - 1 do
    local seq = first + i
    if seq > cur then
      redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[2], seq .. '-0', 't', ARGV[6 + 2 * i], 'd', ARGV[7 + 2 * i])
    end
  end
  redis.call('SET', KEYS[2], last)
  redis.call('${publish}', ARGV[3], last)
end
local retention = tonumber(ARGV[4])
if retention > 0 then
  redis.call('EXPIRE', KEYS[1], retention)
  redis.call('EXPIRE', KEYS[2], retention)
end
return last
`;

/**
 * Queues, into the transaction that appends a run's terminal event, what else ends with the run
 * (RunRegistry.endInto: its lease and its conversation's active-run slot). `lastSeq`: the terminal
 * event's seq. Both succeed or neither is seen: a client that reads the terminal event finds the
 * conversation free for its next message, and a run is never freed without its terminal event.
 */
export type EndOfRun = (tx: Transaction, lastSeq: number) => void;
export type Transaction = ReturnType<Redis['multi']>;

export interface RunLogSettings {
  maxEvents: number;
  retentionS: number;
}

export interface RunRef {
  runId: string;
  conversationId: string;
  messageId: string;
}

type Appender = { meshRunAppend(...a: string[]): Promise<number> };

type Pending = { type: string; dataJson: string; resolve: () => void; reject: (e: unknown) => void };

export class RunLog {
  /** Told of every append of this process once it is in the log (its watchers here take them from memory). */
  onAppended?: (runId: string, firstSeq: number, events: readonly { type: string; dataJson: string }[]) => void;

  constructor(private readonly redis: Redis, private readonly settings: RunLogSettings) {
    redis.defineCommand('meshRunAppend', { numberOfKeys: 3, lua: append(spreadPublishCommand(redis)) });
  }

  /** The last seq written to a run's log (0 when none). */
  async lastSeq(runId: string): Promise<number> {
    return Number((await this.redis.get(keys.seq(runId))) ?? 0);
  }

  /**
   * Appends events with consecutive seqs from `firstSeq`; already written seqs are skipped.
   * Returns the last seq, or throws RunStopped('lease_lost') when another replica owns the run.
   */
  async append(run: RunRef, owner: string, firstSeq: number, events: { type: string; dataJson: string }[], endOfRun?: EndOfRun): Promise<number> {
    const terminal = events.some((e) => TERMINAL_EVENTS.has(e.type));
    const r = run.runId;
    const args = [keys.log(r), keys.seq(r), keys.lease(r), owner, String(this.settings.maxEvents), keys.notify(r), String(terminal ? this.settings.retentionS : 0), String(firstSeq)];
    for (const e of events) args.push(e.type, e.dataJson);
    let res: number;
    if (terminal && endOfRun) {
      const tx = this.redis.multi();
      (tx as unknown as Appender).meshRunAppend(...args);
      endOfRun(tx, firstSeq + events.length - 1);
      const results = await tx.exec();
      if (!results) throw new Error('run log: the transaction of a run\'s end was discarded');
      for (const [err] of results) if (err) throw err;
      res = Number(results[0]![1]);
    } else {
      res = Number(await (this.redis as unknown as Appender).meshRunAppend(...args));
    }
    if (res === -1) throw new RunStopped('lease_lost');
    if (res === -2) throw new Error(`run log gap: seq ${firstSeq} after ${await this.lastSeq(run.runId)}`);
    this.onAppended?.(r, firstSeq, events);
    return res;
  }

  /** Events with seq > afterSeq, oldest first (at most `count`). */
  async read(runId: string, afterSeq: number, count = 500): Promise<RunEvent[]> {
    const entries = await this.redis.xrange(keys.log(runId), `${afterSeq + 1}-0`, '+', 'COUNT', count);
    return entries.map(([id, fields]) => {
      const f: Record<string, string> = {};
      for (let i = 0; i + 1 < fields.length; i += 2) f[fields[i]!] = fields[i + 1]!;
      return { runId, seq: Number(id.split('-')[0]), type: f.t ?? '', dataJson: f.d ?? '{}' };
    });
  }
}

/**
 * One run's writer: assigns the next seq to each event and writes them in order, batching the
 * events that pile up while a write is in flight into one round trip.
 */
export class RunEmitter {
  private pending: Pending[] = [];
  private flushing = false;
  private failed?: unknown;

  constructor(
    private readonly log: Pick<RunLog, 'append'>,
    private readonly run: RunRef,
    private readonly owner: string,
    private nextSeq: number,
    /** Ends the run's ownership with its terminal event, in one transaction (see EndOfRun). */
    private readonly endOfRun?: EndOfRun,
  ) {}

  get lastSeq(): number {
    return this.nextSeq - 1;
  }

  emit = (type: string, data: object): Promise<void> => {
    if (this.failed) return Promise.reject(this.failed);
    return new Promise<void>((resolve, reject) => {
      this.pending.push({ type, dataJson: JSON.stringify(data), resolve, reject });
      if (!this.flushing) void this.flush();
    });
  };

  private async flush(): Promise<void> {
    this.flushing = true;
    while (this.pending.length > 0 && !this.failed) {
      const batch = this.pending.splice(0, 200);
      try {
        await this.appendWithRetry(batch);
        this.nextSeq += batch.length;
        batch.forEach((p) => p.resolve());
      } catch (err) {
        this.failed = err;
        batch.forEach((p) => p.reject(err));
        this.pending.splice(0).forEach((p) => p.reject(err));
      }
    }
    this.flushing = false;
  }

  /**
   * Idempotent by seq, so a write whose answer was lost can simply be sent again. Retried for up to
   * APPEND_RETRY_MS, long enough for a Sentinel or Cluster failover (the run waits, then goes on):
   * 1.5 s of retries crashed every run of an orchestrator during a failover that took longer.
   */
  private async appendWithRetry(batch: Pending[]): Promise<void> {
    const giveUpAt = Date.now() + APPEND_RETRY_MS;
    for (let attempt = 0; ; attempt++) {
      try {
        await this.log.append(this.run, this.owner, this.nextSeq, batch, this.endOfRun);
        return;
      } catch (err) {
        const wait = Math.min(100 * 2 ** attempt, 1_000);
        if (err instanceof RunStopped || Date.now() + wait > giveUpAt) throw err;
        await new Promise((r) => setTimeout(r, wait));
      }
    }
  }
}
