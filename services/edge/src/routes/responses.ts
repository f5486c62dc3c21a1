// OpenAI's Responses API (POST /v1/responses, GET and DELETE /v1/responses/{id}): a request's
// `input` items and `instructions` become a chat completion's messages, answered by the same call
// as /v1/chat/completions (`completion`: the broker's queue and quota, the cache, the pipeline for
// `agent-mesh`), and written back as a `response` object — or, streamed, as its typed events
// (`response.created` … `response.output_text.delta` … `response.completed`). As OpenAI does, an
// answer is kept for its user unless `store` is false (in the store service, by its id, for
// RETENTION_DAYS): the conversation up to it, as input items, so that a later call's
// `previous_response_id` continues from it (the earlier `instructions` are not carried over).
// GET and DELETE /api/responses list and erase a user's kept answers all together.
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { StoredResponse } from '@agent-mesh/common/gen/store/v1/store';
import { randomBytes } from 'node:crypto';
import type { EdgeContext } from '../context';
import { DEFAULT_UNARY_DEADLINE_MS, codeOf, reasonOf, status } from '@agent-mesh/common';
import { badRequest, fromGrpc, HttpError, isGrpcError } from '../errors';
import { GENERATE_DEADLINE_MS } from '../gateways/broker';
import { ERASE_RESPONSES_TIMEOUT_MS } from '../gateways/store';
import { requestScope } from '../scope';
import { BlockSequence, type Step, type WholeThinking } from './blocks';
import { CACHE_HEADER, completion, countTokens, eventStream, openStream, readToEnd, wholeAnswer, type Begun, type ChatBody, type Piece, type WireLogprob } from './openai';
import { eventFrame } from '../background';
import { anyObject, BACKED, errorResponses, FUNCTION_NAME, IMAGE_URL, iso, metadataSchema, NO_NUL, openAiErrorResponses, pageOf, pageQuery } from './schemas';

const text = { type: 'string', maxLength: 200_000, pattern: NO_NUL } as const;

/** A message's content part: text (input, or an earlier answer's output) or an image. */
const contentPart = {
  anyOf: [
    { type: 'object', required: ['type', 'text'], properties: { type: { type: 'string', enum: ['input_text', 'output_text'] }, text, annotations: { type: 'array' } } },
    {
      type: 'object',
      required: ['type', 'image_url'],
      properties: { type: { type: 'string', enum: ['input_image'] }, image_url: { type: 'string', pattern: IMAGE_URL }, detail: { type: 'string', enum: ['auto', 'low', 'high'] } },
    },
  ],
} as const;

/** A part of a function call's output (as OpenAI's): text or an image. */
const outputPart = { anyOf: [contentPart.anyOf[1], { type: 'object', required: ['type', 'text'], properties: { type: { type: 'string', enum: ['input_text'] }, text } }] } as const;

/** An item of `input`: a message, an earlier answer's function call, or a call's output. */
const inputItem = {
  anyOf: [
    {
      type: 'object',
      required: ['role', 'content'],
      properties: {
        type: { type: 'string', enum: ['message'] },
        role: { type: 'string', enum: ['user', 'system', 'developer', 'assistant'] },
        content: { anyOf: [text, { type: 'array', maxItems: 100, items: contentPart }] },
        id: { type: 'string' },
        status: { type: 'string' },
      },
    },
    {
      type: 'object',
      required: ['type', 'call_id', 'name', 'arguments'],
      properties: {
        type: { type: 'string', enum: ['function_call'] },
        call_id: { type: 'string', minLength: 1, maxLength: 128, pattern: NO_NUL },
        name: { type: 'string', pattern: FUNCTION_NAME },
        arguments: text,
        id: { type: 'string' },
        status: { type: 'string' },
      },
    },
    {
      type: 'object',
      required: ['type', 'call_id', 'output'],
      properties: {
        type: { type: 'string', enum: ['function_call_output'] },
        call_id: { type: 'string', minLength: 1, maxLength: 128, pattern: NO_NUL },
        output: {
          anyOf: [text, { type: 'array', maxItems: 100, items: outputPart }],
          description: 'text, or content parts (`input_text`, `input_image`): the text parts are the tool result; the images, which a tool result cannot hold on every provider, follow the run of outputs in a user message, after a line saying which call gave them',
        },
        id: { type: 'string' },
        status: { type: 'string' },
      },
    },
    {
      type: 'object',
      required: ['type', 'summary'],
      description: 'an earlier answer\'s reasoning, passed back: its `encrypted_content` (what `include: ["reasoning.encrypted_content"]` gives) is the thinking block sent back to the provider; one without it is left out. Reasoning items alone are nothing to answer: 400 `empty_input`',
      properties: {
        type: { type: 'string', enum: ['reasoning'] },
        summary: { type: 'array', maxItems: 100, items: { type: 'object', required: ['type', 'text'], properties: { type: { type: 'string', enum: ['summary_text'] }, text } } },
        content: { type: ['array', 'null'], maxItems: 100, items: { type: 'object', required: ['type', 'text'], properties: { type: { type: 'string', enum: ['reasoning_text'] }, text } } },
        encrypted_content: { type: ['string', 'null'], maxLength: 400_000, pattern: '^[A-Za-z0-9_-]*$', description: 'as this gateway gave it: another is 400 `invalid_encrypted_content`' },
        id: { type: 'string' },
        status: { type: ['string', 'null'] },
      },
    },
  ],
} as const;

interface ResponsesBody {
  model: string;
  input: string | InputItem[];
  instructions?: string | null;
  stream?: boolean | null;
  max_output_tokens?: number | null;
  temperature?: number | null;
  top_p?: number | null;
  tools?: { type: 'function'; name: string; description?: string; parameters?: Record<string, unknown>; strict?: boolean }[];
  tool_choice?: 'auto' | 'none' | 'required' | { type: 'function'; name: string } | null;
  parallel_tool_calls?: boolean | null;
  text?: { format?: { type: string; name?: string; schema?: Record<string, unknown>; description?: string; strict?: boolean | null }; verbosity?: string | null } | null;
  reasoning?: { effort?: string | null; summary?: string | null } | null;
  include?: string[] | null;
  top_logprobs?: number | null;
  prompt_cache_key?: string | null;
  metadata?: Record<string, string> | null;
  user?: string;
  store?: boolean | null;
  previous_response_id?: string | null;
  background?: boolean | null;
}

type InputItem = { id?: string } & (
  | { type?: 'message'; role: string; content: string | { type: string; text?: string; image_url?: string; detail?: string }[] }
  | { type: 'function_call'; call_id: string; name: string; arguments: string }
  | { type: 'function_call_output'; call_id: string; output: string | OutputPart[] }
  | { type: 'reasoning'; summary: { type: string; text: string }[]; encrypted_content?: string | null; status?: string | null }
);

type OutputPart = { type: 'input_text'; text: string } | { type: 'input_image'; image_url: string; detail?: string };

/** The id prefix of each kind of item, as OpenAI's. */
const ID_PREFIX: Record<NonNullable<InputItem['type']>, string> = { message: 'msg', function_call: 'fc', function_call_output: 'fco', reasoning: 'rs' };

/** An input item as OpenAI lists it: typed, a message's text as parts, with its status. */
function listedItem(item: InputItem): Record<string, unknown> {
  if (item.type === 'function_call' || item.type === 'function_call_output' || item.type === 'reasoning') return { status: 'completed', ...item };
  const content = typeof item.content === 'string' ? [{ type: item.role === 'assistant' ? 'output_text' : 'input_text', text: item.content }] : item.content;
  return { type: 'message', status: 'completed', ...item, content };
}

/** The request's `input` as items. */
const inputItems = (input: ResponsesBody['input']): InputItem[] => (typeof input === 'string' ? [{ type: 'message', role: 'user', content: input }] : input);

/**
 * The chat completion a response is: its items (those of the response it continues, then its own
 * input) as messages (an answer's function calls on one assistant message), its parameters under
 * their chat names.
 */
function asChat(body: ResponsesBody, items: InputItem[]): ChatBody {
  const messages: ChatBody['messages'] = [];
  if (body.instructions) messages.push({ role: 'developer', content: body.instructions });
  // The images of a run of function call outputs, for the user message after it.
  let images: ChatPart[] = [];
  const showImages = () => {
    if (images.length > 0) messages.push({ role: 'user', content: images });
    images = [];
  };
  for (const [i, item] of items.entries()) {
    if (item.type !== 'function_call_output') showImages();
    // An answer's reasoning, text and calls are one assistant turn: its thinking first.
    const last = messages.at(-1);
    const turn = last?.role === 'assistant' ? last : undefined;
    if (item.type === 'reasoning') {
      const block = item.encrypted_content ? thinkingIn(item.encrypted_content, i) : undefined;
      if (!block) continue;
      if (turn) (turn.thinking_blocks ??= []).push(block);
      else messages.push({ role: 'assistant', content: null, thinking_blocks: [block] });
    } else if (item.type === 'function_call') {
      const call = { id: item.call_id, type: 'function' as const, function: { name: item.name, arguments: item.arguments } };
      if (turn && (turn.tool_calls || turn.content == null)) (turn.tool_calls ??= []).push(call);
      else messages.push({ role: 'assistant', content: null, tool_calls: [call] });
    } else if (item.type === 'function_call_output') {
      const parts = typeof item.output === 'string' ? [{ type: 'input_text' as const, text: item.output }] : item.output;
      const said = parts.flatMap((p) => (p.type === 'input_text' ? [{ type: 'text' as const, text: p.text }] : []));
      const shown = parts.filter((p) => p.type === 'input_image');
      const which = shown.length === 1 ? 'an image' : `${shown.length} images`;
      // A result of images alone says where they are (a provider may refuse an empty result).
      messages.push({ role: 'tool', tool_call_id: item.call_id, content: said.length > 0 || shown.length === 0 ? said : `(${which}, in the user message after the results)` });
      if (shown.length > 0) images.push({ type: 'text', text: `The function call ${item.call_id} returned ${which}:` }, ...shown.map(chatPart));
    } else {
      const content = typeof item.content === 'string' ? item.content : item.content.map(chatPart);
      if (item.role !== 'user' && typeof content !== 'string' && content.some((p) => p.type === 'image_url')) {
        throw badRequest(`body/input holds an image in a message with role '${item.role}': only a user message may`, undefined, 'input');
      }
      // The text of a turn that began with its reasoning.
      if (item.role === 'assistant' && turn && turn.content == null && !turn.tool_calls) turn.content = content;
      else messages.push({ role: item.role, content });
    }
  }
  showImages();
  if (messages.length === (body.instructions ? 1 : 0)) {
    throw badRequest('body/input holds reasoning items alone: they go with the turn they were part of, and leave nothing to answer', 'empty_input', 'input');
  }
  const format = body.text?.format;
  const choice = body.tool_choice;
  return {
    model: body.model,
    messages,
    stream: body.stream ?? false,
    ...(body.max_output_tokens != null ? { max_completion_tokens: body.max_output_tokens } : {}),
    ...(body.temperature != null ? { temperature: body.temperature } : {}),
    ...(body.top_p != null ? { top_p: body.top_p } : {}),
    ...(body.tools ? { tools: body.tools.map(({ name, description, parameters }) => ({ type: 'function' as const, function: { name, description, parameters } })) } : {}),
    ...(choice != null ? { tool_choice: typeof choice === 'string' ? choice : { type: 'function' as const, function: { name: choice.name } } } : {}),
    ...(body.parallel_tool_calls != null ? { parallel_tool_calls: body.parallel_tool_calls } : {}),
    ...(format && format.type !== 'text'
      ? { response_format: format.type === 'json_schema' ? { type: 'json_schema', json_schema: { name: format.name, schema: format.schema, description: format.description, strict: format.strict } } : { type: format.type } }
      : {}),
    ...(logprobsAsked(body) ? { logprobs: true, ...(body.top_logprobs ? { top_logprobs: body.top_logprobs } : {}) } : {}),
    ...(body.reasoning?.effort ? { reasoning_effort: body.reasoning.effort } : {}),
    ...(body.text?.verbosity ? { verbosity: body.text.verbosity } : {}),
    ...(body.metadata ? { metadata: body.metadata } : {}),
    ...(body.user ? { user: body.user } : {}),
    ...(body.prompt_cache_key ? { prompt_cache_key: body.prompt_cache_key } : {}),
  };
}

type ChatPart = Exclude<ChatBody['messages'][number]['content'], string | null | undefined>[number];

/** A Responses content part as a chat message's. */
function chatPart(p: { type: string; text?: string; image_url?: string; detail?: string }): ChatPart {
  return p.type === 'input_image' ? { type: 'image_url', image_url: { url: p.image_url!, ...(p.detail ? { detail: p.detail } : {}) } } : { type: 'text', text: p.text ?? '' };
}

/**
 * A thinking block as a reasoning item's `encrypted_content`: the block itself (its text and the
 * provider's signature, or a redacted block's data) as base64url JSON. Not secret (the same text is
 * the item's summary) and not to be forged: the provider checks the signature when it is passed back.
 */
const sealed = (block: WholeThinking): string => Buffer.from(JSON.stringify(block)).toString('base64url');

/** The thinking block of a reasoning item passed back (input item `i`), or a 400 when it is not one this gateway gave. */
function thinkingIn(encrypted: string, i: number): WholeThinking {
  let block: unknown;
  try {
    block = JSON.parse(Buffer.from(encrypted, 'base64url').toString('utf8'));
  } catch {
    block = undefined;
  }
  const b = block as Partial<Record<string, unknown>> | undefined;
  if (b?.['type'] === 'thinking' && typeof b['thinking'] === 'string' && typeof b['signature'] === 'string') return { type: 'thinking', thinking: b['thinking'], signature: b['signature'] };
  if (b?.['type'] === 'redacted_thinking' && typeof b['data'] === 'string') return { type: 'redacted_thinking', data: b['data'] };
  throw badRequest(`body/input/${i}/encrypted_content is not reasoning this gateway gave (an answer's reasoning item, with include: ["reasoning.encrypted_content"])`, 'invalid_encrypted_content', `input[${i}].encrypted_content`);
}

/**
 * A thinking block as a reasoning item: its text as the summary when the caller asked for one
 * (`reasoning.summary`), the block itself as `encrypted_content` (shown when asked for by
 * `include`, and always kept, for a later call's previous_response_id).
 */
function reasoningItem(id: string, block: WholeThinking, summarized: boolean): Record<string, unknown> {
  const summary = summarized && block.type === 'thinking' ? [{ type: 'summary_text', text: block.thinking }] : [];
  return { type: 'reasoning', id, summary, encrypted_content: sealed(block) };
}

/** An output item as the caller sees it: a reasoning item's `encrypted_content` only when `include` asks for it. */
function shown(item: Record<string, unknown>, body: ResponsesBody): Record<string, unknown> {
  if (item['type'] !== 'reasoning' || body.include?.includes(ENCRYPTED_REASONING)) return item;
  const { encrypted_content: _sealed, ...rest } = item;
  return rest;
}

const ENCRYPTED_REASONING = 'reasoning.encrypted_content';
const TEXT_LOGPROBS = 'message.output_text.logprobs';

/** Whether the caller asked for each output token's log probability (`include`). */
const logprobsAsked = (body: ResponsesBody): boolean => body.include?.includes(TEXT_LOGPROBS) === true;

/** An answer's text as an `output_text` part: with its tokens' log probabilities when asked for. */
const outputText = (body: ResponsesBody, text: string, logprobs: WireLogprob[]) => ({ type: 'output_text', text, annotations: [], ...(logprobsAsked(body) ? { logprobs } : {}) });

type Done = Extract<Piece, { done: true }>;

const itemId = (prefix: string) => `${prefix}_${randomBytes(16).toString('hex')}`;

/** How the call ended, in the Responses API's terms. */
function statusOf(finishReason: string): { status: 'completed' | 'incomplete'; incomplete_details: { reason: string } | null } {
  if (finishReason === 'length') return { status: 'incomplete', incomplete_details: { reason: 'max_output_tokens' } };
  if (finishReason === 'content_filter') return { status: 'incomplete', incomplete_details: { reason: 'content_filter' } };
  return { status: 'completed', incomplete_details: null };
}

/** The answer's output items: its reasoning (a thinking upstream's), its text as one message (when there is text), then its function calls. */
function outputOf(body: ResponsesBody, messageId: string, content: string, logprobs: WireLogprob[], thinking: WholeThinking[], done: Done, status: string): State['output'] {
  return [
    ...thinking.map((block) => reasoningItem(itemId('rs'), block, !!body.reasoning?.summary)),
    ...(content ? [{ type: 'message', id: messageId, status, role: 'assistant', content: [outputText(body, content, logprobs)] }] : []),
    ...done.toolCalls.map((c) => ({ type: 'function_call', id: itemId('fc'), call_id: c.id, name: c.function.name, arguments: c.function.arguments, status: 'completed' })),
  ];
}

/** A response being answered: its id, when it began, what was asked, and the conversation it is sent (the earlier response's items, then its input). */
interface Answer {
  id: string;
  createdAtMs: number;
  body: ResponsesBody;
  items: InputItem[];
}

type State = { status: string; incomplete_details?: unknown; output: Record<string, unknown>[]; done?: Done; error?: { code: string; message: string } };

/** The `response` object, with what was asked for echoed as OpenAI echoes it. */
function responseObject({ id, createdAtMs, body }: Answer, state: State): Record<string, unknown> {
  const u = state.done?.usage;
  return {
    id,
    object: 'response',
    created_at: Math.floor(createdAtMs / 1000),
    status: state.status,
    background: body.background === true,
    error: state.error ?? null,
    incomplete_details: state.incomplete_details ?? null,
    instructions: body.instructions ?? null,
    max_output_tokens: body.max_output_tokens ?? null,
    model: state.done?.model || body.model,
    output: state.output.map((item) => shown(item, body)),
    parallel_tool_calls: body.parallel_tool_calls ?? true,
    previous_response_id: body.previous_response_id ?? null,
    reasoning: { effort: body.reasoning?.effort ?? null, summary: body.reasoning?.summary ?? null },
    store: body.store !== false,
    temperature: body.temperature ?? 1,
    text: { format: body.text?.format ?? { type: 'text' }, ...(body.text?.verbosity ? { verbosity: body.text.verbosity } : {}) },
    tool_choice: body.tool_choice ?? 'auto',
    tools: body.tools ?? [],
    top_logprobs: body.top_logprobs ?? 0,
    top_p: body.top_p ?? 1,
    truncation: 'disabled',
    usage: u
      ? {
        input_tokens: u.prompt_tokens,
        input_tokens_details: { cached_tokens: u.prompt_tokens_details?.cached_tokens ?? 0 },
        output_tokens: u.completion_tokens,
        output_tokens_details: { reasoning_tokens: u.completion_tokens_details?.reasoning_tokens ?? 0 },
        total_tokens: u.total_tokens,
      }
      : null,
    user: body.user ?? null,
    metadata: body.metadata ?? {},
  };
}

const RESPONSE_ID = /^resp_[0-9a-f]{32}$/;

/** A Responses API request, as this edge takes it. */
const responsesBody = {
  type: 'object',
  required: ['model', 'input'],
  properties: {
    model: { type: 'string', minLength: 1, maxLength: 200 },
    input: { anyOf: [{ ...text, minLength: 1 }, { type: 'array', minItems: 1, maxItems: 500, items: inputItem }] },
    instructions: { anyOf: [text, { type: 'null' }] },
    stream: { type: ['boolean', 'null'] },
    max_output_tokens: { type: ['integer', 'null'], minimum: 1 },
    temperature: { type: ['number', 'null'], minimum: 0, maximum: 2 },
    top_p: { type: ['number', 'null'], minimum: 0, maximum: 1 },
    tools: {
      type: 'array',
      maxItems: 128,
      items: {
        type: 'object',
        required: ['type'],
        // A function tool has a name; a hosted tool (which has none) is told its type is the problem.
        if: { properties: { type: { const: 'function' } } },
        then: { required: ['name'] },
        properties: {
          type: { type: 'string', enum: ['function'], description: 'function tools only (the hosted tools of OpenAI are refused)' },
          name: { type: 'string', pattern: FUNCTION_NAME },
          description: { type: 'string', maxLength: 1024 },
          parameters: { type: ['object', 'null'] },
          strict: { type: ['boolean', 'null'] },
        },
      },
    },
    tool_choice: {
      anyOf: [
        { type: ['string', 'null'], enum: ['auto', 'none', 'required', null] },
        { type: 'object', required: ['type', 'name'], properties: { type: { type: 'string', enum: ['function'] }, name: { type: 'string', pattern: FUNCTION_NAME } } },
      ],
    },
    parallel_tool_calls: { type: ['boolean', 'null'] },
    text: {
      type: ['object', 'null'],
      properties: {
        format: {
          anyOf: [
            { type: 'object', required: ['type'], properties: { type: { type: 'string', enum: ['text', 'json_object'] } }, additionalProperties: false },
            {
              type: 'object',
              required: ['type', 'name', 'schema'],
              properties: {
                type: { type: 'string', enum: ['json_schema'] },
                name: { type: 'string', pattern: FUNCTION_NAME },
                schema: { type: 'object' },
                description: { type: 'string', maxLength: 1024 },
                strict: { type: ['boolean', 'null'] },
              },
              additionalProperties: false,
            },
          ],
        },
        verbosity: { type: ['string', 'null'], enum: ['low', 'medium', 'high', null] },
      },
      additionalProperties: false,
    },
    reasoning: {
      type: ['object', 'null'],
      description: '`effort`: how much a reasoning model thinks (an Anthropic upstream thinks adaptively at that effort; `minimal`: not at all, at low effort). ' +
        '`summary` (auto, concise or detailed): the answer\'s reasoning items carry the thinking an Anthropic upstream wrote (already a summary) as their `summary`; ' +
        'without it they are given with an empty summary. An OpenAI upstream, called through Chat Completions, gives no reasoning items',
      properties: {
        effort: { type: ['string', 'null'], enum: ['none', 'minimal', 'low', 'medium', 'high', 'xhigh', null] },
        summary: { type: ['string', 'null'], enum: ['auto', 'concise', 'detailed', null] },
      },
      additionalProperties: false,
    },
    include: {
      type: ['array', 'null'],
      maxItems: 10,
      items: { type: 'string', enum: [ENCRYPTED_REASONING, TEXT_LOGPROBS] },
      description: '`reasoning.encrypted_content`: each reasoning item carries its thinking block (signed by the provider) as `encrypted_content`, to pass back in a later call\'s `input` (needed with `store: false`, as a tool-use loop of a thinking model is refused without it); ' +
        '`message.output_text.logprobs`: each `output_text` carries its tokens\' log probabilities as `logprobs` (`token`, `logprob`, `bytes`, `top_logprobs`), streamed in each `response.output_text.delta` (an Anthropic upstream has none: 400, as for `logprobs` on chat completions); ' +
        'the other values are refused',
    },
    top_logprobs: { type: ['integer', 'null'], minimum: 0, maximum: 20, description: 'how many of the likeliest tokens to give beside each (with `include: ["message.output_text.logprobs"]`)' },
    prompt_cache_key: { type: ['string', 'null'], maxLength: 256, pattern: NO_NUL, description: 'a hint that calls sharing a long prefix go to the same prompt cache: passed on to an OpenAI upstream, not sent to an Anthropic one (its cache is keyed by the prefix alone)' },
    metadata: metadataSchema,
    user: { type: 'string', maxLength: 256 },
    store: { type: ['boolean', 'null'], description: 'keep the response (default true, as OpenAI): GET /v1/responses/{id} reads it back and a later call continues from it; false: nothing is kept' },
    background: {
      type: ['boolean', 'null'],
      description: 'true: the call runs on without its caller. Answered at once with the response `queued`, and GET /v1/responses/{id} reads it (`in_progress`, then `completed`, `incomplete`, `failed` with its `error`, or `cancelled` by POST /v1/responses/{id}/cancel); with `stream`, its events are streamed (`response.created` and `response.queued` first, `response.failed` when it fails, an `error` `response_cancelled` when cancelled), and a caller who left resumes them from any edge by GET /v1/responses/{id}?stream=true&starting_after=N. Needs `store`',
    },
    previous_response_id: {
      type: ['string', 'null'],
      pattern: RESPONSE_ID.source,
      description: 'continue from one of the caller\'s kept responses: its conversation (not its instructions) comes before this input; unknown: 400 previous_response_not_found',
    },
    service_tier: { enum: ['auto', 'default', null], description: 'only auto or default' },
    truncation: { enum: ['disabled', null], description: 'only disabled: an input over the model\'s context is refused by the provider' },
  },
  allOf: [
    // A background response is read back from where it is kept.
    { if: { required: ['background'], properties: { background: { const: true } } }, then: { properties: { store: { enum: [true, null] } } } },
    // The likeliest tokens come beside each token's log probability, which include asks for.
    { if: { required: ['top_logprobs'], properties: { top_logprobs: { type: 'integer', minimum: 1 } } }, then: { required: ['include'], properties: { include: { type: 'array', contains: { const: TEXT_LOGPROBS } } } } },
  ],
  additionalProperties: false,
} as const;

/** A request to count (POST /v1/responses/input_tokens): what makes the prompt, its model optional. */
const inputTokensBody = {
  type: 'object',
  required: ['input'],
  properties: (({ model, input, instructions, tools, tool_choice, parallel_tool_calls, text, reasoning, previous_response_id }) =>
    ({ model, input, instructions, tools, tool_choice, parallel_tool_calls, text, reasoning, previous_response_id }))(responsesBody.properties),
  additionalProperties: false,
} as const;

export function responsesRoutes(app: FastifyInstance, ctx: EdgeContext): void {
  app.post(
    '/v1/responses',
    {
      config: { auth: 'bearer', spends: 'beside' },
      bodyLimit: ctx.cfg.v1BodyLimitBytes,
      schema: {
        tags: ['openai'],
        summary: 'OpenAI-compatible Responses API (stream true or false; kept unless store is false, continued by previous_response_id)',
        description:
          'The same call as /v1/chat/completions (its models, queue, quota, response cache and `x-mesh-cache` header), asked and answered in the Responses API\'s terms: ' +
          '`input` (text, or items: messages with `input_text`, `output_text` and `input_image` parts, `function_call` and `function_call_output`), `instructions`, ' +
          '`max_output_tokens`, `temperature`, `top_p`, function `tools`, `tool_choice`, `parallel_tool_calls`, `text.format` (text, json_object, json_schema), ' +
          '`text.verbosity`, `reasoning` (`effort`, `summary`), `include` (`reasoning.encrypted_content`, `message.output_text.logprobs`), `top_logprobs`, `prompt_cache_key`, `metadata` (tags on the trace) and `user`. ' +
          'The answer is a `response` with `output` items (`reasoning` items when the upstream thinks, a `message` with `output_text`, ' +
          'and `function_call` items) and `usage`, or with stream: true its events (`response.created`, `response.output_item.added`, `response.reasoning_summary_text.delta`, `response.output_text.delta`, … ' +
          '`response.completed` or `response.incomplete`; `response.failed`, with the response\'s `error`, when the call fails after it began: kept so). Unless `store` is false the response is kept for its caller ' +
          '(for RETENTION_DAYS), with the conversation up to it: `previous_response_id` continues from it, GET and DELETE /v1/responses/{id} read and delete it. ' +
          'A response the store could not keep is still answered, with `store: false`. With `background: true` the call runs on without its caller: answered at once ' +
          '`queued` and read back by GET (`in_progress`, then its end), or with stream: true its events, which a caller who left resumes from any edge ' +
          '(GET /v1/responses/{id}?stream=true&starting_after=N); POST /v1/responses/{id}/cancel stops it.',
        headers: { type: 'object', properties: { [CACHE_HEADER]: { type: 'string', enum: ['on', 'off'] } } },
        body: responsesBody,
        response: {
          200: { ...anyObject, description: 'a response object, or with stream: true a text/event-stream of its events' },
          ...openAiErrorResponses(400, 401, 404, 413, 415, 429, 502, 503, 504),
        },
      },
    },
    async (req, reply) => {
      const body = req.body as ResponsesBody;
      const items = await itemsOf(ctx, req, reply, body);
      // A background call streams from the provider: its first token is when it is in progress.
      const call = completion(ctx, req, reply, { ...asChat(body, items), ...(body.background ? { stream: true } : {}) }, body.background === true);
      const answer: Answer = { id: itemId('resp'), createdAtMs: Date.now(), body, items };
      if (body.background) {
        const queued = await startBackground(call, answer);
        return body.stream ? followResponse(ctx, req, reply, answer.id, -1) : queued;
      }
      if (body.stream) return streamResponse(call, answer);
      const { text: content, done, thinking, logprobs } = await wholeAnswer(call);
      const end = statusOf(done.finishReason);
      return finalResponse(call, answer, { ...end, output: outputOf(body, itemId('msg'), content, logprobs, thinking, done, end.status), done });
    },
  );

  app.post(
    '/v1/responses/input_tokens',
    {
      config: { auth: 'bearer' },
      bodyLimit: ctx.cfg.v1BodyLimitBytes,
      schema: {
        tags: ['openai'],
        summary: 'The input tokens of a Responses API request, counted without calling the provider',
        description:
          'The prompt tokens a POST /v1/responses with this `input`, `instructions`, `tools` (and the conversation of `previous_response_id`) would be billed, counted ' +
          'by the llm-broker as the upstream that would serve `model` (the default model when absent) counts them: what its admission reserves. No provider call, ' +
          'no quota, no token budget.',
        body: inputTokensBody,
        response: {
          200: { type: 'object', required: ['object', 'input_tokens'], properties: { object: { type: 'string', enum: ['response.input_tokens'] }, input_tokens: { type: 'integer', minimum: 0 } } },
          ...openAiErrorResponses(400, 401, 413, 415, 429, 502, 503, 504),
        },
      },
    },
    async (req, reply) => {
      const body = { model: 'upstream', ...(req.body as Omit<ResponsesBody, 'model'>) };
      return { object: 'response.input_tokens', input_tokens: await countTokens(ctx, req, reply, asChat(body, await itemsOf(ctx, req, reply, body))) };
    },
  );

  const idParam = { type: 'object', required: ['response_id'], properties: { response_id: { type: 'string', pattern: RESPONSE_ID.source, description: 'the response\'s id (resp_ and 32 hex digits)' } } } as const;
  const notFound = (id: string) => () => new HttpError(404, 'not_found', `Response with id '${id}' not found.`);

  app.get(
    '/v1/responses/:response_id/input_items',
    {
      config: { auth: 'bearer' },
      schema: {
        tags: ['openai'],
        summary: 'The input items of a kept response: the conversation it was sent, earlier responses\' items included (the caller\'s own only)',
        params: idParam,
        querystring: {
          type: 'object',
          additionalProperties: false,
          properties: {
            limit: { type: 'string', pattern: '^(100|[1-9][0-9]?)$', description: 'items per page (1–100, default 20)' },
            order: { type: 'string', enum: ['asc', 'desc'], description: 'desc (default): the newest item first' },
            after: { type: 'string', pattern: '^[A-Za-z0-9_-]{1,128}$', description: 'the id of the item the page starts after (the last_id of the previous page); one the list does not hold is 400 `invalid_after`' },
          },
        },
        response: {
          200: {
            type: 'object',
            required: ['object', 'data', 'first_id', 'last_id', 'has_more'],
            properties: { object: { type: 'string', enum: ['list'] }, data: { type: 'array', items: anyObject }, first_id: { type: ['string', 'null'] }, last_id: { type: ['string', 'null'] }, has_more: { type: 'boolean' } },
          },
          ...openAiErrorResponses(400, 401, 404, 503, 504),
        },
      },
    },
    async (req, reply) => {
      const { response_id: id } = req.params as { response_id: string };
      const { limit = '20', order = 'desc', after } = req.query as { limit?: string; order?: 'asc' | 'desc'; after?: string };
      const kept = await keptResponse(ctx, req, reply, id, notFound(id));
      const outputs = ((JSON.parse(kept.responseJson) as { output?: unknown[] }).output ?? []).length;
      const all = (JSON.parse(kept.itemsJson) as InputItem[]).slice(0, -outputs || undefined).map(listedItem);
      if (order === 'desc') all.reverse();
      const from = after === undefined ? 0 : all.findIndex((item) => item['id'] === after) + 1;
      if (from === 0 && after !== undefined) throw new HttpError(400, 'invalid_after', `after: no input item of response '${id}' has the id '${after}'`, undefined, undefined, 'after');
      const data = all.slice(from, from + Number(limit));
      return { object: 'list', data, first_id: data[0]?.['id'] ?? null, last_id: data.at(-1)?.['id'] ?? null, has_more: from + data.length < all.length };
    },
  );

  app.get(
    '/v1/responses/:response_id',
    {
      config: { auth: 'bearer' },
      schema: {
        tags: ['openai'],
        summary: 'A kept response of the Responses API, as it was answered (the caller\'s own only); a background one\'s events with stream=true',
        description:
          'The response object. With `stream=true` (a background response only: else 409 `not_background`), its events as POST /v1/responses streams them, from the one after ' +
          '`starting_after` (a sequence number; the first when absent) to its end, from any edge: live while it runs. Its events are kept for an hour after its end; ' +
          'later the stream is its last event only.',
        params: idParam,
        querystring: {
          type: 'object',
          additionalProperties: false,
          properties: {
            stream: { type: 'string', enum: ['true', 'false'], description: 'true: the events of a background response, as a text/event-stream' },
            starting_after: { type: 'string', pattern: '^(0|[1-9][0-9]{0,8})$', description: 'with stream=true (else not read): the sequence number of the last event the caller has; the stream starts after it' },
            include_obfuscation: { type: 'string', enum: ['true', 'false'], description: 'taken and ignored: no event is padded' },
          },
        },
        response: { 200: { ...anyObject, description: 'the response object, or with stream=true a text/event-stream of its events' }, ...openAiErrorResponses(400, 401, 404, 409, 503, 504) },
      },
    },
    async (req, reply) => {
      const { response_id: id } = req.params as { response_id: string };
      const { stream, starting_after: after } = req.query as { stream?: string; starting_after?: string };
      const response = readable(await keptResponse(ctx, req, reply, id, notFound(id)));
      if (stream !== 'true') return response;
      if (response['background'] !== true) throw new HttpError(409, 'not_background', `Only responses created with background set to true can be streamed again (stream=true).`, undefined, undefined, 'stream');
      return followResponse(ctx, req, reply, id, after === undefined ? -1 : Number(after));
    },
  );

  app.post(
    '/v1/responses/:response_id/cancel',
    {
      config: { auth: 'bearer' },
      schema: {
        tags: ['openai'],
        summary: 'Cancels a background response (created with background: true) that has not ended',
        description:
          'The response is kept `cancelled` (its output empty) and its call stopped, on whichever edge runs it. One that has ended is answered as it is. ' +
          'A response not created with background is a 409 (`not_background`).',
        params: idParam,
        response: { 200: { ...anyObject, description: 'the response object' }, ...openAiErrorResponses(400, 401, 404, 409, 503, 504) },
      },
    },
    async (req, reply) => {
      const { response_id: id } = req.params as { response_id: string };
      const kept = await keptResponse(ctx, req, reply, id, notFound(id));
      const response = JSON.parse(kept.responseJson) as Record<string, unknown>;
      if (response['background'] !== true) throw new HttpError(409, 'not_background', 'Only responses created with background set to true can be cancelled.');
      if (!kept.pending) return readable(kept);
      const cancelled = { ...response, status: 'cancelled', output: [] };
      const stored = { ...kept, responseJson: JSON.stringify(cancelled), pending: false };
      try {
        await ctx.gw.store.saveStoredResponse({ userId: req.userId, response: stored, onlyIfPending: true }, requestScope(reply));
      } catch (err) {
        // It ended meanwhile: its end stands.
        if (reasonOf(err) === 'response_not_pending') return readable(await keptResponse(ctx, req, reply, id, notFound(id)));
        throw err;
      }
      await ctx.background.cancel(id);
      return cancelled;
    },
  );

  app.delete(
    '/v1/responses/:response_id',
    {
      config: { auth: 'bearer' },
      schema: {
        tags: ['openai'],
        summary: 'Deletes a kept response of the Responses API (a later call can no longer continue from it)',
        params: idParam,
        response: {
          200: { type: 'object', required: ['id', 'object', 'deleted'], properties: { id: { type: 'string' }, object: { type: 'string', enum: ['response'] }, deleted: { type: 'boolean', enum: [true] } } },
          ...openAiErrorResponses(400, 401, 404, 503, 504),
        },
      },
    },
    async (req, reply) => {
      const { response_id: id } = req.params as { response_id: string };
      try {
        await ctx.gw.store.deleteStoredResponse({ userId: req.userId, responseId: id }, requestScope(reply));
      } catch (err) {
        throw codeOf(err) === status.NOT_FOUND ? notFound(id)() : err;
      }
      return { id, object: 'response', deleted: true };
    },
  );

  // The caller's kept responses as a whole (OpenAI's API has no listing): what is kept for them can
  // be found without its ids, and erased at once.
  app.get(
    '/api/responses',
    {
      config: { auth: 'bearer' },
      schema: {
        tags: ['responses'],
        summary: "The caller's kept responses of the Responses API, newest first: ids and times (GET /v1/responses/{response_id} reads one)",
        querystring: pageQuery,
        response: {
          200: {
            type: 'object',
            required: ['responses', 'nextPageToken'],
            properties: {
              responses: { type: 'array', items: { type: 'object', required: ['id', 'createdAt'], properties: { id: { type: 'string' }, createdAt: { type: 'string', format: 'date-time' } } } },
              nextPageToken: { type: ['string', 'null'] },
            },
          },
          ...errorResponses(400, ...BACKED),
        },
      },
    },
    async (req, reply) => {
      const res = await ctx.gw.store.listStoredResponses({ userId: req.userId, ...pageOf(req.query, 100) }, requestScope(reply));
      return { responses: res.responses.map((r) => ({ id: r.id, createdAt: iso(r.createdAtMs) })), nextPageToken: res.nextPageToken || null };
    },
  );

  app.delete(
    '/api/responses',
    {
      config: { auth: 'bearer' },
      schema: {
        tags: ['responses'],
        summary: "Erase every kept response of the caller (a later call can continue from none of them); a response being answered meanwhile may be kept after it",
        response: {
          200: { type: 'object', required: ['deleted'], properties: { deleted: { type: 'integer', minimum: 0, description: 'how many were erased' } } },
          ...errorResponses(...BACKED),
        },
      },
    },
    async (req, reply) => ({ deleted: (await ctx.gw.store.eraseStoredResponses({ userId: req.userId }, requestScope(reply, ERASE_RESPONSES_TIMEOUT_MS))).deleted }),
  );
}


/** The conversation a request is sent: the items of the response it continues (previous_response_id), then its own input. */
async function itemsOf(ctx: EdgeContext, req: FastifyRequest, reply: FastifyReply, body: ResponsesBody): Promise<InputItem[]> {
  const previous = body.previous_response_id;
  if (!previous) return inputItems(body.input);
  const prior = await keptResponse(ctx, req, reply, previous, () => new HttpError(400, 'previous_response_not_found', `Previous response with id '${previous}' not found.`, undefined, undefined, 'previous_response_id'));
  if (prior.pending) throw badRequest(`body/previous_response_id names a background response that has not ended (${previous}): wait for its end`, undefined, 'previous_response_id');
  return [...(JSON.parse(prior.itemsJson) as InputItem[]), ...inputItems(body.input)];
}

/**
 * A background response: kept `queued` and answered so; the call runs on in this edge
 * (BackgroundCalls), `in_progress` from its first token, and its end is written over it — unless
 * a cancel was written first (only_if_pending). Its events (`response.created` and
 * `response.queued` at once, then as a stream's, up to the end's, `response.failed` when it
 * failed, an `error` when it was cancelled) are followed where it runs and kept for other edges.
 */
async function startBackground(call: Begun, answer: Answer): Promise<Record<string, unknown>> {
  const { ctx, req } = call;
  // The caller's rate limit and token budget refuse now (429), not as the response's failure.
  await req.gate;
  const queued = responseObject(answer, { status: 'queued', output: [] });
  await keep(call, answer, queued, [], { pending: true });
  ctx.background.run(answer.id, call.abort, async (emit) => {
    emit('response.created', { response: queued });
    emit('response.queued', { response: queued });
    const events = new OutputEvents(emit, answer.body);
    let state: State;
    try {
      let done: Done | undefined;
      let started = false;
      for await (const p of call.pieces) {
        if ('queued' in p || 'cached' in p) continue;
        if (!started) {
          started = true;
          const inProgress = responseObject(answer, { status: 'in_progress', output: [] });
          await keep(call, answer, inProgress, [], { pending: true, onlyIfPending: true });
          emit('response.in_progress', { response: inProgress });
        }
        if ('done' in p) {
          done = p;
          await events.end(p, statusOf(p.finishReason).status);
        } else await events.piece(p);
      }
      if (!done) throw new HttpError(502, 'incomplete', 'the answer ended without a result');
      state = { ...statusOf(done.finishReason), output: events.output, done };
    } catch (err) {
      if (call.abort.signal.reason === 'cancelled') return emit('error', CANCELLED, true); // the cancel is written already
      const e = call.abort.signal.reason === 'shutdown'
        ? new HttpError(503, 'server_shutdown', 'the gateway running the response shut down before it ended: create it again')
        : err instanceof HttpError ? err : isGrpcError(err) ? fromGrpc(err) : new HttpError(502, 'server_error', 'the response failed');
      state = { status: 'failed', output: [], error: { code: e.code, message: e.message } };
    }
    const response = responseObject(answer, state);
    if (!(await keep(call, answer, response, state.output, { pending: false, onlyIfPending: true }))) return emit('error', CANCELLED, true);
    emit(END_EVENT[state.status]!, { response }, true);
  });
  return queued;
}

/** The last event of a background response, by how it ended (a cancelled one's is an `error`: CANCELLED). */
const END_EVENT: Record<string, string> = { completed: 'response.completed', incomplete: 'response.incomplete', failed: 'response.failed' };
const CANCELLED = { code: 'response_cancelled', message: 'the response was cancelled (POST /v1/responses/{id}/cancel)', param: null };

/** How long a stream of a background response may stay silent before a keep-alive comment. */
const KEEP_ALIVE_MS = 15_000;

/**
 * Streams a background response's events after sequence number `after`: as they come where its
 * call runs, else from the log (to its end, or until this edge drains, reading the log: the caller
 * resumes elsewhere with `starting_after`). The caller leaving stops the stream, not the call.
 */
async function followResponse(ctx: EdgeContext, req: FastifyRequest, reply: FastifyReply, id: string, after: number): Promise<void> {
  const left = new AbortController();
  reply.raw.once('close', () => left.abort());
  const started = Date.now();
  const { write, close } = eventStream(ctx, req, reply, left, {});
  const events = ctx.background.follow(id, after, left.signal, KEEP_ALIVE_MS, () => endOf(ctx, req.userId, id), () => ctx.state.draining);
  try {
    for await (const event of events) await write(event ? event.frame : ': keep-alive\n\n');
  } catch (err) {
    req.log.warn({ err, responseId: id }, 'a background response\'s stream ended early');
  } finally {
    close(req.routeOptions.url ?? '/v1/responses', started);
  }
}

/** The frame of a background response's last event, once it has ended (by the store), at a given sequence number. */
async function endOf(ctx: EdgeContext, userId: string, id: string): Promise<((seq: number) => string) | undefined> {
  const { response: kept } = await ctx.gw.store.getStoredResponse({ userId, responseId: id }, { deadline: Date.now() + DEFAULT_UNARY_DEADLINE_MS }).catch(() => ({ response: undefined }));
  if (!kept) return undefined;
  const response = readable(kept);
  const ended = END_EVENT[String(response['status'])];
  if (response['status'] === 'cancelled') return (seq) => eventFrame('error', seq, CANCELLED);
  return ended ? (seq) => eventFrame(ended, seq, { response }) : undefined;
}

/**
 * Keeps the response with the conversation up to it: each input item with an id (its own, or one
 * given here, as GET …/input_items lists them), then its output. A background response is
 * `pending` until its end; `onlyIfPending`: not written over an end (or a cancel) already
 * written, which wins (then false).
 */
async function keep(
  { ctx, req }: Begun, answer: Answer, response: Record<string, unknown>, output: Record<string, unknown>[], o: { pending: boolean; onlyIfPending?: boolean },
): Promise<boolean> {
  const items = [...answer.items.map((item) => (item.id ? item : { ...item, id: itemId(ID_PREFIX[item.type ?? 'message']) })), ...output];
  const stored = { id: answer.id, userId: req.userId, createdAtMs: answer.createdAtMs, responseJson: JSON.stringify(response), itemsJson: JSON.stringify(items), pending: o.pending, updatedAtMs: 0 };
  // Its own deadline: the call may have taken longer than the request's unary budget, and a caller
  // who left (or a background one) still has an answer it paid for.
  try {
    await ctx.gw.store.saveStoredResponse({ userId: req.userId, response: stored, onlyIfPending: o.onlyIfPending === true }, { deadline: Date.now() + DEFAULT_UNARY_DEADLINE_MS });
    return true;
  } catch (err) {
    if (o.onlyIfPending && reasonOf(err) === 'response_not_pending') return false;
    throw err;
  }
}

/**
 * A background call cannot run longer than this (its Generate deadline, and the time to write its
 * end): a response still pending after it was left by an edge that stopped without writing its end.
 */
export const BACKGROUND_ABANDONED_MS = GENERATE_DEADLINE_MS + 60_000;

/** A kept response as it is read: a background one left pending by an edge that stopped is answered as failed. */
function readable(kept: StoredResponse): Record<string, unknown> {
  const response = JSON.parse(kept.responseJson) as Record<string, unknown>;
  if (!kept.pending || Date.now() - Number(kept.updatedAtMs) <= BACKGROUND_ABANDONED_MS) return response;
  return { ...response, status: 'failed', error: { code: 'server_error', message: 'the gateway running the response stopped before it ended: create it again' } };
}

/** The caller's kept response, or `missing()` when there is none of theirs by that id. */
async function keptResponse(ctx: EdgeContext, req: FastifyRequest, reply: FastifyReply, id: string, missing: () => HttpError): Promise<StoredResponse> {
  try {
    const { response } = await ctx.gw.store.getStoredResponse({ userId: req.userId, responseId: id }, requestScope(reply));
    if (!response) throw missing();
    return response;
  } catch (err) {
    throw codeOf(err) === status.NOT_FOUND ? missing() : err;
  }
}

/**
 * The finished response object, kept first unless `store` is false, with the conversation up to
 * it (so that a caller reading it or continuing from it at once finds it). When the store cannot
 * keep it, the answer is not lost: it is answered with `store: false`, and the failure logged.
 */
async function finalResponse(call: Begun, answer: Answer, state: State): Promise<Record<string, unknown>> {
  const { req } = call;
  const response = responseObject(answer, state);
  if (answer.body.store === false) return response;
  try {
    await keep(call, answer, response, state.output, { pending: false });
  } catch (err) {
    req.log.warn({ err, responseId: answer.id }, 'the response could not be kept: answered with store false');
    response['store'] = false;
  }
  return response;
}

/**
 * The answer's pieces as the Responses API's output events (given to `emit`), one block at a time,
 * and the output items they make (as `response.completed` lists them).
 */
class OutputEvents {
  readonly output: Record<string, unknown>[] = [];
  private readonly blocks = new BlockSequence();

  /** The log probabilities of the piece being written (its text step's), and of the text block's tokens so far. */
  private pieceLogprobs: WireLogprob[] = [];
  private textLogprobs: WireLogprob[] = [];

  /** The thinking block being written, as it will be kept. */
  private thought: { type: 'thinking'; thinking: string; signature: string } | { type: 'redacted_thinking'; data: string } | undefined;

  constructor(private readonly emit: (type: string, data: Record<string, unknown>) => unknown, private readonly body: ResponsesBody) {}

  /** A piece of the answer: thinking, text, or a tool call's. */
  async piece(p: Piece): Promise<void> {
    if ('delta' in p) {
      this.pieceLogprobs = p.logprobs ?? [];
      await this.steps(this.blocks.text(p.delta));
    }
    else if ('toolCall' in p) await this.steps(this.blocks.toolCall(p.toolCall));
    else if ('thinking' in p) await this.steps(this.blocks.thinking(p.thinking));
  }

  /** The answer's end: the blocks still open are closed (a message's status is the answer's when the answer's end stops it). */
  async end(done: Done, status: string): Promise<void> {
    await this.steps(this.blocks.end(done.toolCalls), status);
  }

  private async steps(steps: Step[], status = 'completed'): Promise<void> {
    const { output, body } = this;
    const summarized = !!body.reasoning?.summary;
    for (const step of steps) {
      const output_index = step.block;
      const item = output[output_index];
      const at = { item_id: item?.['id'], output_index, summary_index: 0 };
      switch (step.kind) {
        // A reasoning item: its summary part streamed when a summary was asked for.
        case 'thinking-start':
          this.thought = step.redactedData !== undefined ? { type: 'redacted_thinking', data: step.redactedData } : { type: 'thinking', thinking: '', signature: '' };
          output[output_index] = { type: 'reasoning', id: itemId('rs'), summary: [] };
          await this.emit('response.output_item.added', { output_index, item: output[output_index] });
          if (summarized && !step.redactedData) {
            await this.emit('response.reasoning_summary_part.added', { item_id: output[output_index]!['id'], output_index, summary_index: 0, part: { type: 'summary_text', text: '' } });
          }
          break;
        case 'thinking':
          if (this.thought?.type === 'thinking') this.thought.thinking += step.text;
          if (summarized) await this.emit('response.reasoning_summary_text.delta', { ...at, delta: step.text });
          break;
        case 'thinking-signature':
          if (this.thought?.type === 'thinking') this.thought.signature = step.signature;
          break;
        case 'thinking-stop': {
          const block = this.thought ?? { type: 'thinking', thinking: '', signature: '' };
          this.thought = undefined;
          output[output_index] = reasoningItem(item!['id'] as string, block, summarized);
          if (summarized && block.type === 'thinking') {
            await this.emit('response.reasoning_summary_text.done', { ...at, text: block.thinking });
            await this.emit('response.reasoning_summary_part.done', { ...at, part: { type: 'summary_text', text: block.thinking } });
          }
          await this.emit('response.output_item.done', { output_index, item: shown(output[output_index]!, body) });
          break;
        }
        case 'text-start':
          output[output_index] = { type: 'message', id: itemId('msg'), status: 'in_progress', role: 'assistant', content: [] };
          await this.emit('response.output_item.added', { output_index, item: output[output_index] });
          this.textLogprobs = [];
          await this.emit('response.content_part.added', { item_id: output[output_index]!['id'], output_index, content_index: 0, part: outputText(body, '', []) });
          break;
        case 'text': {
          // A piece's figures go with its text (text held behind a tool call comes later, without them).
          const logprobs = this.pieceLogprobs;
          this.pieceLogprobs = [];
          this.textLogprobs.push(...logprobs);
          await this.emit('response.output_text.delta', { item_id: item!['id'], output_index, content_index: 0, delta: step.text, logprobs });
          break;
        }
        case 'text-stop': {
          const part = outputText(body, step.text, this.textLogprobs);
          output[output_index] = { ...item, status, content: [part] };
          await this.emit('response.output_text.done', { item_id: item!['id'], output_index, content_index: 0, text: step.text, logprobs: logprobsAsked(body) ? this.textLogprobs : [] });
          await this.emit('response.content_part.done', { item_id: item!['id'], output_index, content_index: 0, part });
          await this.emit('response.output_item.done', { output_index, item: output[output_index] });
          break;
        }
        case 'call-start':
          output[output_index] = { type: 'function_call', id: itemId('fc'), call_id: step.id, name: step.name, arguments: '', status: 'in_progress' };
          await this.emit('response.output_item.added', { output_index, item: output[output_index] });
          break;
        case 'call-arguments':
          await this.emit('response.function_call_arguments.delta', { item_id: item!['id'], output_index, delta: step.arguments });
          break;
        case 'call-stop':
          output[output_index] = { ...item, call_id: step.id, name: step.name, arguments: step.arguments, status: 'completed' };
          await this.emit('response.function_call_arguments.done', { item_id: item!['id'], output_index, arguments: step.arguments });
          await this.emit('response.output_item.done', { output_index, item: output[output_index] });
          break;
      }
    }
  }
}

/** Streams the response's events; errors before the first piece are HTTP errors, later ones end it `response.failed` (kept failed). */
async function streamResponse(call: Begun, answer: Answer): Promise<void> {
  const { ctx, pieces, abort } = call;
  const started = Date.now();
  const { first, write, close } = await openStream(call);
  let sequence = 0;
  const emit = (type: string, data: Record<string, unknown>) => write(eventFrame(type, sequence++, data));
  const events = new OutputEvents(emit, answer.body);
  let answered = false;
  try {
    const begun = responseObject(answer, { status: 'in_progress', output: [] });
    await emit('response.created', { response: begun });
    await emit('response.in_progress', { response: begun });
    for (let result = first; !result.done && !abort.signal.aborted; result = await pieces.next()) {
      const p = result.value;
      if ('queued' in p) await write(`: queued position=${p.queued} estimatedWaitMs=${p.estimatedWaitMs}\n\n`);
      else if ('done' in p) {
        const end = statusOf(p.finishReason);
        await events.end(p, end.status);
        await emit(end.status === 'completed' ? 'response.completed' : 'response.incomplete', { response: await finalResponse(call, answer, { ...end, output: events.output, done: p }) });
        answered = true;
        break;
      } else await events.piece(p);
    }
  } catch (err) {
    const e = err instanceof HttpError ? err : isGrpcError(err) ? fromGrpc(err) : new HttpError(502, 'stream_failed', 'the response failed');
    // As OpenAI ends a response that fails (and a background one here): the response, failed, with
    // its error, kept as such (unless store is false) so that GET reads how it ended.
    if (!abort.signal.aborted) await emit('response.failed', { response: await finalResponse(call, answer, { status: 'failed', output: [], error: { code: e.code, message: e.message } }) });
  } finally {
    if (answered) readToEnd(pieces, ctx);
    else await pieces.return(undefined).catch(() => undefined);
    close('/v1/responses', started);
  }
}
