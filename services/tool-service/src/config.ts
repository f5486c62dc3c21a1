// Every environment variable the tool-service reads, with its default and validation.
import path from 'node:path';
import { config } from '@agent-mesh/common';
import type { BreakerOptions } from './invoke/breaker';
import { ALL_SOURCES, type CorpusSource } from './search/corpus';
import type { ToolOverrides } from './tools/registry';

type Env = Record<string, string | undefined>;

export interface ToolServiceConfig {
  /** @default 50053 (TOOL_SERVICE_PORT) */
  port: number;
  /** Interface of the gRPC and metrics listeners. @default 127.0.0.1 (TOOL_SERVICE_HOST) */
  host: string;
  /** @default 10000 (SHUTDOWN_GRACE_MS) */
  shutdownGraceMs: number;
  /** @default port + 1000 (METRICS_PORT) */
  metricsPort: number;
  redisUrl: string;
  /** @default 127.0.0.1:50054 (STORE_ADDR) */
  storeAddr: string;
  /** SearxNG-compatible API; empty = the local corpus. (SEARCH_URL) */
  searchUrl: string;
  /** Hot search_web queries warmed every interval. (TOOL_PREWARM_QUERIES, comma-separated) */
  prewarmQueries: string[];
  /** @default 300000 (TOOL_PREWARM_INTERVAL_MS; 0 disables pre-warming) */
  prewarmIntervalMs: number;
  /** Most frequent recent queries warmed per round. @default 20 (TOOL_PREWARM_TOP) */
  prewarmTop: number;
  /** Local corpus sources. @default wordnet,docs,usrdoc (TOOL_CORPUS_SOURCES) */
  corpusSources: CorpusSource[];
  /** Extra folders of .md/.txt to index. (TOOL_CORPUS_DIRS, comma-separated) */
  corpusDirs: string[];
  /** The repository root whose README.md and docs/ are indexed. */
  repoRoot: string;
  /** Registers the test-only tools. @default false (TOOL_TEST_TOOLS) */
  testTools: boolean;
  /** Per-tool limit and cache overrides as JSON. (TOOL_OVERRIDES) */
  overrides: ToolOverrides;
  /** Share of a tool's per-minute limit that may come as one burst. @default 0.1 (TOOL_BURST_FRACTION) */
  burstFraction: number;
  breaker: BreakerOptions;
  /** Cache TTL multiplier while a breaker is open. @default 6 (TOOL_DEGRADED_TTL_FACTOR) */
  degradedTtlFactor: number;
  /** Redis key prefix. @default mesh:tool (TOOL_REDIS_PREFIX) */
  redisPrefix: string;
  /** @default 65536 (TOOL_MAX_ARGUMENTS_BYTES) */
  maxArgumentsBytes: number;
}

const list = (v: string) => v.split(',').map((s) => s.trim()).filter(Boolean);

export function loadConfig(env: Env = process.env): ToolServiceConfig {
  const port = config.int({ env: 'TOOL_SERVICE_PORT', default: config.DEFAULT_PORTS.TOOL_SERVICE, min: 0, max: 65535 }, env);
  const sources = list(config.str({ env: 'TOOL_CORPUS_SOURCES', default: ALL_SOURCES.join(',') }, env));
  for (const s of sources) {
    if (!ALL_SOURCES.includes(s as CorpusSource)) throw new config.ConfigError(`TOOL_CORPUS_SOURCES: unknown source "${s}" (known: ${ALL_SOURCES.join(', ')})`);
  }
  const searchUrl = config.str({ env: 'SEARCH_URL', default: '' }, env);
  if (searchUrl && !/^https?:\/\//.test(searchUrl)) throw new config.ConfigError(`SEARCH_URL must be an http(s) URL, got "${searchUrl}"`);
  const overridesText = config.str({ env: 'TOOL_OVERRIDES', default: '' }, env);
  let overrides: ToolOverrides = {};
  if (overridesText) {
    try {
      overrides = JSON.parse(overridesText) as ToolOverrides;
    } catch (err) {
      throw new config.ConfigError(`TOOL_OVERRIDES must be JSON like {"search_web":{"rateLimit":{"maxPerMinute":100}}}: ${(err as Error).message}`);
    }
    if (typeof overrides !== 'object' || overrides === null || Array.isArray(overrides)) throw new config.ConfigError('TOOL_OVERRIDES must be a JSON object keyed by tool name');
  }
  return {
    port,
    host: config.infra.bindHost('TOOL_SERVICE', env),
    shutdownGraceMs: config.infra.shutdownGraceMs(env),
    metricsPort: config.int({ env: 'METRICS_PORT', default: config.metricsPortFor(port || config.DEFAULT_PORTS.TOOL_SERVICE), min: 0, max: 65535 }, env),
    redisUrl: config.infra.redisUrl(env),
    storeAddr: config.infra.peer('STORE', env),
    searchUrl,
    prewarmQueries: list(config.str({ env: 'TOOL_PREWARM_QUERIES', default: '' }, env)),
    prewarmIntervalMs: config.int({ env: 'TOOL_PREWARM_INTERVAL_MS', default: 300_000, min: 0 }, env),
    prewarmTop: config.int({ env: 'TOOL_PREWARM_TOP', default: 20, min: 0, max: 1_000 }, env),
    corpusSources: sources as CorpusSource[],
    corpusDirs: list(config.str({ env: 'TOOL_CORPUS_DIRS', default: '' }, env)),
    repoRoot: path.resolve(__dirname, '../../..'),
    testTools: config.bool({ env: 'TOOL_TEST_TOOLS', default: false }, env),
    overrides,
    burstFraction: config.num({ env: 'TOOL_BURST_FRACTION', default: 0.1, min: 0 }, env),
    breaker: {
      errorThresholdPercentage: config.int({ env: 'TOOL_BREAKER_ERROR_PERCENT', default: 50, min: 1, max: 100 }, env),
      volumeThreshold: config.int({ env: 'TOOL_BREAKER_VOLUME', default: 5, min: 1 }, env),
      resetTimeoutMs: config.int({ env: 'TOOL_BREAKER_RESET_MS', default: 30_000, min: 100 }, env),
      rollingWindowMs: config.int({ env: 'TOOL_BREAKER_WINDOW_MS', default: 10_000, min: 1_000 }, env),
    },
    degradedTtlFactor: config.num({ env: 'TOOL_DEGRADED_TTL_FACTOR', default: 6, min: 1 }, env),
    redisPrefix: config.str({ env: 'TOOL_REDIS_PREFIX', default: 'mesh:tool' }, env),
    maxArgumentsBytes: config.int({ env: 'TOOL_MAX_ARGUMENTS_BYTES', default: 65_536, min: 1_024 }, env),
  };
}
