// Every variable the broker reads, with its default and validation.
import { config } from '@agent-mesh/common';

export type Env = Record<string, string | undefined>;

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

function upTo(max: number, n: number, name: string): number {
  if (n > max) throw new config.ConfigError(`${name} must be <= ${max}, got ${n}`);
  return n;
}

function tpmAccounting(value: string): 'settle' | 'reserve' {
  if (value !== 'settle' && value !== 'reserve') throw new config.ConfigError(`LLM_TPM_ACCOUNTING must be settle or reserve, got "${value}"`);
  return value;
}

export function loadConfig(env: Env = process.env): BrokerConfig {
  const port = config.int({ env: 'LLM_BROKER_PORT', default: config.DEFAULT_PORTS.LLM_BROKER, min: 0, max: 65535 }, env);
  const baseUrl = config.str({ env: 'LLM_BASE_URL', default: 'http://127.0.0.1:8090/v1' }, env).replace(/\/+$/, '');
  try {
    new URL(baseUrl);
  } catch {
    throw new config.ConfigError(`LLM_BASE_URL must be a URL, got "${baseUrl}"`);
  }
  return {
    port,
    host: config.infra.bindHost('LLM_BROKER', env),
    shutdownGraceMs: config.infra.shutdownGraceMs(env),
    metricsPort: config.int({ env: 'METRICS_PORT', default: config.metricsPortFor(port || config.DEFAULT_PORTS.LLM_BROKER), min: 0, max: 65535 }, env),
    redisUrl: config.infra.redisUrl(env),
    baseUrl,
    apiKey: config.str({ env: 'LLM_API_KEY', default: '' }, env),
    model: config.str({ env: 'LLM_MODEL', default: 'emulator-1' }, env),
    maxConcurrent: config.int({ env: 'LLM_MAX_CONCURRENT', default: 50, min: 0 }, env),
    rpm: config.int({ env: 'LLM_RPM', default: 500, min: 0 }, env),
    tpm: config.int({ env: 'LLM_TPM', default: 0, min: 0 }, env),
    defaultMaxTokens: config.int({ env: 'LLM_DEFAULT_MAX_TOKENS', default: 1024, min: 1 }, env),
    priorities: parsePriorities(config.str({ env: 'LLM_PRIORITIES', default: DEFAULT_PRIORITIES }, env)),
    queueMax: config.int({ env: 'LLM_QUEUE_MAX', default: 1000, min: 1 }, env),
    leaseMs: config.int({ env: 'LLM_LEASE_MS', default: 15_000, min: 100 }, env),
    requestTimeoutMs: config.int({ env: 'LLM_REQUEST_TIMEOUT_MS', default: 120_000, min: 100 }, env),
    streamIdleTimeoutMs: config.int({ env: 'LLM_STREAM_IDLE_TIMEOUT_MS', default: 30_000, min: 10 }, env),
    tpmAccounting: tpmAccounting(config.str({ env: 'LLM_TPM_ACCOUNTING', default: 'settle' }, env)),
    timeScale: config.num({ env: 'LLM_TIME_SCALE', default: 1, min: 0.001 }, env),
    breaker: {
      errorPercent: upTo(100, config.num({ env: 'LLM_BREAKER_ERROR_PERCENT', default: 50, min: 0 }, env), 'LLM_BREAKER_ERROR_PERCENT'),
      volumeThreshold: config.int({ env: 'LLM_BREAKER_VOLUME_THRESHOLD', default: 10, min: 1 }, env),
      resetMs: config.int({ env: 'LLM_BREAKER_RESET_MS', default: 5_000, min: 10 }, env),
      timeoutMs: config.int({ env: 'LLM_BREAKER_TIMEOUT_MS', default: 30_000, min: 10 }, env),
      windowMs: config.int({ env: 'LLM_BREAKER_WINDOW_MS', default: 10_000, min: 100 }, env),
    },
    cache: {
      ttlMs: Math.round(1000 * config.num({ env: 'LLM_CACHE_TTL_S', default: 3600, min: 0 }, env)),
      staleMs: Math.round(1000 * config.num({ env: 'LLM_CACHE_STALE_S', default: 86_400, min: 0 }, env)),
      lockMs: config.int({ env: 'LLM_CACHE_LOCK_MS', default: 3000, min: 100 }, env),
      waitMs: config.int({ env: 'LLM_CACHE_WAIT_MS', default: 60_000, min: 0 }, env),
    },
    retry: {
      max: config.int({ env: 'LLM_RETRY_MAX', default: 3, min: 0 }, env),
      budgetRatio: upTo(1, config.num({ env: 'LLM_RETRY_BUDGET_RATIO', default: 0.1, min: 0 }, env), 'LLM_RETRY_BUDGET_RATIO'),
      budgetBurst: config.int({ env: 'LLM_RETRY_BUDGET_BURST', default: 10, min: 0 }, env),
    },
  };
}
