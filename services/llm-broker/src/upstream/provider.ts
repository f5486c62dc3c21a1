// The seam between the broker and an LLM provider's wire protocol. The broker (queue, quota,
// breaker, retries, cache) speaks only these types; each protocol (openai.ts, anthropic.ts) maps
// them to its HTTP request, reads its stream into StreamEvents and maps its errors and rate-limit
// headers to UpstreamError and ProviderLimits. http.ts runs any protocol over one undici pool.
// To add a provider: write a WireProtocol and name it in PROTOCOLS (protocols.ts).

/** One message of the chat, in no provider's format. */
export interface ChatMessageIn {
  /** system, user, assistant or tool. */
  role: string;
  content: string;
  name?: string;
  /** For a `tool` message: the call it answers. */
  toolCallId?: string;
  /** For an `assistant` message: the calls it made. */
  toolCalls?: ToolCallOut[];
  /** A user message's content when it holds images: its parts in order (`content` is then their text). */
  parts?: ContentPartIn[];
  /** A prompt-cache breakpoint at the end of the message ("5m" or "1h": the entry's lifetime). */
  cacheTtl?: string;
  /** For an `assistant` message: its extended-thinking blocks as the model wrote them (before its text and calls). */
  thinking?: ThinkingBlockIn[];
}

/** A block of extended thinking passed back: its text and signature, or a redacted block's data alone. */
export interface ThinkingBlockIn {
  text: string;
  signature: string;
  redactedData: string;
}

/** One part of a message's content: text, or an image when `imageUrl` is set (as `ContentPart`). */
export interface ContentPartIn {
  text: string;
  imageUrl: string;
  /** auto (empty), low or high. */
  imageDetail: string;
  /** A prompt-cache breakpoint after the part ("5m" or "1h"). */
  cacheTtl?: string;
}

/** A function the model may call. */
export interface ToolSpec {
  name: string;
  description: string;
  /** JSON Schema of the arguments, as JSON text; empty: an object with any properties. */
  parametersJsonSchema: string;
  /** A prompt-cache breakpoint after the tool's definition ("5m" or "1h"). */
  cacheTtl?: string;
}

/** A complete function call the model asked for. */
export interface ToolCallOut {
  id: string;
  name: string;
  argumentsJson: string;
}

export interface UsageOut {
  promptTokens: number;
  completionTokens: number;
  totalTokens: number;
  /** The part of completionTokens spent thinking, when the provider reports it. */
  reasoningTokens?: number;
  /** The part of promptTokens read from the provider's prompt cache, when it says. */
  cacheReadTokens?: number;
  /** The part of promptTokens written to the provider's prompt cache, when it says. */
  cacheWriteTokens?: number;
  /** Of cacheWriteTokens, the tokens written to be kept an hour (Anthropic's `cache_creation.ephemeral_1h_input_tokens`), when it says. */
  cacheWrite1hTokens?: number;
}

/** How the model may use the tools: decide (auto), not call any, call some, or call the one named. */
export type ToolChoiceSpec = 'auto' | 'none' | 'required' | { name: string };

/** One generated token's log probability (OpenAI's `logprobs.content[]`), its alternatives likeliest first. */
export interface LogprobOut {
  token: string;
  logprob: number;
  /** UTF-8 bytes (a token may hold part of a character); empty when the provider gave none. */
  bytes: number[];
  topLogprobs: LogprobOut[];
}

/** One call, as the broker asks it of any provider. */
export interface ProviderRequest {
  model: string;
  messages: ChatMessageIn[];
  tools: ToolSpec[];
  maxTokens: number;
  temperature?: number;
  /** Absent: auto. */
  toolChoice?: Exclude<ToolChoiceSpec, 'auto'>;
  /** Sequences that end the answer (1–4); absent: none. */
  stop?: string[];
  topP?: number;
  /** Each token from the k likeliest only (Anthropic's `top_k`). */
  topK?: number;
  /** Extended thinking within this many of `maxTokens` (Anthropic's `thinking.budget_tokens`); absent: off. */
  thinkingBudgetTokens?: number;
  /** Anthropic's `context_management` (`{"edits": […]}`: what the provider clears from the prompt); absent: none. */
  contextManagement?: Record<string, unknown>;
  /** Anthropic's adaptive thinking (the model decides how much to think); absent: as `thinkingBudgetTokens` says. */
  thinkingAdaptive?: true;
  /** Anthropic's `output_config.effort` (low, medium, high, xhigh, max); absent: the model's default. */
  effort?: string;
  /** A repeatable answer, asked for (OpenAI's `seed`). */
  seed?: number;
  presencePenalty?: number;
  frequencyPenalty?: number;
  /** OpenAI's `response_format` other than text (JSON mode, or a JSON schema). */
  responseFormat?: Record<string, unknown>;
  /** False: at most one tool call in the answer (only with tools); absent: as many as the model makes. */
  parallelToolCalls?: false;
  /** Each token's log probability, asked for (OpenAI's `logprobs`), with this many alternatives (`top_logprobs`, 1–20; absent: none). */
  logprobs?: true;
  topLogprobs?: number;
  /** A reasoning model's effort (OpenAI's `reasoning_effort`: minimal, low, medium, high). */
  reasoningEffort?: string;
  /** Token ids (as text) to a bias from -100 to 100 (OpenAI's `logit_bias`); absent: none. */
  logitBias?: Record<string, number>;
  /** How long an answer the model writes (OpenAI's `verbosity`: low, medium, high). */
  verbosity?: string;
  /** The caller's name for its end user (OpenAI's `user`, Anthropic's `metadata.user_id`): not part of the cache's key. */
  endUser?: string;
  /** OpenAI's `prompt_cache_key` (Anthropic's cache needs none): not part of the cache's key. */
  promptCacheKey?: string;
  /** Anthropic betas the caller asked for (lower case, each once, in order), sent in `anthropic-beta` with the protocol's own; absent: none. OpenAI's protocol sends none. */
  anthropicBetas?: string[];
  /** False: ask for the whole answer at once (when the protocol can); absent or true: streamed. */
  stream?: boolean;
  /** An embeddings call, not a chat (`messages` and `tools` empty, `maxTokens` 0, not streamed). */
  embed?: EmbedSpec;
}

/** What to embed: each input a text or its token ids, one vector each; `dimensions` shortens them (absent: the model's size). */
export interface EmbedSpec {
  inputs: (string | number[])[];
  dimensions?: number;
}

/** What a streamed answer says, in the broker's terms. `finish` uses OpenAI's vocabulary (stop, length, tool_calls, content_filter). */
export type StreamEvent =
  | { type: 'content'; text: string; logprobs?: LogprobOut[] }
  | { type: 'finish'; reason: string; /** The stop sequence that ended the answer, where the provider says which. */ stopSequence?: string }
  | { type: 'usage'; usage: UsageOut }
  | { type: 'model'; model: string }
  /**
   * A piece of tool call `index` (0 for the answer's first call): its first event names it (`id`,
   * `name`, and the arguments so far), the next ones carry more of its arguments (JSON text).
   */
  | { type: 'tool_call'; index: number; id?: string; name?: string; arguments: string }
  /** An embeddings call's vectors, one per input in their order. */
  | { type: 'embeddings'; vectors: Float32Array[] }
  /**
   * A piece of extended thinking, before the answer: more `text` of the current block, its
   * `signature` (which ends it), or a whole redacted block (`redactedData`).
   */
  | { type: 'thinking'; text?: string; signature?: string; redactedData?: string }
  /** What the provider cleared from the prompt (Anthropic's `context_management`: `{"applied_edits": […]}`). */
  | { type: 'context_management'; applied: Record<string, unknown> };

/** What the provider says about its limits (per minute), when it says it. */
export interface ProviderLimits {
  limitRequests?: number;
  remainingRequests?: number;
  /** The token limit (with separate input and output limits: the most restrictive now). */
  limitTokens?: number;
  remainingTokens?: number;
  /** Separate input and output token limits (Anthropic's ITPM and OTPM), when the provider says them. */
  limitInputTokens?: number;
  remainingInputTokens?: number;
  limitOutputTokens?: number;
  remainingOutputTokens?: number;
}

/** Refusals about the account, not the moment: no wait or retry fixes them; an operator must. */
export type AccountProblem = 'invalid_api_key' | 'insufficient_quota';

/**
 * A refusal or failure from the provider, or the connection to it, in the broker's terms: each
 * protocol maps its own error bodies to these `code`s where they mean the same thing
 * (`insufficient_quota`, `model_not_found`, `rate_limited`, `overloaded`), and keeps the
 * provider's code otherwise.
 */
export class UpstreamError extends Error {
  override name = 'UpstreamError';
  constructor(
    message: string,
    /** HTTP status; 0 for connection errors, cut streams and errors inside a stream. */
    readonly status: number,
    readonly retryAfterMs?: number,
    readonly limits: ProviderLimits = {},
    readonly code?: string,
  ) {
    super(message);
  }

  /** A rate limit that passes with time (a billing refusal does not). */
  get rateLimited(): boolean {
    return this.status === 429 && this.code !== 'insufficient_quota';
  }

  get accountProblem(): AccountProblem | undefined {
    if (this.status === 401 || this.status === 403) return 'invalid_api_key';
    if (this.code === 'insufficient_quota') return 'insufficient_quota';
    return undefined;
  }

  /** 429, 5xx (529 included) and connection or stream errors may succeed on a retry; other 4xx and account problems never will. */
  get retryable(): boolean {
    return this.accountProblem === undefined && (this.status === 0 || this.status === 429 || this.status >= 500);
  }
}

/** An answer that is streaming: the headers' limits, its events, and its tool calls once it ended. */
export interface OpenStream {
  limits: ProviderLimits;
  /** Ends normally only when the provider said the answer is complete; otherwise throws an UpstreamError. */
  events: AsyncIterable<StreamEvent>;
  toolCalls(): ToolCallOut[];
}

/** A provider the broker can call: what the breaker wraps. */
export interface Provider {
  /** The wire protocol's name (`openai`, `anthropic`). */
  readonly protocol: string;
  /** Sends the call; resolves once the provider answered 200 (the body streams after). Rejects with an UpstreamError. */
  open(req: ProviderRequest, signal: AbortSignal): Promise<OpenStream>;
  /** The prompt tokens this provider will bill for the call, estimated before sending it (the TPM reservation). */
  countPromptTokens(req: ProviderRequest): number;
  /** The parameter of the call its protocol cannot send (WireProtocol.unsupported). */
  unsupported?(req: ProviderRequest): string | undefined;
  /** The call's prompt-cache breakpoints (WireProtocol.cachePrefixes); absent: the protocol has none. */
  cachePrefixes?(req: ProviderRequest): CachePrefix[];
  /** Whether the provider counts the tokens it reads from its prompt cache against its input limit (WireProtocol.cacheReadsLimited); absent: it does. */
  readonly cacheReadsLimited?: boolean;
  close(): Promise<void>;
}

/** A stream parser of one protocol: raw text in, events out; `end` checks the answer was complete. */
export interface StreamParser {
  /** Feeds raw text; returns the events it completed. Throws an UpstreamError for an error inside the stream. */
  push(text: string): StreamEvent[];
  /** The body ended: throws an UpstreamError saying what is missing when the provider did not finish the answer. */
  end(): void;
  /** True once the provider said the answer is complete (the rest of the body may be dropped). */
  readonly complete: boolean;
  toolCalls(): ToolCallOut[];
}

type Headers = Record<string, string | string[] | undefined>;

/** One provider's wire format: pure mapping, no I/O (http.ts sends it). */
export interface WireProtocol {
  readonly name: string;
  /** The HTTP request of the call (streamed unless `stream` is false). The key goes in the protocol's own header; never logged. */
  request(req: ProviderRequest, apiKey: string, stream: boolean): { path: string; headers: Record<string, string>; body: string };
  /**
   * A non-streamed 200 answer's body → the same events a stream of it would give, and its tool
   * calls; throws an UpstreamError for a body that is not a complete answer. Absent: the protocol
   * always streams.
   */
  answer?(body: string, req: ProviderRequest): { events: StreamEvent[]; toolCalls: ToolCallOut[] };
  /** Rate-limit headers → limits per minute. */
  limits(headers: Headers): ProviderLimits;
  /** A non-200 answer → the error in the broker's terms. */
  error(status: number, headers: Headers, body: string): UpstreamError;
  parser(): StreamParser;
  countPromptTokens(req: ProviderRequest): number;
  /** The parameter of the call the protocol has no way to send (a call with it goes elsewhere, or is refused); absent: it sends all. */
  unsupported?(req: ProviderRequest): string | undefined;
  /**
   * The prompt-cache breakpoints of the call, in the order the provider caches them (each prefix
   * ends at one): how the broker foresees the tokens the provider will read from its cache.
   * Absent: the protocol marks none (OpenAI caches prefixes on its own).
   */
  cachePrefixes?(req: ProviderRequest): CachePrefix[];
  /**
   * Whether the provider counts the tokens read from its prompt cache against its input-token
   * limit: OpenAI does; Anthropic does not (for its current models).
   */
  readonly cacheReadsLimited: boolean;
}

/** A prompt-cache breakpoint: the prefix of the call that ends at it, keyed, and how long the provider keeps it. */
export interface CachePrefix {
  /** A digest of the model and the prefix (the same prefix in another call has the same key). */
  key: string;
  /** The keys of the block boundaries before it where the provider looks for a prefix it holds (Anthropic: 20), the nearest first. */
  lookback: readonly string[];
  /** The entry's lifetime, renewed by each use. */
  ttlMs: number;
  /** The shortest prefix the call's model caches: a shorter one is neither written nor read. */
  minTokens: number;
  /** The prompt tokens of the prefix, counted when first needed (it tokenizes the prefix). */
  tokens(): number;
}

export function headerNumber(h: Headers, name: string): number | undefined {
  const v = h[name];
  const s = Array.isArray(v) ? v[0] : v;
  if (s === undefined || s === '') return undefined;
  const n = Number(s);
  return Number.isFinite(n) ? n : undefined;
}

/** `retry-after-ms` (OpenAI), else `retry-after` in seconds or as an HTTP date. */
export function retryAfterMs(h: Headers, now = Date.now()): number | undefined {
  const ms = headerNumber(h, 'retry-after-ms');
  if (ms !== undefined) return Math.max(0, ms);
  const raw = h['retry-after'];
  const s = Array.isArray(raw) ? raw[0] : raw;
  if (!s) return undefined;
  const secs = Number(s);
  if (Number.isFinite(secs)) return Math.max(0, secs * 1000);
  const date = Date.parse(s);
  return Number.isNaN(date) ? undefined : Math.max(0, date - now);
}

/** A tool's parameters schema as an object (an object with any properties when absent or not JSON). */
export function parametersOf(tool: ToolSpec): unknown {
  if (!tool.parametersJsonSchema) return { type: 'object' };
  try {
    const v: unknown = JSON.parse(tool.parametersJsonSchema);
    return typeof v === 'object' && v !== null ? v : { type: 'object' };
  } catch {
    return { type: 'object' };
  }
}

/** A non-streamed answer's body as JSON; one that is not is an UpstreamError (`invalid_response`). */
export function answerJson<T>(text: string): T {
  try {
    return JSON.parse(text) as T;
  } catch {
    throw new UpstreamError(`upstream answer is not JSON: ${JSON.stringify(text.slice(0, 80))}`, 0, undefined, {}, 'invalid_response');
  }
}
