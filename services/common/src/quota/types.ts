// The admission contract shared by the Redis-backed limiter and its in-process fallback.

export interface AdmissionLimits {
  /** Calls in flight at once; 0/undefined = unlimited. */
  maxConcurrent?: number;
  /** Requests per (scaled) minute; 0/undefined = unlimited. */
  requestsPerMinute?: number;
  /** Tokens per (scaled) minute; 0/undefined = unlimited. */
  tokensPerMinute?: number;
}

export interface LimiterOptions extends AdmissionLimits {
  /** A lease not renewed for this long is freed. @default 15000 */
  leaseMs?: number;
  /** Multiplies the 60 s window (0.1 → a 6 s "minute"), for benchmarks. @default 1 */
  windowScale?: number;
  /**
   * Real milliseconds (not scaled) the window is counted longer than the provider's: room for the
   * spread of delays between admission here and arrival at the provider, whose window is counted
   * on its own clock (see gcra.ts). @default 0
   */
  windowMarginMs?: number;
  /** Share of each rate limit that may arrive as one burst (see gcra.ts). @default 0.02 */
  burstFraction?: number;
  /**
   * Whether TPM is paced (GCRA, see gcra.ts) besides being counted exactly over the window. Off,
   * the window alone bounds it: for a limit whose provider takes a burst of the whole limit
   * (Anthropic's token buckets hold a minute's limit) and whose reservations are mostly given back
   * (max_tokens against an output limit). The pacing charges a reservation in full until it is
   * settled, so calls larger than its bucket would go one at a time. @default true
   */
  tokenPacing?: boolean;
  /** This replica's id in the heartbeat set. @default a random UUID */
  replicaId?: string;
  /** How often this replica refreshes its heartbeat. @default 2000 */
  heartbeatMs?: number;
  /**
   * The fewest replicas this one counts on sharing the quota with while Redis is unreachable: its
   * local share is the limit ÷ the larger of this and the live replicas it last read from the
   * heartbeats (none read: a replica that starts during an outage divides by this alone). Set to
   * the most replicas that can run, the shares add up to at most the limit even when replicas
   * start during an outage. @default 1
   */
  fallbackReplicas?: number;
  /**
   * Whether the local share may start with its pacing burst when Redis is lost. Off, it starts
   * empty, so that the replicas together stay within the window even if the shared burst was just
   * spent (upstream quotas); on, a user limited per replica is not refused at the outage's start
   * (request limits, where availability matters more than exactness). @default false
   */
  outageBurst?: boolean;
  /**
   * For this long after a replica's heartbeat expired without its leaving (ms; 0: never), the live
   * replicas keep its share of the limits free: it may be cut off from Redis and admitting on its
   * local share. A replica that loses Redis admits nothing locally until the others count it so.
   * A cut-off replica is covered only while it is one that beat at least once, and for this long.
   * @default 60000
   */
  departedHoldMs?: number;
  /** Longest wait for a Redis answer before falling back. @default 500 */
  redisTimeoutMs?: number;
  /**
   * Admissions taken ahead of calls (at most this many held, 0: none): while the quota stays at most
   * half used, a decision in Redis also admits calls not arrived yet, and those calls are admitted
   * here without a round trip (the admissions used are replaced in the background). Not under a
   * TPM limit. @default 0
   */
  admitAhead?: number;
  /** Calls within this of each other have the next one admitted ahead; one taken ahead and not used for this long is given back. @default 50 */
  admitAheadMs?: number;
  /**
   * For this long after a call (ms; 0: off), one admission ahead is kept fresh: renewed in the
   * background when half of `admitAheadMs` old, so that calls further apart than `admitAheadMs`
   * (a replica serving a few calls a second) are admitted without a round trip too. Costs at most
   * one renewal per half `admitAheadMs` while it lasts (none while calls use the admissions first). @default 0
   */
  admitAheadKeepMs?: number;
}

/** `otpm`: a separate limit of output tokens per minute (Anthropic's OTPM; see the llm-broker's OutputTokenAdmitter). */
export type RefusalReason = 'concurrency' | 'rpm' | 'tpm' | 'otpm' | 'paused';

export type AcquireResult =
  | { ok: true; lease: Lease }
  | { ok: false; reason: RefusalReason; retryAfterMs: number };

/** Whether one more request fits the RPM window now, or how long until it does. */
export type RequestDecision = { ok: true } | { ok: false; reason: 'rpm' | 'paused'; retryAfterMs: number };

export interface AcquireRequest {
  /** Who holds the lease (for logs; the lease id is unique anyway). */
  holder: string;
  /** TPM units to reserve (prompt + max completion). */
  tokens: number;
}

export interface Lease {
  readonly id: string;
  readonly holder: string;
  /** Tokens reserved at admission. */
  readonly tokens: number;
  /** 'shared' when held in Redis, 'local' when taken from the fallback. */
  readonly mode: 'shared' | 'local';
  /** Extends the lease; false when it had expired and could not be taken back. */
  renew(): Promise<boolean>;
  /** Renews on a timer (every leaseMs/3 by default) until released; returns a stop function. */
  keepAlive(intervalMs?: number): () => void;
  /**
   * Counts one more request under this lease against the RPM window (a retry: the provider counts
   * every request it receives, and the admission counted one): taken when the window has room
   * and no pause is on, else refused with the wait.
   */
  chargeRequest(): Promise<RequestDecision>;
  /** Gives one request back to the RPM window: the admission's, when no request of the lease reached the provider. */
  refundRequest(): Promise<void>;
  /**
   * Frees the slot and settles TPM to the actual usage (reserved when omitted). `outputTokens`: the
   * output tokens the provider counted, for a lease whose output tokens are limited on their own
   * (OTPM); a lease without such a limit ignores it.
   */
  release(opts?: { actualTokens?: number; outputTokens?: number }): Promise<void>;
  /** Frees the slot and gives every reserved token back (cancel, failure). */
  refund(): Promise<void>;
}

export const WINDOW_MS = 60_000;
