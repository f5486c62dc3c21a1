// Every environment variable the edge reads: its spec (type, default, description: the tables of
// docs/configuration.md are made from VARS) and its validation. Missing sign-in
// configuration (neither AUTH_JWT_SECRET nor AUTH_JWKS_URL) stops the process at start.
import { config, parseBudgetOverrides, type BudgetLimits, type RedisTarget } from '@agent-mesh/common';
import type { BrokerConfig } from '@agent-mesh/llm-broker/inline';
import type { AuthConfig } from './auth';
import { brokerModule } from './inline-broker';

type Env = config.Env;

export interface EdgeConfig {
  port: number;
  host: string;
  auth: AuthConfig;
  /** Per-user token budgets: defaults and per-user overrides (USER_BUDGETS). */
  budgets: { defaults: BudgetLimits; overrides: Record<string, Partial<BudgetLimits>>; okCacheMs: number };
  peers: { orchestrator: string; store: string; broker: string; tools: string };
  /** host:port of each gRPC service's metrics side channel (`/metrics.json`). */
  metricsAddrs: { orchestrator: string; store: string; broker: string; tools: string };
  redis: RedisTarget;
  sse: {
    maxStreams: number;
    heartbeatMs: number;
    /** Lengthen heartbeats under load. */
    heartbeatAdaptive?: boolean;
    bufferMaxEvents: number;
    bufferMaxBytes: number;
    /** `retry:` hint sent first on every stream. */
    retryMs: number;
  };
  maxMessageChars: number;
  bodyLimitBytes: number;
  /** The largest body of `/v1/chat/completions`, `/v1/responses` and `/v1/messages`. */
  v1BodyLimitBytes: number;
  rateLimitPerMinute: number;
  /** Share of the per-user limit that may arrive at once (GCRA burst). */
  rateLimitBurstFraction: number;
  /** Requests a user's limit may admit ahead while at most half the user's burst is spent (RATE_LIMIT_AHEAD). */
  rateLimitAhead: number;
  rateLimitAheadMs: number;
  /** The fewest edge replicas a user's limit is divided among while Redis is unreachable (RATE_LIMIT_FALLBACK_REPLICAS). */
  rateLimitFallbackReplicas: number;
  corsOrigins: string[];
  shutdownGraceMs: number;
  /** The broker's upstream model, listed by GET /v1/models ("upstream" = whatever the broker is configured with). */
  llmModel: string;
  /** Where the ops page's figures and the runs' traces are read (undefined: not configured, 503). */
  ops: { prometheusUrl?: string; jaegerQueryUrl?: string };
  /** EDGE_INLINE_BROKER: the broker this edge runs itself for `/v1` direct calls (its `LLM_*` variables); undefined: over gRPC. */
  inlineBroker?: BrokerConfig;
}

const { EDGE_PORT, EDGE_HOST, ORCHESTRATOR_ADDR, STORE_ADDR, LLM_BROKER_ADDR, TOOL_SERVICE_ADDR, SHUTDOWN_GRACE_MS } = config.sharedVars;
const metricsAddr = (service: string) => ({
  type: 'addr',
  defaultDoc: `the ${service}'s (first) host, its gRPC port + 1000`,
  doc: `the ${service}'s metrics side channel, for \`/api/metrics\``,
}) as const;

/** Every variable the edge reads. */
export const VARS = {
  EDGE_PORT, EDGE_HOST, ORCHESTRATOR_ADDR, STORE_ADDR, LLM_BROKER_ADDR, TOOL_SERVICE_ADDR, ...config.redisVars, SHUTDOWN_GRACE_MS,
  ...config.defineVars({
    AUTH_JWKS_URL: { type: 'string', default: '', defaultDoc: 'none', doc: "production sign-in: the identity provider's JWKS (RS256/ES256 tokens); needs `AUTH_ISSUER` and `AUTH_AUDIENCE`. One of `AUTH_JWKS_URL` / `AUTH_JWT_SECRET` is **required**" },
    AUTH_ISSUER: { type: 'string', defaultDoc: 'required with `AUTH_JWKS_URL`', doc: 'the `iss` tokens must carry' },
    AUTH_AUDIENCE: { type: 'string', defaultDoc: 'required with `AUTH_JWKS_URL`', doc: 'the `aud` tokens must carry' },
    AUTH_JWT_SECRET: { type: 'string', default: '', defaultDoc: 'none (`npm start` makes a dev secret in `.mesh/`)', doc: 'development sign-in (HS256); leave unset in production' },
    AUTH_CLOCK_TOLERANCE_S: { type: 'int', default: 30, min: 0, max: 600, doc: 'clock skew accepted on `exp`/`nbf`' },
    AUTH_JWKS_CACHE_MS: { type: 'int', default: 600_000, min: 1_000, doc: "how long the identity provider's keys are trusted" },
    AUTH_JWKS_COOLDOWN_MS: { type: 'int', default: 30_000, min: 0, doc: 'an unknown `kid` refetches the key set at most once per cooldown' },
    AUTH_JWKS_TIMEOUT_MS: { type: 'int', default: 5_000, min: 100, doc: 'timeout of a key set fetch' },
    USER_TOKENS_PER_DAY: { type: 'int', default: 1_000_000, min: 0, doc: 'tokens per user per UTC day (0: unlimited)' },
    USER_TOKENS_PER_MINUTE: { type: 'int', default: 0, min: 0, doc: 'tokens per user per minute (0: unlimited)' },
    USER_BUDGET_CACHE_MS: {
      type: 'int', default: 1_000, min: 0,
      doc: "a budget check that found at least half of every limited window left (and 10,000 tokens) is answered again for this long without reading Redis, and read again in the background by a check in the second half of that time (0: every check reads it); a user can overshoot a budget by what the calls begun meanwhile spend, as by the calls in flight when it runs out",
    },
    USER_BUDGETS: { type: 'string', default: '', defaultDoc: 'none', doc: 'JSON of per-user overrides, e.g. `{"alice":{"perDay":5000,"perMinute":1000}}`' },
    ORCHESTRATOR_METRICS_ADDR: metricsAddr('orchestrator'),
    STORE_METRICS_ADDR: metricsAddr('store'),
    LLM_BROKER_METRICS_ADDR: metricsAddr('llm-broker'),
    TOOL_SERVICE_METRICS_ADDR: metricsAddr('tool-service'),
    SSE_MAX_STREAMS: { type: 'int', default: 200, min: 1, doc: 'open SSE streams per edge; beyond: 503 with a queue token' },
    SSE_HEARTBEAT_MS: { type: 'int', default: 15_000, min: 100, doc: 'heartbeat interval (SSE comments)' },
    SSE_HEARTBEAT_ADAPTIVE: { type: 'bool', default: true, doc: 'lengthen heartbeats under load (1-minute load average > 4 → 20 s, > 8 → 30 s)' },
    SSE_BUFFER_MAX_EVENTS: { type: 'int', default: 1_000, min: 1, doc: 'events buffered per stream; a slower client is disconnected with `stream.overflow` and resumes' },
    SSE_BUFFER_MAX_BYTES: { type: 'int', default: 1_048_576, min: 1024, doc: 'bytes buffered per stream (1 MiB), as above' },
    SSE_RETRY_MS: { type: 'int', default: 2_000, min: 0, doc: 'the `retry:` hint sent first on every stream' },
    MAX_MESSAGE_CHARS: { type: 'int', default: 8_000, min: 1, doc: "longest user message" },
    BODY_LIMIT_BYTES: { type: 'int', default: 65_536, min: 1024, doc: 'largest request body (but the `/v1` completions: `V1_BODY_LIMIT_BYTES`)' },
    V1_BODY_LIMIT_BYTES: {
      type: 'int', default: 16_777_216, min: 1024, max: 67_108_864,
      doc: 'largest body of `/v1/chat/completions`, `/v1/responses`, `/v1/messages` and `/v1/embeddings` (16 MiB: a long chat, images as data: URLs, 2,048 texts to embed); at most 64 MiB, what the llm-broker takes in one gRPC message',
    },
    RATE_LIMIT_PER_MINUTE: { type: 'int', default: 120, min: 0, doc: 'requests per user per minute, shared by all edge replicas' },
    RATE_LIMIT_BURST_FRACTION: { type: 'number', default: 0.25, min: 0.01, doc: 'share of the per-user limit that may arrive at once (GCRA burst)' },
    RATE_LIMIT_AHEAD: {
      type: 'int', default: 8, min: 0,
      doc: "requests a user's limit may admit ahead, on this replica, while at most half the user's burst is spent: the user's next request is then let through without waiting for Redis (the admission it used is replaced in the background). 0: every request is decided in Redis",
    },
    RATE_LIMIT_AHEAD_MS: {
      type: 'int', default: 2_000, min: 1,
      doc: "a user whose requests come within this of each other has the next one admitted ahead; one not used for this long is given back. A request admitted ahead counts from its admission, so any minute may see up to this much more of the user's rate (2 s of 60: 3 %)",
    },
    RATE_LIMIT_FALLBACK_REPLICAS: {
      type: 'int', default: 1, min: 1,
      doc: "while Redis is unreachable each edge limits a user to its own share of the limit: the limit ÷ the larger of this and the edges it last saw (their heartbeats). An edge that starts during an outage has seen none and divides by this alone. Set it to the edge HPA's `maxReplicas` for a user's shares to add up to at most the limit even when edges start during an outage; each share is then smaller while Redis is away",
    },
    CORS_ORIGINS: { type: 'string', default: '', defaultDoc: 'empty (same origin only)', doc: 'comma-separated origins allowed cross-origin' },
    AUTH_OPS_SCOPE: { type: 'string', default: 'ops', doc: 'the scope a token must carry (`scope`, space-separated, or `scp`) to read the operations figures (`/api/ops/figures`)' },
    PROMETHEUS_URL: { type: 'string', default: '', defaultDoc: 'none (`npm start` sets it)', doc: "Prometheus' HTTP API (`http://host:9090`), for the ops page's figures; unset: `/api/ops/figures` answers 503" },
    JAEGER_QUERY_URL: { type: 'string', default: '', defaultDoc: 'none (`npm start` sets it)', doc: "Jaeger's query API (`http://host:16686`), for a run's trace; unset: `/api/runs/:runId/trace` answers 503" },
    EDGE_INLINE_BROKER: {
      type: 'bool', default: false,
      doc: "run the broker inside the edge for `/v1` calls of a direct model (no gRPC hop, one process less on the call's path): the edge then reads the broker's `LLM_*` and `REDIS_*` variables, holds the provider's key and takes its place in the same global queue and quota; agent runs still call the llm-broker service",
    },
    LLM_MODEL: { type: 'string', default: 'upstream', doc: 'the alias `GET /v1/models` lists for the broker\'s default model (beside the models of its upstreams; a call naming it gets the default)' },
  }),
};

export function loadConfig(env: Env = process.env): EdgeConfig {
  const read = <V extends config.Var>(v: V, fallback?: config.ValueOf<V>) => config.read(v, env, fallback);
  const peers = { orchestrator: read(VARS.ORCHESTRATOR_ADDR), store: read(VARS.STORE_ADDR), broker: read(VARS.LLM_BROKER_ADDR), tools: read(VARS.TOOL_SERVICE_ADDR) };
  // A metrics address defaults to the (first) peer's host with its gRPC port + 1000.
  const metricsAddr = (v: config.Var & { type: 'addr' }, peer: string) => {
    const [host, port] = splitHostPort(peer.split(',')[0]!.trim());
    return read(v, `${host}:${config.metricsPortFor(port)}`);
  };
  return {
    port: read(VARS.EDGE_PORT),
    host: read(VARS.EDGE_HOST),
    auth: loadAuth(read),
    budgets: {
      defaults: { perDay: read(VARS.USER_TOKENS_PER_DAY), perMinute: read(VARS.USER_TOKENS_PER_MINUTE) },
      overrides: budgetOverrides(read(VARS.USER_BUDGETS)),
      okCacheMs: read(VARS.USER_BUDGET_CACHE_MS),
    },
    peers,
    metricsAddrs: {
      orchestrator: metricsAddr(VARS.ORCHESTRATOR_METRICS_ADDR, peers.orchestrator),
      store: metricsAddr(VARS.STORE_METRICS_ADDR, peers.store),
      broker: metricsAddr(VARS.LLM_BROKER_METRICS_ADDR, peers.broker),
      tools: metricsAddr(VARS.TOOL_SERVICE_METRICS_ADDR, peers.tools),
    },
    redis: config.readRedisTarget(env),
    sse: {
      maxStreams: read(VARS.SSE_MAX_STREAMS),
      heartbeatMs: read(VARS.SSE_HEARTBEAT_MS),
      heartbeatAdaptive: read(VARS.SSE_HEARTBEAT_ADAPTIVE),
      bufferMaxEvents: read(VARS.SSE_BUFFER_MAX_EVENTS),
      bufferMaxBytes: read(VARS.SSE_BUFFER_MAX_BYTES),
      retryMs: read(VARS.SSE_RETRY_MS),
    },
    maxMessageChars: read(VARS.MAX_MESSAGE_CHARS),
    bodyLimitBytes: read(VARS.BODY_LIMIT_BYTES),
    v1BodyLimitBytes: read(VARS.V1_BODY_LIMIT_BYTES),
    rateLimitPerMinute: read(VARS.RATE_LIMIT_PER_MINUTE),
    rateLimitBurstFraction: read(VARS.RATE_LIMIT_BURST_FRACTION),
    rateLimitAhead: read(VARS.RATE_LIMIT_AHEAD),
    rateLimitAheadMs: read(VARS.RATE_LIMIT_AHEAD_MS),
    rateLimitFallbackReplicas: read(VARS.RATE_LIMIT_FALLBACK_REPLICAS),
    corsOrigins: config.list(read(VARS.CORS_ORIGINS)),
    shutdownGraceMs: read(VARS.SHUTDOWN_GRACE_MS),
    llmModel: read(VARS.LLM_MODEL),
    ops: { prometheusUrl: httpUrl(VARS.PROMETHEUS_URL, read(VARS.PROMETHEUS_URL)), jaegerQueryUrl: httpUrl(VARS.JAEGER_QUERY_URL, read(VARS.JAEGER_QUERY_URL)) },
    // LLM_MODEL=upstream is the edge's alias for the broker's own default, not a model to call.
    inlineBroker: read(VARS.EDGE_INLINE_BROKER) ? brokerModule().loadConfig(read(VARS.LLM_MODEL) === 'upstream' ? { ...env, LLM_MODEL: undefined } : env) : undefined,
  };
}

/** An optional http(s) base URL without a trailing slash; empty: undefined. */
function httpUrl(v: config.Var, value: string): string | undefined {
  if (!value) return undefined;
  if (!/^https?:\/\/[^\s/]+(\/[^\s]*)?$/.test(value)) throw new config.ConfigError(`${v.env} must be an http(s) URL, got "${value}"`);
  return value.replace(/\/+$/, '');
}

function splitHostPort(addr: string): [string, number] {
  const i = addr.lastIndexOf(':');
  return [addr.slice(0, i), Number(addr.slice(i + 1))];
}

function loadAuth(read: <V extends config.Var>(v: V) => config.ValueOf<V>): AuthConfig {
  const jwtSecret = read(VARS.AUTH_JWT_SECRET) || undefined;
  const jwksUrl = read(VARS.AUTH_JWKS_URL) || undefined;
  if (!jwtSecret && !jwksUrl) {
    throw new config.ConfigError('missing required environment variable AUTH_JWKS_URL (production: the identity provider\'s JWKS) or AUTH_JWT_SECRET (development: HS256 secret)');
  }
  if (jwksUrl && !/^https?:\/\/[^\s]+$/.test(jwksUrl)) throw new config.ConfigError(`AUTH_JWKS_URL must be an http(s) URL, got "${jwksUrl}"`);
  return {
    jwtSecret,
    jwksUrl,
    issuer: jwksUrl ? read(VARS.AUTH_ISSUER) : undefined,
    audience: jwksUrl ? read(VARS.AUTH_AUDIENCE) : undefined,
    opsScope: read(VARS.AUTH_OPS_SCOPE),
    clockToleranceS: read(VARS.AUTH_CLOCK_TOLERANCE_S),
    jwksCacheMs: read(VARS.AUTH_JWKS_CACHE_MS),
    jwksCooldownMs: read(VARS.AUTH_JWKS_COOLDOWN_MS),
    jwksTimeoutMs: read(VARS.AUTH_JWKS_TIMEOUT_MS),
  };
}

function budgetOverrides(json: string) {
  try {
    return parseBudgetOverrides(json);
  } catch (err) {
    throw new config.ConfigError(`USER_BUDGETS ${(err as Error).message}`);
  }
}
