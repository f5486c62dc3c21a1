// Run ownership in Redis: creating a run (one active run per conversation, idempotent per
// message), leases renewed by the owner, atomic takeover of runs whose lease expired, cancel flags.
import type { Redis } from '@agent-mesh/common';
import type { Checkpoint } from '../pipeline/types';
import type { RunRef, Transaction } from '../runlog/runlog';
import { keys } from './keys';

export interface RunMeta {
  runId: string;
  userId: string;
  conversationId: string;
  messageId: string;
  content: string;
  createdAtMs: number;
  /** W3C trace context of the StartRun call, so that a takeover continues the same trace. */
  trace: Record<string, string>;
}

export type StartOutcome = { kind: 'created'; runId: string } | { kind: 'existing'; runId: string } | { kind: 'busy'; runId: string };

// KEYS: messageRun convActive convRun meta lease leases
// ARGV: runId owner leaseMs now userId conversationId messageId content createdAt trace
const START = `
local existing = redis.call('GET', KEYS[1])
if existing then return {'existing', existing} end
local active = redis.call('GET', KEYS[2])
if active then return {'busy', active} end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], ARGV[1])
redis.call('SET', KEYS[3], ARGV[1])
redis.call('HSET', KEYS[4], 'runId', ARGV[1], 'userId', ARGV[5], 'conversationId', ARGV[6], 'messageId', ARGV[7], 'content', ARGV[8], 'createdAtMs', ARGV[9], 'trace', ARGV[10])
redis.call('SET', KEYS[5], ARGV[2], 'PX', ARGV[3])
redis.call('ZADD', KEYS[6], tonumber(ARGV[4]) + tonumber(ARGV[3]), ARGV[1])
return {'created', ARGV[1]}
`;

// KEYS: lease leases; ARGV: owner leaseMs now runId
// A lease that expired but that no replica claimed yet is still the owner's: it was late (a busy
// event loop or a slow Redis), not dead, and giving the run up would only start it again elsewhere.
const RENEW = `
local current = redis.call('GET', KEYS[1])
if current and current ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[2], tonumber(ARGV[3]) + tonumber(ARGV[2]), ARGV[4])
return 1
`;

// KEYS: leases, then the lease key of each candidate; ARGV: now owner leaseMs, then each candidate's id.
// Claims the candidates (read from the takeover set just before) whose lease expired: still due in
// the set (nobody renewed or claimed them meanwhile) and the lease key absent, which is the proof
// (a live owner renews it). Every key it touches is declared, so it runs on a Cluster too.
const CLAIM = `
local now, leaseMs = tonumber(ARGV[1]), tonumber(ARGV[3])
local out = {}
for i = 2, #KEYS do
  local id = ARGV[i + 2]
  local score = redis.call('ZSCORE', KEYS[1], id)
  if score and tonumber(score) <= now then
    if redis.call('EXISTS', KEYS[i]) == 0 then
      redis.call('SET', KEYS[i], ARGV[2], 'PX', leaseMs)
      redis.call('ZADD', KEYS[1], now + leaseMs, id)
      table.insert(out, id)
    else
      -- the owner is alive but its score is stale: bring the score up to date
      redis.call('ZADD', KEYS[1], now + redis.call('PTTL', KEYS[i]), id)
    end
  end
end
return out
`;

// KEYS: lease leases; ARGV: owner runId. Gives a run back (at shutdown) so another replica takes it at once.
const RELEASE = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('ZADD', KEYS[2], 0, ARGV[2])
return 1
`;

// KEYS: lease leases convActive meta ckpt cancel convRun messageRun seq
// ARGV: owner runId retentionS lastSeq
// The end of a run's ownership, in the transaction of its terminal event (RunLog.append): only
// while the lease is still the owner's (or lapsed unclaimed) and once the log holds the terminal
// event, the lease goes, the run leaves the takeover set, the conversation's active-run slot is
// freed if it is still this run's, and the run's keys start their retention.
const END = `
local owner = redis.call('GET', KEYS[1])
if owner and owner ~= ARGV[1] then return 0 end
if tonumber(redis.call('GET', KEYS[9]) or '0') < tonumber(ARGV[4]) then return 0 end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[2])
if redis.call('GET', KEYS[3]) == ARGV[2] then redis.call('DEL', KEYS[3]) end
for i = 4, 8 do redis.call('EXPIRE', KEYS[i], ARGV[3]) end
return 1
`;

type Scripted = Redis & {
  meshRunStart(...a: string[]): Promise<[string, string]>;
  meshRunRenew(...a: string[]): Promise<number>;
  meshRunClaim(...a: string[]): Promise<string[]>;
  meshRunRelease(...a: string[]): Promise<number>;
};
type Ending = { meshRunEnd(...a: string[]): unknown };

export class RunRegistry {
  private readonly redis: Scripted;
  /** `retentionS`: how long a finished run's keys stay (RUN_LOG_RETENTION_S, as its log). */
  constructor(redis: Redis, private readonly leaseMs: number, private readonly retentionS = 3600) {
    redis.defineCommand('meshRunStart', { numberOfKeys: 6, lua: START });
    redis.defineCommand('meshRunRenew', { numberOfKeys: 2, lua: RENEW });
    // The number of keys varies: it is the first argument.
    redis.defineCommand('meshRunClaim', { lua: CLAIM });
    redis.defineCommand('meshRunRelease', { numberOfKeys: 2, lua: RELEASE });
    redis.defineCommand('meshRunEnd', { numberOfKeys: 9, lua: END });
    this.redis = redis as Scripted;
  }

  async create(meta: RunMeta, owner: string): Promise<StartOutcome> {
    const [kind, runId] = await this.redis.meshRunStart(
      keys.messageRun(meta.messageId), keys.convActive(meta.conversationId), keys.convRun(meta.conversationId),
      keys.meta(meta.runId), keys.lease(meta.runId), keys.leases,
      meta.runId, owner, String(this.leaseMs), String(Date.now()), meta.userId, meta.conversationId, meta.messageId,
      meta.content, String(meta.createdAtMs), JSON.stringify(meta.trace),
    );
    return { kind: kind as StartOutcome['kind'], runId };
  }

  async meta(runId: string): Promise<RunMeta | undefined> {
    const h = await this.redis.hgetall(keys.meta(runId));
    if (!h.runId || !h.userId || !h.conversationId) return undefined;
    let trace: Record<string, string> = {};
    try {
      trace = JSON.parse(h.trace ?? '{}') as Record<string, string>;
    } catch {
      /* a run without a saved trace context starts a new trace */
    }
    return {
      runId: h.runId, userId: h.userId, conversationId: h.conversationId, messageId: h.messageId ?? '',
      content: h.content ?? '', createdAtMs: Number(h.createdAtMs ?? Date.now()), trace,
    };
  }

  currentRun(conversationId: string): Promise<string | null> {
    return this.redis.get(keys.convRun(conversationId));
  }

  activeRun(conversationId: string): Promise<string | null> {
    return this.redis.get(keys.convActive(conversationId));
  }

  async renew(runId: string, owner: string): Promise<boolean> {
    return (await this.redis.meshRunRenew(keys.lease(runId), keys.leases, owner, String(this.leaseMs), String(Date.now()), runId)) === 1;
  }

  async claimExpired(owner: string, limit: number): Promise<string[]> {
    const now = String(Date.now());
    const due = await this.redis.zrangebyscore(keys.leases, '-inf', now, 'LIMIT', 0, limit);
    if (due.length === 0) return [];
    return this.redis.meshRunClaim(String(due.length + 1), keys.leases, ...due.map(keys.lease), now, owner, String(this.leaseMs), ...due);
  }

  async release(runId: string, owner: string): Promise<void> {
    await this.redis.meshRunRelease(keys.lease(runId), keys.leases, owner, runId);
  }

  /**
   * Queues the end of the owner's run into the transaction that appends its terminal event (seq
   * `lastSeq`; see RunLog's EndOfRun): the lease and the conversation's active-run slot are
   * released with it, atomically, and the run's keys expire after the retention.
   */
  endInto(tx: Transaction, run: RunRef, owner: string, lastSeq: number): void {
    const r = run.runId;
    (tx as unknown as Ending).meshRunEnd(
      keys.lease(r), keys.leases, keys.convActive(run.conversationId), keys.meta(r), keys.checkpoint(r), keys.cancel(r),
      keys.convRun(run.conversationId), keys.messageRun(run.messageId), keys.seq(r),
      owner, r, String(this.retentionS), String(lastSeq),
    );
  }

  /** Drops a run from the takeover set (its log already ended, or its state is gone). */
  async forget(runId: string, conversationId?: string): Promise<void> {
    await this.redis.zrem(keys.leases, runId);
    await this.redis.del(keys.lease(runId));
    if (conversationId) {
      const active = await this.redis.get(keys.convActive(conversationId));
      if (active === runId) await this.redis.del(keys.convActive(conversationId));
    }
  }

  async saveCheckpoint(runId: string, c: Checkpoint): Promise<void> {
    await this.redis.set(keys.checkpoint(runId), JSON.stringify(c));
  }

  async checkpoint(runId: string): Promise<Checkpoint | undefined> {
    const raw = await this.redis.get(keys.checkpoint(runId));
    return raw ? (JSON.parse(raw) as Checkpoint) : undefined;
  }

  /** Marks a run cancelled (seen by a takeover too) and tells its owner, wherever it runs. */
  async requestCancel(runId: string, reason: string): Promise<void> {
    await this.redis.set(keys.cancel(runId), reason, 'EX', 86_400);
    await this.redis.publish(keys.cancelChannel, runId);
  }

  async cancelRequested(runId: string): Promise<string | null> {
    return this.redis.get(keys.cancel(runId));
  }

  /** Deletes every key of these runs and of the conversation (erasure): logs, checkpoints, leases, flags. */
  async erase(conversationId: string, runIds: string[], messageIds: string[]): Promise<void> {
    const dels = [keys.convActive(conversationId), keys.convRun(conversationId), ...messageIds.map(keys.messageRun)];
    for (const r of runIds) dels.push(keys.log(r), keys.seq(r), keys.lease(r), keys.meta(r), keys.checkpoint(r), keys.cancel(r));
    // All in the registry's one cluster slot (./keys.ts), so one MULTI works on a Cluster too.
    const multi = this.redis.multi();
    for (const k of dels) multi.del(k);
    if (runIds.length) multi.zrem(keys.leases, ...runIds);
    await multi.exec();
  }
}
