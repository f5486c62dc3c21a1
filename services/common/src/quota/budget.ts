// Per-user token budgets over fixed windows — a UTC day and a minute — shared by every replica
// through Redis. Unlike the admission limiter (smooth pacing of a shared upstream quota), a budget
// is an allowance a user can see and plan with: "N tokens a day, resets at midnight UTC".
//
// Checked before work starts (a run, a /v1 call): a user whose window is used up is refused with
// the budget's name and reset time. Charged afterwards with what the provider billed (the broker
// settles every upstream call), so a budget can be overshot by the calls already in flight when it
// ran out, and (with `okCacheMs`) by those begun within okCacheMs of a check that found at least
// half of every window left, never more (a user who keeps calling is read again in the background). Redis unreachable: checks pass (the global quota still protects the
// upstream) and the charges of the outage are lost; `onError` is told. Today's ranking of spenders
// (for a metric) is sent once a second with every charge of that second, not once per call.
import type Redis from 'ioredis';
import { withTimeout } from '../lifecycle/timeout';

export type BudgetName = 'day' | 'minute';

export interface BudgetLimits {
  /** Tokens per user per UTC day; 0 = unlimited. */
  perDay: number;
  /** Tokens per user per minute; 0 = unlimited. */
  perMinute: number;
}

export interface BudgetWindow {
  budget: BudgetName;
  used: number;
  /** 0 = unlimited. */
  limit: number;
  /** When the window's count starts again from 0 (Unix ms). */
  resetsAtMs: number;
}

export type BudgetDecision =
  | { ok: true }
  | { ok: false; window: BudgetWindow; retryAfterMs: number };

export interface TokenBudgetOptions {
  defaults: BudgetLimits;
  /** Per-user limits replacing the defaults (each field on its own). */
  overrides?: Record<string, Partial<BudgetLimits>>;
  now?: () => number;
  onError?: (err: unknown) => void;
  /** Longest wait for Redis. @default 300 */
  redisTimeoutMs?: number;
  /** How long today's ranking of spenders may lag the charges (one command per flush). @default 1000 */
  rankingFlushMs?: number;
  /** How long a check that found at least half of every limited window left (and 10,000 tokens) is answered again without Redis (0: never). @default 0 */
  okCacheMs?: number;
}

/** Users whose last "ok" is remembered (okCacheMs); the oldest are dropped first. */
const OK_CACHE_USERS = 10_000;
/** Tokens that must be left in each limited window (and at least half of it) for an "ok" to be remembered. */
const OK_CACHE_MIN_LEFT = 10_000;
/** How long after a check its background read is sent (see refreshLater). */
const REFRESH_DELAY_MS = 5;

/** Where every service keeps the budgets (the broker charges, the edge checks and reports). */
export const BUDGET_KEY_PREFIX = 'mesh:budget';

const DAY_MS = 86_400_000;
const MINUTE_MS = 60_000;

/** Adds ARGV[1] to the user's day (KEYS[1]) and minute (KEYS[2]) windows, each expiring at ARGV[2] / ARGV[3]. */
const CHARGE_WINDOWS = `
redis.call('INCRBY', KEYS[1], ARGV[1])
redis.call('PEXPIREAT', KEYS[1], ARGV[2])
redis.call('INCRBY', KEYS[2], ARGV[1])
redis.call('PEXPIREAT', KEYS[2], ARGV[3])
return 1
`;
/** Adds to the day's spenders (KEYS[1], expiring at ARGV[1]) each pair of ARGV that follows: user, tokens. */
const RANK_SPENDERS = `
for i = 2, #ARGV - 1, 2 do
  redis.call('ZINCRBY', KEYS[1], ARGV[i + 1], ARGV[i])
end
redis.call('PEXPIREAT', KEYS[1], ARGV[1])
return 1
`;

interface ChargeCommands {
  meshBudgetChargeWindows(day: string, minute: string, tokens: number, dayExpiresAt: number, minuteExpiresAt: number): Promise<number>;
  meshBudgetRankSpenders(top: string, expiresAt: number, ...userTokens: Array<string | number>): Promise<number>;
}

export class TokenBudgets {
  private readonly now: () => number;
  private readonly cmd: ChargeCommands;
  /** Charges not yet in the ranking: day (its start) → user → tokens. */
  private readonly unranked = new Map<number, Map<string, number>>();
  private rankTimer?: NodeJS.Timeout;
  /** User → until when an "ok" is answered without Redis (okCacheMs). */
  private readonly okUntil = new Map<string, number>();
  /** Users whose remembered "ok" is being read again. */
  private readonly refreshing = new Set<string>();

  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
    private readonly opts: TokenBudgetOptions,
  ) {
    this.now = opts.now ?? Date.now;
    redis.defineCommand('meshBudgetChargeWindows', { numberOfKeys: 2, lua: CHARGE_WINDOWS });
    redis.defineCommand('meshBudgetRankSpenders', { numberOfKeys: 1, lua: RANK_SPENDERS });
    this.cmd = redis as unknown as ChargeCommands;
  }

  limitsOf(userId: string): BudgetLimits {
    return { ...this.opts.defaults, ...(this.opts.overrides?.[userId] ?? {}) };
  }

  /** The user's windows as they stand now. */
  async usage(userId: string): Promise<BudgetWindow[]> {
    const now = this.now();
    const limits = this.limitsOf(userId);
    const w = windows(now);
    const [day, minute] = await this.timed(this.redis.mget(this.key(userId, 'day', w.day.start), this.key(userId, 'minute', w.minute.start)));
    return [
      { budget: 'day', used: Number(day ?? 0), limit: limits.perDay, resetsAtMs: w.day.end },
      { budget: 'minute', used: Number(minute ?? 0), limit: limits.perMinute, resetsAtMs: w.minute.end },
    ];
  }

  /**
   * Whether the user may start spending now: refused when any limited window is used up. A
   * remembered "ok" (okCacheMs) in its second half is read again in the background, so a user who
   * keeps calling is answered without Redis on every call, not on every other one; each "ok" still
   * comes from a read at most okCacheMs old.
   */
  async check(userId: string): Promise<BudgetDecision> {
    const limits = this.limitsOf(userId);
    if (limits.perDay <= 0 && limits.perMinute <= 0) return { ok: true };
    const okCacheMs = this.opts.okCacheMs ?? 0;
    const until = okCacheMs > 0 ? this.okUntil.get(userId) : undefined;
    if (until !== undefined) {
      const now = this.now();
      if (now < until) {
        if (until - now < okCacheMs / 2) this.refreshLater(userId);
        return { ok: true };
      }
      this.okUntil.delete(userId);
    }
    const readAt = this.now();
    let ws: BudgetWindow[];
    try {
      ws = await this.usage(userId);
    } catch (err) {
      this.opts.onError?.(err);
      return { ok: true };
    }
    // The window that ends last decides when the user may come back.
    const over = ws.filter((w) => w.limit > 0 && w.used >= w.limit).sort((a, b) => b.resetsAtMs - a.resetsAtMs)[0];
    this.remember(userId, ws, readAt);
    if (!over) return { ok: true };
    return { ok: false, window: over, retryAfterMs: Math.max(1, over.resetsAtMs - this.now()) };
  }

  /** Remembers an "ok" for okCacheMs from `readAt` when at least half of every limited window (and 10,000 tokens) is left; forgets it otherwise. */
  private remember(userId: string, ws: BudgetWindow[], readAt: number): void {
    const okCacheMs = this.opts.okCacheMs ?? 0;
    this.okUntil.delete(userId); // re-inserted below: Map order is the order remembered
    if (okCacheMs <= 0 || !ws.every((w) => w.limit <= 0 || w.limit - w.used >= Math.max(w.limit / 2, OK_CACHE_MIN_LEFT))) return;
    if (this.okUntil.size >= OK_CACHE_USERS) this.okUntil.delete(this.okUntil.keys().next().value!);
    this.okUntil.set(userId, readAt + okCacheMs);
  }

  /**
   * Reads a remembered user's windows again, in the background (one read at a time per user). A few
   * milliseconds later, not in the turn of the check: its write to Redis would come before the
   * call's own request to the provider, and waking an idle Redis costs the writer 0.3–0.5 ms.
   */
  private refreshLater(userId: string): void {
    if (this.refreshing.has(userId)) return;
    this.refreshing.add(userId);
    setTimeout(() => {
      const readAt = this.now();
      this.usage(userId)
        .then((ws) => this.remember(userId, ws, readAt), (err: unknown) => this.opts.onError?.(err))
        .finally(() => this.refreshing.delete(userId));
    }, REFRESH_DELAY_MS).unref();
  }

  /** Adds what a call cost to the user's windows, and (within rankingFlushMs) to today's spenders. */
  async charge(userId: string, tokens: number): Promise<void> {
    const n = Math.ceil(tokens);
    if (!(n > 0)) return;
    const w = windows(this.now());
    let users = this.unranked.get(w.day.start);
    if (!users) this.unranked.set(w.day.start, (users = new Map()));
    users.set(userId, (users.get(userId) ?? 0) + n);
    this.rankTimer ??= setTimeout(() => void this.flushRanking(), this.opts.rankingFlushMs ?? 1_000).unref();
    try {
      // One script (atomic, as a transaction, but one command: it goes out with the other commands
      // of the moment, where a MULTI is a write of its own). The day's spenders are another key, in
      // another slot on a Cluster: they go with the next flush.
      await this.timed(this.cmd.meshBudgetChargeWindows(this.key(userId, 'day', w.day.start), this.key(userId, 'minute', w.minute.start), n, w.day.end + MINUTE_MS, w.minute.end + MINUTE_MS));
    } catch (err) {
      this.opts.onError?.(err);
    }
  }

  /** Sends the charges not yet in today's ranking, one command per day: every rankingFlushMs, and at shutdown. */
  async flushRanking(): Promise<void> {
    clearTimeout(this.rankTimer);
    this.rankTimer = undefined;
    const days = [...this.unranked];
    this.unranked.clear();
    await Promise.all(
      days.map(async ([day, users]) => {
        try {
          await this.timed(this.cmd.meshBudgetRankSpenders(this.topKey(day), day + 2 * DAY_MS, ...[...users].flat()));
        } catch (err) {
          this.opts.onError?.(err);
        }
      }),
    );
  }

  /** Today's largest per-user totals, largest first — amounts only, never who. */
  async topSpenders(count: number): Promise<number[]> {
    const w = windows(this.now());
    const raw = await this.timed(this.redis.zrevrange(this.topKey(w.day.start), 0, count - 1, 'WITHSCORES'));
    return raw.filter((_, i) => i % 2 === 1).map(Number);
  }

  private key(userId: string, budget: BudgetName, windowStart: number): string {
    return `${this.prefix}:{u:${userId}}:${budget}:${windowStart}`;
  }

  private topKey(dayStart: number): string {
    return `${this.prefix}:top:${dayStart}`;
  }

  private timed<T>(p: Promise<T>): Promise<T> {
    return withTimeout(p, this.opts.redisTimeoutMs ?? 300, 'budget store');
  }
}

/** The current day (UTC) and minute windows. */
export function windows(now: number): Record<BudgetName, { start: number; end: number }> {
  const day = Math.floor(now / DAY_MS) * DAY_MS;
  const minute = Math.floor(now / MINUTE_MS) * MINUTE_MS;
  return { day: { start: day, end: day + DAY_MS }, minute: { start: minute, end: minute + MINUTE_MS } };
}

/** Parses `{"<user>": {"perDay": n, "perMinute": n}, …}` (USER_BUDGETS); throws on anything else. */
export function parseBudgetOverrides(json: string): Record<string, Partial<BudgetLimits>> {
  if (!json.trim()) return {};
  const v: unknown = JSON.parse(json);
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error('must be a JSON object of user id → {perDay, perMinute}');
  const out: Record<string, Partial<BudgetLimits>> = {};
  for (const [user, limits] of Object.entries(v as Record<string, unknown>)) {
    if (typeof limits !== 'object' || limits === null || Array.isArray(limits)) throw new Error(`"${user}" must map to {perDay, perMinute}`);
    const o: Partial<BudgetLimits> = {};
    for (const [k, n] of Object.entries(limits as Record<string, unknown>)) {
      if (k !== 'perDay' && k !== 'perMinute') throw new Error(`"${user}": unknown field ${k} (perDay, perMinute)`);
      if (typeof n !== 'number' || !Number.isInteger(n) || n < 0) throw new Error(`"${user}".${k} must be an integer >= 0`);
      o[k] = n;
    }
    out[user] = o;
  }
  return out;
}
