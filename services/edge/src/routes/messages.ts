// Anthropic's Messages API (POST /v1/messages), so that a client written for Anthropic (its SDKs,
// coding agents pointed at a gateway) works unchanged: a request's `system`, `messages` and their
// content blocks become a chat completion's messages, answered by the same call as
// /v1/chat/completions (`completion`: the broker's queue and quota, the cache, the pipeline for
// `agent-mesh`), and written back as a `message` — or, streamed, as Anthropic's named events
// (message_start, content_block_start/delta/stop, message_delta, message_stop). Errors are
// Anthropic's (`{"type": "error", "error": {type, message}}`: app.ts). The token is a bearer
// token or the `x-api-key` header, as Anthropic's clients send it.
import { ANTHROPIC_BETA_NAME, MAX_ANTHROPIC_BETAS } from '@agent-mesh/common';
import type { FastifyInstance } from 'fastify';
import { randomBytes } from 'node:crypto';
import type { EdgeContext } from '../context';
import { anthropicType, badRequest, fromGrpc, HttpError, isGrpcError } from '../errors';
import { BlockSequence, type Step, type WholeThinking } from './blocks';
import { CACHE_HEADER, completion, countTokens, openStream, readToEnd, wholeAnswer, type Begun, type ChatBody, type Piece } from './openai';
import {
  anyObject, cacheControlSchema, cacheTtlOf, FUNCTION_NAME, hourAfterFiveMinutes, MAX_CACHE_BREAKPOINTS, NO_NUL, redactedThinkingBlockSchema, thinkingBlockSchema, thinkingSchema,
} from './schemas';

const text = { type: 'string', maxLength: 200_000, pattern: NO_NUL } as const;
const IMAGE_TYPES = ['image/jpeg', 'image/png', 'image/gif', 'image/webp'];

const textBlock = { type: 'object', required: ['type', 'text'], properties: { type: { type: 'string', enum: ['text'] }, text, cache_control: cacheControlSchema } } as const;

const imageBlock = {
  type: 'object',
  required: ['type', 'source'],
  properties: {
    type: { type: 'string', enum: ['image'] },
    source: {
      anyOf: [
        { type: 'object', required: ['type', 'media_type', 'data'], properties: { type: { type: 'string', enum: ['base64'] }, media_type: { type: 'string', enum: IMAGE_TYPES }, data: { type: 'string', pattern: '^[A-Za-z0-9+/=]*$' } } },
        { type: 'object', required: ['type', 'url'], properties: { type: { type: 'string', enum: ['url'] }, url: { type: 'string', pattern: '^https?://' } } },
      ],
    },
    cache_control: cacheControlSchema,
  },
} as const;

const toolUseBlock = {
  type: 'object',
  required: ['type', 'id', 'name', 'input'],
  properties: { type: { type: 'string', enum: ['tool_use'] }, id: { type: 'string', minLength: 1, maxLength: 128, pattern: NO_NUL }, name: { type: 'string', pattern: FUNCTION_NAME }, input: { type: 'object' }, cache_control: cacheControlSchema },
} as const;

const toolResultBlock = {
  type: 'object',
  required: ['type', 'tool_use_id'],
  properties: {
    type: { type: 'string', enum: ['tool_result'] },
    tool_use_id: { type: 'string', minLength: 1, maxLength: 128, pattern: NO_NUL },
    content: { anyOf: [text, { type: 'array', maxItems: 100, items: textBlock }] },
    is_error: { type: 'boolean' },
    cache_control: cacheControlSchema,
  },
} as const;

/** A turn, by its role as Anthropic defines them: a user's holds text, images and tool results; an assistant's text and tool calls. */
const turn = (role: string, blocks: readonly object[]) => ({
  type: 'object',
  required: ['role', 'content'],
  properties: { role: { type: 'string', enum: [role] }, content: { anyOf: [text, { type: 'array', maxItems: 100, items: { anyOf: blocks } }] } },
});

type CacheControl = { type: 'ephemeral'; ttl?: '5m' | '1h' } | null;

type Block = (
  | { type: 'text'; text: string }
  | { type: 'image'; source: { type: 'base64'; media_type: string; data: string } | { type: 'url'; url: string } }
  | { type: 'tool_use'; id: string; name: string; input: Record<string, unknown> }
  | { type: 'tool_result'; tool_use_id: string; content?: string | { type: 'text'; text: string; cache_control?: CacheControl }[]; is_error?: boolean }
  | WholeThinking
) & { cache_control?: CacheControl };

/** A tool result's breakpoint: its own, or one on a block of its content (the result is one message). */
const resultMark = (b: Extract<Block, { type: 'tool_result' }>): CacheControl | undefined =>
  b.cache_control ?? (Array.isArray(b.content) ? b.content.findLast((c) => c.cache_control)?.cache_control : undefined);

/** Refused as Anthropic refuses them: more than 4 blocks with cache_control, or one of an hour after one of 5 minutes. */
function checkBreakpoints(body: MessagesBody): void {
  // In the order Anthropic reads them: tools, system, messages.
  const blocks = [
    ...(body.tools ?? []),
    ...(Array.isArray(body.system) ? body.system : []),
    ...body.messages.flatMap((m) => (typeof m.content === 'string' ? [] : m.content.flatMap((b) => [b, ...(b.type === 'tool_result' && Array.isArray(b.content) ? b.content : [])]))),
  ];
  const found = blocks.filter((b) => b.cache_control).length;
  if (found > MAX_CACHE_BREAKPOINTS) throw badRequest(`body: a maximum of ${MAX_CACHE_BREAKPOINTS} blocks with cache_control may be provided. Found ${found}.`);
  if (hourAfterFiveMinutes(blocks.map((b) => cacheTtlOf(b.cache_control)).filter((t) => t !== ''))) {
    throw badRequest("body: a ttl='1h' cache_control block must not come after a ttl='5m' cache_control block. Note that blocks are processed in the following order: `tools`, `system`, `messages`.");
  }
}

interface MessagesBody {
  model: string;
  max_tokens: number;
  messages: { role: 'user' | 'assistant'; content: string | Block[] }[];
  system?: string | { type: 'text'; text: string; cache_control?: CacheControl }[];
  stop_sequences?: string[];
  temperature?: number;
  top_p?: number;
  top_k?: number;
  stream?: boolean;
  tools?: { name: string; description?: string; input_schema: Record<string, unknown>; type?: string; cache_control?: CacheControl }[];
  tool_choice?: { type: 'auto' | 'any' | 'none' | 'tool'; name?: string; disable_parallel_tool_use?: boolean };
  metadata?: { user_id?: string | null };
  thinking?: { type: 'enabled'; budget_tokens: number } | { type: 'adaptive'; budget_tokens?: number } | { type: 'disabled' };
  output_config?: { effort?: string; format?: { type: 'json_schema'; schema: Record<string, unknown> } | null };
  context_management?: { edits: Record<string, unknown>[] };
}

/** Refused as Anthropic refuses it: a thinking budget not under max_tokens. */
function checkThinking(body: MessagesBody): void {
  if (body.thinking?.type === 'enabled' && body.thinking.budget_tokens >= body.max_tokens) {
    throw badRequest('body: `max_tokens` must be greater than `thinking.budget_tokens`', undefined, 'max_tokens');
  }
}

/** A tool result's text: its content, said to be an error when the tool failed (the chat's tool message has no such flag). */
function resultText(b: Extract<Block, { type: 'tool_result' }>): string {
  const content = typeof b.content === 'string' ? b.content : (b.content ?? []).map((c) => c.text).join('');
  return b.is_error ? `Error: ${content}` : content;
}

const BETA_HEADER = 'anthropic-beta';

/**
 * The betas an `anthropic-beta` header names: comma-separated (a repeated header's values too), any
 * spacing, each once, in lower case (as Anthropic reads them). A name that could not be one is a 400.
 */
export function betasOf(header: string | string[] | undefined): string[] {
  const raw = Array.isArray(header) ? header.join(',') : (header ?? '');
  const names = [...new Set(raw.split(',').map((b) => b.trim().toLowerCase()).filter((b) => b !== ''))];
  const bad = names.find((b) => !ANTHROPIC_BETA_NAME.test(b));
  if (bad !== undefined) throw badRequest(`headers/${BETA_HEADER}: ${JSON.stringify(bad.slice(0, 100))} is not a beta's name (letters, digits, '.', '_' and '-', at most 100 characters)`);
  if (names.length > MAX_ANTHROPIC_BETAS) throw badRequest(`headers/${BETA_HEADER}: ${names.length} betas; at most ${MAX_ANTHROPIC_BETAS}`);
  return names;
}

/** The chat completion a Messages request is: `system` first, a turn's tool results as tool messages (before its other content), tool_use blocks as an assistant's tool calls. */
function asChat(body: MessagesBody): ChatBody {
  const messages: ChatBody['messages'] = [];
  // Cache breakpoints go on as the chat's (`cache_control` on its content parts and tools).
  const marked = (c: CacheControl | undefined) => (c ? { cache_control: c } : {});
  if (typeof body.system === 'string' || !body.system?.some((b) => b.cache_control)) {
    const system = typeof body.system === 'string' ? body.system : (body.system ?? []).map((b) => b.text).join('\n\n');
    if (system) messages.push({ role: 'system', content: system });
  } else {
    // A system message a block, so that each breakpoint stays where it is.
    for (const b of body.system) messages.push({ role: 'system', content: [{ type: 'text', text: b.text, ...marked(b.cache_control) }] });
  }
  for (const m of body.messages) {
    const blocks: Block[] = typeof m.content === 'string' ? [{ type: 'text', text: m.content }] : m.content;
    if (m.role === 'assistant') {
      const calls = blocks.flatMap((b) => (b.type === 'tool_use' ? [{ id: b.id, type: 'function' as const, function: { name: b.name, arguments: JSON.stringify(b.input) } }] : []));
      const said = blocks.map((b) => (b.type === 'text' ? b.text : '')).join('');
      // An assistant's breakpoint marks the message's end (its text, then its calls, are one turn).
      const mark = blocks.findLast((b) => b.cache_control)?.cache_control;
      const thought = blocks.filter((b): b is WholeThinking & Block => b.type === 'thinking' || b.type === 'redacted_thinking');
      messages.push({
        role: 'assistant', content: mark ? [{ type: 'text', text: said, cache_control: mark }] : said || null,
        ...(calls.length > 0 ? { tool_calls: calls } : {}),
        ...(thought.length > 0 ? { thinking_blocks: thought.map((b) => (b.type === 'thinking' ? { type: b.type, thinking: b.thinking, signature: b.signature } : { type: b.type, data: b.data })) } : {}),
      });
      continue;
    }
    for (const b of blocks) {
      if (b.type !== 'tool_result') continue;
      const mark = resultMark(b);
      messages.push({ role: 'tool', tool_call_id: b.tool_use_id, content: mark ? [{ type: 'text', text: resultText(b), cache_control: mark }] : resultText(b) });
    }
    type Part = Exclude<ChatBody['messages'][number]['content'], string | null | undefined>[number];
    const parts = blocks.flatMap((b): Part[] =>
      b.type === 'text' ? [{ type: 'text', text: b.text, ...marked(b.cache_control) }]
        : b.type === 'image' ? [{ type: 'image_url', image_url: { url: b.source.type === 'base64' ? `data:${b.source.media_type};base64,${b.source.data}` : b.source.url }, ...marked(b.cache_control) }]
          : []);
    if (parts.length > 0) messages.push({ role: 'user', content: parts });
  }
  const choice = body.tool_choice;
  return {
    model: body.model,
    messages,
    stream: body.stream ?? false,
    max_completion_tokens: body.max_tokens,
    ...(body.temperature !== undefined ? { temperature: body.temperature } : {}),
    ...(body.top_p !== undefined ? { top_p: body.top_p } : {}),
    ...(body.top_k !== undefined ? { top_k: body.top_k } : {}),
    ...(body.stop_sequences?.length ? { stop: body.stop_sequences } : {}),
    ...(body.tools ? { tools: body.tools.map((t) => ({ type: 'function' as const, function: { name: t.name, description: t.description, parameters: t.input_schema }, ...marked(t.cache_control) })) } : {}),
    ...(choice
      ? {
        tool_choice: choice.type === 'any' ? 'required' : choice.type === 'tool' ? { type: 'function' as const, function: { name: choice.name ?? '' } } : choice.type,
        ...(choice.disable_parallel_tool_use ? { parallel_tool_calls: false } : {}),
      }
      : {}),
    ...(body.metadata?.user_id ? { user: body.metadata.user_id } : {}),
    ...(body.thinking ? { thinking: body.thinking } : {}),
    ...(body.context_management ? { context_management: body.context_management } : {}),
    ...(body.output_config?.effort ? { output_config: { effort: body.output_config.effort } } : {}),
    // Structured output: the broker's (OpenAI's) json_schema response format, which Anthropic's protocol writes back as output_config.format.
    ...(body.output_config?.format ? { response_format: { type: 'json_schema', json_schema: { name: 'output', schema: body.output_config.format.schema, strict: true } } } : {}),
  };
}

type Done = Extract<Piece, { done: true }>;

const STOP_REASON: Record<string, string> = { stop: 'end_turn', length: 'max_tokens', tool_calls: 'tool_use', content_filter: 'refusal' };

/** Why the answer ended, in Anthropic's terms: `stop_sequence` with the one that ended it where the upstream said which (an OpenAI-protocol upstream does not). */
const stopOf = (done: Done) =>
  done.stopSequence ? { stop_reason: 'stop_sequence', stop_sequence: done.stopSequence } : { stop_reason: STOP_REASON[done.finishReason] ?? 'end_turn', stop_sequence: null };

function inputOf(argumentsJson: string): Record<string, unknown> {
  try {
    const v: unknown = JSON.parse(argumentsJson || '{}');
    return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : {};
  } catch {
    return {};
  }
}

/** The answer's content blocks: its thinking, its text (when there is text), then a tool_use block per call. */
function contentOf(said: string, done: Done, thinking: WholeThinking[]): Record<string, unknown>[] {
  return [
    ...thinking,
    ...(said ? [{ type: 'text', text: said }] : []),
    ...done.toolCalls.map((c) => ({ type: 'tool_use', id: c.id, name: c.function.name, input: inputOf(c.function.arguments) })),
  ];
}

/**
 * Anthropic's usage: `input_tokens` are the prompt's tokens neither read from the prompt cache nor
 * written to it; the writes split by lifetime in `cache_creation` (an upstream that does not split
 * them: all 5 minutes', the default).
 */
function usageOf(done?: Done) {
  const read = done?.usage.prompt_tokens_details?.cached_tokens ?? 0;
  const written = done?.cacheWriteTokens ?? 0;
  const written1h = Math.min(written, done?.cacheWrite1hTokens ?? 0);
  return {
    input_tokens: Math.max(0, (done?.usage.prompt_tokens ?? 0) - read - written),
    cache_creation_input_tokens: written,
    cache_read_input_tokens: read,
    cache_creation: { ephemeral_5m_input_tokens: written - written1h, ephemeral_1h_input_tokens: written1h },
    output_tokens: done?.usage.completion_tokens ?? 0,
  };
}

/** A Messages request, as Anthropic's API takes it (less what only Anthropic's models have). */
const messagesBody = {
  type: 'object',
  required: ['model', 'max_tokens', 'messages'],
  properties: {
    model: { type: 'string', minLength: 1, maxLength: 200 },
    max_tokens: { type: 'integer', minimum: 1 },
    messages: {
      type: 'array',
      minItems: 1,
      maxItems: 500,
      items: { anyOf: [turn('user', [textBlock, imageBlock, toolResultBlock]), turn('assistant', [textBlock, toolUseBlock, thinkingBlockSchema, redactedThinkingBlockSchema])] },
    },
    system: { anyOf: [text, { type: 'array', maxItems: 100, items: textBlock }] },
    stop_sequences: { type: 'array', maxItems: 4, items: { type: 'string', minLength: 1, maxLength: 1000, pattern: NO_NUL }, description: 'up to 4 (the upstream is asked in OpenAI\'s terms)' },
    temperature: { type: 'number', minimum: 0, maximum: 1 },
    top_p: { type: 'number', minimum: 0, maximum: 1 },
    top_k: { type: 'integer', minimum: 0, description: 'each token from the k likeliest only; an OpenAI-protocol upstream has none (400)' },
    stream: { type: 'boolean' },
    tools: {
      type: 'array',
      maxItems: 128,
      items: {
        type: 'object',
        required: ['name', 'input_schema'],
        properties: {
          type: { type: 'string', enum: ['custom'], description: 'client tools only (Anthropic\'s server tools are refused)' },
          name: { type: 'string', pattern: FUNCTION_NAME },
          description: { type: 'string', maxLength: 1024 },
          input_schema: { type: 'object' },
          cache_control: cacheControlSchema,
        },
      },
    },
    tool_choice: {
      type: 'object',
      required: ['type'],
      properties: { type: { type: 'string', enum: ['auto', 'any', 'tool', 'none'] }, name: { type: 'string', pattern: FUNCTION_NAME }, disable_parallel_tool_use: { type: 'boolean' } },
      // A choice of one tool names it.
      if: { properties: { type: { const: 'tool' } } },
      then: { required: ['name'] },
    },
    metadata: { type: 'object', properties: { user_id: { type: ['string', 'null'], maxLength: 256 } }, additionalProperties: false },
    output_config: {
      type: 'object',
      properties: {
        effort: { type: 'string', enum: ['low', 'medium', 'high', 'xhigh', 'max'] },
        format: {
          type: ['object', 'null'],
          required: ['type', 'schema'],
          properties: { type: { type: 'string', enum: ['json_schema'] }, schema: { type: 'object' } },
          additionalProperties: false,
          description: 'structured output: the answer\'s text is JSON that fits `schema`. Passed on to an Anthropic upstream as it is, to an OpenAI one as a strict `json_schema` response format (named `output`; OpenAI refuses a schema its strict mode does not take: its 400, relayed)',
        },
      },
      additionalProperties: false,
      description: '`effort` (what Claude Code sends beside adaptive thinking): how much the model spends on thinking, text and tool calls; xhigh and max only with thinking. ' +
        'Passed on to an Anthropic upstream; an OpenAI one has none (400, as top_k). `format`: structured output, for either upstream',
    },
    context_management: {
      type: 'object',
      required: ['edits'],
      properties: {
        edits: {
          type: 'array', maxItems: 10,
          items: { type: 'object', required: ['type'], properties: { type: { type: 'string', enum: ['clear_thinking_20251015', 'clear_tool_uses_20250919'] } } },
        },
      },
      additionalProperties: false,
      description: 'Anthropic\'s context editing (what Claude Code sends with thinking on): the edits go on to an Anthropic upstream with their beta header, which checks them; ' +
        'an OpenAI upstream has none (400, as top_k)',
    },
    thinking: thinkingSchema(
      'extended thinking: `enabled` within `budget_tokens` of `max_tokens` (at least 1,024, less than `max_tokens`), or `adaptive` (the model decides how much, guided by `output_config.effort`; ' +
      'a `budget_tokens` beside it is ignored), or `disabled`: passed on to an Anthropic upstream, refused (400) by an OpenAI one',
    ),
  },
  additionalProperties: false,
} as const;

/** A request to count: the Messages request's prompt (its model, turns, system and tools), as Anthropic's count_tokens takes it. */
const countBody = {
  type: 'object',
  required: ['model', 'messages'],
  // thinking, output_config and context_management as clients send them beside (not counted: the prompt before any edit).
  properties: (({ model, messages, system, tools, tool_choice, thinking, output_config, context_management }) =>
    ({ model, messages, system, tools, tool_choice, thinking, output_config, context_management }))(messagesBody.properties),
  additionalProperties: false,
} as const;

export function messagesRoutes(app: FastifyInstance, ctx: EdgeContext): void {
  app.post(
    '/v1/messages',
    {
      config: { auth: 'api-key', spends: 'beside' },
      bodyLimit: ctx.cfg.v1BodyLimitBytes,
      schema: {
        tags: ['anthropic'],
        summary: 'Anthropic-compatible Messages API (stream true or false)',
        description:
          'The same call as /v1/chat/completions (its models, queue, quota, response cache and `x-mesh-cache` header), asked and answered in Anthropic\'s terms, for clients ' +
          'written for it: `system`, `messages` (text, `image` — base64 or by URL —, `tool_use` and `tool_result` blocks; an assistant\'s `thinking` and `redacted_thinking` blocks), `max_tokens`, `stop_sequences`, `temperature`, ' +
          '`top_p`, `top_k`, `tools` (`input_schema`), `tool_choice` (auto, any, tool, none; `disable_parallel_tool_use`), `thinking`, `context_management` and `metadata.user_id`, and the `anthropic-beta` header (its description says how). The answer is a `message` ' +
          '(`content` blocks: thinking, text, then tool_use; `stop_reason` end_turn, max_tokens, tool_use, or stop_sequence with the sequence where the upstream says which; `usage`), or with stream: true Anthropic\'s events. The token is ' +
          '`Authorization: Bearer` or `x-api-key`; errors are Anthropic\'s (`{"type": "error", "error": {"type", "message"}}`). Extended `thinking` (`budget_tokens` of at least 1,024, ' +
          'less than `max_tokens`; then `temperature` only 1, no `top_k`, `top_p` from 0.95, no forced tool) is passed on to an Anthropic upstream, its thinking blocks streamed with their signatures, ' +
          'and is refused (400) by an OpenAI one, as `top_k` is; a call with it is not answered from the response cache. Server tools are refused by name.',
        headers: {
          type: 'object',
          properties: {
            [CACHE_HEADER]: { type: 'string', enum: ['on', 'off'] },
            [BETA_HEADER]: {
              type: 'string',
              description:
                'Anthropic betas, comma-separated (`context-1m-2025-08-07,interleaved-thinking-2025-05-14`; a repeated header\'s values too): sent on to an Anthropic upstream ' +
                'with those the mesh adds (context editing\'s), which refuses a name it does not know (400, its message passed on); an OpenAI upstream has none, and is not sent them. ' +
                `Up to ${MAX_ANTHROPIC_BETAS} names of letters, digits, '.', '_' and '-'; otherwise 400.`,
            },
          },
        },
        body: messagesBody,
        response: {
          200: { ...anyObject, description: 'a message object, or with stream: true a text/event-stream of Anthropic\'s events' },
          ...Object.fromEntries([400, 401, 404, 413, 415, 429, 502, 503, 504].map((c) => [c, { ...anthropicErrorBody, description: `Anthropic's error body (${c})` }])),
        },
      },
    },
    async (req, reply) => {
      const body = req.body as MessagesBody;
      checkBreakpoints(body);
      checkThinking(body);
      const betas = betasOf(req.headers[BETA_HEADER]);
      const call = completion(ctx, req, reply, { ...asChat(body), ...(betas.length > 0 ? { anthropic_betas: betas } : {}) });
      const id = `msg_${randomBytes(12).toString('hex')}`;
      if (body.stream) return streamMessage(call, id, body);
      const { text: said, done, thinking } = await wholeAnswer(call);
      return {
        id, type: 'message', role: 'assistant', model: done.model || body.model, content: contentOf(said, done, thinking),
        ...stopOf(done), usage: usageOf(done), ...(done.contextManagement ? { context_management: done.contextManagement } : {}),
      };
    },
  );

  app.post(
    '/v1/messages/count_tokens',
    {
      config: { auth: 'api-key' },
      bodyLimit: ctx.cfg.v1BodyLimitBytes,
      schema: {
        tags: ['anthropic'],
        summary: 'Anthropic-compatible token count of a Messages request (what coding agents ask before each turn)',
        description:
          'The prompt tokens a /v1/messages call with this `model`, `messages`, `system`, `tools` and `tool_choice` would be billed, counted by the llm-broker as the ' +
          'upstream that would serve the model counts them (images and tools included): what its admission reserves. No upstream call, no quota, no token budget. ' +
          '`thinking`, `output_config` and `context_management` are taken as clients send them beside, and change nothing (the prompt is counted before any context edit). ' +
          'Errors are Anthropic\'s, as on /v1/messages.',
        body: countBody,
        response: {
          200: { type: 'object', required: ['input_tokens'], properties: { input_tokens: { type: 'integer', minimum: 0 } } },
          ...Object.fromEntries([400, 401, 413, 415, 429, 502, 503, 504].map((c) => [c, { ...anthropicErrorBody, description: `Anthropic's error body (${c})` }])),
        },
      },
    },
    async (req, reply) => {
      // The prompt's tokens: thinking is what the model does after it (and its budget is not under a max_tokens of 1).
      const { thinking: _, context_management: __, output_config: ___, ...asked } = req.body as Omit<MessagesBody, 'max_tokens'>;
      const body = { ...asked, max_tokens: 1 };
      checkBreakpoints(body);
      return { input_tokens: await countTokens(ctx, req, reply, asChat(body)) };
    },
  );
}

/** Anthropic's error body, as app.ts answers every error on /v1/messages. */
const anthropicErrorBody = {
  type: 'object',
  required: ['type', 'error'],
  properties: { type: { type: 'string', enum: ['error'] }, error: { type: 'object', required: ['type', 'message'], properties: { type: { type: 'string' }, message: { type: 'string' } } } },
} as const;

/** The answer's blocks as Anthropic's content block events: a tool_use block's input as the JSON text the model generates. */
async function emitSteps(emit: (type: string, data: Record<string, unknown>) => Promise<void>, steps: Step[]): Promise<void> {
  for (const step of steps) {
    const index = step.block;
    switch (step.kind) {
      case 'text-start': await emit('content_block_start', { index, content_block: { type: 'text', text: '' } }); break;
      case 'text': await emit('content_block_delta', { index, delta: { type: 'text_delta', text: step.text } }); break;
      case 'call-start': await emit('content_block_start', { index, content_block: { type: 'tool_use', id: step.id, name: step.name, input: {} } }); break;
      case 'call-arguments': await emit('content_block_delta', { index, delta: { type: 'input_json_delta', partial_json: step.arguments } }); break;
      case 'thinking-start':
        await emit('content_block_start', { index, content_block: step.redactedData ? { type: 'redacted_thinking', data: step.redactedData } : { type: 'thinking', thinking: '', signature: '' } });
        break;
      case 'thinking': await emit('content_block_delta', { index, delta: { type: 'thinking_delta', thinking: step.text } }); break;
      case 'thinking-signature': await emit('content_block_delta', { index, delta: { type: 'signature_delta', signature: step.signature } }); break;
      default: await emit('content_block_stop', { index });
    }
  }
}

/** Streams Anthropic's events; errors before the first piece are HTTP errors, later ones an `error` event. */
async function streamMessage(call: Begun, id: string, body: MessagesBody): Promise<void> {
  const { ctx, pieces, abort } = call;
  const started = Date.now();
  const { first, write, close } = await openStream(call);
  const emit = (type: string, data: Record<string, unknown>) => write(`event: ${type}\ndata: ${JSON.stringify({ type, ...data })}\n\n`);
  const blocks = new BlockSequence();
  let answered = false;
  try {
    await emit('message_start', { message: { id, type: 'message', role: 'assistant', model: body.model, content: [], stop_reason: null, stop_sequence: null, usage: usageOf() } });
    for (let result = first; !result.done && !abort.signal.aborted; result = await pieces.next()) {
      const p = result.value;
      if ('delta' in p) await emitSteps(emit, blocks.text(p.delta));
      else if ('toolCall' in p) await emitSteps(emit, blocks.toolCall(p.toolCall));
      else if ('thinking' in p) await emitSteps(emit, blocks.thinking(p.thinking));
      else if ('queued' in p) await emit('ping', {});
      else if ('done' in p) {
        await emitSteps(emit, blocks.end(p.toolCalls));
        await emit('message_delta', { delta: stopOf(p), usage: usageOf(p), ...(p.contextManagement ? { context_management: p.contextManagement } : {}) });
        await emit('message_stop', {});
        answered = true;
        break;
      }
    }
  } catch (err) {
    const e = err instanceof HttpError ? err : isGrpcError(err) ? fromGrpc(err) : new HttpError(502, 'stream_failed', 'the message failed');
    if (!abort.signal.aborted) await emit('error', { error: { type: anthropicType(e.statusCode), message: e.message } });
  } finally {
    if (answered) readToEnd(pieces, ctx);
    else await pieces.return(undefined).catch(() => undefined);
    close('/v1/messages', started);
  }
}
