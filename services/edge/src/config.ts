// Every environment variable the edge reads, with its default and validation. Missing sign-in
// configuration (neither AUTH_JWT_SECRET nor AUTH_JWKS_URL) stops the process at start.
import { config, parseBudgetOverrides, type BudgetLimits } from '@agent-mesh/common';
import type { AuthConfig } from './auth';

type Env = Record<string, string | undefined>;

export interface EdgeConfig {
  port: number;
  host: string;
  auth: AuthConfig;
  /** Per-user token budgets: defaults and per-user overrides (USER_BUDGETS). */
  budgets: { defaults: BudgetLimits; overrides: Record<string, Partial<BudgetLimits>> };
  peers: { orchestrator: string; store: string; broker: string; tools: string };
  /** host:port of each gRPC service's metrics side channel (`/metrics.json`). */
  metricsAddrs: { orchestrator: string; store: string; broker: string; tools: string };
  redisUrl: string;
  sse: {
    maxStreams: number;
    heartbeatMs: number;
    /** Lengthen heartbeats under load (1-minute load average > 4 → 20 s, > 8 → 30 s). @default true */
    heartbeatAdaptive?: boolean;
    bufferMaxEvents: number;
    bufferMaxBytes: number;
    /** `retry:` hint sent first on every stream. */
    retryMs: number;
  };
  maxMessageChars: number;
  bodyLimitBytes: number;
  rateLimitPerMinute: number;
  /** Share of the per-user limit that may arrive at once (GCRA burst). */
  rateLimitBurstFraction: number;
  corsOrigins: string[];
  shutdownGraceMs: number;
  /** The broker's upstream model, listed by GET /v1/models ("upstream" = whatever the broker is configured with). */
  llmModel: string;
}

function metricsAddr(env: Env, name: 'ORCHESTRATOR' | 'STORE' | 'LLM_BROKER' | 'TOOL_SERVICE', peer: string): string {
  // Default: the (first) peer's host with its gRPC port + 1000 (config.metricsPortFor).
  const [host, port] = splitHostPort(peer.split(',')[0]!.trim());
  return config.addr({ env: `${name}_METRICS_ADDR`, default: `${host}:${config.metricsPortFor(port)}` }, env);
}

function splitHostPort(addr: string): [string, number] {
  const i = addr.lastIndexOf(':');
  return [addr.slice(0, i), Number(addr.slice(i + 1))];
}

export function loadConfig(env: Env = process.env): EdgeConfig {
  const peers = {
    orchestrator: config.infra.peer('ORCHESTRATOR', env),
    store: config.infra.peer('STORE', env),
    broker: config.infra.peer('LLM_BROKER', env),
    tools: config.infra.peer('TOOL_SERVICE', env),
  };
  return {
    port: config.int({ env: 'EDGE_PORT', default: config.DEFAULT_PORTS.EDGE, min: 0, max: 65535 }, env),
    host: config.infra.bindHost('EDGE', env),
    auth: loadAuth(env),
    budgets: {
      defaults: {
        perDay: config.int({ env: 'USER_TOKENS_PER_DAY', default: 1_000_000, min: 0 }, env),
        perMinute: config.int({ env: 'USER_TOKENS_PER_MINUTE', default: 0, min: 0 }, env),
      },
      overrides: budgetOverrides(config.str({ env: 'USER_BUDGETS', default: '' }, env)),
    },
    peers,
    metricsAddrs: {
      orchestrator: metricsAddr(env, 'ORCHESTRATOR', peers.orchestrator),
      store: metricsAddr(env, 'STORE', peers.store),
      broker: metricsAddr(env, 'LLM_BROKER', peers.broker),
      tools: metricsAddr(env, 'TOOL_SERVICE', peers.tools),
    },
    redisUrl: config.infra.redisUrl(env),
    sse: {
      maxStreams: config.int({ env: 'SSE_MAX_STREAMS', default: 200, min: 1 }, env),
      heartbeatMs: config.int({ env: 'SSE_HEARTBEAT_MS', default: 15_000, min: 100 }, env),
      heartbeatAdaptive: config.bool({ env: 'SSE_HEARTBEAT_ADAPTIVE', default: true }, env),
      bufferMaxEvents: config.int({ env: 'SSE_BUFFER_MAX_EVENTS', default: 1_000, min: 1 }, env),
      bufferMaxBytes: config.int({ env: 'SSE_BUFFER_MAX_BYTES', default: 1_048_576, min: 1024 }, env),
      retryMs: config.int({ env: 'SSE_RETRY_MS', default: 2_000, min: 0 }, env),
    },
    maxMessageChars: config.int({ env: 'MAX_MESSAGE_CHARS', default: 8_000, min: 1 }, env),
    bodyLimitBytes: config.int({ env: 'BODY_LIMIT_BYTES', default: 65_536, min: 1024 }, env),
    rateLimitPerMinute: config.int({ env: 'RATE_LIMIT_PER_MINUTE', default: 120, min: 0 }, env),
    rateLimitBurstFraction: config.num({ env: 'RATE_LIMIT_BURST_FRACTION', default: 0.25, min: 0.01 }, env),
    corsOrigins: config
      .str({ env: 'CORS_ORIGINS', default: '' }, env)
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean),
    shutdownGraceMs: config.infra.shutdownGraceMs(env),
    llmModel: config.str({ env: 'LLM_MODEL', default: 'upstream' }, env),
  };
}

function loadAuth(env: Env): AuthConfig {
  const jwtSecret = config.str({ env: 'AUTH_JWT_SECRET', default: '' }, env) || undefined;
  const jwksUrl = config.str({ env: 'AUTH_JWKS_URL', default: '' }, env) || undefined;
  if (!jwtSecret && !jwksUrl) {
    throw new config.ConfigError('missing required environment variable AUTH_JWKS_URL (production: the identity provider\'s JWKS) or AUTH_JWT_SECRET (development: HS256 secret)');
  }
  if (jwksUrl && !/^https?:\/\/[^\s]+$/.test(jwksUrl)) throw new config.ConfigError(`AUTH_JWKS_URL must be an http(s) URL, got "${jwksUrl}"`);
  const jwks = (name: string) => (jwksUrl ? config.str({ env: name, doc: 'required with AUTH_JWKS_URL' }, env) : undefined);
  return {
    jwtSecret,
    jwksUrl,
    issuer: jwks('AUTH_ISSUER'),
    audience: jwks('AUTH_AUDIENCE'),
    clockToleranceS: config.int({ env: 'AUTH_CLOCK_TOLERANCE_S', default: 30, min: 0, max: 600 }, env),
    jwksCacheMs: config.int({ env: 'AUTH_JWKS_CACHE_MS', default: 600_000, min: 1_000 }, env),
    jwksCooldownMs: config.int({ env: 'AUTH_JWKS_COOLDOWN_MS', default: 30_000, min: 0 }, env),
    jwksTimeoutMs: config.int({ env: 'AUTH_JWKS_TIMEOUT_MS', default: 5_000, min: 100 }, env),
  };
}

function budgetOverrides(json: string) {
  try {
    return parseBudgetOverrides(json);
  } catch (err) {
    throw new config.ConfigError(`USER_BUDGETS ${(err as Error).message}`);
  }
}
