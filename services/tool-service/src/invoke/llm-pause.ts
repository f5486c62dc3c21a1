// Whether the LLM upstream is paused (a provider 429 paused every broker): the brokers' pause key
// in Redis, read at most once per `everyMs`. While it is, tool results are kept longer, as for a
// tool's own open breaker: runs wait for the LLM, and what they looked up must not expire meanwhile.
import { GlobalLimiter, LLM_QUOTA_KEY_PREFIX, type Redis } from '@agent-mesh/common';

export class LlmPause {
  private readonly key = GlobalLimiter.pauseKey(LLM_QUOTA_KEY_PREFIX);
  private checkedAt = -Infinity;
  private paused = false;
  private reading?: Promise<boolean>;

  constructor(
    private readonly redis: Redis,
    private readonly everyMs = 1_000,
  ) {}

  /** True while the brokers are paused; false when unknown (Redis trouble). */
  isPaused(): Promise<boolean> {
    if (Date.now() - this.checkedAt < this.everyMs) return Promise.resolve(this.paused);
    this.reading ??= this.redis
      .pttl(this.key)
      .then((ms) => ms > 0, () => false)
      .then((paused) => {
        this.paused = paused;
        this.checkedAt = Date.now();
        this.reading = undefined;
        return paused;
      });
    return this.reading;
  }
}
