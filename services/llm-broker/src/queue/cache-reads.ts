// The tokens a provider will read from its prompt cache, foreseen: a provider that leaves them out
// of its input-token limit (Anthropic's ITPM) admits, a minute, as many prompts as their uncached
// tokens allow. A reservation of every prompt token would use a fraction of that (at 95 % of a
// prompt cached, a twentieth), and a refund at the call's end comes too late for the pacing. So the
// broker reserves the prompt less the tokens of the longest prefix it has seen the provider keep,
// and settles with what the provider billed.
//
// The provider's cache is one for every replica: what one replica learnt is written to Redis, and a
// replica looks there for the prefixes of a call it does not hold (a conversation's turns spread
// over replicas by a balancer read each other's prefixes). Without Redis, each replica learns alone.
import { withTimeout, type Redis } from '@agent-mesh/common';
import type { CachePrefix } from '../upstream/provider';

interface Held {
  tokens: number;
  until: number;
  ttlMs: number;
  /** When the broker learnt it: a call sent before then may not have found it. */
  learntAt: number;
}

/** Where the replicas share what they learnt: a key per prefix, under its upstream's hash tag (one slot for a Cluster's MGET). */
export interface SharedForecast {
  redis: Redis;
  prefix: string;
  /** Longest a call waits for Redis before going on with what its replica knows. @default 100 */
  timeoutMs?: number;
  /** A failed Redis command (the forecast goes on without it). */
  onError?: (err: unknown) => void;
}

/** The prefixes a provider holds in its prompt cache, as its answers said: each one's tokens, and when it drops it. */
export class CacheReadForecast {
  private readonly held = new Map<string, Held>();
  /** Earlier breakpoints once held by their count, and not read when expected: held again only when reported. */
  private readonly refuted = new Set<string>();
  /** What a learn changed, for Redis: a prefix held (its entry) or forgotten (undefined). */
  private changes: [string, Held | undefined][] = [];

  constructor(
    private readonly now: () => number = Date.now,
    /** Time as the provider keeps it (LLM_TIME_SCALE): a prefix's lifetime is scaled by it. */
    private readonly timeScale = 1,
    /** The most prefixes remembered (the oldest used is forgotten first). */
    private readonly max = 10_000,
    private readonly shared?: SharedForecast,
  ) {}

  /**
   * Takes from Redis what other replicas learnt of a call's prefixes that this one does not hold
   * (before `expected`); resolves, without them, when Redis fails or is slow.
   */
  async refresh(scope: string, prefixes: readonly CachePrefix[]): Promise<void> {
    if (!this.shared || prefixes.length === 0) return;
    const t = this.now();
    const heldUntil = (k: string) => this.held.get(`${scope}\0${k}`)?.until ?? 0;
    const keys = [...new Set(prefixes.flatMap((p) => [p.key, ...p.lookback]))].filter((k) => heldUntil(k) <= t);
    if (keys.length === 0) return;
    try {
      const values = await withTimeout(this.shared.redis.mget(...keys.map((k) => this.redisKey(scope, k))), this.shared.timeoutMs ?? 100, 'redis');
      values.forEach((v, i) => {
        if (v === null) return;
        const [tokens, until, ttlMs, learntAt] = JSON.parse(v) as number[];
        if (until! > Math.max(t, heldUntil(keys[i]!))) this.set(`${scope}\0${keys[i]}`, { tokens: tokens!, until: until!, ttlMs: ttlMs!, learntAt: learntAt! });
      });
    } catch (err) {
      this.shared.onError?.(err);
    }
  }

  /**
   * The tokens the provider will read from its cache for a call with these breakpoints: the
   * longest prefix it holds that ends at one of them or at a boundary it looks back to.
   */
  expected(scope: string, prefixes: readonly CachePrefix[]): number {
    const t = this.now();
    let tokens = 0;
    for (const p of prefixes) {
      tokens = Math.max(tokens, this.tokensAt(scope, p.key, t));
      for (const k of p.lookback) tokens = Math.max(tokens, this.tokensAt(scope, k, t));
    }
    return tokens;
  }

  /**
   * After an answer that read `read` tokens from the cache and wrote `written`: a prefix expected
   * longer than the read, and known before the call was sent, is not held (the provider dropped it,
   * or never kept it: an earlier breakpoint so refuted is not inferred again); the one read is
   * renewed; the provider holds the call's last prefix (`read + written` tokens) and every earlier
   * one it could have cached, each until its lifetime, counted from `sentAt` (the provider's clock
   * started no later).
   */
  learn(scope: string, prefixes: readonly CachePrefix[], read: number, written: number, sentAt: number): void {
    this.update(scope, prefixes, read, written, sentAt);
    if (this.shared && this.changes.length > 0) void this.publish(scope, this.changes);
    this.changes = [];
  }

  private update(scope: string, prefixes: readonly CachePrefix[], read: number, written: number, sentAt: number): void {
    const last = prefixes.at(-1);
    if (!last) return;
    for (const p of prefixes) {
      for (const k of [p.key, ...p.lookback]) {
        const key = `${scope}\0${k}`;
        const e = this.held.get(key);
        if (e && e.tokens > read && e.learntAt <= sentAt) this.forget(key, e.until > sentAt);
        else if (e && read > 0 && e.tokens === read) this.hold(key, read, sentAt, e.ttlMs);
      }
    }
    const cached = read + written;
    if (cached <= 0) return;
    this.hold(`${scope}\0${last.key}`, cached, sentAt, last.ttlMs);
    this.refuted.delete(`${scope}\0${last.key}`);
    for (const p of prefixes.slice(0, -1)) {
      const key = `${scope}\0${p.key}`;
      if (this.refuted.has(key)) continue;
      const tokens = this.held.get(key)?.tokens ?? p.tokens();
      if (tokens >= p.minTokens && tokens <= cached) this.hold(key, tokens, sentAt, p.ttlMs);
    }
  }

  private tokensAt(scope: string, key: string, t: number): number {
    const e = this.held.get(`${scope}\0${key}`);
    return e && e.until > t ? e.tokens : 0;
  }

  private hold(key: string, tokens: number, sentAt: number, ttlMs: number): void {
    const e = { tokens, until: sentAt + ttlMs * this.timeScale, ttlMs, learntAt: this.now() };
    this.set(key, e);
    this.changes.push([key, e]);
  }

  private set(key: string, e: Held): void {
    this.held.delete(key);
    this.held.set(key, e);
    if (this.held.size > this.max) this.held.delete(this.held.keys().next().value!);
  }

  private redisKey(scope: string, key: string): string {
    return `${this.shared!.prefix}:{${scope}}:${key}`;
  }

  /** Writes what a learn changed: each prefix held, until its lifetime ends; each forgotten, deleted. */
  private async publish(scope: string, changes: [string, Held | undefined][]): Promise<void> {
    const { redis, timeoutMs = 100, onError } = this.shared!;
    const pipeline = redis.pipeline();
    const t = this.now();
    for (const [key, e] of changes) {
      const k = this.redisKey(scope, key.slice(scope.length + 1));
      if (!e) pipeline.del(k);
      else if (e.until > t) pipeline.set(k, JSON.stringify([e.tokens, e.until, e.ttlMs, e.learntAt]), 'PX', Math.ceil(e.until - t));
    }
    try {
      const results = await withTimeout(pipeline.exec(), timeoutMs, 'redis');
      const failed = results?.find(([err]) => err);
      if (failed) onError?.(failed[0]);
    } catch (err) {
      onError?.(err);
    }
  }

  /** A prefix the provider's answer showed it does not hold: before its lifetime's end, a refutation. */
  private forget(key: string, refuted: boolean): void {
    this.held.delete(key);
    this.changes.push([key, undefined]);
    if (!refuted) return;
    this.refuted.add(key);
    if (this.refuted.size > this.max) this.refuted.delete(this.refuted.values().next().value!);
  }
}
