// Every environment variable the broker reads: its spec (type, default, description: the README's
// tables are made from VARS) and its validation.
import { config } from '@agent-mesh/common';

export type Env = config.Env;

export interface BrokerConfig {
  port: number;
  /** Interface of the gRPC and metrics listeners (LLM_BROKER_HOST). */
  host: string;
  shutdownGraceMs: number;
  metricsPort: number;
  redisUrl: string;
  /** OpenAI-compatible base URL, without the trailing `/chat/completions`. */
  baseUrl: string;
  /** Bearer key for the provider; empty = no Authorization header. Never logged. */
  apiKey: string;
  model: string;
  maxConcurrent: number;
  rpm: number;
  /** 0 = unlimited (the provider's own limit then applies). */
  tpm: number;
  defaultMaxTokens: number;
  /** Agent role → priority (higher first). */
  priorities: Record<string, number>;
  queueMax: number;
  leaseMs: number;
  requestTimeoutMs: number;
  /** Longest silence inside a streamed answer before the call is aborted as stalled. */
  streamIdleTimeoutMs: number;
  /** `settle`: usage replaces the TPM reservation at the end; `reserve`: prompt + max_tokens stay counted. */
  tpmAccounting: 'settle' | 'reserve';
  /** Scales the quota windows (0.1 → a 6 s minute), for benchmarks. */
  timeScale: number;
  breaker: {
    /** Failure percentage over the rolling window that opens it. */
    errorPercent: number;
    /** Calls in the rolling window before it may open at all. */
    volumeThreshold: number;
    /** Open this long before one half-open probe is let through. */
    resetMs: number;
    /** No response headers after this long counts as a failure (and aborts the attempt). */
    timeoutMs: number;
    /** Length of the rolling window the error rate is measured over. */
    windowMs: number;
  };
  /** The response cache, for calls that ask for it (GenerateRequest.cache). */
  cache: {
    /** How long an answer is served as a hit; 0 turns the cache off. */
    ttlMs: number;
    /** How long past the TTL an answer may still be served (stale) while the upstream is paused or its breaker open. */
    staleMs: number;
    /** Single-flight lock lease: a dead leader's followers take over after at most this. */
    lockMs: number;
    /** Longest a follower waits for the leader's answer before calling the upstream itself. */
    waitMs: number;
  };
  retry: {
    /** Retries per call at most (before the first token only). */
    max: number;
    /** Share of calls that may be retried: each call earns `ratio` of a retry. */
    budgetRatio: number;
    /** Retries that can be saved up (and the reserve at start). */
    budgetBurst: number;
  };
}

export const DEFAULT_PRIORITIES = 'host=4,reporter=3,critic=2,planner=2,direct=2';

export function parsePriorities(text: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const part of text.split(',').map((p) => p.trim()).filter(Boolean)) {
    const m = /^([a-z_-]+)=(-?\d+)$/i.exec(part);
    if (!m) throw new config.ConfigError(`LLM_PRIORITIES: expected role=number pairs, got "${part}"`);
    out[m[1]!.toLowerCase()] = Number(m[2]);
  }
  return out;
}

const { LLM_BROKER_PORT, LLM_BROKER_HOST, METRICS_PORT, SHUTDOWN_GRACE_MS, REDIS_URL } = config.sharedVars;

/** Every variable the broker reads. */
export const VARS = {
  LLM_BROKER_PORT, LLM_BROKER_HOST, METRICS_PORT, SHUTDOWN_GRACE_MS, REDIS_URL,
  ...config.defineVars({
    LLM_BASE_URL: { type: 'string', default: 'http://127.0.0.1:8090/v1', doc: 'the OpenAI-compatible upstream, without `/chat/completions` (the default: the emulator)' },
    LLM_API_KEY: { type: 'string', default: '', doc: 'bearer key for the provider; empty: no Authorization header. Never logged' },
    LLM_MODEL: { type: 'string', default: 'emulator-1', doc: 'the upstream model' },
    LLM_MAX_CONCURRENT: { type: 'int', default: 50, min: 0, doc: 'upstream calls in flight at most, all replicas together' },
    LLM_RPM: { type: 'int', default: 500, min: 0, doc: 'upstream requests per minute, all replicas together' },
    LLM_TPM: { type: 'int', default: 0, min: 0, doc: "upstream tokens per minute, all replicas together (0: the provider's own limit, unlimited here)" },
    LLM_DEFAULT_MAX_TOKENS: { type: 'int', default: 1024, min: 1, doc: '`max_tokens` of a call that sets none' },
    LLM_PRIORITIES: { type: 'string', default: DEFAULT_PRIORITIES, doc: 'agent role → priority in the queue (higher first)' },
    LLM_QUEUE_MAX: { type: 'int', default: 1000, min: 1, doc: 'queued calls per replica' },
    LLM_LEASE_MS: { type: 'int', default: 15_000, min: 100, doc: 'a concurrency slot of a dead broker frees after this' },
    LLM_REQUEST_TIMEOUT_MS: { type: 'int', default: 120_000, min: 100, doc: 'longest upstream call' },
    LLM_STREAM_IDLE_TIMEOUT_MS: { type: 'int', default: 30_000, min: 10, doc: 'a streamed answer silent for longer is aborted as stalled' },
    LLM_TPM_ACCOUNTING: {
      type: 'string', default: 'settle', values: ['settle', 'reserve'],
      doc: '`settle`: the provider bills usage and refunds the rest of the reservation when a call ends; `reserve`: prompt + `max_tokens` count at arrival and stay counted, as OpenAI documents',
    },
    LLM_TIME_SCALE: { type: 'number', default: 1, min: 0.001, doc: 'scales the quota windows (0.1: a 6 s minute), for benchmarks' },
    LLM_BREAKER_ERROR_PERCENT: { type: 'number', default: 50, min: 0, max: 100, doc: 'failure percentage over the rolling window that opens the breaker' },
    LLM_BREAKER_VOLUME_THRESHOLD: { type: 'int', default: 10, min: 1, doc: 'calls in the rolling window before the breaker may open at all' },
    LLM_BREAKER_RESET_MS: { type: 'int', default: 5_000, min: 10, doc: 'the breaker stays open this long before one half-open probe' },
    LLM_BREAKER_TIMEOUT_MS: { type: 'int', default: 30_000, min: 10, doc: 'no response headers after this long counts as a failure (and aborts the attempt)' },
    LLM_BREAKER_WINDOW_MS: { type: 'int', default: 10_000, min: 100, doc: 'the rolling window of the error rate' },
    LLM_CACHE_TTL_S: { type: 'number', default: 3600, min: 0, doc: 'how long a cached answer is served as a hit, for calls that ask for the response cache (0: the cache is off)' },
    LLM_CACHE_STALE_S: { type: 'number', default: 86_400, min: 0, doc: 'how long past its TTL an answer may still be served (stale) while the upstream is paused or its breaker open' },
    LLM_CACHE_LOCK_MS: { type: 'int', default: 3000, min: 100, doc: "single-flight lock lease: a dead leader's followers take over after at most this" },
    LLM_CACHE_WAIT_MS: { type: 'int', default: 60_000, min: 0, doc: "longest a follower waits for the leader's answer before calling the upstream itself" },
    LLM_RETRY_MAX: { type: 'int', default: 3, min: 0, doc: 'retries per call at most (before the first token only)' },
    LLM_RETRY_BUDGET_RATIO: { type: 'number', default: 0.1, min: 0, max: 1, doc: 'share of calls that may be retried: each call earns this much of a retry' },
    LLM_RETRY_BUDGET_BURST: { type: 'int', default: 10, min: 0, doc: 'retries that can be saved up (and the reserve at start)' },
  }),
};

export function loadConfig(env: Env = process.env): BrokerConfig {
  const read = <V extends config.Var>(v: V, fallback?: config.ValueOf<V>) => config.read(v, env, fallback);
  const port = read(VARS.LLM_BROKER_PORT);
  const baseUrl = read(VARS.LLM_BASE_URL).replace(/\/+$/, '');
  try {
    new URL(baseUrl);
  } catch {
    throw new config.ConfigError(`LLM_BASE_URL must be a URL, got "${baseUrl}"`);
  }
  return {
    port,
    host: read(VARS.LLM_BROKER_HOST),
    shutdownGraceMs: read(VARS.SHUTDOWN_GRACE_MS),
    metricsPort: read(VARS.METRICS_PORT, config.metricsPortFor(port || config.DEFAULT_PORTS.LLM_BROKER)),
    redisUrl: read(VARS.REDIS_URL),
    baseUrl,
    apiKey: read(VARS.LLM_API_KEY),
    model: read(VARS.LLM_MODEL),
    maxConcurrent: read(VARS.LLM_MAX_CONCURRENT),
    rpm: read(VARS.LLM_RPM),
    tpm: read(VARS.LLM_TPM),
    defaultMaxTokens: read(VARS.LLM_DEFAULT_MAX_TOKENS),
    priorities: parsePriorities(read(VARS.LLM_PRIORITIES)),
    queueMax: read(VARS.LLM_QUEUE_MAX),
    leaseMs: read(VARS.LLM_LEASE_MS),
    requestTimeoutMs: read(VARS.LLM_REQUEST_TIMEOUT_MS),
    streamIdleTimeoutMs: read(VARS.LLM_STREAM_IDLE_TIMEOUT_MS),
    tpmAccounting: read(VARS.LLM_TPM_ACCOUNTING) as BrokerConfig['tpmAccounting'],
    timeScale: read(VARS.LLM_TIME_SCALE),
    breaker: {
      errorPercent: read(VARS.LLM_BREAKER_ERROR_PERCENT),
      volumeThreshold: read(VARS.LLM_BREAKER_VOLUME_THRESHOLD),
      resetMs: read(VARS.LLM_BREAKER_RESET_MS),
      timeoutMs: read(VARS.LLM_BREAKER_TIMEOUT_MS),
      windowMs: read(VARS.LLM_BREAKER_WINDOW_MS),
    },
    cache: {
      ttlMs: Math.round(1000 * read(VARS.LLM_CACHE_TTL_S)),
      staleMs: Math.round(1000 * read(VARS.LLM_CACHE_STALE_S)),
      lockMs: read(VARS.LLM_CACHE_LOCK_MS),
      waitMs: read(VARS.LLM_CACHE_WAIT_MS),
    },
    retry: {
      max: read(VARS.LLM_RETRY_MAX),
      budgetRatio: read(VARS.LLM_RETRY_BUDGET_RATIO),
      budgetBurst: read(VARS.LLM_RETRY_BUDGET_BURST),
    },
  };
}
