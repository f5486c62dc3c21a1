// Global admission shared by every replica through Redis: concurrency leases, smooth RPM/TPM
// pacing with reservations settled after the call, and a provider pause. Falls back to this
// replica's share of the quota (limit ÷ replicas) while Redis is unreachable; while a replica may
// be on its share, cut off from a Redis the others still reach, they keep its share free.
import { randomUUID } from 'node:crypto';
import os from 'node:os';
import type Redis from 'ioredis';
import { withTimeout } from '../lifecycle/timeout';
import type { Logger } from '../logging';
import { isRedisConnectionError } from '../redis';
import { DEFAULT_BURST_FRACTION } from './gcra';
import { LocalAdmission, shareOf } from './local';
import { ACQUIRE, HEARTBEAT, MERGE, PAUSE, RELEASE, RENEW, REQUEST } from './scripts';
import {
  WINDOW_MS,
  type AcquireRequest,
  type AcquireResult,
  type AdmissionLimits,
  type Lease,
  type LimiterOptions,
  type RefusalReason,
  type RequestDecision,
} from './types';

type Reply = [number, string, number, number?];
interface QuotaCommands {
  meshQuotaAcquire(...args: (string | number)[]): Promise<Reply>;
  meshQuotaRenew(...args: (string | number)[]): Promise<number>;
  meshQuotaRelease(...args: (string | number)[]): Promise<number>;
  meshQuotaPause(...args: (string | number)[]): Promise<number>;
  meshQuotaHeartbeat(...args: (string | number)[]): Promise<[number, number, string]>;
  meshQuotaMerge(...args: (string | number)[]): Promise<number>;
  meshQuotaRequest(...args: (string | number)[]): Promise<Reply>;
}

function defineCommands(redis: Redis): QuotaCommands {
  redis.defineCommand('meshQuotaAcquire', { numberOfKeys: 6, lua: ACQUIRE });
  redis.defineCommand('meshQuotaRenew', { numberOfKeys: 1, lua: RENEW });
  redis.defineCommand('meshQuotaRelease', { numberOfKeys: 4, lua: RELEASE });
  redis.defineCommand('meshQuotaPause', { numberOfKeys: 1, lua: PAUSE });
  redis.defineCommand('meshQuotaHeartbeat', { numberOfKeys: 2, lua: HEARTBEAT });
  redis.defineCommand('meshQuotaMerge', { numberOfKeys: 4, lua: MERGE });
  redis.defineCommand('meshQuotaRequest', { numberOfKeys: 2, lua: REQUEST });
  return redis as unknown as QuotaCommands;
}

const norm = (l: AdmissionLimits): Required<AdmissionLimits> => ({
  maxConcurrent: Math.max(0, l.maxConcurrent ?? 0),
  requestsPerMinute: Math.max(0, l.requestsPerMinute ?? 0),
  tokensPerMinute: Math.max(0, l.tokensPerMinute ?? 0),
});

class RedisUnavailable extends Error {}

/** How long after admissions ahead are used their replacement is asked for (see refillAhead). */
const REFILL_DELAY_MS = 5;

/** How often a release Redis could not take is tried again while it is away. */
const RELEASE_RETRY_MS = 200;
/** How long a pacing bucket learnt from the provider is kept in Redis after the last beat of a replica that learnt it. */
const BURST_TTL_MS = 24 * 3_600_000;

/**
 * A replica's id in the heartbeat set, the same after its process restarts in the same place (a
 * container restarted in its pod: same host name, same pid): it beats again under the id it
 * departed with, and the others stop keeping its share free at once.
 */
export function replicaIdOfProcess(): string {
  return `${os.hostname()}-${process.pid}`;
}

/** Clients seen ready at least once: one connecting again after that is in an outage. */
const connectedOnce = new WeakSet<Redis>();
/** Per client still making its first connection: settles when it is ready (one listener per client). */
const firstConnection = new WeakMap<Redis, Promise<void>>();
const CONNECTING = new Set(['connecting', 'connect']);

/** Notes when a client is ready for the first time (see readyWithin). */
function watchFirstConnection(redis: Redis): void {
  if (connectedOnce.has(redis) || firstConnection.has(redis)) return;
  if (redis.status === 'ready') return void connectedOnce.add(redis);
  if (!CONNECTING.has(redis.status)) return; // failing already: no first connection to wait for
  firstConnection.set(redis, new Promise((resolve) => redis.once('ready', () => {
    connectedOnce.add(redis);
    resolve();
  })));
}

/**
 * Whether the client is ready, or gets ready by `deadline` while it makes its first connection. A
 * replica just started answers its first calls before its Redis connection is up (tens of
 * milliseconds, more on a loaded machine): deciding those on the local share would admit on a
 * share meant for an outage, counted for one replica while the heartbeats have not counted the
 * fleet yet. Once connected, a client that is not ready is in an outage, and calls go local at once.
 */
async function readyWithin(redis: Redis, deadline: number): Promise<boolean> {
  if (redis.status === 'ready') return true;
  const first = firstConnection.get(redis);
  if (!first || connectedOnce.has(redis) || !CONNECTING.has(redis.status)) return false;
  const ms = deadline - Date.now();
  if (ms <= 0) return false;
  return withTimeout(first.then(() => true), ms, () => new Error('not ready')).catch(() => false);
}

/** The key prefix of the brokers' shared LLM quota (their GlobalLimiter). */
export const LLM_QUOTA_KEY_PREFIX = 'mesh:llm';

export class GlobalLimiter {
  private readonly cmd: QuotaCommands;
  private readonly keys: ReturnType<typeof GlobalLimiter.keysOf>;
  private limits: Required<AdmissionLimits>;
  private readonly leaseMs: number;
  private readonly windowMs: number;
  /** The pacing's bucket: the configured fraction, or a smaller one learnt (learnBurstFraction, or from another replica). */
  private burst: number;
  /** Whether TPM is paced besides being counted over the window (LimiterOptions.tokenPacing). */
  private readonly tokenPacing: boolean;
  /** The bucket this replica learnt from the provider itself: passed to the others with each heartbeat. */
  private learntBurst?: number;
  private readonly replicaId: string;
  private readonly heartbeatMs: number;
  private readonly redisTimeoutMs: number;
  private readonly local: LocalAdmission;
  private replicas: number;
  /** Replicas whose heartbeat expired without their leaving, within departedHoldMs: their shares are kept free. */
  private departed = 0;
  /** The fewest replicas the local share divides by (LimiterOptions.fallbackReplicas). */
  private readonly minReplicas: number;
  private readonly departedHoldMs: number;
  /** When the last heartbeat sent while sharing left (0: none yet): its entry in Redis expires 3 beats after it lands. */
  private lastSharedBeatAt = 0;
  private degraded = false;
  private recovering?: Promise<void>;
  /** Whether the local share starts with its pacing burst when Redis is lost (see LimiterOptions). */
  private readonly outageBurst: boolean;
  /** Leases taken on the local share and still running: re-registered in Redis when it returns. */
  private readonly localLeases = new Map<string, () => Promise<boolean>>();
  /** After Redis returns: slots kept back while other replicas' local leases are not registered yet. */
  private recoveryHoldback = 0;
  private recoveryHoldbackUntil = 0;
  /** How long recent calls held their lease (ms), newest last: how long a slot can stay taken. */
  private readonly recentDurations: number[] = [];
  private heartbeat?: NodeJS.Timeout;
  /** At most this many admissions taken ahead of calls (LimiterOptions.admitAhead). */
  private readonly aheadMax: number;
  private readonly aheadMs: number;
  /** How long after the last call one admission ahead is kept fresh (LimiterOptions.admitAheadKeepMs). */
  private readonly aheadKeepMs: number;
  /** Admissions taken ahead, oldest first: their lease ids and when they were asked for. */
  private ahead: { id: string; at: number; tokens: number }[] = [];
  /** The tokens each admission ahead reserves: the last call's reservation (a call reserving more is decided in Redis). */
  private aheadTokens = 0;
  /** Admissions ahead used since the last refill was asked for. */
  private aheadUsed = 0;
  private refilling = false;
  private aheadTimer?: NodeJS.Timeout;
  /** Counts the times all admissions ahead were given back (a pause, new limits, stop). */
  private aheadEpoch = 0;
  /** When the last admission was asked for. */
  private lastAskedAt = 0;
  /** Observers of mode changes (metrics, logs). */
  onModeChange?: (mode: 'shared' | 'local') => void;

  constructor(
    private readonly redis: Redis,
    keyPrefix: string,
    options: LimiterOptions = {},
    private readonly logger?: Logger,
  ) {
    this.cmd = defineCommands(redis);
    watchFirstConnection(redis);
    this.keys = GlobalLimiter.keysOf(keyPrefix);
    this.limits = norm(options);
    this.leaseMs = options.leaseMs ?? 15_000;
    this.windowMs = WINDOW_MS * (options.windowScale ?? 1) + Math.max(0, options.windowMarginMs ?? 0);
    this.burst = options.burstFraction ?? DEFAULT_BURST_FRACTION;
    this.tokenPacing = options.tokenPacing ?? true;
    this.replicaId = options.replicaId ?? randomUUID();
    this.heartbeatMs = options.heartbeatMs ?? 2_000;
    this.redisTimeoutMs = options.redisTimeoutMs ?? 500;
    this.minReplicas = Math.max(1, Math.floor(options.fallbackReplicas ?? 1));
    this.replicas = this.minReplicas;
    this.departedHoldMs = Math.max(0, options.departedHoldMs ?? 60_000);
    this.outageBurst = options.outageBurst ?? false;
    this.aheadMax = Math.max(0, Math.floor(options.admitAhead ?? 0));
    this.aheadMs = options.admitAheadMs ?? 50;
    this.aheadKeepMs = Math.max(0, options.admitAheadKeepMs ?? 0);
    this.local = new LocalAdmission(this.localLimits(), this.windowMs, this.burst, undefined, this.tokenPacing);
  }

  /** The key that exists (with the pause as its TTL) while a limiter with this prefix is paused. */
  static pauseKey(keyPrefix: string): string {
    return GlobalLimiter.keysOf(keyPrefix).pause;
  }

  /**
   * The keys of the limiter with this prefix. The prefix is their hash tag: every key of one
   * limiter is in one cluster slot (its scripts touch several), and different limiters (each
   * user's rate limit, each tool's) spread over the cluster's slots.
   */
  static keysOf(keyPrefix: string): { leases: string; rpm: string; tpm: string; pause: string; replicas: string; tpmLog: string; tpmTokens: string; burst: string } {
    const p = `{${keyPrefix}}`;
    return { leases: `${p}:leases`, rpm: `${p}:rpm`, tpm: `${p}:tpm`, pause: `${p}:pause`, replicas: `${p}:replicas`, tpmLog: `${p}:tpm:log`, tpmTokens: `${p}:tpm:tokens`, burst: `${p}:burst` };
  }

  /** Starts the heartbeat that tells every replica how many share the quota. */
  start(): void {
    if (this.heartbeat) return;
    void this.beat();
    this.heartbeat = setInterval(() => void this.beat(), this.heartbeatMs);
    this.heartbeat.unref();
  }

  /** Stops the heartbeat and leaves the heartbeat set (the others then keep no share free for this replica). */
  async stop(): Promise<void> {
    const beating = this.heartbeat !== undefined;
    if (this.heartbeat) clearInterval(this.heartbeat);
    this.heartbeat = undefined;
    this.giveBackAllAhead();
    if (beating && !this.degraded) await this.call(() => this.redis.zrem(this.keys.replicas, this.replicaId)).catch(() => undefined);
  }

  private giveBackAllAhead(): void {
    this.aheadEpoch += 1; // admissions ahead on their way now are given back when they land
    if (this.aheadTimer) clearTimeout(this.aheadTimer);
    this.aheadTimer = undefined;
    this.giveBackAhead(this.ahead.splice(0));
  }

  /** 'local' while Redis is unreachable. */
  get mode(): 'shared' | 'local' {
    return this.degraded ? 'local' : 'shared';
  }

  get liveReplicas(): number {
    return this.replicas;
  }

  /** Replicas gone from the heartbeats without leaving, within departedHoldMs: their shares are kept free. */
  get departedReplicas(): number {
    return this.departed;
  }

  get currentLimits(): Required<AdmissionLimits> {
    return { ...this.limits };
  }

  /** The share of each limit the pacing lets go at once. */
  get burstFraction(): number {
    return this.burst;
  }

  /**
   * A smaller pacing bucket, learnt from the provider (it refused a burst with its minute not used
   * up: AdaptiveLimits.halveBurst). Passed to the other replicas at once with a heartbeat; each
   * takes the smallest learnt on its next beat, and one that starts later on its first. Kept in
   * Redis for BURST_TTL_MS after the last beat of a replica that learnt it.
   */
  learnBurstFraction(fraction: number): void {
    if (fraction >= this.burst) return;
    this.learntBurst = fraction;
    this.useBurst(fraction);
    if (this.heartbeat && !this.degraded) void this.beat();
  }

  /** The admissions taken ahead under the old bucket are given back. */
  private useBurst(fraction: number): void {
    this.giveBackAllAhead();
    this.burst = fraction;
    this.local.setBurstFraction(fraction);
  }

  /** Changes the effective limits (adaptation to the provider); takes effect on the next decision. */
  setLimits(limits: AdmissionLimits): void {
    const next = norm(limits);
    const l = this.limits;
    if (next.maxConcurrent === l.maxConcurrent && next.requestsPerMinute === l.requestsPerMinute && next.tokensPerMinute === l.tokensPerMinute) return;
    this.giveBackAllAhead(); // taken under the old limits
    this.limits = next;
    this.local.setLimits(this.localLimits());
  }

  async tryAcquire(req: AcquireRequest): Promise<AcquireResult> {
    return (await this.tryAcquireMany([req]))[0]!;
  }

  /**
   * Asks for leases in the order given, in one decision (one Redis round trip): each is admitted
   * as if asked alone, and the first refused ends the answer, so that none is admitted before a
   * call ahead of it. The results: one per admitted request, then the refusal if any (shorter than
   * `reqs` when one was refused).
   */
  async tryAcquireMany(reqs: readonly AcquireRequest[]): Promise<AcquireResult[]> {
    if (reqs.length === 0) return [];
    const tokens = reqs.map((r) => Math.max(0, Math.ceil(r.tokens)));
    const out: AcquireResult[] = [];
    // Admissions taken ahead serve the first calls at once, in order, without a round trip.
    const sentAt = Date.now();
    const frequent = sentAt - this.lastAskedAt <= Math.max(this.aheadMs, this.aheadKeepMs);
    this.lastAskedAt = sentAt;
    for (const a of this.takeAhead(tokens, sentAt)) {
      this.local.track(a.id);
      out.push({ ok: true, lease: this.lease(a.id, reqs[out.length]!.holder, a.tokens, 'shared') });
    }
    if (out.length > 0) this.refillAhead(out.length);
    if (out.length === reqs.length) return out;
    const first = out.length;
    const ids = reqs.map(() => randomUUID());
    if (!this.degraded || this.redis.status === 'ready') {
      // Back from an outage: no shared admission before this replica's local leases are in Redis.
      await this.recovery();
      const concurrency = this.sharedConcurrency();
      const { requestsPerMinute: rpm, tokensPerMinute: tpm } = this.sharedLimits();
      if (this.limits.maxConcurrent > 0 && concurrency <= 0) return [...out, { ok: false, reason: 'concurrency', retryAfterMs: 50 }];
      // The first lease's id and tokens where a single acquire has them, then the others' pairs.
      const more: (string | number)[] = [];
      for (let i = first + 1; i < reqs.length; i += 1) more.push(ids[i]!, tokens[i]!);
      // Calls come often (the last decision was asked within admitAheadMs, or admitAheadKeepMs): one admitted ahead too.
      const ahead = frequent && this.ahead.length < this.aheadMax ? 1 : 0;
      const aheadId = randomUUID();
      const aheadTokens = (this.aheadTokens = Math.max(...tokens.slice(first)));
      const epoch = this.aheadEpoch;
      try {
        const [admitted, reason, retryAfterMs, aheadAdmitted] = await this.call(() =>
          this.cmd.meshQuotaAcquire(
            this.keys.leases, this.keys.rpm, this.keys.tpm, this.keys.pause, this.keys.tpmLog, this.keys.tpmTokens,
            ids[first]!, this.leaseMs, concurrency, rpm,
            tpm, tokens[first]!, this.windowMs, this.burst, ahead, aheadId, aheadTokens, this.tokenPacing ? 1 : 0, ...more,
          ),
        );
        this.keepAhead(aheadId, Number(aheadAdmitted ?? 0), sentAt, aheadTokens, epoch);
        for (let i = first; i < Math.min(first + Number(admitted), reqs.length); i += 1) {
          this.local.track(ids[i]!);
          out.push({ ok: true, lease: this.lease(ids[i]!, reqs[i]!.holder, tokens[i]!, 'shared') });
        }
        if (out.length < reqs.length) out.push({ ok: false, reason: reason as RefusalReason, retryAfterMs: Number(retryAfterMs) });
        return out;
      } catch (err) {
        if (!(err instanceof RedisUnavailable)) throw err;
      }
    }
    for (let i = first; i < reqs.length; i += 1) {
      const d = this.local.tryAcquire(ids[i]!, tokens[i]!);
      if (!d.ok) return [...out, d];
      out.push({ ok: true, lease: this.lease(ids[i]!, reqs[i]!.holder, tokens[i]!, 'local') });
    }
    return out;
  }

  /**
   * Admissions taken ahead and still fresh for the first of these calls, in order (each call's
   * tokens within what one reserved), oldest first; the stale ones are given back.
   */
  private takeAhead(tokens: readonly number[], now: number): { id: string; tokens: number }[] {
    if (this.ahead.length === 0) return [];
    if (this.degraded || this.redis.status !== 'ready') {
      // Redis is away: they cannot be given back (their slots expire there), nor used.
      this.ahead = [];
      return [];
    }
    this.dropStaleAhead(now);
    let n = 0;
    while (n < tokens.length && n < this.ahead.length && tokens[n]! <= this.ahead[n]!.tokens) n += 1;
    return this.ahead.splice(0, n);
  }

  /**
   * Replaces the admissions ahead just used, in the background, one decision at a time. Asked a
   * few milliseconds later, not in this turn: the write that wakes Redis would otherwise come before
   * the call's own request to the provider, and on a machine whose idle CPUs sleep such a write
   * costs the writer 0.3–0.5 ms (measured on this project's 2-vCPU VM) — most of what taking the
   * admission ahead saves. 1 ms was not always enough: the timer could fire while the call's own
   * path waited for another check, before its request to the provider was written.
   */
  private refillAhead(used: number): void {
    this.aheadUsed += used;
    if (this.refilling) return;
    this.refilling = true;
    setTimeout(() => this.refillNow(), REFILL_DELAY_MS).unref();
  }

  private refillNow(): void {
    const want = Math.min(this.aheadUsed, this.aheadMax - this.ahead.length);
    this.aheadUsed = 0;
    this.askAhead(want);
  }

  /** Asks Redis for `want` admissions ahead (this.refilling is set); `landed` runs once they are kept. */
  private askAhead(want: number, landed?: () => void): void {
    if (want <= 0 || this.degraded || this.redis.status !== 'ready') {
      this.refilling = false;
      return;
    }
    const sentAt = Date.now();
    const aheadId = randomUUID();
    const aheadTokens = this.aheadTokens;
    const epoch = this.aheadEpoch;
    const { requestsPerMinute: rpm, tokensPerMinute: tpm } = this.sharedLimits();
    this.call(() =>
      this.cmd.meshQuotaAcquire(
        this.keys.leases, this.keys.rpm, this.keys.tpm, this.keys.pause, this.keys.tpmLog, this.keys.tpmTokens,
        '', this.leaseMs, this.sharedConcurrency(), rpm,
        tpm, 0, this.windowMs, this.burst, want, aheadId, aheadTokens,
      ),
    )
      .then(([, , , admitted]) => {
        this.keepAhead(aheadId, Number(admitted ?? 0), sentAt, aheadTokens, epoch);
        landed?.();
      })
      .catch(() => undefined) // call() has switched to the local share if Redis is away
      .finally(() => {
        this.refilling = false;
        if (this.aheadUsed > 0) this.refillAhead(0);
        else this.sweepAheadLater();
      });
  }

  private keepAhead(aheadId: string, admitted: number, at: number, tokens: number, epoch: number): void {
    const landed = Array.from({ length: admitted }, (_, i) => ({ id: `${aheadId}:${i}`, at, tokens }));
    if (epoch !== this.aheadEpoch) return this.giveBackAhead(landed);
    this.ahead.push(...landed);
    this.sweepAheadLater();
  }

  /**
   * Sweeps the admissions ahead when the oldest is due: given back once stale and, while calls came
   * within admitAheadKeepMs, renewed when half stale (see renewAhead).
   */
  private sweepAheadLater(): void {
    if (this.aheadTimer) clearTimeout(this.aheadTimer);
    this.aheadTimer = undefined;
    const oldest = this.ahead[0];
    if (!oldest) return;
    const renew = !this.refilling && Date.now() - this.lastAskedAt <= this.aheadKeepMs;
    const due = oldest.at + (renew ? this.aheadMs / 2 : this.aheadMs + 1);
    this.aheadTimer = setTimeout(() => {
      this.aheadTimer = undefined;
      const now = Date.now();
      this.dropStaleAhead(now);
      if (now - this.lastAskedAt <= this.aheadKeepMs) this.renewAhead(now);
      this.sweepAheadLater();
    }, Math.max(1, due - Date.now())).unref();
  }

  /**
   * Keeps one admission ahead fresh between calls further apart than admitAheadMs: when every one
   * held is half stale, one more is asked for, and once it has landed the half-stale ones still
   * unused are given back. Until then they stay usable (they are not stale yet).
   */
  private renewAhead(now: number): void {
    if (this.refilling || this.ahead.length === 0 || this.ahead.some((a) => now - a.at < this.aheadMs / 2)) return;
    const old = new Set(this.ahead);
    this.refilling = true;
    this.askAhead(1, () => {
      const unused = this.ahead.filter((a) => old.has(a));
      this.ahead = this.ahead.filter((a) => !old.has(a));
      this.giveBackAhead(unused);
    });
  }

  private dropStaleAhead(now: number): void {
    let stale = 0;
    while (stale < this.ahead.length && now - this.ahead[stale]!.at > this.aheadMs) stale += 1;
    if (stale > 0) this.giveBackAhead(this.ahead.splice(0, stale));
  }

  /** Gives admissions taken ahead back: their request in the RPM window, their tokens, their concurrency slot. */
  private giveBackAhead(ahead: { id: string; tokens: number }[]): void {
    const { requestsPerMinute: rpm, tokensPerMinute: tpm } = this.sharedLimits();
    const { maxConcurrent } = this.limits;
    for (const a of ahead) {
      if (rpm > 0) void this.call(() => this.cmd.meshQuotaRequest(this.keys.rpm, this.keys.pause, rpm, this.windowMs, this.burst, -1)).catch(() => undefined);
      if (maxConcurrent > 0 || (tpm > 0 && a.tokens > 0)) {
        const registered = maxConcurrent > 0 ? '1' : '0';
        void this.call(() => this.cmd.meshQuotaRelease(this.keys.leases, this.keys.tpm, this.keys.tpmLog, this.keys.tpmTokens, a.id, -a.tokens, tpm, this.windowMs, this.burst, registered, this.tokenPacing ? 1 : 0)).catch(() => undefined);
      }
    }
  }

  /** Pauses admission on every replica for `ms` (a provider 429 with Retry-After). */
  async pauseFor(ms: number): Promise<void> {
    this.local.pause(ms);
    this.giveBackAllAhead();
    try {
      await this.call(() => this.cmd.meshQuotaPause(this.keys.pause, Math.ceil(ms)));
    } catch (err) {
      if (!(err instanceof RedisUnavailable)) throw err;
    }
  }

  /** What is left of the pause (ms) any replica set, as this replica knows it; 0 when not paused. */
  async pausedForMs(): Promise<number> {
    const local = this.local.pausedForMs();
    try {
      return Math.max(local, await this.call(() => this.redis.pttl(this.keys.pause)));
    } catch (err) {
      if (!(err instanceof RedisUnavailable)) throw err;
      return local;
    }
  }

  /** The concurrency limit asked of Redis: less, right after an outage, what other replicas' local leases may still hold. */
  private sharedConcurrency(): number {
    const c = this.sharedLimits().maxConcurrent;
    if (c === 0 || Date.now() >= this.recoveryHoldbackUntil) return c;
    return c - this.recoveryHoldback;
  }

  /** How many the quota is divided among: every replica that may hold a share, at least minReplicas. */
  private sharers(): number {
    return Math.max(this.replicas + this.departed, this.minReplicas);
  }

  /** The limits decided in Redis: each less the shares of departed replicas (0, unlimited, stays so). */
  private sharedLimits(): Required<AdmissionLimits> {
    if (this.departed === 0) return this.limits;
    const sharers = this.sharers();
    const free = (limit: number) => (limit > 0 ? limit - this.departed * shareOf(limit, sharers) : 0);
    return { maxConcurrent: free(this.limits.maxConcurrent), requestsPerMinute: free(this.limits.requestsPerMinute), tokensPerMinute: free(this.limits.tokensPerMinute) };
  }

  private localLimits(): Required<AdmissionLimits> {
    const sharers = this.sharers();
    return {
      maxConcurrent: shareOf(this.limits.maxConcurrent, sharers),
      requestsPerMinute: shareOf(this.limits.requestsPerMinute, sharers),
      tokensPerMinute: shareOf(this.limits.tokensPerMinute, sharers),
    };
  }

  private lease(id: string, holder: string, tokens: number, mode: 'shared' | 'local'): Lease {
    let currentMode = mode;
    let done = false;
    let timer: NodeJS.Timeout | undefined;
    const grantedAt = Date.now();
    const stopTimer = () => {
      if (timer) clearInterval(timer);
      timer = undefined;
    };
    let heldUntil = grantedAt + this.leaseMs;
    // A shared lease takes a slot in Redis' leases set only under a concurrency limit.
    const registered = this.limits.maxConcurrent > 0;
    const releaseShared = (delta: number) =>
      this.call(() => this.cmd.meshQuotaRelease(this.keys.leases, this.keys.tpm, this.keys.tpmLog, this.keys.tpmTokens, id, delta, this.sharedLimits().tokensPerMinute, this.windowMs, this.burst, registered ? '1' : '0', this.tokenPacing ? 1 : 0));
    const settle = async (delta: number) => {
      if (done) return;
      done = true;
      stopTimer();
      this.localLeases.delete(id);
      this.recentDurations.push(Date.now() - grantedAt);
      if (this.recentDurations.length > 100) this.recentDurations.shift();
      if (currentMode === 'shared') {
        try {
          await releaseShared(delta);
          this.local.release(id, 0);
          return;
        } catch (err) {
          if (!(err instanceof RedisUnavailable)) throw err;
          // Redis is away (a restart, a failover): release the shared slot as soon as it is back
          // instead of leaving it taken until it expires, and settle what we can locally now.
          if (registered) this.releaseLater(() => releaseShared(delta), heldUntil);
        }
      }
      this.local.release(id, delta);
    };
    const renew = async (): Promise<boolean> => {
      if (done) return false;
      try {
        const force = currentMode === 'local' ? ['force'] : [];
        const held = await this.call(() => this.cmd.meshQuotaRenew(this.keys.leases, id, this.leaseMs, this.limits.maxConcurrent, ...force));
        if (done) {
          // Settled while this renewal was on its way. A local lease's settlement stayed local, so
          // the slot the renewal just took in Redis is given back there (else it is held until it
          // expires). A shared one's release went after the renewal on the same connection.
          if (held === 1 && currentMode === 'local') await releaseShared(0).catch(() => undefined);
          return false;
        }
        if (held === 1) heldUntil = Date.now() + this.leaseMs;
        if (held === 1 && currentMode === 'local') {
          // Redis is back: the lease now counts in the shared set (and still in this replica's count).
          currentMode = 'shared';
          this.localLeases.delete(id);
        }
        return held === 1 || currentMode === 'local';
      } catch (err) {
        if (!(err instanceof RedisUnavailable)) throw err;
        return true; // a local lease stays valid while Redis is down; a shared one expires there on its own
      }
    };
    /** A request more (1) or one given back (-1): in Redis while the lease is shared and Redis answers, else on the local share. */
    const requests = async (delta: 1 | -1): Promise<RequestDecision> => {
      if (currentMode === 'shared') {
        try {
          const [ok, reason, retryAfterMs] = await this.call(() =>
            this.cmd.meshQuotaRequest(this.keys.rpm, this.keys.pause, this.sharedLimits().requestsPerMinute, this.windowMs, this.burst, delta),
          );
          return ok === 1 ? { ok: true } : { ok: false, reason: reason as 'rpm' | 'paused', retryAfterMs: Number(retryAfterMs) };
        } catch (err) {
          if (!(err instanceof RedisUnavailable)) throw err;
        }
      }
      if (delta > 0) return this.local.chargeRequest();
      this.local.refundRequest();
      return { ok: true };
    };
    if (mode === 'local') this.localLeases.set(id, renew);
    return {
      id,
      holder,
      tokens,
      get mode() {
        return currentMode;
      },
      renew,
      keepAlive: (intervalMs = Math.max(50, Math.floor(this.leaseMs / 3))) => {
        stopTimer();
        timer = setInterval(() => {
          renew().then(
            (held) => {
              if (!held) this.logger?.warn({ lease: id, holder }, 'lease lost: it expired before renewal');
            },
            (err: unknown) => this.logger?.warn({ err, lease: id }, 'lease renewal failed'),
          );
        }, intervalMs);
        timer.unref();
        return stopTimer;
      },
      chargeRequest: () => requests(1),
      refundRequest: async () => void (await requests(-1)),
      release: (opts = {}) => settle(opts.actualTokens === undefined ? 0 : Math.ceil(opts.actualTokens) - tokens),
      refund: () => settle(-tokens),
    };
  }

  private async beat(): Promise<void> {
    const local = this.degraded;
    try {
      const [live, departed, learnt] = await this.call(() => {
        // A beat sent while sharing may land even if its answer never comes: it counts from now.
        if (!local) this.lastSharedBeatAt = Date.now();
        return this.cmd.meshQuotaHeartbeat(
          this.keys.replicas, this.keys.burst, this.replicaId, this.heartbeatMs * 3, this.departedHoldMs, local ? 1 : 0, this.learntBurst ?? '', BURST_TTL_MS,
        );
      });
      const fleetBurst = learnt === '' || learnt === undefined ? NaN : Number(learnt);
      if (fleetBurst > 0 && fleetBurst < this.burst) {
        this.logger?.warn({ burstFraction: fleetBurst }, 'quota: another replica learnt a smaller pacing bucket from the provider; using it');
        this.useBurst(fleetBurst);
      }
      if ((live > 0 && live !== this.replicas) || departed !== this.departed) {
        if (live > 0) this.replicas = live;
        this.departed = departed;
        this.local.setLimits(this.localLimits());
      }
    } catch {
      // call() already switched to the local share.
    }
  }

  /**
   * Tries a release Redis could not take again every RELEASE_RETRY_MS until it goes through, or
   * until the slot expires there anyway (`until`). Safe to repeat: the script gives tokens back
   * only for a lease it still held.
   */
  private releaseLater(release: () => Promise<unknown>, until: number): void {
    const attempt = () => {
      if (Date.now() >= until) return;
      release().catch((err: unknown) => {
        if (err instanceof RedisUnavailable) setTimeout(attempt, RELEASE_RETRY_MS).unref();
        else this.logger?.warn({ err }, 'could not release a lease after Redis came back');
      });
    };
    setTimeout(attempt, RELEASE_RETRY_MS).unref();
  }

  /**
   * Runs a Redis call within redisTimeoutMs (a first connection under way is waited for within it,
   * see readyWithin); a connection failure switches to the local share.
   */
  private async call<T>(fn: () => Promise<T>): Promise<T> {
    try {
      const deadline = Date.now() + this.redisTimeoutMs;
      if (this.redis.status !== 'ready' && !(await readyWithin(this.redis, deadline))) throw new RedisUnavailable(`redis ${this.redis.status}`);
      const result = await withTimeout(fn(), Math.max(1, deadline - Date.now()), () => new RedisUnavailable('redis timeout'));
      // Redis answers again: start the recovery, without waiting for it (the recovery's own calls
      // come through here, and one that waited for the recovery would wait for itself).
      if (this.degraded) void this.recovery();
      return result;
    } catch (err) {
      const e = err instanceof RedisUnavailable ? err : isRedisConnectionError(err) ? new RedisUnavailable((err as Error).message) : err;
      if (e instanceof RedisUnavailable && !this.degraded) {
        this.degraded = true;
        this.ahead = []; // not usable now; their slots expire in Redis
        // Calls last as long as the longest recent one (× 1.5), or a lease when none was seen.
        const longest = this.recentDurations.length > 0 ? Math.max(...this.recentDurations) * 1.5 : this.leaseMs;
        this.local.beginOutage(this.limits.maxConcurrent, Math.min(longest, this.leaseMs * 4), this.outageBurst);
        // Other replicas may still reach Redis and admit there: they keep this replica's share free
        // only once its heartbeat has expired (3 beats after the last one landed, which took at
        // most redisTimeoutMs) and their own next beat has read it (1 more). Until then, nothing.
        if (this.departedHoldMs > 0 && this.lastSharedBeatAt > 0) {
          const counted = this.lastSharedBeatAt + this.redisTimeoutMs + this.heartbeatMs * 4;
          if (counted > Date.now()) this.local.pause(counted - Date.now());
        }
        this.logger?.warn({ replicas: this.sharers(), err: e.message }, 'quota: redis unavailable, using this replica\'s share');
        this.onModeChange?.('local');
      }
      throw e;
    }
  }

  /** The recovery under way, started when Redis is reachable again after an outage (one at a time). */
  private recovery(): Promise<void> | undefined {
    if (!this.recovering && this.degraded && this.redis.status === 'ready') {
      this.recovering = this.recover()
        .catch((err: unknown) => this.logger?.warn({ err }, 'quota: recovery failed'))
        .finally(() => {
          this.recovering = undefined;
        });
    }
    return this.recovering;
  }

  /** Back to shared state: carry the local pacing debt into Redis so nothing is granted twice. */
  private async recover(): Promise<void> {
    this.degraded = false;
    // Set before anything is awaited: admissions wait for the recovery, but not the heartbeat's.
    const sharers = this.sharers();
    this.recoveryHoldback = Math.min(this.limits.maxConcurrent, (sharers - 1) * shareOf(this.limits.maxConcurrent, sharers));
    this.recoveryHoldbackUntil = Date.now() + this.heartbeatMs * 2;
    const debt = this.local.debtMs();
    this.local.resetDebt();
    try {
      // Bounded: admissions wait for the recovery, so it must never hang on Redis.
      await this.call(() => this.cmd.meshQuotaMerge(this.keys.rpm, this.keys.tpm, this.keys.tpmLog, this.keys.tpmTokens, debt.rpm, debt.tpm, debt.windowTokens, debt.windowAgoMs, `merge:${this.replicaId}:${randomUUID()}`, this.windowMs));
    } catch (err) {
      this.logger?.warn({ err }, 'quota: could not merge local state');
    }
    // The calls admitted locally are running: register them now, not at their next renewal, and
    // keep back what the other replicas' local leases may hold until they have done the same
    // (each does on its next heartbeat at the latest).
    await Promise.all([...this.localLeases.values()].map((renew) => renew().catch(() => false)));
    // Live again for the others at once, not at the next beat: until then they keep this
    // replica's share free as a departed one's (its beats while local said so). Not when Redis
    // failed again meanwhile: that beat would start the next recovery straight away. Only for a
    // limiter that beats at all (started): one that is not (the edge's per-user limits) keeps the
    // replica count it was given.
    if (!this.degraded && this.heartbeat) void this.beat();
    this.logger?.info('quota: redis available again, shared state restored');
    this.onModeChange?.('shared');
  }
}
