// Every environment variable the tool-service reads: its spec (type, default, description: the
// tables of docs/configuration.md are made from VARS) and its validation.
import os from 'node:os';
import path from 'node:path';
import { config, llmPauseKeys, type RedisTarget } from '@agent-mesh/common';
import type { BreakerOptions } from './invoke/breaker';
import { ALL_SOURCES, type CorpusSource } from './search/corpus';
import type { ToolOverrides } from './tools/registry';

type Env = config.Env;

export interface ToolServiceConfig {
  port: number;
  /** Interface of the gRPC and metrics listeners. */
  host: string;
  shutdownGraceMs: number;
  metricsPort: number;
  redis: RedisTarget;
  storeAddr: string;
  /** SearxNG-compatible API; empty = the local corpus. */
  searchUrl: string;
  /** Hot search_web queries warmed every interval. */
  prewarmQueries: string[];
  prewarmIntervalMs: number;
  /** Most frequent recent queries warmed per round. */
  prewarmTop: number;
  /** Local corpus sources. */
  corpusSources: CorpusSource[];
  /** Extra folders of .md/.txt to index. */
  corpusDirs: string[];
  /** Where built search indexes are saved and loaded, keyed by the corpus' content; empty: none. */
  indexCacheDir: string;
  /** The repository root whose README.md and docs/ are indexed. */
  repoRoot: string;
  /** Registers the test-only tools. */
  testTools: boolean;
  /** Per-tool limit and cache overrides as JSON. */
  overrides: ToolOverrides;
  /** Share of a tool's per-minute limit that may come as one burst. */
  burstFraction: number;
  /** The fewest replicas a replica without Redis divides a tool's limits by (TOOL_FALLBACK_REPLICAS). */
  fallbackReplicas: number;
  /** How long the live replicas keep a departed replica's share of a tool's limits free (TOOL_QUOTA_DEPARTED_HOLD_MS). */
  departedHoldMs: number;
  breaker: BreakerOptions;
  /** Cache TTL multiplier while a breaker is open or the LLM is paused. */
  degradedTtlFactor: number;
  /** The pause keys of the brokers' upstreams (LLM_UPSTREAMS): the LLM is paused while all are. */
  llmPauseKeys: string[];
  /** Redis key prefix. */
  redisPrefix: string;
  maxArgumentsBytes: number;
}

const { TOOL_SERVICE_PORT, TOOL_SERVICE_HOST, METRICS_PORT, SHUTDOWN_GRACE_MS, STORE_ADDR } = config.sharedVars;

/** Every variable the tool-service reads. */
export const VARS = {
  TOOL_SERVICE_PORT, TOOL_SERVICE_HOST, METRICS_PORT, SHUTDOWN_GRACE_MS, ...config.redisVars, STORE_ADDR,
  ...config.defineVars({
    SEARCH_URL: { type: 'string', default: '', doc: 'a SearxNG-compatible JSON API for `search_web`; empty: the local full-text corpus' },
    TOOL_CORPUS_SOURCES: { type: 'string', default: ALL_SOURCES.join(','), doc: 'what the local corpus indexes (comma-separated)' },
    TOOL_CORPUS_DIRS: { type: 'string', default: '', defaultDoc: 'none', doc: 'extra folders of .md/.txt to index (comma-separated)' },
    TOOL_INDEX_CACHE_DIR: { type: 'string', default: path.join(os.tmpdir(), 'agent-mesh-search-index'), defaultDoc: '`$TMPDIR/agent-mesh-search-index` (the image: `/app/search-index`, built with the image)', doc: 'where the local search index is saved and loaded, keyed by the SHA-256 of the corpus: a start with an unchanged corpus loads it instead of building (empty: always build)' },
    TOOL_PREWARM_QUERIES: { type: 'string', default: '', defaultDoc: 'none', doc: 'hot `search_web` queries warmed every interval (comma-separated)' },
    TOOL_PREWARM_INTERVAL_MS: { type: 'int', default: 300_000, min: 0, doc: 'pre-warming interval (0: off)' },
    TOOL_PREWARM_TOP: { type: 'int', default: 20, min: 0, max: 1_000, doc: 'most frequent recent queries warmed per round' },
    TOOL_OVERRIDES: { type: 'string', default: '', defaultDoc: 'none', doc: 'JSON of per-tool limit and cache overrides, e.g. `{"search_web":{"rateLimit":{"maxPerMinute":100}}}`' },
    TOOL_TEST_TOOLS: { type: 'bool', default: false, doc: 'registers the test-only tools' },
    TOOL_BURST_FRACTION: { type: 'number', default: 0.1, min: 0, doc: "share of a tool's per-minute limit that may come as one burst" },
    TOOL_FALLBACK_REPLICAS: {
      type: 'int', default: 1, min: 1,
      doc: "while Redis is unreachable each replica runs a tool within its own share of the tool's limits: the limits ÷ the larger of this and the" +
        ' replicas it last saw (its heartbeats); one that starts during an outage divides by this alone. The tool-service HPA\'s `maxReplicas` keeps the' +
        ' shares within the limits even when replicas start during an outage',
    },
    TOOL_QUOTA_DEPARTED_HOLD_MS: {
      type: 'int', default: 60_000, min: 0,
      doc: "a replica whose heartbeat stopped without its leaving (a crash, or cut off from a Redis the others still reach, then running tools on its local share) keeps its" +
        " share of each tool's limits free for this long: the others admit only the rest. A replica that loses Redis runs nothing on its own until the others count it so" +
        ' (~8.5 s). 0: no share kept free',
    },
    TOOL_BREAKER_ERROR_PERCENT: { type: 'int', default: 50, min: 1, max: 100, doc: "failure percentage over the window that opens a tool's breaker" },
    TOOL_BREAKER_VOLUME: { type: 'int', default: 5, min: 1, doc: 'calls in the window before a breaker may open' },
    TOOL_BREAKER_RESET_MS: { type: 'int', default: 30_000, min: 100, doc: 'an open breaker lets one probe through after this' },
    TOOL_BREAKER_WINDOW_MS: { type: 'int', default: 10_000, min: 1_000, doc: 'the rolling window of the error rate' },
    TOOL_DEGRADED_TTL_FACTOR: { type: 'number', default: 6, min: 1, doc: "cache TTL multiplier while a tool's breaker is open or the LLM upstream is paused (5 min → 30 min)" },
    LLM_UPSTREAMS: {
      type: 'string', default: '', defaultDoc: "the brokers' single upstream (`mesh:llm`)",
      doc: "the brokers' `LLM_UPSTREAMS` (the same JSON; only each upstream's `name` and `quotaKey` are read): the LLM counts as paused, and tool results are kept" +
        ' `TOOL_DEGRADED_TTL_FACTOR` times longer, while every upstream listed is paused by a provider 429 (a run\'s call falls back to any upstream that is not)',
    },
    TOOL_REDIS_PREFIX: { type: 'string', default: 'mesh:tool', doc: 'prefix of the Redis keys' },
    TOOL_MAX_ARGUMENTS_BYTES: { type: 'int', default: 65_536, min: 1_024, doc: "largest tool call's arguments" },
  }),
};

export function loadConfig(env: Env = process.env): ToolServiceConfig {
  const read = <V extends config.Var>(v: V, fallback?: config.ValueOf<V>) => config.read(v, env, fallback);
  const port = read(VARS.TOOL_SERVICE_PORT);
  const sources = config.list(read(VARS.TOOL_CORPUS_SOURCES));
  for (const s of sources) {
    if (!ALL_SOURCES.includes(s as CorpusSource)) throw new config.ConfigError(`TOOL_CORPUS_SOURCES: unknown source "${s}" (known: ${ALL_SOURCES.join(', ')})`);
  }
  const searchUrl = read(VARS.SEARCH_URL);
  if (searchUrl && !/^https?:\/\//.test(searchUrl)) throw new config.ConfigError(`SEARCH_URL must be an http(s) URL, got "${searchUrl}"`);
  const overridesText = read(VARS.TOOL_OVERRIDES);
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
    host: read(VARS.TOOL_SERVICE_HOST),
    shutdownGraceMs: read(VARS.SHUTDOWN_GRACE_MS),
    metricsPort: read(VARS.METRICS_PORT, config.metricsPortFor(port || config.DEFAULT_PORTS.TOOL_SERVICE)),
    redis: config.readRedisTarget(env),
    storeAddr: read(VARS.STORE_ADDR),
    searchUrl,
    prewarmQueries: config.list(read(VARS.TOOL_PREWARM_QUERIES)),
    prewarmIntervalMs: read(VARS.TOOL_PREWARM_INTERVAL_MS),
    prewarmTop: read(VARS.TOOL_PREWARM_TOP),
    corpusSources: sources as CorpusSource[],
    corpusDirs: config.list(read(VARS.TOOL_CORPUS_DIRS)),
    indexCacheDir: read(VARS.TOOL_INDEX_CACHE_DIR),
    repoRoot: path.resolve(__dirname, '../../..'),
    testTools: read(VARS.TOOL_TEST_TOOLS),
    overrides,
    burstFraction: read(VARS.TOOL_BURST_FRACTION),
    fallbackReplicas: read(VARS.TOOL_FALLBACK_REPLICAS),
    departedHoldMs: read(VARS.TOOL_QUOTA_DEPARTED_HOLD_MS),
    breaker: {
      errorThresholdPercentage: read(VARS.TOOL_BREAKER_ERROR_PERCENT),
      volumeThreshold: read(VARS.TOOL_BREAKER_VOLUME),
      resetTimeoutMs: read(VARS.TOOL_BREAKER_RESET_MS),
      rollingWindowMs: read(VARS.TOOL_BREAKER_WINDOW_MS),
    },
    degradedTtlFactor: read(VARS.TOOL_DEGRADED_TTL_FACTOR),
    llmPauseKeys: llmPauseKeys(read(VARS.LLM_UPSTREAMS)),
    redisPrefix: read(VARS.TOOL_REDIS_PREFIX),
    maxArgumentsBytes: read(VARS.TOOL_MAX_ARGUMENTS_BYTES),
  };
}
