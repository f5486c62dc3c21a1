// Whether the LLM is paused (provider 429s paused the brokers): every upstream of the brokers'
// LLM_UPSTREAMS paused at once — while one is not, a run's call falls back to it (its calls name no
// model, so any upstream may serve them). Read from the upstreams' pause keys in Redis, all in one
// round trip (their commands sent together; per node in a cluster, where the keys are in
// different slots), at most once per `everyMs`. While it is, tool results are kept longer, as for a
// tool's own open breaker: runs wait for the LLM, and what they looked up must not expire meanwhile.
import type { Redis } from '@agent-mesh/common';

export class LlmPause {
  private checkedAt = -Infinity;
  private paused = false;
  private reading?: Promise<boolean>;

  constructor(
    private readonly redis: Redis,
    /** The upstreams' pause keys (llmPauseKeys of LLM_UPSTREAMS). */
    private readonly keys: readonly string[],
    private readonly everyMs = 1_000,
  ) {}

  /** True while every upstream is paused; false when unknown (Redis trouble). */
  isPaused(): Promise<boolean> {
    if (Date.now() - this.checkedAt < this.everyMs) return Promise.resolve(this.paused);
    this.reading ??= Promise.all(this.keys.map((k) => this.redis.pttl(k)))
      .then((left) => left.length > 0 && left.every((ms) => ms > 0), () => false)
      .then((paused) => {
        this.paused = paused;
        this.checkedAt = Date.now();
        this.reading = undefined;
        return paused;
      });
    return this.reading;
  }
}
