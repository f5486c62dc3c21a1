// Every environment variable the broker reads: its spec (type, default, description: the tables of
// docs/configuration.md are made from VARS) and its validation.
import { ANTHROPIC_BETA_NAME, callerRoles, config, LLM_QUOTA_KEY_PREFIX, llmQuotaKeyPrefix, llmUpstreamEntries, llmUpstreamsError, type CallerRoleName, type RedisTarget } from '@agent-mesh/common';

export type Env = config.Env;

export const PROTOCOLS = ['openai', 'anthropic'] as const;
export type Protocol = (typeof PROTOCOLS)[number];

/** One upstream LLM API: where, how it is spoken to, with which key, for which models, within which limits. */
export interface UpstreamConfig {
  /** Names it in metrics (`upstream` label), logs and `Done.upstream`. */
  name: string;
  protocol: Protocol;
  /** Without the protocol's path (`/chat/completions`, `/messages`). */
  baseUrl: string;
  /** Never logged. Empty: no key header. */
  apiKey: string;
  /** The environment variable the key came from (named in the operator's alert). */
  keyVariable: string;
  /** The models it serves; the first is the default of a call that names none. */
  models: string[];
  maxConcurrent: number;
  rpm: number;
  /** 0 = unlimited (the provider's own limit then applies). Input tokens only when `otpm` is set. */
  tpm: number;
  /** Output tokens per minute, limited on their own (Anthropic's OTPM); 0 = none: `tpm` counts input and output. */
  otpm: number;
  /** Whether the provider counts prompt tokens read from its cache against `tpm`; absent: its protocol's rule (OpenAI yes, Anthropic no). */
  cacheReadsLimited?: boolean;
  /** The callers' Anthropic betas it is sent (the others left out); absent: all. */
  anthropicBetas?: string[];
  /** Prefix of its Redis quota keys (shared by every replica). */
  quotaKey: string;
}

export interface BrokerConfig {
  port: number;
  /** Interface of the gRPC and metrics listeners (LLM_BROKER_HOST). */
  host: string;
  shutdownGraceMs: number;
  metricsPort: number;
  redis: RedisTarget;
  /** In fallback order (LLM_UPSTREAMS, else one upstream from LLM_BASE_URL and its neighbours). */
  upstreams: UpstreamConfig[];
  defaultMaxTokens: number;
  /** Caller role → priority (higher first). */
  priorities: Partial<Record<CallerRoleName, number>>;
  queueMax: number;
  leaseMs: number;
  /** The fewest replicas sharing the quota that a replica without Redis divides it by (LLM_FALLBACK_REPLICAS). */
  fallbackReplicas: number;
  /** How long the live replicas keep a departed replica's share free (LLM_QUOTA_DEPARTED_HOLD_MS). */
  departedHoldMs: number;
  requestTimeoutMs: number;
  /** Longest silence inside a streamed answer before the call is aborted as stalled. */
  streamIdleTimeoutMs: number;
  /** `settle`: usage replaces the TPM reservation at the end; `reserve`: prompt + max_tokens stay counted. */
  tpmAccounting: 'settle' | 'reserve';
  /** The most tokens of inputs in one embeddings request to the provider (LLM_EMBED_BATCH_TOKENS). */
  embedBatchTokens: number;
  /** Scales the quota windows (0.1 → a 6 s minute), for benchmarks. */
  timeScale: number;
  /** Real ms the quota windows are counted longer than the provider's (room for delivery delays). */
  quotaWindowMarginMs: number;
  /** Share of each RPM and TPM limit that may go at once (the pacing's bucket; LLM_QUOTA_BURST_FRACTION). */
  quotaBurstFraction: number;
  /** Admissions taken ahead of calls while the quota is at most half used (LLM_ADMIT_AHEAD), and how long one waits for its call. */
  admitAhead: number;
  admitAheadMs: number;
  /** How long after a call one admission ahead is kept fresh (LLM_ADMIT_AHEAD_KEEP_MS). */
  admitAheadKeepMs: number;
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

/** `role=number` pairs; a role is one of the broker's caller roles (a misspelt one is refused, not ignored). */
export function parsePriorities(text: string): Partial<Record<CallerRoleName, number>> {
  const out: Partial<Record<CallerRoleName, number>> = {};
  for (const part of text.split(',').map((p) => p.trim()).filter(Boolean)) {
    const m = /^([a-z_-]+)=(-?\d+)$/i.exec(part);
    if (!m) throw new config.ConfigError(`LLM_PRIORITIES: expected role=number pairs, got "${part}"`);
    const role = m[1]!.toLowerCase();
    if (callerRoles.parse(role) === undefined) throw new config.ConfigError(`LLM_PRIORITIES: unknown role "${role}" (roles: ${callerRoles.names.join(', ')})`);
    out[role as CallerRoleName] = Number(m[2]);
  }
  return out;
}

const { LLM_BROKER_PORT, LLM_BROKER_HOST, METRICS_PORT, SHUTDOWN_GRACE_MS } = config.sharedVars;

/** Every variable the broker reads. */
export const VARS = {
  LLM_BROKER_PORT, LLM_BROKER_HOST, METRICS_PORT, SHUTDOWN_GRACE_MS, ...config.redisVars,
  ...config.defineVars({
    LLM_UPSTREAMS: {
      type: 'string',
      defaultDoc: 'one upstream, `default`, from `LLM_PROTOCOL`, `LLM_BASE_URL`, `LLM_API_KEY`, `LLM_MODEL` and the `LLM_*` limits',
      doc:
        'several upstreams, in fallback order, as a JSON list: `[{"name":"ark","baseUrl":"https://…/api/v3","keyEnv":"ARK_API_KEY","models":["ep-…"],"rpm":500},' +
        ' {"name":"claude","protocol":"anthropic","baseUrl":"https://api.anthropic.com/v1","keyEnv":"ANTHROPIC_API_KEY","models":["claude-haiku-4-5"],"rpm":50,"tpm":50000,"otpm":10000}]`.' +
        ' Each: `name` ([a-z0-9_-]), `protocol` (`openai` or `anthropic`; default `openai`), `baseUrl`, `keyEnv` (the variable holding its key, e.g. from a Secret; none: no key),' +
        ' `models` (the first is its default), its own `maxConcurrent`, `rpm`, `tpm`, `otpm` (default: `LLM_MAX_CONCURRENT`, `LLM_RPM`, `LLM_TPM`, `LLM_OTPM`) and `quotaKey` (its Redis quota keys;' +
        ' default `mesh:llm` for the first, `mesh:llm:upstream:<name>` for the others). A call goes to the next upstream when the first\'s breaker is open or its queue cannot admit it before the call\'s deadline',
    },
    LLM_PROTOCOL: { type: 'string', default: 'openai', values: PROTOCOLS, doc: "the single upstream's protocol: `openai` (chat completions) or `anthropic` (Messages API)" },
    LLM_BASE_URL: { type: 'string', default: 'http://127.0.0.1:8090/v1', doc: "the single upstream's base URL, without `/chat/completions` or `/messages` (the default: the emulator)" },
    LLM_API_KEY: { type: 'string', default: '', doc: "the single upstream's key (bearer, or `x-api-key` for `anthropic`); empty: none. Never logged" },
    LLM_MODEL: { type: 'string', default: 'emulator-1', doc: "the single upstream's model" },
    LLM_MAX_CONCURRENT: { type: 'int', default: 50, min: 0, doc: 'upstream calls in flight at most, all replicas together (per upstream)' },
    LLM_RPM: { type: 'int', default: 500, min: 0, doc: 'upstream requests per minute, all replicas together (per upstream)' },
    LLM_TPM: { type: 'int', default: 0, min: 0, doc: "upstream tokens per minute, all replicas together (per upstream; 0: the provider's own limit, unlimited here); input tokens only when `LLM_OTPM` is set" },
    LLM_OTPM: {
      type: 'int', default: 0, min: 0,
      doc: 'upstream output tokens per minute, limited on their own, all replicas together (per upstream): a provider with separate input and output token limits' +
        ' (Anthropic\'s ITPM and OTPM) has `LLM_TPM` set to its input limit and this to its output limit. A call reserves its `max_tokens` here, settled to what it generated.' +
        ' 0: none, `LLM_TPM` counts input and output together',
    },
    LLM_DEFAULT_MAX_TOKENS: { type: 'int', default: 1024, min: 1, doc: '`max_tokens` of a call that sets none' },
    LLM_PRIORITIES: { type: 'string', default: DEFAULT_PRIORITIES, doc: 'caller role (planner, critic, host, reporter, direct) → priority in the queue (higher first); a role left out has direct\'s' },
    LLM_QUEUE_MAX: { type: 'int', default: 1000, min: 1, doc: 'queued calls per replica' },
    LLM_LEASE_MS: { type: 'int', default: 15_000, min: 100, doc: 'a concurrency slot of a dead broker frees after this' },
    LLM_FALLBACK_REPLICAS: {
      type: 'int', default: 1, min: 1,
      doc: 'while Redis is unreachable each replica admits calls on its own share of the limits: the limits ÷ the larger of this and the replicas it last saw' +
        ' sharing them (its heartbeats). A replica that starts during an outage has seen none and divides by this alone. Set it to the most replicas that' +
        ' can share the quota (the llm-broker HPA\'s `maxReplicas`, plus the edge\'s with `EDGE_INLINE_BROKER`) for the shares to add up to at most the' +
        ' limits even when replicas start during an outage; each share is then smaller while Redis is away',
    },
    LLM_QUOTA_DEPARTED_HOLD_MS: {
      type: 'int', default: 60_000, min: 0,
      doc: 'a replica whose heartbeat stopped without its leaving (a crash, or cut off from a Redis the others still reach, then admitting on its local share) keeps its share' +
        ' of the limits free for this long: the others admit only the rest. A replica that loses Redis admits nothing on its own until the others count it so (~8.5 s).' +
        ' A replica cut off for longer can overshoot the limits by its share (the alert MeshQuotaOnLocalShares fires after 30 s). 0: no share kept free',
    },
    LLM_REQUEST_TIMEOUT_MS: { type: 'int', default: 120_000, min: 100, doc: 'longest upstream call' },
    LLM_STREAM_IDLE_TIMEOUT_MS: { type: 'int', default: 30_000, min: 10, doc: 'a streamed answer silent for longer is aborted as stalled' },
    LLM_CACHE_READS_LIMITED: {
      type: 'string', default: 'auto', values: ['auto', 'true', 'false'],
      doc: 'whether the upstream counts the prompt tokens it reads from its prompt cache against its token limit (`LLM_TPM`): `auto`, its protocol\'s rule (OpenAI does;' +
        ' Anthropic\'s current models do not, so the broker reserves a prompt less the prefix it expects the provider to read); `true` for a model that does' +
        ' (Anthropic marks a few older ones); `false`. Per upstream: `cacheReadsLimited` in `LLM_UPSTREAMS`',
    },
    LLM_ANTHROPIC_BETAS: {
      type: 'string', default: '*',
      doc: 'which of a caller\'s Anthropic betas (the `anthropic-beta` header of its `/v1/messages` call) an Anthropic-protocol upstream is sent: `*`, all; otherwise a comma list of' +
        ' names, the others left out (the call is answered as without them), for a provider that refuses names Anthropic\'s API knows (Anthropic\'s models on other clouds' +
        ' take fewer); `none`, none. The beta the broker adds itself (context editing\'s) is sent whatever this says. Per upstream: `anthropicBetas` in `LLM_UPSTREAMS` (`"*"` or a list)',
    },
    LLM_TPM_ACCOUNTING: {
      type: 'string', default: 'settle', values: ['settle', 'reserve'],
      doc: '`settle`: the provider bills usage and refunds the rest of the reservation when a call ends; `reserve`: prompt + `max_tokens` count at arrival and stay counted, as OpenAI documents',
    },
    LLM_EMBED_BATCH_TOKENS: {
      type: 'int', default: 300_000, min: 1,
      doc: 'the most tokens of inputs one embeddings request to the provider carries (OpenAI refuses more: 300,000): a `/v1/embeddings` call with more is split,' +
        ' in order, into requests of at most this many, each queued and admitted against the quota as a call of its own, and answered as one',
    },
    LLM_TIME_SCALE: { type: 'number', default: 1, min: 0.001, doc: 'scales the quota windows (0.1: a 6 s minute), for benchmarks' },
    LLM_QUOTA_WINDOW_MARGIN_MS: {
      type: 'int', default: 75, min: 0,
      doc: "ms (real, not scaled) the RPM and TPM windows are counted longer than the provider's: a call admitted here may reach the provider" +
        ' later than the next one (an event-loop stall, a new connection), and a provider that counts its window exactly on its own clock then' +
        ' sees one call too many. Tolerates such a spread of at least this plus one pacing interval (60 s ÷ RPM); costs margin ÷ (window + margin) of the rate' +
        ' (0.12 % of a 60 s window; 1.2 % of the 6 s window of `LLM_TIME_SCALE=0.1`)',
    },
    LLM_QUOTA_BURST_FRACTION: {
      type: 'number', default: 0.02, min: 0.001, max: 0.5,
      doc: 'share of each RPM and TPM limit that may go to the provider at once after a quiet spell (the pacing\'s bucket, at least one request);' +
        ' the rest of the limit is paced evenly, so calls no larger than the bucket are sustained at (1 − this) of the limit (98 % by default).' +
        ' A provider that enforces its per-minute limits over shorter periods (OpenAI: "60,000 requests/minute may be enforced as 1,000' +
        ' requests/second") refuses a bucket larger than one second of its limit: 0.015 then (under 1/60, so that calls reaching it up to 0.1 s later than' +
        ' admitted still fit). The brokers halve their bucket by themselves on a 429 that says the provider\'s minute had room (llm_quota_burst_fraction). The same on every replica',
    },
    LLM_ADMIT_AHEAD: {
      type: 'int', default: 8, min: 0,
      doc: 'admissions a replica may take ahead of calls while the quota is at most half used (half the concurrency, half the RPM burst; never under a TPM limit):' +
        ' a call then goes to the provider without waiting for Redis, and the admission it used is replaced in the background. 0: every admission is decided in Redis when its call comes',
    },
    LLM_ADMIT_AHEAD_MS: {
      type: 'int', default: 50, min: 1,
      doc: 'an admission taken ahead and not used for this long is given back (its request in the RPM pacing, its tokens, its concurrency slot). At most `LLM_QUOTA_WINDOW_MARGIN_MS`: a request admitted ahead reaches the provider up to this much after its admission, a shift the window margin absorbs',
    },
    LLM_ADMIT_AHEAD_KEEP_MS: {
      type: 'int', default: 1_000, min: 0,
      doc: 'for this long after a call, one admission ahead is kept fresh: renewed in the background when half of `LLM_ADMIT_AHEAD_MS` old, so that' +
        ' calls further apart than `LLM_ADMIT_AHEAD_MS` (a replica serving a few calls a second) skip the round trip to Redis too. Costs up to two' +
        ' background Redis calls (the new admission, the old one given back) every half `LLM_ADMIT_AHEAD_MS` per upstream while it lasts, none while' +
        ' calls come closer than that. 0: off',
    },
    LLM_BREAKER_ERROR_PERCENT: { type: 'number', default: 50, min: 0, max: 100, doc: 'failure percentage over the rolling window that opens the breaker' },
    LLM_BREAKER_VOLUME_THRESHOLD: { type: 'int', default: 10, min: 1, doc: 'calls in the rolling window before the breaker may open at all' },
    LLM_BREAKER_RESET_MS: { type: 'int', default: 5_000, min: 10, doc: 'the breaker stays open this long before one half-open probe' },
    LLM_BREAKER_TIMEOUT_MS: { type: 'int', default: 30_000, min: 10, doc: 'no response headers after this long counts as a failure (and aborts the attempt)' },
    LLM_BREAKER_WINDOW_MS: { type: 'int', default: 10_000, min: 100, doc: 'the rolling window of the error rate' },
    LLM_CACHE_TTL_S: { type: 'number', default: 3600, min: 0, doc: 'how long a cached answer is served as a hit, for calls that ask for the response cache, and how long an embeddings vector is kept (0: the cache is off)' },
    LLM_CACHE_STALE_S: { type: 'number', default: 86_400, min: 0, doc: 'how long past its TTL an answer (or an embeddings vector) may still be served (stale) while the upstream is paused or its breaker open' },
    LLM_CACHE_LOCK_MS: { type: 'int', default: 3000, min: 100, doc: "single-flight lock lease: a dead leader's followers take over after at most this" },
    LLM_CACHE_WAIT_MS: { type: 'int', default: 60_000, min: 0, doc: "longest a follower waits for the leader's answer before calling the upstream itself" },
    LLM_RETRY_MAX: { type: 'int', default: 3, min: 0, doc: 'retries per call at most (before the first token only)' },
    LLM_RETRY_BUDGET_RATIO: { type: 'number', default: 0.1, min: 0, max: 1, doc: 'share of calls that may be retried: each call earns this much of a retry' },
    LLM_RETRY_BUDGET_BURST: { type: 'int', default: 10, min: 0, doc: 'retries that can be saved up (and the reserve at start)' },
  }),
};

function checkedUrl(text: string, what: string): string {
  const url = text.replace(/\/+$/, '');
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new config.ConfigError(`${what} must be a URL, got "${text}"`);
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') throw new config.ConfigError(`${what} must be an http(s) URL, got "${text}"`);
  return url;
}

const NAME = /^[a-z0-9_-]{1,40}$/;

/** A list of Anthropic betas' names (`what` names the setting in the error), in lower case. */
function betaList(v: unknown, what: string): string[] {
  if (!Array.isArray(v) || !v.every((b) => typeof b === 'string' && ANTHROPIC_BETA_NAME.test(b.toLowerCase()))) {
    throw new config.ConfigError(`${what} must be "*" or a list of betas' names (letters, digits, '.', '_' and '-'), got ${JSON.stringify(v)}`);
  }
  return v.map((b: string) => b.toLowerCase());
}
const LIMIT_KEYS = ['maxConcurrent', 'rpm', 'tpm', 'otpm'] as const;

/** LLM_UPSTREAMS' JSON → upstreams, every field checked; keys read from the variables they name. */
export function parseUpstreams(
  text: string, env: Env, defaults: Record<(typeof LIMIT_KEYS)[number], number>, cacheReadsDefault?: boolean, betasDefault?: string[],
): UpstreamConfig[] {
  const fail = llmUpstreamsError;
  const names = new Set<string>();
  return llmUpstreamEntries(text).map((o, i): UpstreamConfig => {
    const known = new Set(['name', 'protocol', 'baseUrl', 'keyEnv', 'models', 'quotaKey', 'cacheReadsLimited', 'anthropicBetas', ...LIMIT_KEYS]);
    for (const k of Object.keys(o)) if (!known.has(k)) fail(`entry ${i}: unknown field "${k}" (known: ${[...known].join(', ')})`);
    const name = o.name;
    if (typeof name !== 'string' || !NAME.test(name)) return fail(`entry ${i}: "name" must match [a-z0-9_-]{1,40}`);
    if (names.has(name)) fail(`two upstreams are named "${name}"`);
    names.add(name);
    const protocol = o.protocol ?? 'openai';
    if (!(PROTOCOLS as readonly unknown[]).includes(protocol)) fail(`${name}: "protocol" must be ${PROTOCOLS.join(' or ')}`);
    if (typeof o.baseUrl !== 'string') return fail(`${name}: "baseUrl" is required`);
    const baseUrl = checkedUrl(o.baseUrl, `LLM_UPSTREAMS: ${name}: "baseUrl"`);
    const models = o.models;
    if (!Array.isArray(models) || models.length === 0 || !models.every((m) => typeof m === 'string' && m !== '')) return fail(`${name}: "models" must be a non-empty list of model names`);
    let apiKey = '';
    let keyVariable = '';
    if (o.keyEnv !== undefined) {
      if (typeof o.keyEnv !== 'string' || !/^[A-Za-z_][A-Za-z0-9_]*$/.test(o.keyEnv)) return fail(`${name}: "keyEnv" must name an environment variable`);
      keyVariable = o.keyEnv;
      apiKey = env[keyVariable] ?? '';
      if (!apiKey) fail(`${name}: its key variable ${keyVariable} is not set`);
    }
    const limit = (k: (typeof LIMIT_KEYS)[number]): number => {
      const v = o[k] ?? defaults[k];
      if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) return fail(`${name}: "${k}" must be an integer ≥ 0`);
      return v;
    };
    if (o.quotaKey !== undefined && (typeof o.quotaKey !== 'string' || o.quotaKey === '')) fail(`${name}: "quotaKey" must be a non-empty string`);
    const cacheReadsLimited = o.cacheReadsLimited ?? cacheReadsDefault;
    if (cacheReadsLimited !== undefined && typeof cacheReadsLimited !== 'boolean') fail(`${name}: "cacheReadsLimited" must be true or false`);
    const betas = o.anthropicBetas === undefined ? betasDefault : o.anthropicBetas === '*' ? undefined : betaList(o.anthropicBetas, `LLM_UPSTREAMS: ${name}: "anthropicBetas"`);
    // The rule the tool-service reads the pause keys by too (common/src/quota/llm-upstreams.ts).
    const quotaKey = llmQuotaKeyPrefix(name, i, o.quotaKey as string | undefined);
    return {
      name, protocol: protocol as Protocol, baseUrl, apiKey, keyVariable, models: models as string[],
      maxConcurrent: limit('maxConcurrent'), rpm: limit('rpm'), tpm: limit('tpm'), otpm: limit('otpm'), quotaKey,
      ...(cacheReadsLimited !== undefined ? { cacheReadsLimited: cacheReadsLimited as boolean } : {}),
      ...(betas ? { anthropicBetas: betas } : {}),
    };
  }).map((u, _i, all) => {
    if (all.filter((x) => x.quotaKey === u.quotaKey).length > 1) fail(`two upstreams share the quota keys "${u.quotaKey}"`);
    return u;
  });
}

export function loadConfig(env: Env = process.env): BrokerConfig {
  const read = <V extends config.Var>(v: V, fallback?: config.ValueOf<V>) => config.read(v, env, fallback);
  const port = read(VARS.LLM_BROKER_PORT);
  const limits = { maxConcurrent: read(VARS.LLM_MAX_CONCURRENT), rpm: read(VARS.LLM_RPM), tpm: read(VARS.LLM_TPM), otpm: read(VARS.LLM_OTPM) };
  const list = read(VARS.LLM_UPSTREAMS, '').trim();
  const cacheReads = read(VARS.LLM_CACHE_READS_LIMITED);
  const cacheReadsLimited = cacheReads === 'auto' ? undefined : cacheReads === 'true';
  const betasText = read(VARS.LLM_ANTHROPIC_BETAS).trim();
  const anthropicBetas = betasText === '*' ? undefined : betasText === 'none' ? [] : betaList(betasText.split(',').map((b) => b.trim()), 'LLM_ANTHROPIC_BETAS');
  const upstreams: UpstreamConfig[] = list
    ? parseUpstreams(list, env, limits, cacheReadsLimited, anthropicBetas)
    : [
        {
          name: 'default',
          protocol: read(VARS.LLM_PROTOCOL) as Protocol,
          baseUrl: checkedUrl(read(VARS.LLM_BASE_URL), 'LLM_BASE_URL'),
          apiKey: read(VARS.LLM_API_KEY),
          keyVariable: 'LLM_API_KEY',
          models: [read(VARS.LLM_MODEL)],
          ...limits,
          ...(cacheReadsLimited !== undefined ? { cacheReadsLimited } : {}),
          ...(anthropicBetas ? { anthropicBetas } : {}),
          quotaKey: LLM_QUOTA_KEY_PREFIX,
        },
      ];
  if (read(VARS.LLM_ADMIT_AHEAD) > 0 && read(VARS.LLM_ADMIT_AHEAD_MS) > read(VARS.LLM_QUOTA_WINDOW_MARGIN_MS)) {
    // A request admitted ahead reaches the provider up to LLM_ADMIT_AHEAD_MS after its admission:
    // the provider's window holds to the limit only while that shift is within the margin.
    throw new config.ConfigError(
      `LLM_ADMIT_AHEAD_MS (${read(VARS.LLM_ADMIT_AHEAD_MS)}) must not exceed LLM_QUOTA_WINDOW_MARGIN_MS (${read(VARS.LLM_QUOTA_WINDOW_MARGIN_MS)}), or set LLM_ADMIT_AHEAD=0`,
    );
  }
  return {
    port,
    host: read(VARS.LLM_BROKER_HOST),
    shutdownGraceMs: read(VARS.SHUTDOWN_GRACE_MS),
    metricsPort: read(VARS.METRICS_PORT, config.metricsPortFor(port || config.DEFAULT_PORTS.LLM_BROKER)),
    redis: config.readRedisTarget(env),
    upstreams,
    defaultMaxTokens: read(VARS.LLM_DEFAULT_MAX_TOKENS),
    priorities: parsePriorities(read(VARS.LLM_PRIORITIES)),
    queueMax: read(VARS.LLM_QUEUE_MAX),
    leaseMs: read(VARS.LLM_LEASE_MS),
    fallbackReplicas: read(VARS.LLM_FALLBACK_REPLICAS),
    departedHoldMs: read(VARS.LLM_QUOTA_DEPARTED_HOLD_MS),
    requestTimeoutMs: read(VARS.LLM_REQUEST_TIMEOUT_MS),
    streamIdleTimeoutMs: read(VARS.LLM_STREAM_IDLE_TIMEOUT_MS),
    tpmAccounting: read(VARS.LLM_TPM_ACCOUNTING) as BrokerConfig['tpmAccounting'],
    embedBatchTokens: read(VARS.LLM_EMBED_BATCH_TOKENS),
    timeScale: read(VARS.LLM_TIME_SCALE),
    quotaWindowMarginMs: read(VARS.LLM_QUOTA_WINDOW_MARGIN_MS),
    quotaBurstFraction: read(VARS.LLM_QUOTA_BURST_FRACTION),
    admitAhead: read(VARS.LLM_ADMIT_AHEAD),
    admitAheadMs: read(VARS.LLM_ADMIT_AHEAD_MS),
    admitAheadKeepMs: read(VARS.LLM_ADMIT_AHEAD_KEEP_MS),
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
