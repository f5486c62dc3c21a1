// Every variable the broker reads, with its default and validation.
import { config } from '@agent-mesh/common';

export type Env = Record<string, string | undefined>;

export interface BrokerConfig {
  port: number;
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
  /** Scales the quota windows (0.1 → a 6 s minute), for benchmarks. */
  timeScale: number;
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
    timeScale: config.num({ env: 'LLM_TIME_SCALE', default: 1, min: 0.001 }, env),
  };
}
