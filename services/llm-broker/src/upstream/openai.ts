// The OpenAI-compatible chat-completions protocol (OpenAI, Volcengine Ark, vLLM, the emulator):
// one POST to `${baseUrl}/chat/completions`, bearer key, streamed as `chat.completion.chunk` events
// ending with `data: [DONE]` (or, for a caller that does not stream, one `chat.completion` object),
// `x-ratelimit-*` headers, errors as `{"error": {message, type, code}}`.
import { countPromptTokens as countChatTokens } from '../tokens';
import { embeddingsAnswer, embeddingsRequestBody, embedPromptTokens } from './embeddings';
import { imagesTokens, openAiImageTokens } from './images';
import { SseFramer } from './sse';
import {
  answerJson, headerNumber, parametersOf, retryAfterMs, UpstreamError,
  type ChatMessageIn, type ContentPartIn, type LogprobOut, type ProviderLimits, type ProviderRequest, type StreamEvent, type StreamParser, type ToolCallOut, type ToolSpec, type WireProtocol,
} from './provider';

type Headers = Record<string, string | string[] | undefined>;

/**
 * A chat's prompt tokens but its images' (each provider prices those its own way), by OpenAI's
 * rule for chat completions: its messages as OpenAI's body has them, tool calls and tools as JSON.
 */
export function chatPromptTokens(req: ProviderRequest): number {
  const body = chatRequestBody(req);
  return countChatTokens(
    req.messages.map((m, i) => ({ role: m.role, content: m.content, name: m.name, toolCalls: (body.messages[i] as { tool_calls?: unknown[] }).tool_calls })),
    body.tools ? JSON.stringify(body.tools) : '',
  );
}

/** The request body, as OpenAI's API takes it (also what the response cache keys). */
export interface ChatRequestBody {
  model: string;
  messages: unknown[];
  max_tokens: number;
  tools?: unknown[];
  tool_choice?: unknown;
  temperature?: number;
  stop?: string[];
  top_p?: number;
  seed?: number;
  presence_penalty?: number;
  frequency_penalty?: number;
  response_format?: Record<string, unknown>;
  parallel_tool_calls?: boolean;
  logprobs?: boolean;
  top_logprobs?: number;
  reasoning_effort?: string;
  logit_bias?: Record<string, number>;
  verbosity?: string;
  user?: string;
  prompt_cache_key?: string;
}

/** A part as OpenAI's content part: text, or an image by URL with its detail. */
const wirePart = (p: ContentPartIn) => (p.imageUrl
  ? { type: 'image_url', image_url: { url: p.imageUrl, ...(p.imageDetail ? { detail: p.imageDetail } : {}) } }
  : { type: 'text', text: p.text });

export function wireMessages(messages: ChatMessageIn[]): unknown[] {
  return messages.map((m) => ({
    role: m.role,
    content: m.parts ? m.parts.map(wirePart) : m.content,
    ...(m.name ? { name: m.name } : {}),
    ...(m.toolCallId ? { tool_call_id: m.toolCallId } : {}),
    ...(m.toolCalls && m.toolCalls.length > 0
      ? { tool_calls: m.toolCalls.map((c) => ({ id: c.id, type: 'function', function: { name: c.name, arguments: c.argumentsJson } })) }
      : {}),
  }));
}

export function wireTools(tools: ToolSpec[]): unknown[] {
  return tools.map((t) => ({ type: 'function', function: { name: t.name, ...(t.description ? { description: t.description } : {}), parameters: parametersOf(t) } }));
}

/** Built once per call: counted before admission, sent after it. */
const bodies = new WeakMap<ProviderRequest, ChatRequestBody>();

export function chatRequestBody(req: ProviderRequest): ChatRequestBody {
  let body = bodies.get(req);
  if (!body) {
    body = buildBody(req);
    bodies.set(req, body);
  }
  return body;
}

function buildBody(req: ProviderRequest): ChatRequestBody {
  return {
    model: req.model,
    messages: wireMessages(req.messages),
    max_tokens: req.maxTokens,
    ...(req.tools.length > 0 ? { tools: wireTools(req.tools) } : {}),
    ...(req.toolChoice ? { tool_choice: typeof req.toolChoice === 'string' ? req.toolChoice : { type: 'function', function: { name: req.toolChoice.name } } } : {}),
    ...(req.temperature !== undefined ? { temperature: req.temperature } : {}),
    ...(req.stop ? { stop: req.stop } : {}),
    ...(req.topP !== undefined ? { top_p: req.topP } : {}),
    ...(req.seed !== undefined ? { seed: req.seed } : {}),
    ...(req.presencePenalty !== undefined ? { presence_penalty: req.presencePenalty } : {}),
    ...(req.frequencyPenalty !== undefined ? { frequency_penalty: req.frequencyPenalty } : {}),
    ...(req.responseFormat ? { response_format: req.responseFormat } : {}),
    ...(req.parallelToolCalls === false ? { parallel_tool_calls: false } : {}),
    ...(req.logprobs ? { logprobs: true, ...(req.topLogprobs ? { top_logprobs: req.topLogprobs } : {}) } : {}),
    ...(req.reasoningEffort ? { reasoning_effort: req.reasoningEffort } : {}),
    ...(req.logitBias ? { logit_bias: req.logitBias } : {}),
    ...(req.verbosity ? { verbosity: req.verbosity } : {}),
    ...(req.endUser ? { user: req.endUser } : {}),
    ...(req.promptCacheKey ? { prompt_cache_key: req.promptCacheKey } : {}),
  };
}

export function limitHeaders(h: Headers): ProviderLimits {
  return {
    limitRequests: headerNumber(h, 'x-ratelimit-limit-requests'),
    remainingRequests: headerNumber(h, 'x-ratelimit-remaining-requests'),
    limitTokens: headerNumber(h, 'x-ratelimit-limit-tokens'),
    remainingTokens: headerNumber(h, 'x-ratelimit-remaining-tokens'),
  };
}

export function openAiError(status: number, h: Headers, text: string): UpstreamError {
  let message = text.slice(0, 300);
  let code: string | undefined;
  try {
    const error = (JSON.parse(text) as { error?: { message?: string; code?: string | null; type?: string } }).error;
    message = error?.message ?? message;
    code = error?.code ?? error?.type ?? undefined;
  } catch {
    /* not JSON */
  }
  return new UpstreamError(`upstream ${status}: ${message}`, status, retryAfterMs(h), limitHeaders(h), code);
}

interface RawChunk {
  error?: { message?: string; code?: string | null; type?: string } | string;
  message?: string;
  model?: string;
  choices?: Array<{
    delta?: { content?: string | null; tool_calls?: Array<{ index?: number; id?: string; function?: { name?: string; arguments?: string } }> };
    logprobs?: RawLogprobs;
    finish_reason?: string | null;
  }>;
  usage?: { prompt_tokens?: number; completion_tokens?: number; total_tokens?: number; completion_tokens_details?: { reasoning_tokens?: number } | null; prompt_tokens_details?: { cached_tokens?: number } | null } | null;
}

/** A choice's `logprobs`: its tokens' figures (`content`), when the request asked for them. */
type RawLogprobs = { content?: RawLogprob[] | null } | null | undefined;
interface RawLogprob {
  token?: string;
  logprob?: number;
  bytes?: number[] | null;
  top_logprobs?: RawLogprob[] | null;
}

const logprobOf = (r: RawLogprob): LogprobOut => ({ token: r.token ?? '', logprob: r.logprob ?? 0, bytes: r.bytes ?? [], topLogprobs: (r.top_logprobs ?? []).map(logprobOf) });

/** A content event, with its tokens' log probabilities when the provider gave them. */
function contentEvent(text: string, logprobs: RawLogprobs): StreamEvent {
  return logprobs?.content?.length ? { type: 'content', text, logprobs: logprobs.content.map(logprobOf) } : { type: 'content', text };
}

function usageEvent(u: NonNullable<RawChunk['usage']>): StreamEvent {
  const total = u.total_tokens ?? (u.prompt_tokens ?? 0) + (u.completion_tokens ?? 0);
  const reasoning = u.completion_tokens_details?.reasoning_tokens;
  const cached = u.prompt_tokens_details?.cached_tokens;
  return {
    type: 'usage',
    usage: { promptTokens: u.prompt_tokens ?? 0, completionTokens: u.completion_tokens ?? 0, totalTokens: total, ...(typeof reasoning === 'number' ? { reasoningTokens: reasoning } : {}), ...(typeof cached === 'number' ? { cacheReadTokens: cached } : {}) },
  };
}

/**
 * Reads `chat.completion.chunk` events. Tool calls arrive as fragments keyed by index and are
 * assembled here. An in-stream error (`data: {"error": …}`, or an `event: error` block) and a data
 * line that is not JSON (code `invalid_stream_data`, naming what arrived) throw an UpstreamError;
 * a body that ends before `[DONE]` or without a finish_reason fails `end()`.
 */
export class ChunkParser implements StreamParser {
  private readonly framer = new SseFramer();
  private readonly calls = new Map<number, ToolCallOut>();
  /** The calls passed on (as `tool_call` events) so far. */
  private readonly announced = new Set<number>();
  private modelSeen = false;
  private finished = false;
  private done = false;

  get complete(): boolean {
    return this.done;
  }

  push(text: string): StreamEvent[] {
    const events: StreamEvent[] = [];
    for (const frame of this.framer.push(text)) {
      if (frame.data === '[DONE]') {
        this.done = true;
        continue;
      }
      let chunk: RawChunk;
      try {
        chunk = JSON.parse(frame.data) as RawChunk;
      } catch {
        throw new UpstreamError(`upstream error inside the stream: the provider sent a stream line that is not JSON: ${JSON.stringify(frame.data.slice(0, 80))}`, 0, undefined, {}, 'invalid_stream_data');
      }
      if (chunk.error !== undefined || frame.event === 'error') {
        const e = typeof chunk.error === 'string' ? { message: chunk.error } : (chunk.error ?? (chunk as { message?: string; code?: string }));
        throw new UpstreamError(`upstream error inside the stream: ${e.message || 'the provider reported an error'}`, 0, undefined, {}, e.code ?? undefined);
      }
      this.onChunk(chunk, events);
    }
    return events;
  }

  end(): void {
    if (!this.done) throw new UpstreamError('upstream stream ended before [DONE]', 0);
    if (!this.finished) throw new UpstreamError('upstream stream ended without a finish_reason', 0);
  }

  /** The complete tool calls, in index order. */
  toolCalls(): ToolCallOut[] {
    return [...this.calls.entries()].sort((a, b) => a[0] - b[0]).map(([, c]) => c);
  }

  private announce(index: number, call: ToolCallOut, events: StreamEvent[]): void {
    this.announced.add(index);
    events.push({ type: 'tool_call', index, id: call.id, name: call.name, arguments: call.argumentsJson });
  }

  private onChunk(chunk: RawChunk, events: StreamEvent[]): void {
    if (chunk.model && !this.modelSeen) {
      this.modelSeen = true;
      events.push({ type: 'model', model: chunk.model });
    }
    for (const choice of chunk.choices ?? []) {
      const delta = choice.delta;
      if (delta?.content) events.push(contentEvent(delta.content, choice.logprobs));
      for (const tc of delta?.tool_calls ?? []) {
        const index = tc.index ?? 0;
        const call = this.calls.get(index) ?? { id: '', name: '', argumentsJson: '' };
        if (tc.id) call.id = tc.id;
        if (tc.function?.name) call.name += tc.function.name;
        if (tc.function?.arguments) call.argumentsJson += tc.function.arguments;
        this.calls.set(index, call);
        // A call is passed on once its id and name are known (some providers send them after the
        // call's first chunk), with the arguments so far; then each fragment as it comes.
        if (this.announced.has(index)) {
          if (tc.function?.arguments) events.push({ type: 'tool_call', index, arguments: tc.function.arguments });
        } else if (call.id && call.name) this.announce(index, call, events);
      }
      if (choice.finish_reason) {
        // A call still without its id or name is passed on with what came of it.
        for (const [index, call] of [...this.calls.entries()].sort((a, b) => a[0] - b[0])) if (!this.announced.has(index)) this.announce(index, call, events);
        this.finished = true;
        events.push({ type: 'finish', reason: choice.finish_reason });
      }
    }
    if (chunk.usage) events.push(usageEvent(chunk.usage));
  }
}

interface RawCompletion {
  error?: { message?: string; code?: string | null; type?: string } | string;
  model?: string;
  choices?: Array<{
    message?: { content?: string | null; tool_calls?: Array<{ id?: string; function?: { name?: string; arguments?: string } }> | null };
    logprobs?: RawLogprobs;
    finish_reason?: string | null;
  }>;
  usage?: RawChunk['usage'];
}

/**
 * A non-streamed `chat.completion` → the events its stream would have given (model, one content
 * delta, finish, usage) and its tool calls. A body that is not JSON, an error object, or an answer
 * without a choice or finish_reason is an UpstreamError.
 */
export function completionAnswer(text: string): { events: StreamEvent[]; toolCalls: ToolCallOut[] } {
  const raw = answerJson<RawCompletion>(text);
  if (raw.error !== undefined) {
    const e = typeof raw.error === 'string' ? { message: raw.error, code: undefined } : raw.error;
    throw new UpstreamError(`upstream error in the answer: ${e.message || 'the provider reported an error'}`, 0, undefined, {}, e.code ?? undefined);
  }
  const choice = raw.choices?.[0];
  if (!choice?.finish_reason) throw new UpstreamError('upstream answer has no choice with a finish_reason', 0, undefined, {}, 'invalid_response');
  const events: StreamEvent[] = [];
  if (raw.model) events.push({ type: 'model', model: raw.model });
  if (choice.message?.content) events.push(contentEvent(choice.message.content, choice.logprobs));
  events.push({ type: 'finish', reason: choice.finish_reason });
  if (raw.usage) events.push(usageEvent(raw.usage));
  const toolCalls = (choice.message?.tool_calls ?? []).map((c) => ({ id: c.id ?? '', name: c.function?.name ?? '', argumentsJson: c.function?.arguments ?? '' }));
  return { events, toolCalls };
}

export const openAiProtocol: WireProtocol = {
  name: 'openai',
  // OpenAI counts every prompt token against its TPM, those read from its prompt cache too.
  cacheReadsLimited: true,
  request(req, apiKey, stream) {
    const headers: Record<string, string> = { 'content-type': 'application/json', accept: stream ? 'text/event-stream' : 'application/json' };
    if (apiKey) headers.authorization = `Bearer ${apiKey}`;
    if (req.embed) return { path: '/embeddings', headers, body: JSON.stringify(embeddingsRequestBody({ ...req, embed: req.embed })) };
    const body = stream ? { ...chatRequestBody(req), stream: true, stream_options: { include_usage: true } } : { ...chatRequestBody(req), stream: false };
    return { path: '/chat/completions', headers, body: JSON.stringify(body) };
  },
  answer: (body, req) => (req.embed ? embeddingsAnswer(body, req.embed) : completionAnswer(body)),
  limits: limitHeaders,
  error: openAiError,
  parser: () => new ChunkParser(),
  countPromptTokens: (req) => (req.embed ? embedPromptTokens(req.embed) : chatPromptTokens(req) + imagesTokens(req.messages, openAiImageTokens)),
  // Anthropic's sampling from the k likeliest tokens: OpenAI's API has no such parameter.
  unsupported: (req) => (req.topK !== undefined ? 'top_k'
    : req.thinkingBudgetTokens !== undefined || req.thinkingAdaptive ? 'thinking'
      : req.contextManagement ? 'context_management'
        : req.effort ? 'output_config' : undefined),
};
