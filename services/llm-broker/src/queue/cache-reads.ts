// The tokens a provider will read from its prompt cache, foreseen: a provider that leaves them out
// of its input-token limit (Anthropic's ITPM) admits, a minute, as many prompts as their uncached
// tokens allow. A reservation of every prompt token would use a fraction of that (at 95 % of a
// prompt cached, a twentieth), and a refund at the call's end comes too late for the pacing. So the
// broker reserves the prompt less the tokens of the longest prefix it has seen the provider keep,
// and settles with what the provider billed.
import type { CachePrefix } from '../upstream/provider';

/** The shortest prefix Anthropic caches (its larger models; shorter ones are never read). */
export const MIN_CACHED_TOKENS = 1024;

/** The prefixes a provider holds in its prompt cache, as its answers said: each one's tokens, and when it drops it. */
export class CacheReadForecast {
  private readonly held = new Map<string, { tokens: number; until: number }>();

  constructor(
    private readonly now: () => number = Date.now,
    /** Time as the provider keeps it (LLM_TIME_SCALE): a prefix's lifetime is scaled by it. */
    private readonly timeScale = 1,
    /** The most prefixes remembered (the oldest used is forgotten first). */
    private readonly max = 10_000,
  ) {}

  /** The tokens the provider will read from its cache for a call with these breakpoints: the longest prefix it holds. */
  expected(scope: string, prefixes: readonly CachePrefix[]): number {
    const t = this.now();
    let tokens = 0;
    for (const p of prefixes) {
      const e = this.held.get(`${scope}\0${p.key}`);
      if (e && e.until > t) tokens = Math.max(tokens, e.tokens);
    }
    return tokens;
  }

  /**
   * After an answer that read `read` tokens from the cache and wrote `written`: the provider holds
   * the call's last prefix (`read + written` tokens) and every earlier one it could have cached,
   * each until its lifetime, counted from `sentAt` (the provider's clock started no later).
   */
  learn(scope: string, prefixes: readonly CachePrefix[], read: number, written: number, sentAt: number): void {
    const cached = read + written;
    const last = prefixes.at(-1);
    if (cached <= 0 || !last) return;
    this.hold(`${scope}\0${last.key}`, cached, sentAt + last.ttlMs * this.timeScale);
    for (const p of prefixes.slice(0, -1)) {
      const tokens = this.held.get(`${scope}\0${p.key}`)?.tokens ?? p.tokens();
      if (tokens >= MIN_CACHED_TOKENS && tokens <= cached) this.hold(`${scope}\0${p.key}`, tokens, sentAt + p.ttlMs * this.timeScale);
    }
  }

  private hold(key: string, tokens: number, until: number): void {
    this.held.delete(key);
    this.held.set(key, { tokens, until });
    if (this.held.size > this.max) this.held.delete(this.held.keys().next().value!);
  }
}
