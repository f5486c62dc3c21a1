// One chat completion through the broker: pick the upstream (LLM_UPSTREAMS, in order: the next one
// when the first's breaker is open or its queue cannot admit the call before its deadline), wait
// in that upstream's fair queue for a global lease, call its provider behind its breaker (retrying
// only before the first token), stream the deltas, and settle the token reservation with the
// provider's usage — or refund it on cancel or failure. Protocols are behind upstream/provider.ts.
import type CircuitBreaker from 'opossum';
import { ANTHROPIC_BETA_NAME, MAX_ANTHROPIC_BETAS, type CallerRoleName, type GlobalLimiter, type Lease, type Logger, type TokenBudgets } from '@agent-mesh/common';
import type { CachedAnswer, CachedVector, Found, ResponseCache } from './cache/response-cache';
import { Channel } from './channel';
import type { BrokerConfig } from './config';
import type { BrokerMetrics } from './metrics';
import { limitKindOf, refusedBurst, type AdaptiveLimits } from './queue/adaptive';
import { QueueRefusal, type AdmissionQueue, type Admitted } from './queue/admission';
import { CacheReadForecast, type SharedForecast } from './queue/cache-reads';
import { owedBy } from './queue/estimate';
import { candidatesFor, FALLBACK_REASONS, passOver, type PassOverReason } from './routing';
import { countText } from './tokens';
import {
  UpstreamError,
  type AccountProblem, type ChatMessageIn, type LogprobOut, type OpenStream, type Provider, type ProviderLimits, type ProviderRequest, type StreamEvent, type ToolCallOut, type ToolChoiceSpec, type ToolSpec, type UsageOut,
} from './upstream/provider';
import { thinkingClash } from './upstream/anthropic';
import { embedBatches, embedPromptTokens } from './upstream/embeddings';
import { SentRequests } from './upstream/requests';
import { backoffMs, type RetryBudget } from './upstream/resilience';

export type { ChatMessageIn, LogprobOut, ToolChoiceSpec, ToolSpec } from './upstream/provider';

export interface GenerateInput {
  userId: string;
  runId: string;
  /** Sets the call's priority in the queue. */
  callerRole: CallerRoleName;
  runStarted: boolean;
  /** Empty: each upstream's default model. */
  model: string;
  messages: ChatMessageIn[];
  tools: ToolSpec[];
  /** Absent: auto. */
  toolChoice?: ToolChoiceSpec;
  maxTokens: number;
  temperature?: number;
  /** Sequences that end the answer (up to 4); empty or absent: none. */
  stop?: string[];
  topP?: number;
  /** Anthropic's `top_k`: each token from the k likeliest only. */
  topK?: number;
  /** Anthropic's extended thinking: its budget of `maxTokens` (1,024 or more, less than `maxTokens`); absent: off. */
  thinkingBudgetTokens?: number;
  /** Anthropic's `context_management` as JSON text (`{"edits": […]}`); empty or absent: none. */
  contextManagementJson?: string;
  /** Anthropic's adaptive thinking (the model decides how much, guided by `effort`); not with `thinkingBudgetTokens`. */
  thinkingAdaptive?: boolean;
  /** Anthropic's `output_config.effort` (low, medium, high, xhigh, max); empty or absent: the model's default. */
  effort?: string;
  seed?: number;
  presencePenalty?: number;
  frequencyPenalty?: number;
  /** OpenAI's `response_format` as JSON text; empty or absent: text. */
  responseFormatJson?: string;
  /** False: at most one tool call; absent or true: as many as the model makes. */
  parallelToolCalls?: boolean;
  /** Each token's log probability, with `topLogprobs` (0–20) alternatives. */
  logprobs?: boolean;
  topLogprobs?: number;
  /** OpenAI's `reasoning_effort` (minimal, low, medium, high); empty or absent: the model's default. */
  reasoningEffort?: string;
  /** OpenAI's `logit_bias`: token ids (as text) to a bias from -100 to 100; empty or absent: none. */
  logitBias?: Record<string, number>;
  /** OpenAI's `verbosity` (low, medium, high); empty or absent: the model's default. */
  verbosity?: string;
  /** The caller's name for its end user, for the provider's abuse monitoring; empty or absent: none. */
  endUser?: string;
  /** OpenAI's `prompt_cache_key`: which prompt cache calls sharing a prefix go to; empty or absent: none. */
  promptCacheKey?: string;
  /** Anthropic betas the caller asked for (its `anthropic-beta` header's names); empty or absent: none. */
  anthropicBetas?: string[];
  /** Answer from (and store into) the response cache. */
  cache: boolean;
  /** Ask the upstream for the whole answer at once (the caller does not stream). */
  noStream?: boolean;
  /** Pass tool calls on as they are generated (`toolCall` events), not only whole in `done`. */
  streamToolCalls?: boolean;
  /**
   * A check of the caller's that must pass before the upstream is called (an edge running the
   * broker: the user's rate limit and token budget). Awaited beside the admission, whose Redis round trip it
   * overlaps, and before anything is yielded; when it fails, the call is given up with its error.
   */
  gate?: Promise<unknown>;
}

export type CacheOutcome = 'miss' | 'hit' | 'stale';

/** One embeddings call: as a direct call of `userId`, through the queue and quota of the upstream that serves `model`. */
export interface EmbedInput {
  userId: string;
  /** Required: embedding models are not the upstreams' default (chat) models. */
  model: string;
  /** Texts or token ids, 1 to MAX_EMBED_INPUTS. */
  inputs: (string | number[])[];
  /** Shortens the vectors; absent or 0: the model's size. */
  dimensions?: number;
  endUser?: string;
  /** As GenerateInput.gate. */
  gate?: Promise<unknown>;
  /** Ask the response cache, input by input (see LlmBroker.embed). */
  cache?: boolean;
}

export interface EmbedResult {
  vectors: Float32Array[];
  /** What the upstream billed: the inputs it embedded (nothing when the cache had them all). */
  usage: UsageOut;
  model: string;
  upstream: string;
  queueWaitMs: number;
  /** The provider requests it took: one per batch (see BrokerDeps.embedBatchTokens); 0 when the cache had every vector. */
  requests: number;
  /** The call asked for the cache: how many vectors came from it, those inputs' tokens (what it saved), and whether any was stale. */
  cached?: { inputs: number; promptTokens: number; stale: boolean };
}

/** Anthropic's `output_config.effort` levels. */
const EFFORTS = new Set(['low', 'medium', 'high', 'xhigh', 'max']);

/** The least budget of extended thinking (Anthropic's). */
export const MIN_THINKING_BUDGET = 1024;

/** The most prompt-cache breakpoints one call may mark (Anthropic's limit). */
export const MAX_CACHE_BREAKPOINTS = 4;

/** The most inputs one embeddings call takes (OpenAI's limit). */
export const MAX_EMBED_INPUTS = 2048;

export type GenerateEvent =
  | { type: 'queued'; position: number; estimatedWaitMs: number; marginalWaitMs: number }
  /** The answer is replayed from the response cache (before its deltas). */
  | { type: 'cached'; stale: boolean; ageMs: number }
  | { type: 'delta'; content: string; logprobs?: LogprobOut[] }
  /** A piece of tool call `index`, with `streamToolCalls`: the first names the call (`id`, `name`), the next ones carry more of its arguments. `done` still has every call whole. */
  | { type: 'toolCall'; index: number; id?: string; name?: string; arguments: string }
  /** An embeddings call's vectors (`embed`), before its `done`. */
  | { type: 'embeddings'; vectors: Float32Array[] }
  /** A piece of the model's extended thinking (before the answer): see StreamEvent. */
  | { type: 'thinking'; text?: string; signature?: string; redactedData?: string }
  | {
      type: 'done';
      finishReason: string;
      /** The stop sequence that ended the answer, where the upstream says which. */
      stopSequence?: string;
      /** What the upstream billed for this call (nothing for an answer from the cache). */
      usage: UsageOut;
      toolCalls: ToolCallOut[];
      model: string;
      queueWaitMs: number;
      /** The upstream that served the call (for an answer from the cache: that produced it). */
      upstream: string;
      /** Set when the call asked for the cache. */
      cache?: CacheOutcome;
      /** For an answer from the cache: the usage of the call that produced it (what this one saved). */
      cachedUsage?: UsageOut;
      /** What the provider cleared from the prompt (Anthropic's `context_management`), when the call asked for context management. */
      contextManagement?: Record<string, unknown>;
    };

/** The role's priority; a role LLM_PRIORITIES leaves out has direct's, or 0. */
export const priorityOf = (priorities: BrokerConfig['priorities'], role: CallerRoleName): number => priorities[role] ?? priorities.direct ?? 0;

const NOTHING_BILLED: UsageOut = { promptTokens: 0, completionTokens: 0, totalTokens: 0 };

/** Tokens an answer's text and tool calls count, for a provider that reports no usage. */
const generatedTokens = (text: string, toolCalls: readonly ToolCallOut[]): number =>
  countText(text) + toolCalls.reduce((n, c) => n + countText(c.name) + countText(c.argumentsJson), 0);
const TOOL_NAME = /^[a-zA-Z0-9_-]{1,64}$/;
const REASONING_EFFORTS = new Set(['none', 'minimal', 'low', 'medium', 'high', 'xhigh']);
const VERBOSITIES = new Set(['low', 'medium', 'high']);

/** A field's JSON text, parsed; not JSON: refused, naming the field. */
function parsedJson(json: string, field: string): unknown {
  try {
    return JSON.parse(json) as unknown;
  } catch {
    throw new BrokerRefusal('invalid_request', `${field} is not JSON`);
  }
}

/** `response_format` JSON → the object to send, none for text; refused when it is not one of OpenAI's. */
function responseFormatOf(json: string | undefined): Record<string, unknown> | undefined {
  if (!json) return undefined;
  const format = parsedJson(json, 'response_format_json');
  const type = (format as { type?: unknown } | null)?.type;
  if (typeof format !== 'object' || format === null || Array.isArray(format) || !['text', 'json_object', 'json_schema'].includes(type as string)) {
    throw new BrokerRefusal('invalid_request', 'response_format must be an object of type text, json_object or json_schema');
  }
  return type === 'text' ? undefined : (format as Record<string, unknown>);
}

/** Anthropic's `context_management`: a JSON object (the provider checks its edits). */
function contextManagementOf(json: string | undefined): Record<string, unknown> | undefined {
  if (!json) return undefined;
  const value = parsedJson(json, 'context_management_json');
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new BrokerRefusal('invalid_request', 'context_management must be a JSON object');
  return value as Record<string, unknown>;
}

/** One upstream of LLM_UPSTREAMS with everything that is its own: provider, quota, queue, breaker. */
export interface Upstream {
  name: string;
  provider: Provider;
  /** The models it serves; the first is its default. */
  models: readonly string[];
  queue: AdmissionQueue;
  limiter: Pick<GlobalLimiter, 'pausedForMs' | 'pauseFor' | 'setLimits' | 'burstFraction' | 'learnBurstFraction'>;
  adaptive: AdaptiveLimits;
  /** Output tokens limited on their own (`otpm`, Anthropic's OTPM): their limiter and limits; `limiter`'s TPM then counts input tokens. */
  output?: { limiter: Pick<GlobalLimiter, 'setLimits'>; adaptive: AdaptiveLimits };
  breaker: CircuitBreaker<[ProviderRequest, AbortSignal], OpenStream>;
  breakerResetMs: number;
  retryBudget: RetryBudget;
  /** The variable that holds its key, for the operator's alert. */
  keyVariable: string;
  /** Who answers (protocol and base URL): part of the response cache's key. */
  identity: string;
}

/** Tokens as a provider counts them: the input (prompt) and the output (completion). */
interface Charge {
  input: number;
  output: number;
}
/**
 * The cache breakpoints' lifetimes in the order Anthropic reads the prompt (its prefixes run that
 * way): the tools, the system messages, then the others, each message's parts before its end.
 */
function breakpointLifetimes(input: Pick<GenerateInput, 'tools' | 'messages'>): string[] {
  const isSystem = (m: GenerateInput['messages'][number]) => m.role === 'system' || m.role === 'developer';
  const marks = (m: GenerateInput['messages'][number]) => [...(m.parts ?? []).map((p) => p.cacheTtl), m.cacheTtl];
  return [...input.tools.map((t) => t.cacheTtl), ...input.messages.filter(isSystem).flatMap(marks), ...input.messages.filter((m) => !isSystem(m)).flatMap(marks)].filter((t): t is string => !!t);
}

/** Least time between two Redis lookups of a queued call's cached prefixes (see fromUpstream). */
const REFRESH_WHILE_QUEUED_MS = 1_000;
const totalOf = (c: Charge): number => c.input + c.output;
const addCharges = (a: Charge, b: Charge): Charge => ({ input: a.input + b.input, output: a.output + b.output });

/**
 * The provider's limits as each of an upstream's limiters reads them: with output tokens limited
 * apart, the first's TPM is the input tokens' limit, the second's the output tokens'.
 */
function limitsOf(u: Upstream, l: ProviderLimits): { main: ProviderLimits; output: ProviderLimits } {
  if (!u.output) return { main: l, output: {} };
  return {
    main: { ...l, limitTokens: l.limitInputTokens ?? l.limitTokens, remainingTokens: l.remainingInputTokens ?? l.remainingTokens },
    output: { limitTokens: l.limitOutputTokens, remainingTokens: l.remainingOutputTokens },
  };
}

/** A validated call, before an upstream is chosen (the model is each upstream's). */
type PreparedCall = Omit<ProviderRequest, 'model'>;

export type BrokerRefusalReason =
  | 'breaker_open'
  | 'upstream_rate_limited'
  | 'upstream_error'
  | 'upstream_rejected'
  | 'upstream_stream_failed'
  | 'model_not_found'
  | 'invalid_request';

/** What an operator reads in the alert (log and the breaker's refusals). */
const alertOf = (problem: AccountProblem, keyVariable: string): string =>
  problem === 'invalid_api_key'
    ? `the provider refuses the API key (401/403): fix ${keyVariable}`
    : "the provider account is out of quota (insufficient_quota): check the account's billing";

/** The broker could not serve the call (mapped to a gRPC status by server.ts). */
export class BrokerRefusal extends Error {
  override name = 'BrokerRefusal';
  constructor(
    readonly reason: BrokerRefusalReason,
    message: string,
    readonly retryAfterMs?: number,
  ) {
    super(message);
  }
}

export interface BrokerDeps {
  /** In fallback order: the first is preferred. At least one. */
  upstreams: Upstream[];
  metrics: BrokerMetrics;
  logger: Logger;
  defaultMaxTokens: number;
  /** Caller role → priority in the queue (higher first); a role without one has direct's, else 0. */
  priorities: BrokerConfig['priorities'];
  /** Retries before the first token, at most. @default 3 */
  maxRetries?: number;
  /**
   * How the provider counts TPM: `settle` (usage replaces the reservation when the call ends, the
   * rest is refunded) or `reserve` (prompt + max_tokens count at admission and stay counted).
   * @default 'settle'
   */
  tpmAccounting?: 'settle' | 'reserve';
  /** Charges what each call cost to its user's token budgets (common/src/quota/budget.ts). */
  budgets?: Pick<TokenBudgets, 'charge'>;
  /** The response cache for calls that ask for it (absent: they go to the upstream). */
  cache?: ResponseCache;
  /** An embeddings call with more tokens of inputs is split into provider requests of at most this many (LLM_EMBED_BATCH_TOKENS). */
  embedBatchTokens: number;
  /** The providers' time against the clock's (LLM_TIME_SCALE): their prompt caches' lifetimes scale with it. @default 1 */
  timeScale?: number;
  /** Where the replicas share the prefixes they learnt the providers cache (absent: each learns alone). */
  promptCacheShared?: SharedForecast;
  now?: () => number;
}

const sleep = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(t);
      reject(signal.reason as Error);
    };
    signal.addEventListener('abort', onAbort, { once: true });
  });

/** Resolves in the check phase of the event loop: after the I/O the current turn started (a reply being written). */
const afterIo = () => new Promise<void>((resolve) => setImmediate(resolve));

type Candidate = { upstream: Upstream; model: string };

/** An answer open with the provider: read up to its first content (or its end). */
type Opened = { stream: OpenStream; iterator: AsyncIterator<StreamEvent>; buffered: StreamEvent[]; ended: boolean };

export class LlmBroker {
  private readonly inFlightBy = new Map<string, number>();
  /** Settlements of answered calls still on their way to Redis (see fromUpstream). */
  private readonly settling = new Set<Promise<void>>();
  /** Per upstream: the account problem that opened its breaker, until a call succeeds again. */
  private readonly alerts = new Map<string, string>();
  private readonly now: () => number;
  /** The prefixes each upstream holds in its prompt cache, as its answers said (keyed under the upstream's name). */
  private readonly cacheReads: CacheReadForecast;

  constructor(private readonly d: BrokerDeps) {
    if (d.upstreams.length === 0) throw new Error('the broker needs at least one upstream');
    this.now = d.now ?? Date.now;
    this.cacheReads = new CacheReadForecast(this.now, d.timeScale, undefined, d.promptCacheShared);
  }

  get inFlight(): number {
    let n = 0;
    for (const v of this.inFlightBy.values()) n += v;
    return n;
  }

  inFlightOf(upstream: string): number {
    return this.inFlightBy.get(upstream) ?? 0;
  }

  /** Resolves when every settlement under way has reached Redis (or failed, logged): for the shutdown, before Redis closes. */
  async settled(): Promise<void> {
    while (this.settling.size > 0) await Promise.all([...this.settling]);
  }

  async *generate(input: GenerateInput, signal: AbortSignal, deadline?: number): AsyncGenerator<GenerateEvent> {
    const call = this.prepare(input);
    const candidates = this.able(candidatesFor(this.d.upstreams, input.model), call, input.model);
    // A thinking answer is not replayed: its blocks and their signatures are one answer's.
    const cache = input.cache && call.thinkingBudgetTokens === undefined && !call.thinkingAdaptive ? this.d.cache : undefined;
    // A replayed answer takes no admission to overlap: the gate is passed first.
    if (cache && input.gate) await input.gate;
    if (cache) yield* this.throughCache(cache, input, call, candidates, signal, deadline);
    else yield* this.fromUpstreams(input, call, candidates, signal, deadline);
  }

  /**
   * Embeds the inputs with one upstream request (one per batch, over `embedBatchTokens`): queued,
   * admitted, retried, passed over to the next upstream and settled as a direct Generate call that
   * generates nothing (its TPM reservation is the inputs' tokens). With `cache`, each input's vector is looked up first (keyed as the first
   * upstream able to serve the call would be asked) and only the inputs not found are asked of the
   * upstream, then stored: all found, no upstream call, no quota and nothing billed. Opt-in only:
   * every vector stored takes Redis memory for the TTL (6 KB for 1,536 dimensions).
   */
  async embed(input: EmbedInput, signal: AbortSignal, deadline?: number): Promise<EmbedResult> {
    if (!input.model) throw new BrokerRefusal('invalid_request', 'model is required for embeddings');
    const n = input.inputs.length;
    if (n === 0 || n > MAX_EMBED_INPUTS) throw new BrokerRefusal('invalid_request', `inputs must hold 1 to ${MAX_EMBED_INPUTS} texts or token lists`);
    const empty = input.inputs.findIndex((x) => x.length === 0);
    if (empty >= 0) throw new BrokerRefusal('invalid_request', `inputs[${empty}] is empty`);
    // OpenAI's `input` is texts or token lists, not both.
    if (new Set(input.inputs.map((x) => typeof x)).size > 1) throw new BrokerRefusal('invalid_request', 'inputs must be all texts or all token lists');
    if (input.dimensions !== undefined && input.dimensions !== 0 && !(Number.isInteger(input.dimensions) && input.dimensions > 0)) throw new BrokerRefusal('invalid_request', 'dimensions must be a positive integer');
    const call: PreparedCall = {
      messages: [],
      tools: [],
      maxTokens: 0,
      stream: false,
      embed: { inputs: input.inputs, ...(input.dimensions ? { dimensions: input.dimensions } : {}) },
      ...(input.endUser ? { endUser: input.endUser.slice(0, 256) } : {}),
    };
    const candidates = this.able(candidatesFor(this.d.upstreams, input.model), call, input.model);
    const cache = input.cache ? this.d.cache : undefined;
    if (cache) return this.embedThroughCache(cache, input, call, candidates, signal, deadline);
    return this.embedUpstream(input, call, candidates, signal, deadline);
  }

  /**
   * The cached inputs' vectors, and the others from the upstream (stored before the answer is
   * given). Identical calls at once make one upstream request: one leads, the others wait for the
   * vectors it stores (as for chats, across replicas). While every upstream refuses (breaker open,
   * or a 429's pause), expired vectors are served, marked stale, when every input not found fresh
   * has one.
   */
  private async embedThroughCache(cache: ResponseCache, input: EmbedInput, call: PreparedCall, candidates: Candidate[], signal: AbortSignal, deadline?: number): Promise<EmbedResult> {
    const { d } = this;
    // Found vectors take no admission to overlap: the rate limit and budget are passed first.
    if (input.gate) await input.gate;
    const first = candidates[0]!;
    const keys = input.inputs.map((x) => cache.embeddingKeyOf(first.upstream.identity, first.model, input.dimensions ?? 0, x));
    let found: (CachedVector | undefined)[];
    try {
      found = await cache.getVectors(keys);
    } catch (err) {
      d.metrics.cacheEmbeddingInputs.inc({ result: 'error' }, keys.length);
      d.logger.warn({ err: (err as Error).message }, 'response cache unavailable: embedding every input upstream');
      return this.embedUpstream(input, call, candidates, signal, deadline);
    }
    const fromCache = (): EmbedResult => ({
      vectors: found.map((f) => f!.vector),
      usage: NOTHING_BILLED,
      model: first.model,
      upstream: first.upstream.name,
      queueWaitMs: 0,
      requests: 0,
      cached: this.countCached(found, []),
    });
    const missing = found.flatMap((f, i) => (f?.fresh ? [] : [i]));
    if (missing.length === 0) return fromCache();
    const staleForAll = missing.every((i) => found[i] !== undefined);
    if (staleForAll && (await this.upstreamsRefusing(candidates))) return fromCache();
    const turn = await cache.vectorsTurn(missing.map((i) => keys[i]!), signal, deadline);
    if (turn.role === 'follower') {
      d.metrics.cacheFlights.inc({ outcome: 'followed' });
      for (const [j, i] of missing.entries()) found[i] = turn.value[j];
      return fromCache();
    }
    d.metrics.cacheFlights.inc({ outcome: turn.role === 'alone' ? turn.reason : turn.tookOver ? 'took_over' : 'led' });
    try {
      return await this.embedMissing(cache, input, call, candidates, keys, found, missing, signal, deadline);
    } catch (err) {
      // Refused while expired vectors exist for every input not found: they beat no answer.
      const refusing = err instanceof BrokerRefusal && (err.reason === 'breaker_open' || err.reason === 'upstream_rate_limited');
      if (staleForAll && refusing && !signal.aborted) return fromCache();
      throw err;
    } finally {
      if (turn.role === 'leader') await turn.release();
    }
  }

  /** The inputs at `missing` from the upstream, stored; the vectors of all inputs in their order. */
  private async embedMissing(
    cache: ResponseCache, input: EmbedInput, call: PreparedCall, candidates: Candidate[],
    keys: string[], found: (CachedVector | undefined)[], missing: number[], signal: AbortSignal, deadline?: number,
  ): Promise<EmbedResult> {
    const asked = missing.map((i) => input.inputs[i]!);
    // Each batch's vectors stored as they come, before the answer (followers wait for them).
    const store = (start: number, vectors: Float32Array[]) =>
      cache
        .putVectors(vectors.map((vector, k) => ({ key: keys[missing[start + k]!]!, vector, tokens: embedPromptTokens({ inputs: [asked[start + k]!] }) })))
        .catch((err: unknown) => this.d.logger.warn({ err: (err as Error).message }, 'response cache: vectors not stored'));
    const r = await this.embedUpstream(input, { ...call, embed: { ...call.embed!, inputs: asked } }, candidates, signal, deadline, store);
    const cached = this.countCached(found, missing);
    const vectors = found.map((f) => f?.vector);
    for (const [j, i] of missing.entries()) vectors[i] = r.vectors[j];
    return { ...r, vectors: vectors as Float32Array[], cached };
  }

  /** Counts the inputs found (fresh: hit; else stale) and those the upstream embedded (`missing`); what the found ones saved. */
  private countCached(found: (CachedVector | undefined)[], missing: number[]): NonNullable<EmbedResult['cached']> {
    const { metrics } = this.d;
    const embedded = new Set(missing);
    let hits = 0;
    let stale = 0;
    let promptTokens = 0;
    for (const [i, f] of found.entries()) {
      if (embedded.has(i) || !f) continue;
      if (f.fresh) hits += 1;
      else stale += 1;
      promptTokens += f.tokens;
    }
    metrics.cacheEmbeddingInputs.inc({ result: 'hit' }, hits);
    metrics.cacheEmbeddingInputs.inc({ result: 'stale' }, stale);
    metrics.cacheEmbeddingInputs.inc({ result: 'miss' }, missing.length);
    metrics.cacheTokensSaved.inc(promptTokens);
    return { inputs: hits + stale, promptTokens, stale: stale > 0 };
  }

  /**
   * The vectors of every input of `call`: one upstream request per batch of at most
   * `embedBatchTokens` of their tokens (a provider caps one request's). Split, the first batch is
   * asked first (passed over to another upstream as any call) and the others then at once of the
   * upstream that served it, so that every vector comes from one model. `onBatch` is told each
   * batch's vectors as they come (the cache stores them: a call that fails in a later batch loses
   * none it was billed for). Any batch refused: the call is refused, the others called off.
   */
  private async embedUpstream(
    input: EmbedInput, call: PreparedCall, candidates: Candidate[], signal: AbortSignal, deadline?: number,
    onBatch?: (start: number, vectors: Float32Array[]) => Promise<void>,
  ): Promise<EmbedResult> {
    const inputs = call.embed!.inputs;
    const batches = embedBatches(inputs.map((x) => embedPromptTokens({ inputs: [x] })), this.d.embedBatchTokens);
    const one = async ([start, end]: [number, number], able: Candidate[], s: AbortSignal) => {
      const part = batches.length === 1 ? call : { ...call, embed: { ...call.embed!, inputs: inputs.slice(start, end) } };
      const r = await this.embedOnce(input, part, able, s, deadline);
      await onBatch?.(start, r.vectors);
      return r;
    };
    if (batches.length === 1) return one(batches[0]!, candidates, signal);
    const first = await one(batches[0]!, candidates, signal);
    const served = candidates.filter((c) => c.upstream.name === first.upstream && c.model === first.model);
    // The first refusal calls off the rest (not AbortSignal.any: on Node.js 20 each one is kept for the GC to track).
    const rest = new AbortController();
    const callOff = () => rest.abort(signal.reason);
    signal.addEventListener('abort', callOff, { once: true });
    // The caller may have gone as the first batch ended: the rest are not asked then.
    if (signal.aborted) callOff();
    let others: EmbedResult[];
    try {
      others = await Promise.all(batches.slice(1).map((b) => one(b, served.length > 0 ? served : candidates, rest.signal).catch((err: unknown) => {
        rest.abort(err);
        throw err;
      })));
    } finally {
      signal.removeEventListener('abort', callOff);
    }
    const all = [first, ...others];
    if (all.some((r) => r.model !== first.model || r.vectors[0]!.length !== first.vectors[0]!.length)) {
      throw new BrokerRefusal('upstream_error', 'the upstream answered the batches of one embeddings call with vectors of different models or sizes');
    }
    const sum = (f: (u: UsageOut) => number) => all.reduce((n, r) => n + f(r.usage), 0);
    this.d.logger.debug({ batches: batches.length, inputs: inputs.length }, 'embeddings call split into batches');
    return {
      vectors: all.flatMap((r) => r.vectors),
      usage: { ...first.usage, promptTokens: sum((u) => u.promptTokens), totalTokens: sum((u) => u.totalTokens) },
      model: first.model,
      upstream: first.upstream,
      queueWaitMs: first.queueWaitMs + Math.max(...others.map((r) => r.queueWaitMs)),
      requests: batches.length,
    };
  }

  /** One upstream request for every input of `call`. */
  private async embedOnce(input: EmbedInput, call: PreparedCall, candidates: Candidate[], signal: AbortSignal, deadline?: number): Promise<EmbedResult> {
    const asGenerate: GenerateInput = { userId: input.userId, runId: '', callerRole: 'direct', runStarted: false, model: input.model, messages: [], tools: [], maxTokens: 0, cache: false, ...(input.gate ? { gate: input.gate } : {}) };
    let vectors: Float32Array[] | undefined;
    for await (const e of this.fromUpstreams(asGenerate, call, candidates, signal, deadline)) {
      if (e.type === 'embeddings') vectors = e.vectors;
      else if (e.type === 'done') {
        if (!vectors) throw new BrokerRefusal('upstream_error', 'the upstream answered without embeddings');
        return { vectors, usage: e.usage, model: e.model, upstream: e.upstream, queueWaitMs: e.queueWaitMs, requests: 1 };
      }
    }
    throw new BrokerRefusal('upstream_error', 'the embeddings call ended without an answer');
  }

  /**
   * The prompt tokens the call would be billed, counted as the first upstream able to serve it
   * counts them (what its admission reserves): no upstream call, no quota taken.
   */
  countTokens(input: GenerateInput): { promptTokens: number; upstream: string; model: string } {
    const call = this.prepare(input);
    const { upstream, model } = this.able(candidatesFor(this.d.upstreams, input.model), call, input.model)[0]!;
    return { promptTokens: upstream.provider.countPromptTokens({ ...call, model }), upstream: upstream.name, model };
  }

  /** The models the upstreams serve, each once (with the first upstream that serves it), in fallback order. */
  models(): { id: string; upstream: string }[] {
    const seen = new Map<string, string>();
    for (const u of this.d.upstreams) for (const id of u.models) if (!seen.has(id)) seen.set(id, u.name);
    return [...seen].map(([id, upstream]) => ({ id, upstream }));
  }

  /** The candidates whose protocol can send the call (a seed: not Anthropic's); refused when none can. */
  private able(candidates: Candidate[], call: PreparedCall, model: string): Candidate[] {
    const able = candidates.filter((c) => !c.upstream.provider.unsupported?.({ ...call, model: c.model }));
    if (able.length > 0) return able;
    const first = candidates[0]!;
    const param = first.upstream.provider.unsupported?.({ ...call, model: first.model });
    throw new BrokerRefusal('invalid_request', `${param} is not supported by the ${first.upstream.provider.protocol} protocol of the upstream${candidates.length > 1 ? 's' : ''} serving ${model ? `model ${model}` : 'the default model'}`);
  }

  /** Validates the input: messages, tools (names and schemas), max_tokens. */
  private prepare(input: GenerateInput): PreparedCall {
    if (input.messages.length === 0) throw new BrokerRefusal('invalid_request', 'messages must not be empty');
    for (const t of input.tools) {
      if (!TOOL_NAME.test(t.name)) throw new BrokerRefusal('invalid_request', `tool name ${JSON.stringify(t.name.slice(0, 80))} must match [a-zA-Z0-9_-]{1,64}`);
      if (t.parametersJsonSchema) {
        let schema: unknown;
        try {
          schema = JSON.parse(t.parametersJsonSchema);
        } catch {
          throw new BrokerRefusal('invalid_request', `tool ${t.name}: parameters_json_schema is not JSON`);
        }
        if (typeof schema !== 'object' || schema === null || Array.isArray(schema)) throw new BrokerRefusal('invalid_request', `tool ${t.name}: parameters_json_schema must be a JSON object`);
      }
    }
    const breakpoints = [...input.tools, ...input.messages, ...input.messages.flatMap((m) => m.parts ?? [])].flatMap((x) => (x.cacheTtl ? [x.cacheTtl] : []));
    if (breakpoints.some((ttl) => ttl !== '5m' && ttl !== '1h')) throw new BrokerRefusal('invalid_request', 'a cache breakpoint\'s ttl must be 5m or 1h');
    if (breakpoints.length > MAX_CACHE_BREAKPOINTS) throw new BrokerRefusal('invalid_request', `at most ${MAX_CACHE_BREAKPOINTS} cache breakpoints may be marked in one call (${breakpoints.length} were)`);
    const lifetimes = breakpointLifetimes(input);
    if (lifetimes.includes('5m') && lifetimes.lastIndexOf('1h') > lifetimes.indexOf('5m')) {
      throw new BrokerRefusal('invalid_request', 'a cache breakpoint with ttl 1h must not come after one with ttl 5m (the provider reads the tools, then the system messages, then the others, in order)');
    }
    const choice = input.toolChoice ?? 'auto';
    if (choice !== 'auto' && input.tools.length === 0) throw new BrokerRefusal('invalid_request', 'tool_choice is only allowed with tools');
    if (typeof choice === 'object' && !input.tools.some((t) => t.name === choice.name)) {
      throw new BrokerRefusal('invalid_request', `tool_choice names ${JSON.stringify(choice.name.slice(0, 80))}, which is not one of the tools`);
    }
    const stop = input.stop ?? [];
    if (stop.length > 4 || stop.some((s) => s === '' || s.length > 1_000)) throw new BrokerRefusal('invalid_request', 'stop takes up to 4 non-empty sequences of at most 1,000 characters');
    if (input.topP !== undefined && !(input.topP >= 0 && input.topP <= 1)) throw new BrokerRefusal('invalid_request', 'top_p must be between 0 and 1');
    if (input.topK !== undefined && !(Number.isSafeInteger(input.topK) && input.topK >= 0)) throw new BrokerRefusal('invalid_request', 'top_k must be an integer of 0 or more');
    if (input.seed !== undefined && !Number.isSafeInteger(input.seed)) throw new BrokerRefusal('invalid_request', 'seed must be an integer');
    const maxTokens = input.maxTokens > 0 ? input.maxTokens : this.d.defaultMaxTokens;
    const budget = input.thinkingBudgetTokens;
    const adaptive = input.thinkingAdaptive === true;
    if (adaptive && budget !== undefined) throw new BrokerRefusal('invalid_request', 'thinking is adaptive or has a budget (thinking_budget_tokens), not both');
    if (input.effort && !EFFORTS.has(input.effort)) throw new BrokerRefusal('invalid_request', 'effort must be low, medium, high, xhigh or max');
    // Anthropic's rules, refused before the queue rather than by the provider after it.
    if (budget !== undefined) {
      if (!(Number.isSafeInteger(budget) && budget >= MIN_THINKING_BUDGET)) throw new BrokerRefusal('invalid_request', `thinking_budget_tokens must be an integer of at least ${MIN_THINKING_BUDGET}`);
      if (budget >= maxTokens) throw new BrokerRefusal('invalid_request', `max_tokens (${maxTokens}) must be greater than thinking_budget_tokens (${budget})`);
    }
    const clash = adaptive || budget !== undefined ? thinkingClash({ ...input, toolChoice: choice }) : undefined;
    if (clash) throw new BrokerRefusal('invalid_request', `${clash} with extended thinking (the provider refuses it)`);
    for (const [name, v] of [['presence_penalty', input.presencePenalty], ['frequency_penalty', input.frequencyPenalty]] as const) {
      if (v !== undefined && !(v >= -2 && v <= 2)) throw new BrokerRefusal('invalid_request', `${name} must be between -2 and 2`);
    }
    const responseFormat = responseFormatOf(input.responseFormatJson);
    const contextManagement = contextManagementOf(input.contextManagementJson);
    const top = input.topLogprobs ?? 0;
    if (!Number.isInteger(top) || top < 0 || top > 20) throw new BrokerRefusal('invalid_request', 'top_logprobs must be an integer between 0 and 20');
    if (top > 0 && !input.logprobs) throw new BrokerRefusal('invalid_request', 'top_logprobs is only allowed with logprobs');
    if (input.reasoningEffort && !REASONING_EFFORTS.has(input.reasoningEffort)) throw new BrokerRefusal('invalid_request', 'reasoning_effort must be none, minimal, low, medium, high or xhigh');
    // On Anthropic's protocol reasoning_effort is adaptive thinking at that effort: one or the other.
    if (input.reasoningEffort && (adaptive || budget !== undefined || input.effort)) throw new BrokerRefusal('invalid_request', 'reasoning_effort, or thinking and effort, not both');
    if (input.promptCacheKey && input.promptCacheKey.length > 256) throw new BrokerRefusal('invalid_request', 'prompt_cache_key must be at most 256 characters');
    if (input.verbosity && !VERBOSITIES.has(input.verbosity)) throw new BrokerRefusal('invalid_request', 'verbosity must be low, medium or high');
    const betas = [...new Set((input.anthropicBetas ?? []).map((b) => b.toLowerCase()))];
    if (betas.length > MAX_ANTHROPIC_BETAS || betas.some((b) => !ANTHROPIC_BETA_NAME.test(b))) {
      throw new BrokerRefusal('invalid_request', `anthropic_betas are up to ${MAX_ANTHROPIC_BETAS} names of letters, digits, '.', '_' and '-' (at most 100 characters each)`);
    }
    const bias = Object.entries(input.logitBias ?? {});
    if (bias.length > 300 || bias.some(([token, v]) => !/^\d{1,9}$/.test(token) || !(v >= -100 && v <= 100))) {
      throw new BrokerRefusal('invalid_request', 'logit_bias maps up to 300 token ids to a bias between -100 and 100');
    }
    return {
      messages: input.messages,
      tools: input.tools,
      ...(choice !== 'auto' ? { toolChoice: choice } : {}),
      ...(stop.length > 0 ? { stop } : {}),
      ...(input.topP !== undefined ? { topP: input.topP } : {}),
      ...(input.topK !== undefined ? { topK: input.topK } : {}),
      ...(input.seed !== undefined ? { seed: input.seed } : {}),
      ...(input.presencePenalty !== undefined ? { presencePenalty: input.presencePenalty } : {}),
      ...(input.frequencyPenalty !== undefined ? { frequencyPenalty: input.frequencyPenalty } : {}),
      ...(responseFormat ? { responseFormat } : {}),
      // Without tools there is no call to make one of: the provider is not told.
      ...(input.parallelToolCalls === false && input.tools.length > 0 ? { parallelToolCalls: false } : {}),
      ...(input.logprobs ? { logprobs: true, ...(top > 0 ? { topLogprobs: top } : {}) } : {}),
      ...(input.reasoningEffort ? { reasoningEffort: input.reasoningEffort } : {}),
      ...(input.verbosity ? { verbosity: input.verbosity } : {}),
      ...(input.endUser ? { endUser: input.endUser.slice(0, 256) } : {}),
      ...(input.promptCacheKey ? { promptCacheKey: input.promptCacheKey } : {}),
      ...(betas.length > 0 ? { anthropicBetas: betas } : {}),
      ...(bias.length > 0 ? { logitBias: input.logitBias } : {}),
      ...(budget !== undefined ? { thinkingBudgetTokens: budget } : {}),
      ...(adaptive ? { thinkingAdaptive: true as const } : {}),
      ...(input.effort ? { effort: input.effort } : {}),
      ...(contextManagement ? { contextManagement } : {}),
      maxTokens,
      ...(input.temperature !== undefined ? { temperature: input.temperature } : {}),
      ...(input.noStream ? { stream: false } : {}),
    };
  }

  /**
   * A call that asked for the cache: a fresh answer is replayed; an expired one too while the
   * upstreams refuse (stale); otherwise one caller per key across replicas calls the upstream and
   * stores the answer, and the others replay it.
   */
  private async *throughCache(cache: ResponseCache, input: GenerateInput, call: PreparedCall, candidates: Candidate[], signal: AbortSignal, deadline?: number): AsyncGenerator<GenerateEvent> {
    const { d } = this;
    const first = candidates[0]!;
    // Keyed as the preferred upstream would be asked: a fallback's answer stands in for it.
    const key = cache.keyOf(first.upstream.identity, { ...call, model: first.model });
    let found: Found | undefined;
    try {
      found = await cache.get(key);
    } catch (err) {
      d.metrics.cacheLookups.inc({ result: 'error' });
      d.logger.warn({ err: (err as Error).message }, 'response cache unavailable: calling the upstream');
      yield* this.fromUpstreams(input, call, candidates, signal, deadline);
      return;
    }
    const replay = (answer: Found, outcome: 'hit' | 'stale') => this.replay(answer, outcome, input.streamToolCalls === true);
    if (found?.fresh) return yield* replay(found, 'hit');
    if (found && (await this.upstreamsRefusing(candidates))) return yield* replay(found, 'stale');
    const turn = await cache.turn(key, signal, deadline);
    if (turn.role === 'follower') {
      d.metrics.cacheFlights.inc({ outcome: 'followed' });
      return yield* replay(turn.value, 'hit');
    }
    d.metrics.cacheFlights.inc({ outcome: turn.role === 'alone' ? turn.reason : turn.tookOver ? 'took_over' : 'led' });
    const deltas: string[] = [];
    const logprobs: (LogprobOut[] | null)[] = [];
    let toolCallsSent = false;
    // An answer that thought (an Anthropic upstream's for reasoning_effort) is not stored: its signed blocks are its own.
    let thought = false;
    try {
      for await (const e of this.fromUpstreams(input, call, candidates, signal, deadline)) {
        if (e.type === 'toolCall') toolCallsSent = true;
        if (e.type === 'thinking') thought = true;
        if (e.type === 'delta') {
          deltas.push(e.content);
          if (call.logprobs) logprobs.push(e.logprobs ?? null);
        }
        if (e.type !== 'done') {
          yield e;
          continue;
        }
        // Stored before the caller hears `done`, so that the followers find it as soon as possible.
        const answer: CachedAnswer = {
          deltas, ...(call.logprobs ? { logprobs } : {}), finishReason: e.finishReason, ...(e.stopSequence ? { stopSequence: e.stopSequence } : {}), toolCalls: e.toolCalls, model: e.model, usage: e.usage, upstream: e.upstream, storedAt: Date.now(),
        };
        if (!thought) await cache.put(key, answer).catch((err: unknown) => d.logger.warn({ err: (err as Error).message }, 'response cache: answer not stored'));
        d.metrics.cacheLookups.inc({ result: 'miss' });
        yield { ...e, cache: 'miss' };
      }
    } catch (err) {
      // Refused before any token while an expired answer exists: it beats no answer.
      const refusing = err instanceof BrokerRefusal && (err.reason === 'breaker_open' || err.reason === 'upstream_rate_limited');
      if (found && refusing && deltas.length === 0 && !toolCallsSent && !signal.aborted) return yield* replay(found, 'stale');
      d.metrics.cacheLookups.inc({ result: 'miss' }); // a miss that failed upstream
      throw err;
    } finally {
      if (turn.role === 'leader') await turn.release();
    }
  }

  /** A stored answer as a stream: announced, its deltas (and its tool calls, each whole, when asked), and a `done` that billed nothing. */
  private async *replay(found: Found, outcome: 'hit' | 'stale', streamToolCalls: boolean): AsyncGenerator<GenerateEvent> {
    const { d } = this;
    const a = found.answer;
    d.metrics.cacheLookups.inc({ result: outcome });
    d.metrics.cacheTokensSaved.inc(a.usage.totalTokens);
    yield { type: 'cached', stale: outcome === 'stale', ageMs: found.ageMs };
    for (const [i, content] of a.deltas.entries()) {
      const logprobs = a.logprobs?.[i];
      yield logprobs ? { type: 'delta', content, logprobs } : { type: 'delta', content };
    }
    if (streamToolCalls) for (const [index, c] of a.toolCalls.entries()) yield { type: 'toolCall', index, id: c.id, name: c.name, arguments: c.argumentsJson };
    yield {
      type: 'done', finishReason: a.finishReason, ...(a.stopSequence ? { stopSequence: a.stopSequence } : {}), usage: NOTHING_BILLED, toolCalls: a.toolCalls, model: a.model, queueWaitMs: 0,
      upstream: a.upstream ?? '', cache: outcome, cachedUsage: a.usage,
    };
  }

  /** Every upstream that could serve the call refuses for now: its breaker is open or a 429 paused it (on any replica). */
  private async upstreamsRefusing(candidates: Candidate[]): Promise<boolean> {
    for (const { upstream: u } of candidates) {
      if (!u.breaker.opened && (await u.limiter.pausedForMs()) <= 0) return false;
    }
    return true;
  }

  /** The upstreams in order: each passed over (before any token) for the next when it cannot serve the call in time. */
  private async *fromUpstreams(input: GenerateInput, call: PreparedCall, candidates: Candidate[], signal: AbortSignal, deadline?: number): AsyncGenerator<GenerateEvent> {
    const { d } = this;
    for (let i = 0; i < candidates.length; i += 1) {
      const { upstream: u, model } = candidates[i]!;
      const last = i === candidates.length - 1;
      if (!last) {
        const reason = passOver({ breakerOpen: u.breaker.opened, estimatedWaitMs: u.queue.estimateWaitMs(u.queue.depth + 1, input.runStarted) }, deadline, this.now());
        if (reason) {
          this.onFallback(u, candidates[i + 1]!.upstream, reason);
          continue;
        }
      }
      try {
        yield* this.fromUpstream(u, input, { ...call, model }, signal, deadline);
        return;
      } catch (err) {
        const reason = (err as { reason?: string }).reason;
        // Nothing has reached the caller but queue updates: another upstream may serve it.
        const refused = (err instanceof BrokerRefusal || err instanceof QueueRefusal) && reason !== undefined && FALLBACK_REASONS.has(reason);
        if (last || signal.aborted || !refused) throw err;
        this.onFallback(u, candidates[i + 1]!.upstream, reason as string);
      }
    }
  }

  private onFallback(from: Upstream, to: Upstream, reason: PassOverReason | string): void {
    this.d.metrics.fallbacks.inc({ reason, upstream: from.name });
    this.d.logger.info({ from: from.name, to: to.name, reason }, 'upstream passed over: falling back');
  }

  /** The call on one upstream: queue, lease, provider, settlement. */
  private async *fromUpstream(u: Upstream, input: GenerateInput, req: ProviderRequest, signal: AbortSignal, deadline?: number): AsyncGenerator<GenerateEvent> {
    const { d } = this;
    const label = { upstream: u.name };
    /** The upstream request counter tells embeddings from chats. */
    const requestLabel = { ...label, api: req.embed ? 'embeddings' : 'chat' };
    if (u.breaker.opened) throw this.breakerRefusal(u);
    const promptTokens = u.provider.countPromptTokens(req);
    // A provider that leaves its prompt cache's reads out of its input limit is asked for the rest
    // of the prompt: the reads it is expected to make are not reserved (queue/cache-reads.ts).
    const readsUnlimited = u.provider.cacheReadsLimited === false;
    const prefixes = readsUnlimited ? (u.provider.cachePrefixes?.(req) ?? []) : [];
    if (prefixes.length > 0) await this.cacheReads.refresh(u.name, prefixes);
    const uncachedNow = () => promptTokens - (prefixes.length > 0 ? Math.min(promptTokens, this.cacheReads.expected(u.name, prefixes)) : 0);
    let uncachedPrompt = uncachedNow();
    // With output tokens limited on their own, the first limiter's TPM counts the input tokens.
    const tpmTokens = (c: Charge) => (u.output ? c.input : totalOf(c));
    // Forecast again at each admission attempt: a call queued behind another with its prefix may
    // find it cached by then. What other replicas learnt is asked of Redis meanwhile (at most once
    // a second per call), for the next attempt.
    let refreshedAt = this.now();
    const reforecast =
      prefixes.length > 0
        ? () => {
            if (this.now() - refreshedAt >= REFRESH_WHILE_QUEUED_MS) {
              refreshedAt = this.now();
              void this.cacheReads.refresh(u.name, prefixes);
            }
            uncachedPrompt = uncachedNow();
            return tpmTokens({ input: uncachedPrompt, output: req.maxTokens });
          }
        : undefined;

    // 1. Wait for a lease, streaming queue updates meanwhile.
    const updates = new Channel<GenerateEvent>();
    // With a gate, the admission can be called off when the gate fails (a lease it got is given back),
    // or when the caller goes (not AbortSignal.any: on Node.js 20 each one is kept for the GC to track).
    const callOff = input.gate ? new AbortController() : undefined;
    const goneFirst = callOff ? () => callOff.abort(signal.reason) : undefined;
    if (goneFirst && signal.aborted) goneFirst();
    else if (goneFirst) signal.addEventListener('abort', goneFirst, { once: true });
    const admission = u.queue
      .admit({
        userId: input.userId || 'anonymous',
        priority: priorityOf(d.priorities, input.callerRole),
        started: input.runStarted,
        owes: owedBy(input.callerRole, input.runStarted),
        holder: input.runId || input.userId,
        tokens: tpmTokens({ input: uncachedPrompt, output: req.maxTokens }),
        ...(u.output ? { outputTokens: req.maxTokens } : {}),
        ...(reforecast ? { reforecast } : {}),
        deadline,
        signal: callOff ? callOff.signal : signal,
        // A direct call (the edge's /v1) starts no run: no admission control reads the marginal wait
        // a call admitted at once hears (position 0), and the message would only delay its request.
        onQueued: (position, estimatedWaitMs, marginalWaitMs) => {
          if (position > 0 || input.callerRole !== 'direct') updates.push({ type: 'queued', position, estimatedWaitMs, marginalWaitMs });
        },
      })
      .finally(() => {
        updates.close();
        if (goneFirst) signal.removeEventListener('abort', goneFirst);
      });
    admission.catch(() => undefined); // awaited below; this only keeps it from counting as unhandled
    if (input.gate && callOff) {
      try {
        await input.gate;
      } catch (err) {
        callOff.abort(err);
        // No request of it reached the provider: the admission's request goes back with its slot and tokens.
        const giveBack = (lease: Lease) => Promise.all([lease.refundRequest(), lease.refund()]);
        await admission.then(({ lease }) => giveBack(lease), () => undefined).catch((e: unknown) => d.logger.warn({ err: e }, 'could not give back a lease'));
        throw err;
      }
    }
    for await (const e of updates) yield e;
    const { lease, waitedMs }: Admitted = await admission;
    // What the lease holds: the prompt as last forecast (at the attempt that admitted it), and max_tokens.
    const reservation: Charge = { input: uncachedPrompt, output: req.maxTokens };
    const reserved = totalOf(reservation);
    d.metrics.admissions.inc(label);
    d.metrics.queueWait.observe(label, waitedMs / 1000);
    d.metrics.tokens.inc({ kind: 'reserved', ...label }, tpmTokens(reservation));
    if (u.output) d.metrics.tokens.inc({ kind: 'reserved_output', ...label }, reservation.output);

    // 2. Call the provider while holding (and renewing) the lease.
    const stopRenew = lease.keepAlive();
    const admittedAt = this.now();
    this.inFlightBy.set(u.name, this.inFlightOf(u.name) + 1);
    let settled = false;
    let completionText = '';
    /** What the provider counts against TPM for one attempt it answered: `reserve`: prompt + max_tokens on arrival, for good; else what it billed. */
    const chargeOf = (billed: Charge): Charge =>
      d.tpmAccounting === 'reserve' ? reservation : { input: Math.max(0, Math.ceil(billed.input)), output: Math.max(0, Math.ceil(billed.output)) };
    /** Attempts the provider answered (200) that failed before any token reached the caller, and were retried or gave up: the provider counted each. */
    const chargedByFailedAttempts: Charge = { input: 0, output: 0 };
    /** Whether a charge is more than the reservation (in either limit, when output tokens are limited apart). */
    const beyondReservation = (c: Charge) => (u.output ? c.input > reservation.input || c.output > reservation.output : totalOf(c) > reserved);
    /** Tokens the provider billed that its limits do not count: read from its prompt cache. */
    let readsLeftOut = 0;
    const settle = async (lastAttempt: Charge) => {
      if (settled) return;
      settled = true;
      const charge = addCharges(chargedByFailedAttempts, lastAttempt);
      const actual = totalOf(charge);
      if (actual + readsLeftOut > 0 && input.userId) void d.budgets?.charge(input.userId, actual + readsLeftOut);
      d.metrics.tokens.inc({ kind: 'settled', ...label }, actual);
      if (actual < reserved) d.metrics.tokens.inc({ kind: 'refunded', ...label }, reserved - actual);
      await (actual === 0 ? lease.refund() : lease.release({ actualTokens: tpmTokens(charge), outputTokens: charge.output })).catch((err: unknown) =>
        d.logger.warn({ err }, 'could not settle the lease'),
      );
    };
    /** The provider's stream, once it answered. */
    let opened: OpenStream | undefined;
    let delivered = 0;
    /** Set when the provider answered: what it billed for the last attempt, settled after `done`. */
    let answered: Charge | undefined;
    /** The queue is kicked when the settlement lands (not at the end of this call). */
    let kicked = false;
    try {
      const streamToolCalls = input.streamToolCalls === true;
      const { stream, iterator, buffered, ended } = await this.open(u, req, signal, deadline, lease, reservation, streamToolCalls, (generated) => {
        const c = chargeOf({ input: uncachedPrompt, output: generated });
        chargedByFailedAttempts.input += c.input;
        chargedByFailedAttempts.output += c.output;
      });
      opened = stream;
      let finishReason = 'stop';
      let stopSequence: string | undefined;
      let usage: UsageOut | undefined;
      let contextManagement: Record<string, unknown> | undefined;
      let model = req.model;
      const handle = (e: StreamEvent): GenerateEvent | undefined => {
        if (e.type === 'content') {
          completionText += e.text;
          delivered += 1;
          return e.logprobs ? { type: 'delta', content: e.text, logprobs: e.logprobs } : { type: 'delta', content: e.text };
        }
        if (e.type === 'embeddings') return e;
        if (e.type === 'thinking') {
          // Generated tokens too: counted with the text when the provider reports no usage.
          completionText += e.text ?? '';
          delivered += 1;
          return e;
        }
        if (e.type === 'tool_call') {
          if (!streamToolCalls) return undefined;
          delivered += 1;
          const { type: _, ...piece } = e;
          return { type: 'toolCall', ...piece };
        }
        if (e.type === 'finish') ({ reason: finishReason, stopSequence } = e);
        else if (e.type === 'context_management') contextManagement = e.applied;
        else if (e.type === 'usage') usage = e.usage;
        else if (e.type === 'model') model = e.model;
        return undefined;
      };
      for (const e of buffered) {
        const out = handle(e);
        if (out) yield out;
      }
      if (!ended) {
        for (let r = await iterator.next(); !r.done; r = await iterator.next()) {
          const out = handle(r.value);
          if (out) yield out;
        }
      }
      d.metrics.upstreamRequests.inc({ outcome: 'completed', ...requestLabel });
      this.alerts.delete(u.name);
      const toolCalls = stream.toolCalls();
      // A provider that sends no usage: count what it generated, tool calls included.
      let finalUsage = usage;
      if (!finalUsage) {
        const generated = generatedTokens(completionText, toolCalls);
        finalUsage = { promptTokens, completionTokens: generated, totalTokens: promptTokens + generated };
      }
      const reads = finalUsage.cacheReadTokens ?? 0;
      if (reads > 0) d.metrics.tokens.inc({ kind: 'cache_read', ...label }, reads);
      if (finalUsage.cacheWriteTokens) d.metrics.tokens.inc({ kind: 'cache_write', ...label }, finalUsage.cacheWriteTokens);
      if (prefixes.length > 0) {
        const written = finalUsage.cacheWriteTokens ?? 0;
        // After the answer is written: learning may count the tokens of a prefix not seen before.
        void afterIo().then(() => this.cacheReads.learn(u.name, prefixes, reads, written, admittedAt));
      }
      if (readsUnlimited) readsLeftOut = reads;
      // Output: the completion; input: the rest of the total the provider billed (less the cache's reads it does not count).
      const charged = chargeOf({ input: finalUsage.totalTokens - finalUsage.completionTokens - readsLeftOut, output: finalUsage.completionTokens });
      // The settlement (metrics, budget charge, and the Redis round trip that frees the slot and
      // gives the unused reservation back) need not delay the answer: until it lands the quota
      // counts more than was used, never less. So the caller hears `done` first, and the call is
      // settled once, below (finally), with what the provider billed. A charge beyond the
      // reservation is the exception: it lands before `done`, so that no call is admitted on
      // tokens already spent.
      if (beyondReservation(addCharges(chargedByFailedAttempts, charged))) await settle(charged);
      else answered = charged;
      yield { type: 'done', finishReason, ...(stopSequence ? { stopSequence } : {}), usage: finalUsage, toolCalls, model, queueWaitMs: waitedMs, upstream: u.name, ...(contextManagement ? { contextManagement } : {}) };
    } catch (err) {
      if (!signal.aborted && err instanceof UpstreamError) {
        if (!opened) throw LlmBroker.refusalOf(err);
        // Tokens already reached the caller: a retry would repeat them, so the call fails, saying so.
        d.metrics.upstreamErrors.inc({ kind: 'mid_stream', ...label });
        d.metrics.upstreamRequests.inc({ outcome: 'failed', ...requestLabel });
        d.logger.warn({ upstream: u.name, err: err.message, delivered }, 'upstream failed mid-stream');
        throw new BrokerRefusal('upstream_stream_failed', `the upstream LLM failed after ${delivered} streamed pieces of its answer: ${err.message}`);
      }
      throw err;
    } finally {
      stopRenew();
      this.inFlightBy.set(u.name, this.inFlightOf(u.name) - 1);
      const heldMs = this.now() - admittedAt;
      if (!settled && answered !== undefined) {
        // Answered: settled in the background, and the queue kicked when the slot is free in Redis;
        // after the I/O of this turn of the event loop, so that the caller's answer is written first.
        kicked = true;
        const billed = answered;
        this.track(afterIo().then(() => settle(billed)).finally(() => u.queue.kick(heldMs)));
      } else if (!settled) {
        if (signal.aborted) d.metrics.upstreamRequests.inc({ outcome: 'cancelled', ...requestLabel });
        // Cancelled or failed: give back all the provider did not bill (prompt + what it generated).
        // Not opened: every attempt that reached the provider is in chargedByFailedAttempts already.
        await settle(opened ? chargeOf({ input: uncachedPrompt, output: generatedTokens(completionText, opened.toolCalls()) }) : { input: 0, output: 0 });
      }
      if (!kicked) u.queue.kick(heldMs);
    }
  }

  private track(settlement: Promise<void>): void {
    this.settling.add(settlement);
    void settlement.finally(() => this.settling.delete(settlement));
  }

  /** A refusal about the account (bad key, no quota): open the breaker, raise the alert, say why. */
  private raiseAlert(u: Upstream, problem: AccountProblem, err: UpstreamError): void {
    const { d } = this;
    const alert = alertOf(problem, u.keyVariable);
    this.alerts.set(u.name, alert);
    d.metrics.alerts.inc({ reason: problem, upstream: u.name });
    d.logger.error({ upstream: u.name, reason: problem, status: err.status, message: err.message }, `upstream alert: ${alert}`);
    if (!u.breaker.opened) u.breaker.open();
  }

  /** The limits the provider reported: each limiter capped by its own (see limitsOf). True when one changed. */
  private heardLimits(u: Upstream, l: ProviderLimits): boolean {
    const views = limitsOf(u, l);
    const main = u.adaptive.onHeaders(views.main);
    if (main) u.limiter.setLimits(u.adaptive.limits);
    const output = u.output?.adaptive.onHeaders(views.output) === true;
    if (output) u.output!.limiter.setLimits(u.output!.adaptive.limits);
    return main || output;
  }

  private breakerRefusal(u: Upstream): BrokerRefusal {
    this.d.metrics.refusals.inc({ reason: 'breaker_open', upstream: u.name });
    const alert = this.alerts.get(u.name);
    return new BrokerRefusal('breaker_open', `the upstream LLM is failing: circuit open${alert ? ` (${alert})` : ''}`, u.breakerResetMs);
  }

  /**
   * Opens the stream and reads it up to its first content (or tool call, with `streamToolCalls`;
   * or to its end, for an answer made of tool calls only otherwise), retrying — nothing has
   * reached the caller yet — what may succeed.
   * `onAttemptFailed` hears of every attempt the provider answered (200, so it counted it) that
   * then failed or was cancelled here, with the tokens it had generated: retried or not, the
   * provider charged it. Each retry counts as one more request in the RPM window (upstream/requests.ts).
   */
  private async open(
    u: Upstream,
    req: ProviderRequest,
    signal: AbortSignal,
    deadline: number | undefined,
    lease: Lease,
    reservation: Charge,
    streamToolCalls: boolean,
    onAttemptFailed: (generatedTokens: number) => void,
  ): Promise<Opened> {
    const requests = new SentRequests(lease, { now: this.now, sleep });
    try {
      return await this.attempts(u, req, signal, deadline, requests, reservation, streamToolCalls, onAttemptFailed);
    } finally {
      await requests.end().catch((err: unknown) => this.d.logger.warn({ err }, 'could not give back an unsent request'));
    }
  }

  private async attempts(
    u: Upstream,
    req: ProviderRequest,
    signal: AbortSignal,
    deadline: number | undefined,
    requests: SentRequests,
    /** The tokens reserved for the call (a 429 with more remaining in the minute refused a burst). */
    reservation: Charge,
    streamToolCalls: boolean,
    onAttemptFailed: (generatedTokens: number) => void,
  ): Promise<Opened> {
    const { d } = this;
    const label = { upstream: u.name };
    /** The upstream request counter tells embeddings from chats. */
    const requestLabel = { ...label, api: req.embed ? 'embeddings' : 'chat' };
    const maxRetries = d.maxRetries ?? 3;
    u.retryBudget.onRequest();
    for (let attempt = 0; ; attempt += 1) {
      const attemptAbort = new AbortController();
      const onAbort = () => attemptAbort.abort(signal.reason);
      // Linked for the stream's whole life: a cancelled call aborts the upstream body too.
      signal.addEventListener('abort', onAbort, { once: true });
      let answered: OpenStream | undefined;
      try {
        requests.sending();
        const stream = await u.breaker.fire(req, attemptAbort.signal);
        answered = stream;
        this.heardLimits(u, stream.limits);
        const iterator = stream.events[Symbol.asyncIterator]();
        const buffered: StreamEvent[] = [];
        for (;;) {
          const r = await iterator.next();
          if (r.done) return { stream, iterator, buffered, ended: true };
          buffered.push(r.value);
          // The first piece the caller will hear: from then on, a retry would repeat it.
          if (r.value.type === 'content' || r.value.type === 'thinking' || (streamToolCalls && r.value.type === 'tool_call')) return { stream, iterator, buffered, ended: false };
        }
      } catch (raw) {
        signal.removeEventListener('abort', onAbort);
        attemptAbort.abort();
        requests.failed(raw);
        // Before any content: what it generated is tool calls, if anything.
        if (answered) onAttemptFailed(generatedTokens('', answered.toolCalls()));
        if (signal.aborted) throw raw;
        const code = (raw as { code?: string }).code;
        if (code === 'EOPENBREAKER') throw this.breakerRefusal(u);
        const err = raw instanceof UpstreamError ? raw : code === 'ETIMEDOUT' ? new UpstreamError('upstream timed out', 0) : undefined;
        if (!err) throw raw;
        const problem = err.accountProblem;
        if (problem) {
          d.metrics.upstreamErrors.inc({ kind: String(err.status), ...label });
          d.metrics.upstreamRequests.inc({ outcome: 'failed', ...requestLabel });
          this.raiseAlert(u, problem, err);
          throw this.breakerRefusal(u);
        }
        let floor = 0;
        if (err.rateLimited) {
          d.metrics.upstream429.inc(label);
          floor = err.retryAfterMs ?? 1_000;
          await u.limiter.pauseFor(floor);
          const views = limitsOf(u, err.limits);
          // Which limit refused: the output tokens', when limited apart and the provider says so.
          const ofOutput = u.output && (/output tokens/i.test(err.message) || (views.output.remainingTokens !== undefined && views.output.remainingTokens <= 0));
          const target = ofOutput ? u.output! : u;
          const view = ofOutput ? views.output : views.main;
          const kind = ofOutput ? 'tokens' : limitKindOf(view, err.message);
          // The minute had room: a burst was refused, not the rate; the bucket shrinks, the limits stay.
          const burst = refusedBurst(kind, view, ofOutput ? reservation.output : u.output ? reservation.input : totalOf(reservation));
          // Limits the provider reported bind first; else a 429 not about a burst cuts the limit it was about.
          const heard = this.heardLimits(u, err.limits);
          const cut = !heard && !burst && target.adaptive.onRateLimited(kind);
          if (cut) target.limiter.setLimits(target.adaptive.limits);
          if (heard || cut) {
            d.logger.warn({ upstream: u.name, limits: u.adaptive.limits, ...(u.output ? { outputTokensPerMinute: u.output.adaptive.limits.tokensPerMinute } : {}) }, 'provider rate limit: effective limits cut');
          }
          // The output limiter is not paced (counted over its window alone): it has no bucket to halve.
          const halved = burst && !ofOutput ? u.adaptive.halveBurst(u.limiter.burstFraction) : undefined;
          if (halved !== undefined) {
            u.limiter.learnBurstFraction(halved);
            d.logger.warn(
              { upstream: u.name, burstFraction: halved, remaining: err.limits },
              'provider refused a burst with its minute not used up (it enforces its limits over a shorter period): pacing bucket halved on every replica; set LLM_QUOTA_BURST_FRACTION to start there',
            );
          }
        } else {
          d.metrics.upstreamErrors.inc({ kind: err.status === 0 ? 'connection' : String(err.status), ...label });
          // A 503 (or 529) with Retry-After: the provider says when to come back.
          floor = err.retryAfterMs ?? 0;
        }
        const wait = backoffMs(attempt, floor);
        const late = deadline !== undefined && this.now() + wait > deadline;
        if (!err.retryable || attempt >= maxRetries || late || !u.retryBudget.tryWithdraw()) {
          d.metrics.upstreamRequests.inc({ outcome: err.rateLimited ? 'rate_limited' : 'failed', ...requestLabel });
          throw err;
        }
        // The retry is one more request to the provider: it waits for its place in the RPM window.
        // One that is not made (no place before the deadline, or the call cancelled) gives its
        // withdrawal back to the budget.
        let placed = false;
        try {
          await sleep(wait, signal);
          placed = await requests.beforeRetry(signal, deadline);
        } finally {
          if (!placed) u.retryBudget.giveBack();
        }
        if (!placed) {
          d.metrics.upstreamRequests.inc({ outcome: 'failed', ...requestLabel });
          throw err;
        }
        d.metrics.retries.inc(label);
      }
    }
  }

  static refusalOf(err: UpstreamError): BrokerRefusal {
    if (err.rateLimited) return new BrokerRefusal('upstream_rate_limited', 'the upstream LLM is rate limiting: try again shortly', err.retryAfterMs);
    if (err.status === 404 && err.code === 'model_not_found') return new BrokerRefusal('model_not_found', err.message.replace(/^upstream 404: /, ''));
    if (err.status >= 400 && err.status < 500) return new BrokerRefusal('upstream_rejected', err.message);
    return new BrokerRefusal('upstream_error', err.message);
  }
}
