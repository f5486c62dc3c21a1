// Anthropic's Messages API: one POST to `${baseUrl}/messages` with `x-api-key` and
// `anthropic-version`; system messages go in the top-level `system`, tool calls are `tool_use`
// content blocks and tool results `tool_result` blocks of a user turn; the stream is named events
// (message_start, content_block_start/delta/stop, message_delta with stop_reason and usage,
// message_stop, ping, error), or, for a caller that does not stream, one `message` object (its
// content blocks, stop_reason and usage); errors are `{"type":"error","error":{type, message}}`
// (429 rate_limit_error with retry-after and anthropic-ratelimit-* headers, 529 overloaded_error).
import { createHash } from 'node:crypto';
import { anthropicImageTokens, dataUrlOf, imagesTokens } from './images';
import { chatPromptTokens } from './openai';
import { SseFramer } from './sse';
import {
  answerJson, headerNumber, parametersOf, retryAfterMs, UpstreamError,
  type CachePrefix, type ChatMessageIn, type ContentPartIn, type ProviderLimits, type ProviderRequest, type StreamEvent, type StreamParser, type ToolCallOut, type ToolChoiceSpec, type UsageOut, type WireProtocol,
} from './provider';

type Headers = Record<string, string | string[] | undefined>;

export const ANTHROPIC_VERSION = '2023-06-01';

/** A prompt-cache breakpoint: the prefix through the block that carries it is cached (5 minutes unless `ttl` says 1h). */
type CacheControl = { type: 'ephemeral'; ttl?: '1h' };

type Block = (
  | { type: 'text'; text: string }
  | { type: 'tool_use'; id: string; name: string; input: unknown }
  | { type: 'tool_result'; tool_use_id: string; content: string }
  | { type: 'image'; source: { type: 'base64'; media_type: string; data: string } | { type: 'url'; url: string } }
  | { type: 'thinking'; thinking: string; signature: string }
  | { type: 'redacted_thinking'; data: string }
) & { cache_control?: CacheControl };

export interface MessagesRequestBody {
  model: string;
  max_tokens: number;
  /** A string; text blocks (one per system message) when one of them is a cache breakpoint. */
  system?: string | { type: 'text'; text: string; cache_control?: CacheControl }[];
  messages: { role: 'user' | 'assistant'; content: Block[] }[];
  tools?: { name: string; description?: string; input_schema: unknown; cache_control?: CacheControl }[];
  temperature?: number;
  metadata?: { user_id: string };
  thinking?: { type: 'enabled'; budget_tokens: number } | { type: 'adaptive' };
  output_config?: { effort?: string; format?: { type: 'json_schema'; schema: unknown } };
  context_management?: Record<string, unknown>;
}

/** The beta that Anthropic's `context_management` needs (without it: 400 "Extra inputs are not permitted"). */
export const CONTEXT_MANAGEMENT_BETA = 'context-management-2025-06-27';

function inputOf(argumentsJson: string): unknown {
  try {
    const v: unknown = JSON.parse(argumentsJson || '{}');
    return typeof v === 'object' && v !== null && !Array.isArray(v) ? v : {};
  } catch {
    return {};
  }
}

/** A content part as a block: an image from a data: URL as base64, any other by URL; an empty text part is none (Anthropic refuses one). */
function blockOf(p: ContentPartIn): Block[] {
  if (!p.imageUrl) return p.text ? [{ type: 'text', text: p.text, ...cacheControlOf(p.cacheTtl) }] : [];
  const data = dataUrlOf(p.imageUrl);
  return [{ type: 'image', source: data ? { type: 'base64', media_type: data.mediaType, data: data.data } : { type: 'url', url: p.imageUrl }, ...cacheControlOf(p.cacheTtl) }];
}

/** A breakpoint's `cache_control` ("5m" is Anthropic's default, so only 1h is said). */
const cacheControlOf = (ttl: string | undefined): { cache_control?: CacheControl } =>
  ttl ? { cache_control: ttl === '1h' ? { type: 'ephemeral', ttl: '1h' } : { type: 'ephemeral' } } : {};

const isSystem = (m: ChatMessageIn) => m.role === 'system' || m.role === 'developer';

/** The chat as a Messages API body: system apart, tool traffic as blocks, consecutive turns of one role merged. */
/** Built once per call: counted before admission, sent after it. */
const bodies = new WeakMap<ProviderRequest, MessagesRequestBody>();

export function messagesRequestBody(req: ProviderRequest): MessagesRequestBody {
  let body = bodies.get(req);
  if (!body) {
    body = buildBody(req);
    bodies.set(req, body);
  }
  return body;
}

const roleOf = (m: ChatMessageIn): 'user' | 'assistant' => (m.role === 'assistant' ? 'assistant' : 'user');

/** A message's content blocks (tool traffic as blocks), its breakpoint on the last; none for an empty one. */
function messageBlocks(m: ChatMessageIn): Block[] {
  // An assistant's thinking first, as the model wrote it: Anthropic checks each block's signature.
  const blocks: Block[] = m.role === 'assistant' ? thinkingBlocks(m) : [];
  if (m.role === 'tool') blocks.push({ type: 'tool_result', tool_use_id: m.toolCallId ?? '', content: m.content });
  else if (m.parts) blocks.push(...m.parts.flatMap(blockOf));
  else if (m.content) blocks.push({ type: 'text', text: m.content });
  for (const c of m.toolCalls ?? []) blocks.push({ type: 'tool_use', id: c.id, name: c.name, input: inputOf(c.argumentsJson) });
  if (m.cacheTtl && blocks.length > 0) Object.assign(blocks.at(-1)!, cacheControlOf(m.cacheTtl));
  return blocks;
}

const thinkingBlocks = (m: ChatMessageIn): Block[] =>
  (m.thinking ?? []).map((t) => (t.redactedData ? { type: 'redacted_thinking', data: t.redactedData } : { type: 'thinking', thinking: t.text, signature: t.signature }));

/** The system messages as Anthropic's `system`: joined, unless one is a cache breakpoint: then a text block each, the breakpoint on its own. */
function systemOf(systems: readonly ChatMessageIn[]): NonNullable<MessagesRequestBody['system']> {
  return systems.some((m) => m.cacheTtl)
    ? systems.map((m) => ({ type: 'text' as const, text: m.content, ...cacheControlOf(m.cacheTtl) }))
    : systems.map((m) => m.content).join('\n\n');
}

const toolOf = (t: ProviderRequest['tools'][number]) => ({ name: t.name, ...(t.description ? { description: t.description } : {}), input_schema: parametersOf(t), ...cacheControlOf(t.cacheTtl) });

function buildBody(req: ProviderRequest): MessagesRequestBody {
  const system = systemOf(req.messages.filter((m) => isSystem(m) && m.content));
  const turns: MessagesRequestBody['messages'] = [];
  for (const m of req.messages) {
    if (isSystem(m)) continue;
    const blocks = messageBlocks(m);
    if (blocks.length === 0) continue;
    const role = roleOf(m);
    const last = turns.at(-1);
    if (last?.role === role) last.content.push(...blocks);
    else turns.push({ role, content: blocks });
  }
  return {
    model: req.model,
    max_tokens: req.maxTokens,
    ...(system.length > 0 ? { system } : {}),
    messages: turns,
    ...(req.tools.length > 0
      ? { tools: req.tools.map(toolOf) }
      : {}),
    ...toolChoiceOf(req),
    // Anthropic's range is 0–1 (OpenAI's 0–2): higher values are capped.
    ...(req.temperature !== undefined ? { temperature: Math.min(1, Math.max(0, req.temperature)) } : {}),
    ...(req.endUser ? { metadata: { user_id: req.endUser } } : {}),
    ...(req.stop ? { stop_sequences: req.stop } : {}),
    ...(req.topP !== undefined ? { top_p: req.topP } : {}),
    ...(req.topK !== undefined ? { top_k: req.topK } : {}),
    ...thinkingOf(req, outputFormatOf(req)),
    ...(req.contextManagement ? { context_management: req.contextManagement } : {}),
  };
}

/**
 * OpenAI's structured output (`response_format` of type json_schema) as Anthropic's: its schema as
 * `output_config.format` (always strict: the answer is decoded to fit it). JSON mode (json_object)
 * has no counterpart (`unsupported`).
 */
function outputFormatOf(req: ProviderRequest): { format: { type: 'json_schema'; schema: unknown } } | undefined {
  const format = req.responseFormat;
  if (format?.['type'] !== 'json_schema') return undefined;
  return { format: { type: 'json_schema', schema: (format['json_schema'] as { schema?: unknown } | undefined)?.schema ?? {} } };
}

/**
 * Extended thinking and `output_config` (its effort, and the answer's format). OpenAI's
 * `reasoning_effort` is adaptive thinking at that effort: the model decides how much to think, as
 * a reasoning model does (`xhigh` is Anthropic's too); `minimal`, which hardly thinks, is no
 * thinking at `low` effort, and `none` no thinking at the model's own effort.
 */
function thinkingOf(req: ProviderRequest, output: { format: { type: 'json_schema'; schema: unknown } } | undefined): Pick<MessagesRequestBody, 'thinking' | 'output_config'> {
  const reasoning = req.reasoningEffort;
  const effort = reasoning === 'none' ? undefined : reasoning === 'minimal' ? 'low' : reasoning || req.effort;
  const config = effort || output ? { output_config: { ...(effort ? { effort } : {}), ...output } } : {};
  if (reasoning) return thinksAdaptively(req) ? { thinking: { type: 'adaptive' }, ...config } : config;
  return {
    ...(req.thinkingBudgetTokens !== undefined ? { thinking: { type: 'enabled' as const, budget_tokens: req.thinkingBudgetTokens } } : {}),
    ...(req.thinkingAdaptive ? { thinking: { type: 'adaptive' as const } } : {}),
    ...config,
  };
}

/**
 * What Anthropic refuses beside extended thinking (a budget, adaptive, or reasoning_effort's),
 * said as the refusal's subject; undefined: nothing.
 */
export function thinkingClash(req: Pick<ProviderRequest, 'temperature' | 'topK' | 'topP'> & { toolChoice?: ToolChoiceSpec }): string | undefined {
  if (req.temperature !== undefined && req.temperature !== 1) return 'temperature may only be 1';
  if (req.topK !== undefined) return 'top_k may not be set';
  if (req.topP !== undefined && req.topP < 0.95) return 'top_p may only be between 0.95 and 1';
  if (req.toolChoice === 'required' || typeof req.toolChoice === 'object') return 'tool_choice may not force a tool call';
  return undefined;
}

/** reasoning_effort at an effort that thinks (not none or minimal): adaptive thinking on this protocol. */
function thinksAdaptively(req: ProviderRequest): boolean {
  return !!req.reasoningEffort && req.reasoningEffort !== 'none' && req.reasoningEffort !== 'minimal';
}

/**
 * `tool_choice` in Anthropic's names: none, any (OpenAI's required), tool (a named function), auto;
 * at most one call (OpenAI's `parallel_tool_calls: false`) is its `disable_parallel_tool_use`.
 */
function toolChoiceOf(req: ProviderRequest): { tool_choice?: Record<string, unknown> } {
  const one = req.parallelToolCalls === false ? { disable_parallel_tool_use: true } : {};
  const choice = req.toolChoice;
  if (choice === 'none') return { tool_choice: { type: 'none' } };
  if (typeof choice === 'object') return { tool_choice: { type: 'tool', name: choice.name, ...one } };
  if (choice === 'required') return { tool_choice: { type: 'any', ...one } };
  return req.parallelToolCalls === false ? { tool_choice: { type: 'auto', ...one } } : {};
}

/**
 * `anthropic-ratelimit-*`: the token limit is the most restrictive one when given, else the input
 * tokens'; the input and output tokens' limits (ITPM, OTPM) each as well, for an upstream that
 * limits them apart.
 */
export function anthropicLimits(h: Headers): ProviderLimits {
  const limit = (kind: string, k: string) => headerNumber(h, `anthropic-ratelimit-${kind}-${k}`);
  return {
    limitRequests: limit('requests', 'limit'),
    remainingRequests: limit('requests', 'remaining'),
    limitTokens: limit('tokens', 'limit') ?? limit('input-tokens', 'limit'),
    remainingTokens: limit('tokens', 'remaining') ?? limit('input-tokens', 'remaining'),
    limitInputTokens: limit('input-tokens', 'limit'),
    remainingInputTokens: limit('input-tokens', 'remaining'),
    limitOutputTokens: limit('output-tokens', 'limit'),
    remainingOutputTokens: limit('output-tokens', 'remaining'),
  };
}

/** Anthropic's error types in the broker's codes where they mean the same. */
export function errorCode(type: string | undefined, status: number, message: string): string | undefined {
  if (type === 'billing_error' || /credit balance is too low/i.test(message)) return 'insufficient_quota';
  if (type === 'not_found_error' && status === 404) return 'model_not_found';
  if (type === 'overloaded_error') return 'overloaded';
  if (type === 'rate_limit_error') return 'rate_limited';
  return type;
}

export function anthropicError(status: number, h: Headers, text: string): UpstreamError {
  let message = text.slice(0, 300);
  let type: string | undefined;
  try {
    const error = (JSON.parse(text) as { error?: { type?: string; message?: string } }).error;
    message = error?.message ?? message;
    type = error?.type;
  } catch {
    /* not JSON (a proxy's page) */
  }
  return new UpstreamError(`upstream ${status}: ${message}`, status, retryAfterMs(h), anthropicLimits(h), errorCode(type, status, message));
}

/** stop_reason → the broker's finish reasons (OpenAI's words). */
export const FINISH: Record<string, string> = { end_turn: 'stop', stop_sequence: 'stop', max_tokens: 'length', tool_use: 'tool_calls', refusal: 'content_filter', pause_turn: 'stop' };

interface RawEvent {
  type?: string;
  index?: number;
  message?: { model?: string; usage?: RawUsage };
  content_block?: { type?: string; text?: string; id?: string; name?: string; input?: unknown; thinking?: string; signature?: string; data?: string };
  delta?: { type?: string; text?: string; partial_json?: string; thinking?: string; signature?: string; stop_reason?: string | null; stop_sequence?: string | null };
  usage?: RawUsage;
  error?: { type?: string; message?: string };
  /** What the provider cleared from the prompt, on message_delta (the call asked for context management). */
  context_management?: Record<string, unknown> | null;
}

interface RawUsage {
  input_tokens?: number;
  output_tokens?: number;
  cache_creation_input_tokens?: number | null;
  cache_read_input_tokens?: number | null;
  /** The writes by lifetime (since 2025): an hour's are billed at twice the prompt's price, 5 minutes' at 1.25 times. */
  cache_creation?: { ephemeral_5m_input_tokens?: number | null; ephemeral_1h_input_tokens?: number | null } | null;
}

/** Input tokens as billed: the uncached ones plus those written to and read from the prompt cache. */
const inputTokensOf = (u: RawUsage): number => (u.input_tokens ?? 0) + (u.cache_creation_input_tokens ?? 0) + (u.cache_read_input_tokens ?? 0);

/** The usage in the broker's terms: the prompt is all input tokens, the cache's part of it said apart when the provider says it. */
function usageOf(u: RawUsage, outputTokens: number): UsageOut {
  const input = inputTokensOf(u);
  return {
    promptTokens: input,
    completionTokens: outputTokens,
    totalTokens: input + outputTokens,
    ...(u.cache_read_input_tokens != null ? { cacheReadTokens: u.cache_read_input_tokens } : {}),
    ...(u.cache_creation_input_tokens != null ? { cacheWriteTokens: u.cache_creation_input_tokens } : {}),
    ...(u.cache_creation?.ephemeral_1h_input_tokens != null ? { cacheWrite1hTokens: u.cache_creation.ephemeral_1h_input_tokens } : {}),
  };
}

/** Reads the Messages stream: text deltas as content, tool_use blocks assembled from input_json_delta, usage from message_start and message_delta. */
export class MessagesStreamParser implements StreamParser {
  private readonly framer = new SseFramer();
  /** The tool_use blocks by their block's index; `ordinal` is the call's index among the calls. */
  private readonly calls = new Map<number, ToolCallOut & { input: unknown; ordinal: number }>();
  /** The input side of the usage, as message_start (or a later message_delta) said it. */
  private input: RawUsage = {};
  private stopped = false;
  private stopReason = false;

  get complete(): boolean {
    return this.stopped;
  }

  push(text: string): StreamEvent[] {
    const events: StreamEvent[] = [];
    for (const frame of this.framer.push(text)) {
      let e: RawEvent;
      try {
        e = JSON.parse(frame.data) as RawEvent;
      } catch {
        throw new UpstreamError(`upstream error inside the stream: the provider sent a stream line that is not JSON: ${JSON.stringify(frame.data.slice(0, 80))}`, 0, undefined, {}, 'invalid_stream_data');
      }
      this.onEvent(frame.event ?? e.type ?? '', e, events);
    }
    return events;
  }

  end(): void {
    if (!this.stopped) throw new UpstreamError('upstream stream ended before message_stop', 0);
    if (!this.stopReason) throw new UpstreamError('upstream stream ended without a stop_reason', 0);
  }

  toolCalls(): ToolCallOut[] {
    return [...this.calls.entries()]
      .sort((a, b) => a[0] - b[0])
      .map(([, c]) => ({ id: c.id, name: c.name, argumentsJson: c.argumentsJson || JSON.stringify(c.input ?? {}) }));
  }

  private onEvent(name: string, e: RawEvent, events: StreamEvent[]): void {
    switch (name) {
      case 'message_start': {
        if (e.message?.model) events.push({ type: 'model', model: e.message.model });
        const u = e.message?.usage;
        if (u) this.input = u;
        return;
      }
      case 'content_block_start': {
        const b = e.content_block;
        if (b?.type === 'tool_use') {
          // Tool calls are numbered among themselves (0 for the first), as OpenAI's are.
          const call = { id: b.id ?? '', name: b.name ?? '', argumentsJson: '', input: b.input, ordinal: this.calls.size };
          this.calls.set(e.index ?? 0, call);
          events.push({ type: 'tool_call', index: call.ordinal, id: call.id, name: call.name, arguments: '' });
        }
        else if (b?.type === 'text' && b.text) events.push({ type: 'content', text: b.text });
        else if (b?.type === 'thinking' || b?.type === 'redacted_thinking') events.push(...thinkingEvents(b));
        return;
      }
      case 'content_block_delta': {
        const d = e.delta;
        if (d?.type === 'text_delta' && d.text) events.push({ type: 'content', text: d.text });
        else if (d?.type === 'thinking_delta' && d.thinking) events.push({ type: 'thinking', text: d.thinking });
        else if (d?.type === 'signature_delta' && d.signature) events.push({ type: 'thinking', signature: d.signature });
        else if (d?.type === 'input_json_delta' && d.partial_json) {
          const call = this.calls.get(e.index ?? 0);
          if (call) {
            call.argumentsJson += d.partial_json;
            events.push({ type: 'tool_call', index: call.ordinal, arguments: d.partial_json });
          }
        }
        return;
      }
      case 'message_delta': {
        if (e.context_management) events.push({ type: 'context_management', applied: e.context_management });
        if (e.delta?.stop_reason) {
          this.stopReason = true;
          events.push({ type: 'finish', reason: FINISH[e.delta.stop_reason] ?? e.delta.stop_reason, ...(e.delta.stop_sequence ? { stopSequence: e.delta.stop_sequence } : {}) });
        }
        const u = e.usage;
        if (u?.output_tokens !== undefined) {
          // output_tokens is cumulative; newer API versions repeat the input counts here too (not
          // always their split by lifetime: message_start's is kept).
          if (u.input_tokens !== undefined) this.input = { ...this.input, ...u };
          events.push({ type: 'usage', usage: usageOf(this.input, u.output_tokens) });
        }
        return;
      }
      case 'content_block_stop': {
        // A tool_use block whose input came whole in its start, with no delta: passed on now.
        const call = this.calls.get(e.index ?? 0);
        if (call && !call.argumentsJson && call.input !== undefined && JSON.stringify(call.input) !== '{}') events.push({ type: 'tool_call', index: call.ordinal, arguments: JSON.stringify(call.input) });
        return;
      }
      case 'message_stop':
        this.stopped = true;
        return;
      case 'error': {
        const err = e.error ?? {};
        throw new UpstreamError(`upstream error inside the stream: ${err.message || err.type || 'the provider reported an error'}`, 0, undefined, {}, errorCode(err.type, 0, err.message ?? ''));
      }
      default:
        return; // ping, and event types added later (Anthropic's versioning policy)
    }
  }
}

/**
 * A thinking block as a whole (a non-streamed answer's, or a stream's block that came whole in its
 * start: a redacted one always does): its text, then its signature; a redacted block's data.
 */
function thinkingEvents(b: NonNullable<RawEvent['content_block']>): StreamEvent[] {
  if (b.type === 'redacted_thinking') return [{ type: 'thinking', redactedData: b.data ?? '' }];
  return [...(b.thinking ? [{ type: 'thinking' as const, text: b.thinking }] : []), ...(b.signature ? [{ type: 'thinking' as const, signature: b.signature }] : [])];
}

interface RawMessage {
  type?: string;
  model?: string;
  content?: NonNullable<RawEvent['content_block']>[];
  stop_reason?: string | null;
  stop_sequence?: string | null;
  usage?: RawUsage;
  error?: { type?: string; message?: string };
  context_management?: Record<string, unknown> | null;
}

/**
 * A non-streamed `message` → the events its stream would have given (model, its thinking blocks,
 * the text blocks as one content delta, finish, usage) and its tool_use blocks as tool calls (other
 * block types are left out as the stream parser leaves them). A body that is not JSON, an error
 * object, or a message without a stop_reason is an UpstreamError.
 */
export function messageAnswer(text: string): { events: StreamEvent[]; toolCalls: ToolCallOut[] } {
  const raw = answerJson<RawMessage>(text);
  if (raw.type === 'error' || raw.error !== undefined) {
    const e = raw.error ?? {};
    throw new UpstreamError(`upstream error in the answer: ${e.message || e.type || 'the provider reported an error'}`, 0, undefined, {}, errorCode(e.type, 0, e.message ?? ''));
  }
  if (!raw.stop_reason) throw new UpstreamError('upstream answer has no stop_reason', 0, undefined, {}, 'invalid_response');
  const blocks = raw.content ?? [];
  const events: StreamEvent[] = [];
  if (raw.model) events.push({ type: 'model', model: raw.model });
  for (const b of blocks) if (b.type === 'thinking' || b.type === 'redacted_thinking') events.push(...thinkingEvents(b));
  const content = blocks.map((b) => (b.type === 'text' ? (b.text ?? '') : '')).join('');
  if (content) events.push({ type: 'content', text: content });
  if (raw.context_management) events.push({ type: 'context_management', applied: raw.context_management });
  events.push({ type: 'finish', reason: FINISH[raw.stop_reason] ?? raw.stop_reason, ...(raw.stop_sequence ? { stopSequence: raw.stop_sequence } : {}) });
  const u = raw.usage;
  if (u?.output_tokens !== undefined) events.push({ type: 'usage', usage: usageOf(u, u.output_tokens) });
  const toolCalls = blocks
    .filter((b) => b.type === 'tool_use')
    .map((b) => ({ id: b.id ?? '', name: b.name ?? '', argumentsJson: JSON.stringify(b.input ?? {}) }));
  return { events, toolCalls };
}

/**
 * Anthropic's tokenizer is not public: its prompt is estimated by OpenAI's chat rule (cl100k_base)
 * on the chat as the Messages API takes it (the system messages as one `system`), its images
 * priced as Anthropic prices them. A reservation is settled with the billed usage.
 */
function countPromptTokens(req: ProviderRequest): number {
  const system = req.messages.filter((m) => isSystem(m) && m.content).map((m) => m.content).join('\n\n');
  const messages = [...(system ? [{ role: 'system', content: system }] : []), ...req.messages.filter((m) => !isSystem(m))];
  return chatPromptTokens({ ...req, messages }) + imagesTokens(req.messages, anthropicImageTokens);
}

const TTL_MS: Record<string, number> = { '1h': 3_600_000 };
const DEFAULT_TTL_MS = 300_000;

/** Anthropic reads a cached prefix ending at a breakpoint or at any block boundary up to 20 blocks before it. */
export const LOOKBACK_BLOCKS = 20;

/**
 * The shortest prefix a model caches (a shorter breakpoint is neither written nor read), by
 * Anthropic's table: 4,096 tokens for Opus 4.5 and 4.6 and Haiku 4.5; 2,048 for Sonnet 4.6, Opus
 * 4.7 and the Haiku 3 models; 1,024 for the others. Where sources differ, the larger.
 */
export function minCachedTokens(model: string): number {
  if (/opus-4-[56]|haiku-4-5/.test(model)) return 4096;
  if (/sonnet-4-6|opus-4-7|haiku/.test(model)) return 2048;
  return 1024;
}

type Marked = { cache_control?: CacheControl };

/** A block as a piece of the prefix: where the breakpoints are is not part of it. */
const pieceOf = ({ cache_control: _, ...rest }: Marked & object): string => JSON.stringify(rest);

/**
 * The call's cache breakpoints in the order Anthropic caches a prompt (tools, system, messages),
 * each keyed by a digest of the model and every block before it and its own (not the breakpoints:
 * moving one later keeps the key of an earlier prefix), with the keys of the 20 block boundaries
 * before it, where the provider looks for an earlier prefix it holds (a conversation that marks its
 * last turn reads the turn before). A prefix's tokens are counted as the call's are, on the call
 * cut after it, and only when asked. None without a breakpoint: nothing is hashed then.
 */
function cachePrefixes(req: ProviderRequest): CachePrefix[] {
  const body = messagesRequestBody(req);
  const marked = (b: Marked) => b.cache_control !== undefined;
  if (!body.tools?.some(marked) && !(Array.isArray(body.system) && body.system.some(marked)) && !body.messages.some((t) => t.content.some(marked))) return [];
  const minTokens = minCachedTokens(req.model);
  const digest = createHash('sha256').update(JSON.stringify(req.model));
  const keys: string[] = [];
  const prefixes: CachePrefix[] = [];
  const boundary = (piece: string, block: Marked, cut: () => ProviderRequest) => {
    const key = digest.update(piece).copy().digest('base64url');
    const ttl = block.cache_control?.ttl ?? (block.cache_control ? '5m' : undefined);
    if (ttl) {
      let tokens: number | undefined;
      prefixes.push({ key, lookback: keys.slice(-LOOKBACK_BLOCKS).reverse(), ttlMs: TTL_MS[ttl] ?? DEFAULT_TTL_MS, minTokens, tokens: () => (tokens ??= countPromptTokens(cut())) });
    }
    keys.push(key);
  };
  body.tools?.forEach((t, i) => boundary(pieceOf(t), t, () => ({ ...req, messages: [], tools: req.tools.slice(0, i + 1) })));
  const systems = req.messages.filter((m) => isSystem(m) && m.content);
  if (Array.isArray(body.system)) body.system.forEach((b, i) => boundary(pieceOf(b), b, () => ({ ...req, messages: systems.slice(0, i + 1) })));
  else if (body.system) boundary(JSON.stringify(body.system), {}, () => ({ ...req, messages: systems }));
  const others = req.messages.filter((m) => !isSystem(m));
  let role: string | undefined;
  others.forEach((m, i) => {
    const blocks = messageBlocks(m);
    if (blocks.length === 0) return;
    // A turn opens with its role; consecutive messages of one role are one turn.
    if (roleOf(m) !== role) digest.update(JSON.stringify((role = roleOf(m))));
    const whole = () => ({ ...req, messages: [...systems, ...others.slice(0, i + 1)] });
    // A part's block, before the message's last, is cut after its part.
    const partOf = m.role !== 'tool' && m.parts ? m.parts.flatMap((p, j) => (p.imageUrl || p.text ? [j] : [])) : [];
    // An assistant's thinking blocks come before its parts' blocks.
    const thought = m.role === 'assistant' ? (m.thinking?.length ?? 0) : 0;
    blocks.forEach((b, k) => {
      const j = k < thought ? undefined : partOf[k - thought];
      const cut = k === blocks.length - 1 || j === undefined ? whole : () => {
        const parts = m.parts!.slice(0, j + 1);
        return { ...req, messages: [...systems, ...others.slice(0, i), { ...m, parts, content: parts.map((x) => x.text).join(''), toolCalls: [] }] };
      };
      boundary(pieceOf(b), b, cut);
    });
  });
  return prefixes;
}

/** What the Messages API has no way to send, as OpenAI's parameter names: a call that sets one goes elsewhere, or is refused. */
const UNSUPPORTED: [string, (req: ProviderRequest) => boolean][] = [
  // Anthropic has no embeddings endpoint.
  ['embeddings', (r) => r.embed !== undefined],
  ['seed', (r) => r.seed !== undefined],
  ['presence_penalty', (r) => r.presencePenalty !== undefined],
  ['frequency_penalty', (r) => r.frequencyPenalty !== undefined],
  // Its structured output takes a JSON schema: JSON mode (json_object) has no counterpart.
  ['response_format', (r) => r.responseFormat !== undefined && r.responseFormat['type'] !== 'json_schema'],
  ['logprobs', (r) => r.logprobs === true],
  ['logit_bias', (r) => r.logitBias !== undefined],
  ['verbosity', (r) => !!r.verbosity],
  // It sizes every image itself: a detail asked for would be ignored.
  ['image_url.detail', (r) => r.messages.some((m) => m.parts?.some((p) => p.imageDetail === 'low' || p.imageDetail === 'high'))],
];

export const anthropicProtocol: WireProtocol = {
  name: 'anthropic',
  request(req, apiKey, stream) {
    const headers: Record<string, string> = { 'content-type': 'application/json', accept: stream ? 'text/event-stream' : 'application/json', 'anthropic-version': ANTHROPIC_VERSION };
    if (apiKey) headers['x-api-key'] = apiKey;
    // The caller's betas, and the one context editing needs (each once).
    const betas = [...new Set([...(req.anthropicBetas ?? []), ...(req.contextManagement ? [CONTEXT_MANAGEMENT_BETA] : [])])];
    if (betas.length > 0) headers['anthropic-beta'] = betas.join(',');
    return { path: '/messages', headers, body: JSON.stringify({ ...messagesRequestBody(req), stream }) };
  },
  answer: messageAnswer,
  limits: anthropicLimits,
  error: anthropicError,
  parser: () => new MessagesStreamParser(),
  countPromptTokens,
  unsupported(req) {
    const clash = thinksAdaptively(req) ? thinkingClash(req) : undefined;
    // Said as what is refused: "reasoning_effort high, where temperature may only be 1, …".
    if (clash) return `reasoning_effort ${req.reasoningEffort} (adaptive thinking), where ${clash},`;
    return UNSUPPORTED.find(([, set]) => set(req))?.[0];
  },
  cachePrefixes,
  // Reads from the prompt cache do not count against the ITPM (Anthropic's current models).
  cacheReadsLimited: false,
};
