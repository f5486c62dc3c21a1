// What stands between a request and the provider: a circuit breaker (opossum) around opening the
// stream, and retries before the first token with backoff, jitter and a retry budget.
import CircuitBreaker from 'opossum';
import { UpstreamError } from './provider';

export interface BreakerOptions {
  /** Failure percentage that opens the breaker. @default 50 */
  errorThresholdPercentage?: number;
  /** Calls in the rolling window before it may open. @default 10 */
  volumeThreshold?: number;
  /** How long it stays open before a half-open probe. @default 5000 */
  resetTimeoutMs?: number;
  /** Time to the response headers that counts as a failure. @default 30000 */
  timeoutMs?: number;
  /** Rolling window the error rate is measured over. @default 10000 */
  windowMs?: number;
}

export type BreakerState = 'closed' | 'open' | 'half_open';

/** Wraps `fn` in a breaker. Rate limiting (429) and caller cancels are not failures of the upstream. */
export function createBreaker<A extends unknown[], R>(
  fn: (...args: A) => Promise<R>,
  opts: BreakerOptions = {},
): CircuitBreaker<A, R> {
  return new CircuitBreaker(fn, {
    errorThresholdPercentage: opts.errorThresholdPercentage ?? 50,
    volumeThreshold: opts.volumeThreshold ?? 10,
    resetTimeout: opts.resetTimeoutMs ?? 5_000,
    timeout: opts.timeoutMs ?? 30_000,
    rollingCountTimeout: opts.windowMs ?? 10_000,
    rollingCountBuckets: 10,
    // true = "not a failure": 429s are handled by the global pause, aborts by the caller, and the
    // other 4xx are the request's fault (an unknown model asked through /v1 must not open the
    // breaker for everyone). Account problems (401/403, insufficient_quota) open it explicitly.
    errorFilter: (err: unknown) =>
      (err instanceof UpstreamError && (err.rateLimited || (err.status >= 400 && err.status < 500 && err.accountProblem === undefined))) ||
      (err as Error)?.name === 'AbortError' ||
      (err as { code?: string })?.code === 'UND_ERR_ABORTED',
  });
}

export function breakerState(b: CircuitBreaker): BreakerState {
  return b.opened ? 'open' : b.halfOpen ? 'half_open' : 'closed';
}

/**
 * Retries may add at most `ratio` of the requests' volume (a storm of failures never multiplies
 * the load): each request deposits `ratio`, each retry withdraws 1, the balance is capped at
 * `cap` (at least one retry, or deposits could never add up to one) and starts at `initial` — so
 * retries ≤ requests × ratio + initial, whatever fails.
 */
export class RetryBudget {
  private balance: number;
  private readonly cap: number;
  constructor(
    private readonly ratio = 0.1,
    cap = 10,
    initial = cap,
  ) {
    this.cap = Math.max(1, cap);
    this.balance = Math.min(this.cap, Math.max(0, initial));
  }

  /** Retries that could be spent right now (for tests and metrics). */
  get available(): number {
    return Math.floor(this.balance);
  }

  onRequest(): void {
    // Rounded so that ten deposits of 0.1 make one whole retry, not 0.9999999999999999.
    this.balance = Math.min(this.cap, Math.round((this.balance + this.ratio) * 1e9) / 1e9);
  }

  tryWithdraw(): boolean {
    if (this.balance < 1) return false;
    this.balance -= 1;
    return true;
  }

  /** A withdrawn retry that was not made after all (it found no place before its deadline). */
  giveBack(): void {
    this.balance = Math.min(this.cap, this.balance + 1);
  }
}

/** Exponential backoff with full jitter, at least `floorMs` (a provider's Retry-After). */
export function backoffMs(attempt: number, floorMs = 0, baseMs = 200, maxMs = 5_000, random = Math.random): number {
  const ceiling = Math.min(maxMs, baseMs * 2 ** attempt);
  return Math.max(floorMs, Math.round(random() * ceiling));
}
