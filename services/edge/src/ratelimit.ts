// Per-user request limits, shared by every edge replica through Redis. The admission itself is the
// project's one implementation (services/common/src/quota, GlobalLimiter: smooth GCRA pacing in a
// Lua script on Redis time); the edge only keys it by user: one limiter per user key prefix,
// created on a user's first request and kept in a bounded LRU map.
//
// Pacing, not a sliding window: a limit L per minute admits a burst of ⌊L × burstFraction⌋ at once,
// then refills smoothly; any 60 s window still admits at most L requests.
//
// While Redis is down: every per-user GlobalLimiter falls back to its in-process share of the limit
// (L ÷ live edge replicas, the count last read from the replicas' heartbeats, at least
// fallbackReplicas: an edge started during an outage has read none) — users stay limited
// per replica instead of being locked out or let through unbounded. When Redis is back, the
// local pacing debt is merged into Redis so nothing is granted twice. Each decision made on the
// local share (Redis unreachable, or slower than redisTimeoutMs for that user's key) is counted in
// edge_rate_limit_local_decisions_total and logged at most once a minute.
import { Counter, GlobalLimiter, pace, type Logger, type PacingRate, type Redis, type Registry } from '@agent-mesh/common';

export type RateDecision = { ok: true } | { ok: false; retryAfterMs: number };

export interface RequestLimiter {
  check(userId: string): Promise<RateDecision>;
  /** Stops background work (the replica heartbeat) and leaves the heartbeat set. */
  close?(): Promise<void>;
}

export interface RequestLimitOptions {
  /** Requests per user per minute; 0 = unlimited. */
  perMinute: number;
  /** Share of the limit that may arrive at once (see common/src/quota/gcra.ts). @default 0.25 */
  burstFraction?: number;
  /** Users whose limiter stays in memory (least recently seen are dropped; their state lives in Redis). @default 10000 */
  maxUsers?: number;
  /** Longest wait for Redis before deciding locally. @default 200 */
  redisTimeoutMs?: number;
  /** Requests admitted ahead per user while at most half the burst is spent (see LimiterOptions.admitAhead). @default 0 */
  admitAhead?: number;
  /** How close requests must come for one to be admitted ahead, and how long one waits for its request. @default 2000 */
  admitAheadMs?: number;
  /** The fewest edge replicas a limit is divided among while Redis is unreachable (see LimiterOptions.fallbackReplicas). @default 1 */
  fallbackReplicas?: number;
}

export const DEFAULT_BURST_FRACTION = 0.25;
const KEY_PREFIX = 'edge:rl';

/** How often decisions on the local share are logged at most (with how many there were). */
const LOCAL_LOG_EVERY_MS = 60_000;

export function redisRequestLimiter(redis: Redis, opts: RequestLimitOptions, logger: Logger, registry?: Registry): RequestLimiter {
  if (opts.perMinute <= 0) return { check: async () => ({ ok: true }) };
  const burstFraction = opts.burstFraction ?? DEFAULT_BURST_FRACTION;
  const maxUsers = opts.maxUsers ?? 10_000;
  const redisTimeoutMs = opts.redisTimeoutMs ?? 200;
  // No limits of its own: it only counts the live edge replicas (heartbeats), so that the local
  // fallback of each user's limiter knows its share. It also logs the mode changes once.
  const replicas = new GlobalLimiter(redis, `${KEY_PREFIX}:edges`, { redisTimeoutMs }, logger);
  // Started once Redis is connected, so the first beat does not report an outage at boot.
  if (redis.status === 'ready') replicas.start();
  else redis.once('ready', () => replicas.start());
  const users = new Map<string, GlobalLimiter>();
  let replicaCount = replicas.liveReplicas;
  const localDecisions = new Counter({
    name: 'edge_rate_limit_local_decisions_total',
    help: 'per-user request limit decisions made on this replica\'s share of the limit (Redis unreachable, or slower than its time limit)',
    registers: registry ? [registry] : [],
  });
  let unloggedLocal = 0;
  let localLoggedAt = 0;
  const decidedLocally = () => {
    localDecisions.inc();
    unloggedLocal += 1;
    if (Date.now() - localLoggedAt < LOCAL_LOG_EVERY_MS) return;
    logger.warn({ decisions: unloggedLocal, redisTimeoutMs, replicas: replicaCount }, 'request limits decided on this replica\'s share: Redis unreachable or slower than its time limit');
    localLoggedAt = Date.now();
    unloggedLocal = 0;
  };

  const limiterOf = (userId: string): GlobalLimiter => {
    if (replicas.liveReplicas !== replicaCount) {
      // The fallback share changed: rebuild lazily (the shared state is in Redis, nothing is lost).
      replicaCount = replicas.liveReplicas;
      users.clear();
    }
    let l = users.get(userId);
    if (l) {
      users.delete(userId); // re-inserted below: Map order is the LRU order
    } else {
      l = new GlobalLimiter(redis, `${KEY_PREFIX}:u:${userId}`, {
        requestsPerMinute: opts.perMinute,
        burstFraction,
        redisTimeoutMs,
        fallbackReplicas: Math.max(replicaCount, opts.fallbackReplicas ?? 1),
        outageBurst: true,
        admitAhead: opts.admitAhead ?? 0,
        admitAheadMs: opts.admitAheadMs ?? 2_000,
      });
      if (users.size >= maxUsers) users.delete(users.keys().next().value!);
    }
    users.set(userId, l);
    return l;
  };

  return {
    async check(userId) {
      const limiter = limiterOf(userId);
      const d = await limiter.tryAcquire({ holder: userId, tokens: 0 });
      if (d.ok ? d.lease.mode === 'local' : limiter.mode === 'local') decidedLocally();
      // No concurrency limit is set, so the lease holds nothing and needs no release.
      return d.ok ? { ok: true } : { ok: false, retryAfterMs: Math.max(1, d.retryAfterMs) };
    },
    // Leaves the edges' heartbeat set; each user's limiter gives back what it admitted ahead.
    close: async () => void (await Promise.all([replicas, ...users.values()].map((l) => l.stop()))),
  };
}

/** An in-process limiter with the same pacing (tests, or an edge without Redis). */
export function memoryRequestLimiter(perMinute: number, now: () => number = Date.now, burstFraction = DEFAULT_BURST_FRACTION): RequestLimiter {
  const rate: PacingRate = { limit: perMinute, windowMs: 60_000, burstFraction };
  const tats = new Map<string, number>();
  return {
    async check(userId) {
      if (perMinute <= 0) return { ok: true };
      const d = pace(tats.get(userId) ?? 0, now(), 1, rate);
      if (!d.ok) return { ok: false, retryAfterMs: Math.max(1, Math.ceil(d.retryAfterMs)) };
      tats.set(userId, d.tat);
      return { ok: true };
    },
  };
}

/**
 * Users refused lately (by their rate limit or budget) on this replica, for as long as the refusal
 * said to wait (at least a second, at most a minute): their checks are awaited before anything else
 * is done for them, rather than beside the work of a call (see the edge's `spends: 'beside'`).
 * Bounded: past `max` users, the one noted longest ago is forgotten.
 */
export class RecentRefusals {
  private readonly until = new Map<string, number>();

  constructor(private readonly max = 10_000, private readonly now: () => number = Date.now) {}

  note(userId: string, retryAfterMs: number): void {
    this.until.delete(userId); // re-inserted below: Map order is the order noted
    if (this.until.size >= this.max) this.until.delete(this.until.keys().next().value!);
    this.until.set(userId, this.now() + Math.min(Math.max(retryAfterMs, 1_000), 60_000));
  }

  has(userId: string): boolean {
    const until = this.until.get(userId);
    if (until === undefined) return false;
    if (until > this.now()) return true;
    this.until.delete(userId);
    return false;
  }
}
