// OpenAI-compatible facade: POST /v1/chat/completions (streamed or not, usage included) and
// GET /v1/models. `agent-mesh` runs the multi-agent pipeline and answers with the Reporter's
// output; any other model is one Generate call through the broker's queue and quota.
import { once } from 'node:events';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { annotate, ATTR, newId } from '@agent-mesh/common';
import { CacheStatus, CallerRole, ToolChoiceMode, type ChatMessage, type GenerateRequest, type TokenLogprob, type ToolChoice } from '@agent-mesh/common/gen/llmbroker/v1/llm_broker';
import type { EdgeContext } from '../context';
import { requestScope } from '../scope';
import { badRequest, fromGrpc, HttpError, isGrpcError } from '../errors';
import type { RunEvent } from '../gateways/types';
import { streamHeaders } from '../sse/memory';
import { ThinkingBlocks, type ThinkingPiece, type ToolCallPiece, type WholeThinking } from './blocks';
import {
  anyObject, cacheControlSchema, cacheTtlOf, FUNCTION_NAME, hourAfterFiveMinutes, MAX_CACHE_BREAKPOINTS, IMAGE_URL, metadataSchema, NO_NUL, openAiErrorResponses,
  redactedThinkingBlockSchema, thinkingBlockSchema, thinkingSchema, TOKEN_ID,
} from './schemas';

export const PIPELINE_MODEL = 'agent-mesh';
const CREATED = Math.floor(Date.now() / 1000);

export interface ChatBody {
  model: string;
  messages: {
    role: string;
    content?: string | { type: string; text?: string; image_url?: { url: string; detail?: string }; cache_control?: CacheControl | null }[] | null;
    name?: string;
    tool_call_id?: string;
    tool_calls?: WireToolCall[] | null;
    /** An assistant's extended-thinking blocks, passed back (as LiteLLM names them). */
    thinking_blocks?: WholeThinking[];
  }[];
  /** Anthropic's context editing (`{"edits": […]}`); set by /v1/messages only (this route's schema has none). */
  context_management?: Record<string, unknown>;
  /** Anthropic's extended thinking (LiteLLM takes it in this format too). */
  thinking?: { type: 'enabled'; budget_tokens: number } | { type: 'adaptive'; budget_tokens?: number } | { type: 'disabled' };
  /** Anthropic's `output_config` (its `effort`); set by /v1/messages only (this route's is reasoning_effort). */
  output_config?: { effort?: string };
  /** The Anthropic betas asked for (the `anthropic-beta` header's names); set by /v1/messages only. */
  anthropic_betas?: string[];
  stream?: boolean;
  stream_options?: { include_usage?: boolean } | null;
  max_tokens?: number | null;
  max_completion_tokens?: number | null;
  temperature?: number | null;
  tools?: { type: 'function'; function: { name: string; description?: string; parameters?: Record<string, unknown> }; cache_control?: CacheControl | null }[];
  tool_choice?: 'auto' | 'none' | 'required' | { type: 'function'; function: { name: string } } | null;
  stop?: string | string[] | null;
  top_p?: number | null;
  /** Anthropic's (LiteLLM takes it in this format too): an OpenAI upstream has none. */
  top_k?: number | null;
  seed?: number | null;
  presence_penalty?: number | null;
  frequency_penalty?: number | null;
  response_format?: Record<string, unknown> | null;
  n?: number | null;
  parallel_tool_calls?: boolean | null;
  logprobs?: boolean | null;
  top_logprobs?: number | null;
  reasoning_effort?: string | null;
  verbosity?: string | null;
  logit_bias?: Record<string, number> | null;
  user?: string;
  /** OpenAI's hint of which prompt cache calls sharing a prefix go to. */
  prompt_cache_key?: string | null;
  metadata?: Record<string, string> | null;
}

/** A function call as OpenAI writes it, in an assistant message or an answer. */
interface WireToolCall {
  id: string;
  type: 'function';
  function: { name: string; arguments: string };
}

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  /** The provider's count of reasoning tokens (part of completion_tokens), when it reports one. */
  completion_tokens_details?: { reasoning_tokens: number };
  /** The part of prompt_tokens the provider read from its prompt cache, when it reports one. */
  prompt_tokens_details?: { cached_tokens: number };
}

/** One token's log probability as OpenAI writes it (`logprobs.content[]`). */
export interface WireLogprob {
  token: string;
  logprob: number;
  bytes: number[];
  top_logprobs?: WireLogprob[];
}

const wireLogprob = (l: TokenLogprob): WireLogprob => ({ token: l.token, logprob: l.logprob, bytes: l.bytes, top_logprobs: l.topLogprobs.map(({ token, logprob, bytes }) => ({ token, logprob, bytes })) });

/** What one completion produces, pipeline or direct: content deltas (with their tokens' log probabilities when asked), then the end. */
export type Piece = (
  | { delta: string; logprobs?: WireLogprob[] }
  /** A piece of a tool call as it is generated, when streamed: a call's first piece names it (id, name), the next carry more of its arguments; `done` still has every call whole. */
  | { toolCall: ToolCallPiece }
  /** A piece of the model's extended thinking, before the answer (only for a call that turned it on). */
  | { thinking: ThinkingPiece }
  | {
    done: true; finishReason: string; usage: Usage; model: string; toolCalls: WireToolCall[];
    /** The stop sequence that ended it, where the upstream says which. */ stopSequence?: string;
    /** The part of the prompt the provider wrote to its prompt cache, when it says (Anthropic's cache_creation_input_tokens). */ cacheWriteTokens?: number;
    /** Of cacheWriteTokens, the part written to be kept an hour, when it says (Anthropic's cache_creation.ephemeral_1h_input_tokens). */ cacheWrite1hTokens?: number;
    /** What the provider cleared from the prompt (Anthropic's `context_management`), when the call asked for context management. */ contextManagement?: Record<string, unknown>;
  }
  | { queued: number; estimatedWaitMs: number }
  /** The broker replays the answer from its response cache (first, before the deltas). */
  | { cached: 'hit' | 'stale' }
) & {
  /** The choice it belongs to, with `n` > 1 (else 0). */
  index?: number;
};

/** At most this many choices (`n`) in one request: each is a call of its own to the provider. */
const MAX_CHOICES = 16;

/** The `x-mesh-cache` request header: `on` or `off` overrides the default (on at temperature 0). */
export const CACHE_HEADER = 'x-mesh-cache';


const textPart = { type: 'object', required: ['type'], properties: { type: { type: 'string', enum: ['text'] }, text: { type: 'string', pattern: NO_NUL }, cache_control: cacheControlSchema } } as const;

const imagePart = {
  type: 'object',
  required: ['type', 'image_url'],
  properties: {
    type: { type: 'string', enum: ['image_url'] },
    image_url: {
      type: 'object',
      required: ['url'],
      properties: {
        url: { type: 'string', pattern: IMAGE_URL },
        detail: { type: 'string', enum: ['auto', 'low', 'high'], description: 'how closely the model looks (OpenAI\'s; an Anthropic upstream sizes images itself: low or high go only to upstreams that take them)' },
      },
    },
    cache_control: cacheControlSchema,
  },
} as const;

/** Text, or text parts (an audio or file part is refused, 400, rather than dropped from the question). */
const contentSchema = {
  anyOf: [
    { type: 'string', maxLength: 200_000, pattern: NO_NUL },
    { type: 'null' },
    { type: 'array', maxItems: 100, items: textPart },
  ],
} as const;

/** A user's content may hold images too (as OpenAI's: only a user message may). */
const userContentSchema = {
  anyOf: [contentSchema.anyOf[0], contentSchema.anyOf[1], { type: 'array', maxItems: 100, items: { anyOf: [textPart, imagePart] } }],
} as const;

const toolCallsSchema = {
  anyOf: [
    { type: 'null' },
    {
      type: 'array',
      maxItems: 128,
      items: {
        type: 'object',
        required: ['id', 'type', 'function'],
        properties: {
          id: { type: 'string', minLength: 1, maxLength: 128, pattern: NO_NUL },
          type: { type: 'string', enum: ['function'] },
          function: {
            type: 'object',
            required: ['name', 'arguments'],
            properties: { name: { type: 'string', pattern: FUNCTION_NAME }, arguments: { type: 'string', maxLength: 200_000, pattern: NO_NUL } },
          },
        },
      },
    },
  ],
} as const;

/** One message, by role as OpenAI's API defines them: only an assistant makes tool calls; a tool result names the call it answers. */
const messageSchema = {
  anyOf: [
    {
      type: 'object',
      required: ['role'],
      properties: { role: { type: 'string', enum: ['system', 'developer'] }, content: contentSchema, name: { type: 'string', maxLength: 64 } },
    },
    {
      type: 'object',
      required: ['role'],
      properties: { role: { type: 'string', enum: ['user'] }, content: userContentSchema, name: { type: 'string', maxLength: 64 } },
    },
    {
      type: 'object',
      required: ['role'],
      properties: {
        role: { type: 'string', enum: ['assistant'] }, content: contentSchema, name: { type: 'string', maxLength: 64 }, tool_calls: toolCallsSchema,
        thinking_blocks: {
          type: 'array', maxItems: 100, items: { anyOf: [thinkingBlockSchema, redactedThinkingBlockSchema] },
          description: 'the turn\'s extended thinking as the answer gave it (LiteLLM\'s name), passed back to an Anthropic upstream before its text and calls',
        },
      },
    },
    {
      type: 'object',
      required: ['role', 'tool_call_id'],
      properties: {
        role: { type: 'string', enum: ['tool'] },
        content: contentSchema,
        name: { type: 'string', maxLength: 64 },
        tool_call_id: { type: 'string', minLength: 1, maxLength: 128, pattern: NO_NUL },
      },
    },
  ],
} as const;

/**
 * OpenAI's other parameters, accepted at the value that changes nothing (what leaving them out
 * means) and refused (400) at any other: the mesh does not pass them to the provider, and an
 * answer that ignored `store` or a service tier would look right and be wrong.
 */
const DEFAULT_ONLY = {
  store: { enum: [false, null], description: 'nothing is stored at OpenAI: only false' },
  service_tier: { enum: ['auto', 'default', null], description: 'only auto or default' },
  modalities: { enum: [['text'], null], description: 'text answers only: ["text"] (audio is refused)' },
} as const;

export function openaiRoutes(app: FastifyInstance, ctx: EdgeContext): void {
  /**
   * The models a call can name: the agents' pipeline, the default model's alias (LLM_MODEL), then
   * each model the broker's upstreams serve. Each in OpenAI's shape and Anthropic's at once (their
   * fields do not collide), so that either SDK lists them.
   */
  const models = async (reply: FastifyReply) => {
    const served = await ctx.gw.broker.listModels(requestScope(reply));
    const owners = new Map<string, string>([[PIPELINE_MODEL, 'agent-mesh'], [ctx.cfg.llmModel, 'agent-mesh']]);
    for (const m of served) if (!owners.has(m.id)) owners.set(m.id, m.upstream);
    return [...owners].map(([id, owner]) => ({ id, object: 'model', created: CREATED, owned_by: owner, type: 'model', display_name: id, created_at: new Date(CREATED * 1000).toISOString() }));
  };
  const modelBody = {
    type: 'object',
    required: ['id', 'object', 'created', 'owned_by', 'type', 'display_name', 'created_at'],
    properties: {
      id: { type: 'string' }, object: { type: 'string', enum: ['model'] }, created: { type: 'integer' }, owned_by: { type: 'string', description: 'agent-mesh, or the upstream (LLM_UPSTREAMS) that serves it' },
      type: { type: 'string', enum: ['model'] }, display_name: { type: 'string' }, created_at: { type: 'string' },
    },
  } as const;

  app.get(
    '/v1/models',
    {
      config: { auth: 'api-key' },
      schema: {
        tags: ['openai', 'anthropic'],
        summary: 'The models a call can name (OpenAI\'s and Anthropic\'s list at once)',
        description: '`agent-mesh` (the agents), the default model\'s alias (LLM_MODEL), then every model of the llm-broker\'s upstreams, in fallback order.',
        response: {
          200: {
            type: 'object',
            required: ['object', 'data', 'has_more', 'first_id', 'last_id'],
            properties: { object: { type: 'string', enum: ['list'] }, data: { type: 'array', items: modelBody }, has_more: { type: 'boolean' }, first_id: { type: 'string' }, last_id: { type: 'string' } },
          },
          ...openAiErrorResponses(401, 429, 502, 503, 504),
        },
      },
    },
    async (_req, reply) => {
      const data = await models(reply);
      return { object: 'list', data, has_more: false, first_id: data[0]!.id, last_id: data.at(-1)!.id };
    },
  );

  app.get(
    '/v1/models/:model',
    {
      config: { auth: 'api-key' },
      schema: {
        tags: ['openai', 'anthropic'],
        summary: 'One model a call can name',
        params: { type: 'object', required: ['model'], properties: { model: { type: 'string', pattern: '^[A-Za-z0-9._:@+-]{1,200}$' } } },
        response: { 200: modelBody, ...openAiErrorResponses(400, 401, 404, 429, 502, 503, 504) },
      },
    },
    async (req, reply) => {
      const { model } = req.params as { model: string };
      const found = (await models(reply)).find((m) => m.id === model);
      if (!found) throw new HttpError(404, 'model_not_found', `The model '${model}' does not exist`, undefined, undefined, 'model');
      return found;
    },
  );

  app.post(
    '/v1/chat/completions',
    {
      // The rate limit and budget are checked beside the call's admission to the quota (before the upstream call).
      config: { auth: 'bearer', spends: 'beside' },
      // A long chat, or images as data: URLs, outgrow the other routes' limit.
      bodyLimit: ctx.cfg.v1BodyLimitBytes,
      schema: {
        tags: ['openai'],
        summary: 'OpenAI-compatible chat completions (stream true or false)',
        description:
          'A model other than `agent-mesh` asks the broker\'s response cache when `temperature` is 0, or when the request header `x-mesh-cache` is `on` ' +
          '(`off`: never). Such answers carry the response header `x-mesh-cache`: `hit` (replayed, nothing billed: usage is 0), `stale` ' +
          '(replayed past its lifetime while the provider refuses) or `miss`. With `tools`, the model may answer with function calls: ' +
          '`choices[0].message.tool_calls` (`id`, `type: function`, `function.name`, `function.arguments` as JSON text) and `finish_reason: tool_calls`, ' +
          'streamed as `delta.tool_calls` chunks (`index`, `id`, `type`, `function`); send each result back as a `tool` message with its `tool_call_id`, ' +
          'after the `assistant` message that carries the `tool_calls`. Message content is text (a string, or parts of type `text`); a user message\'s parts may be images too ' +
          '(`image_url`: `url` https or a data: URL of a base64 PNG, JPEG, GIF or WebP, `detail` auto, low or high), which the provider reads (its refusal of an image is a 400 that says why) and bills as prompt tokens; ' +
          'the `agent-mesh` model takes text only, and refuses what would shape its answer, a run\'s (`response_format` other than text, `stop`, `logit_bias`, `reasoning_effort`, ' +
          '`verbosity`, `top_k`, tools, thinking, `logprobs`, `n` over 1); its agents sample as their roles need, so `temperature`, `top_p`, `seed`, the penalties and the length limits are taken and left to them. ' +
          '`n`, `top_p`, `top_k` (Anthropic\'s), `stop`, `seed`, the penalties, `response_format`, `parallel_tool_calls`, `logprobs`, `reasoning_effort`, `verbosity` and `logit_bias` are passed on; `metadata` tags the call\'s trace; OpenAI\'s other parameters are accepted only at the value that changes nothing (`store` false…, each documented below) ' +
          'and refused with 400 otherwise, as is a parameter OpenAI does not have: nothing else in a request is left unused.',
        headers: { type: 'object', properties: { [CACHE_HEADER]: { type: 'string', enum: ['on', 'off'] } } },
        body: {
          type: 'object',
          required: ['model', 'messages'],
          properties: {
            model: { type: 'string', minLength: 1, maxLength: 200 },
            messages: { type: 'array', minItems: 1, maxItems: 500, items: messageSchema },
            stream: { type: ['boolean', 'null'] },
            stream_options: { type: ['object', 'null'], properties: { include_usage: { type: 'boolean' } } },
            max_tokens: { type: ['integer', 'null'], minimum: 1 },
            max_completion_tokens: { type: ['integer', 'null'], minimum: 1 },
            temperature: { type: ['number', 'null'], minimum: 0, maximum: 2 },
            // As the providers check them (OpenAI's rules): a function with a name of [a-zA-Z0-9_-].
            tools: {
              type: 'array',
              maxItems: 128,
              items: {
                type: 'object',
                required: ['type', 'function'],
                properties: {
                  type: { type: 'string', enum: ['function'] },
                  function: {
                    type: 'object',
                    required: ['name'],
                    properties: {
                      name: { type: 'string', pattern: FUNCTION_NAME },
                      description: { type: 'string', maxLength: 1024 },
                      parameters: { type: 'object' },
                    },
                  },
                  cache_control: cacheControlSchema,
                },
              },
            },
            tool_choice: {
              description: 'auto (the model decides; also when absent), none (text only), required (some tool), or {"type": "function", "function": {"name": …}} (that one); ' +
                'all but auto need `tools`, and a named function must be one of them (400 `invalid_tool_choice` otherwise)',
              anyOf: [
                { type: ['string', 'null'], enum: ['auto', 'none', 'required', null] },
                {
                  type: 'object',
                  required: ['type', 'function'],
                  properties: {
                    type: { type: 'string', enum: ['function'] },
                    function: { type: 'object', required: ['name'], properties: { name: { type: 'string', pattern: FUNCTION_NAME } } },
                  },
                },
              ],
            },
            stop: {
              description: 'up to 4 sequences at which the answer ends (left out of it): a string or an array',
              anyOf: [
                { type: 'string', minLength: 1, maxLength: 1000, pattern: NO_NUL },
                { type: 'array', maxItems: 4, items: { type: 'string', minLength: 1, maxLength: 1000, pattern: NO_NUL } },
                { type: 'null' },
              ],
            },
            top_p: { type: ['number', 'null'], minimum: 0, maximum: 1 },
            thinking: thinkingSchema(
              'Anthropic\'s extended thinking (as LiteLLM takes it): within `budget_tokens` (at least 1,024) of `max_completion_tokens`, which must be greater, or `adaptive` (the model decides); the thinking comes back as ' +
              '`message.reasoning_content` and `message.thinking_blocks` (streamed: `delta.reasoning_content` as it is written, `delta.thinking_blocks` with each block whole, signed, at its end), ' +
              'to pass back on the assistant message; an OpenAI upstream has none (400, as top_k), nor has the `agent-mesh` model',
            ),
            top_k: { type: ['integer', 'null'], minimum: 0, description: 'Anthropic\'s: each token from the k likeliest only (1: the likeliest); an OpenAI upstream has none (400, as seed for Anthropic)' },
            presence_penalty: { type: ['number', 'null'], minimum: -2, maximum: 2, description: 'OpenAI\'s; an Anthropic upstream has none (as seed)' },
            frequency_penalty: { type: ['number', 'null'], minimum: -2, maximum: 2, description: 'OpenAI\'s; an Anthropic upstream has none (as seed)' },
            response_format: {
              description: 'text, JSON mode (json_object: the messages must say "json", as OpenAI requires) or structured output (json_schema); an Anthropic upstream takes a json_schema (as its `output_config.format`, always strict) and has no JSON mode (400, as seed)',
              anyOf: [
                { type: 'object', required: ['type'], properties: { type: { type: 'string', enum: ['text', 'json_object'] } }, additionalProperties: false },
                {
                  type: 'object',
                  required: ['type', 'json_schema'],
                  properties: {
                    type: { type: 'string', enum: ['json_schema'] },
                    json_schema: {
                      type: 'object',
                      required: ['name'],
                      properties: {
                        name: { type: 'string', pattern: FUNCTION_NAME },
                        description: { type: 'string', maxLength: 1024 },
                        schema: { type: 'object' },
                        strict: { type: ['boolean', 'null'] },
                      },
                      additionalProperties: false,
                    },
                  },
                  additionalProperties: false,
                },
                { type: 'null' },
              ],
            },
            seed: {
              type: ['integer', 'null'],
              minimum: Number.MIN_SAFE_INTEGER,
              maximum: Number.MAX_SAFE_INTEGER,
              description: 'a repeatable answer, best effort; an Anthropic upstream has none (400 when no upstream of the model takes one)',
            },
            n: {
              type: ['integer', 'null'],
              minimum: 1,
              maximum: MAX_CHOICES,
              description: `how many choices to generate (at most ${MAX_CHOICES}): each is a call of its own to the provider, against the quota, and the usage adds them up ` +
                '(the prompt is sent, and billed, once per choice); choice i is asked with `seed` + i when a seed is given, and none is replayed from the response cache ' +
                '(`x-mesh-cache: on` with `n` > 1 is refused); the `agent-mesh` model answers one choice',
            },
            logprobs: { type: ['boolean', 'null'], description: 'each token\'s log probability in `choices[i].logprobs.content` (and in each chunk\'s, streamed); an Anthropic upstream has none (as seed), nor has the `agent-mesh` model' },
            top_logprobs: { type: ['integer', 'null'], minimum: 0, maximum: 20, description: 'how many of the likeliest tokens to give beside each (only with `logprobs: true`)' },
            reasoning_effort: {
              type: ['string', 'null'],
              enum: ['none', 'minimal', 'low', 'medium', 'high', 'xhigh', null],
              description: 'how much a reasoning model thinks before it answers (its reasoning tokens are billed as completion tokens, within `max_completion_tokens`); an Anthropic upstream thinks adaptively at that effort (its `output_config.effort`; `minimal`: no thinking, at low effort; `none`: no thinking), its thinking given as `thinking`\'s is (not with `thinking`)',
            },
            verbosity: {
              type: ['string', 'null'],
              enum: ['low', 'medium', 'high', null],
              description: 'how long an answer the model writes (OpenAI\'s); an Anthropic upstream has none (as seed)',
            },
            logit_bias: {
              type: ['object', 'null'],
              propertyNames: { pattern: TOKEN_ID },
              additionalProperties: { type: 'number', minimum: -100, maximum: 100 },
              maxProperties: 300,
              description: 'the provider\'s token ids (as text) to a bias from -100 (never) to 100 (only); an Anthropic upstream has none (as seed)',
            },
            parallel_tool_calls: { type: ['boolean', 'null'], description: 'false: at most one tool call in the answer (Anthropic\'s `disable_parallel_tool_use`); changes nothing without `tools`' },
            user: { type: 'string', maxLength: 256 },
            prompt_cache_key: { type: ['string', 'null'], maxLength: 256, pattern: NO_NUL, description: 'OpenAI\'s hint that calls sharing a long prefix go to the same prompt cache (as its conversation\'s id): passed on to an OpenAI upstream; an Anthropic upstream, whose cache is keyed by the prefix alone, is not sent it. Not part of the response cache\'s key' },
            metadata: metadataSchema,
            ...DEFAULT_ONLY,
          },
          // As OpenAI does: a parameter it does not know is refused, not ignored.
          additionalProperties: false,
          // top_logprobs only with logprobs.
          if: { required: ['top_logprobs'], properties: { top_logprobs: { type: 'integer' } } },
          then: { required: ['logprobs'], properties: { logprobs: { const: true } } },
        },
        response: {
          200: {
            ...anyObject,
            description:
              'a chat.completion object (`choices[0].message`: `content`, `tool_calls` when the model called functions, `reasoning_content` and `thinking_blocks` with extended thinking), ' +
              'or with stream: true a text/event-stream of chat.completion.chunk objects (`delta.content`, `delta.tool_calls`, `delta.reasoning_content`, `delta.thinking_blocks`)',
          },
          ...openAiErrorResponses(400, 401, 404, 413, 415, 429, 502, 503, 504),
        },
      },
    },
    async (req, reply) => {
      const body = req.body as ChatBody;
      const call = completion(ctx, req, reply, body);
      const { pieces, cache, n } = call;
      const id = `chatcmpl-${newId()}`;
      if (body.stream) return streamCompletion(call, id, body);
      const choices: { content: string; logprobs: WireLogprob[]; thinking: ThinkingBlocks; done?: Extract<Piece, { done: true }> }[] = Array.from({ length: n }, () => ({ content: '', logprobs: [], thinking: new ThinkingBlocks() }));
      let finished = 0;
      if (cache) void reply.header(CACHE_HEADER, 'miss');
      // Not `for await`: leaving it at `done` would cancel the call, whose end is read on instead.
      for (let next = await pieces.next(); !next.done; next = await pieces.next()) {
        const p = next.value;
        const c = choices[p.index ?? 0]!;
        if ('delta' in p) {
          c.content += p.delta;
          if (p.logprobs) c.logprobs.push(...p.logprobs);
        } else if ('cached' in p) void reply.header(CACHE_HEADER, p.cached);
        else if ('thinking' in p) c.thinking.add(p.thinking);
        else if ('done' in p) {
          c.done = p;
          if (++finished < n) continue;
          readToEnd(pieces, ctx);
          return {
            id,
            object: 'chat.completion',
            created: Math.floor(Date.now() / 1000),
            model: p.model || body.model,
            choices: choices.map(({ content, logprobs, thinking, done: d }, index) => ({
              index,
              // As OpenAI answers a call: content null when the model only called functions.
              message: {
                role: 'assistant', content: d!.toolCalls.length > 0 && !content ? null : content, refusal: null, ...(d!.toolCalls.length > 0 ? { tool_calls: d!.toolCalls } : {}),
                ...reasoningOf(thinking.blocks),
              },
              logprobs: body.logprobs ? { content: d!.toolCalls.length > 0 && !content ? null : logprobs, refusal: null } : null,
              finish_reason: d!.finishReason || 'stop',
            })),
            usage: n === 1 ? p.usage : sumUsage(choices.map((c) => c.done!.usage)),
          };
        }
      }
      throw new HttpError(502, 'incomplete', 'the completion ended without a result');
    },
  );
}

/**
 * A chat completion begun: the body checked beyond its schema, the pieces of its answer (the
 * pipeline's, one choice's, or `n` merged), the controller that stops it when the client leaves,
 * and whether the response cache is asked.
 */
export function completion(ctx: EdgeContext, req: FastifyRequest, reply: FastifyReply, body: ChatBody, detached = false): Begun {
  checkBreakpoints(body);
  const messages = body.messages.map(toChatMessage);
  const abort = new AbortController();
  // The response's close (not the request's, which fires once the body is read) before it was
  // all sent means the client left. (After a full answer there is nothing to stop, and an abort
  // costs a DOMException with its stack: 3 % of the edge's CPU under load.) A `detached` call
  // (a background response) runs on without its caller.
  if (!detached) reply.raw.once('close', () => { if (!reply.raw.writableFinished) abort.abort(); });
  annotate({ [ATTR.userId]: req.userId });
  if (body.metadata) annotate(Object.fromEntries(Object.entries(body.metadata).map(([k, v]) => [`metadata.${k}`, v])));
  const asked = req.headers[CACHE_HEADER];
  const n = body.n ?? 1;
  // A thinking answer is not replayed: its signed blocks are one answer's (the broker asks no cache for it either).
  const thinks = body.thinking !== undefined && body.thinking.type !== 'disabled';
  const cache = body.model !== PIPELINE_MODEL && n === 1 && !thinks && (asked === 'on' || (asked !== 'off' && body.temperature === 0));
  const gate = req.gate ?? undefined;
  // The pipeline's agents have their own tools: a caller's would be ignored, so they are refused.
  if (body.model === PIPELINE_MODEL && ((body.tools?.length ?? 0) > 0 || (body.tool_choice ?? 'auto') !== 'auto')) {
    throw badRequest(`body/tools and body/tool_choice are not taken by the ${PIPELINE_MODEL} model, whose agents use their own tools`, undefined, body.tools?.length ? 'tools' : 'tool_choice');
  }
  const imageAt = messages.findIndex((m) => m.parts?.parts.some((p) => p.imageUrl));
  if (imageAt >= 0 && body.model === PIPELINE_MODEL) throw badRequest(`body/messages/${imageAt}/content holds an image: the ${PIPELINE_MODEL} model's agents read text`, undefined, `messages[${imageAt}].content`);
  const most = body.max_completion_tokens ?? body.max_tokens;
  if (body.thinking?.type === 'enabled' && most != null && body.thinking.budget_tokens >= most) {
    throw badRequest(`body/thinking/budget_tokens (${body.thinking.budget_tokens}) must be less than max_completion_tokens (${most}): the thinking is part of the answer`, 'invalid_thinking', 'thinking.budget_tokens');
  }
  if (thinks && body.model === PIPELINE_MODEL) throw badRequest(`body/thinking is not available for the ${PIPELINE_MODEL} model, whose agents make their own calls`, undefined, 'thinking');
  if (body.logprobs && body.model === PIPELINE_MODEL) throw badRequest(`body/logprobs is not available for the ${PIPELINE_MODEL} model, whose answer is a run's`, undefined, 'logprobs');
  if (n > 1 && body.model === PIPELINE_MODEL) throw badRequest(`body/n must be 1 for the ${PIPELINE_MODEL} model, whose run gives one answer`, undefined, 'n');
  const shaped = body.model === PIPELINE_MODEL ? PIPELINE_REFUSES.find((k) => body[k] != null && !(k === 'response_format' && body.response_format?.['type'] === 'text')) : undefined;
  if (shaped) throw badRequest(`body/${shaped} is not taken by the ${PIPELINE_MODEL} model, whose agents make their own calls (its answer is the Reporter's)`, undefined, shaped);
  // Several choices are several answers: one replayed from the cache would be each of them.
  if (n > 1 && asked === 'on') throw badRequest(`body/n greater than 1 asks for different answers: the response cache (${CACHE_HEADER}: on) replays one`, undefined, 'n');
  const toolChoice = toolChoiceOf(body);
  const choice = (i: number) => direct(ctx, req.userId, body, messages, toolChoice, cache, abort.signal, gate, i);
  const pieces = body.model === PIPELINE_MODEL
    ? pipeline(ctx, req.userId, messages, abort.signal, gate)
    : n === 1 ? choice(0) : merged(Array.from({ length: n }, (_, i) => choice(i)), abort);
  return { ctx, req, reply, pieces, abort, cache, n };
}

/**
 * What shapes an answer that the agents' pipeline cannot give a run's answer (its agents make
 * their own calls): refused, not ignored. The sampling parameters and the length limits, which
 * chat clients send with every call, are taken and left to the agents (their own, per role).
 */
const PIPELINE_REFUSES = ['response_format', 'stop', 'logit_bias', 'reasoning_effort', 'verbosity', 'top_k', 'output_config', 'context_management'] as const satisfies readonly (keyof ChatBody)[];

/** A completion begun, with the request it answers: what a route writes its answer from. */
export interface Begun {
  ctx: EdgeContext;
  req: FastifyRequest;
  reply: FastifyReply;
  /** The answer's pieces (of `n` choices). */
  pieces: AsyncGenerator<Piece>;
  /** Stops the call (the client left). */
  abort: AbortController;
  /** Whether the response cache is asked. */
  cache: boolean;
  n: number;
}

/** The thinking on an answer's message, as LiteLLM gives it: its readable text joined, and the blocks to pass back; nothing without thinking. */
function reasoningOf(blocks: WholeThinking[]): { reasoning_content?: string; thinking_blocks?: WholeThinking[] } {
  if (blocks.length === 0) return {};
  return { reasoning_content: blocks.map((b) => (b.type === 'thinking' ? b.thinking : '')).join(''), thinking_blocks: blocks };
}

/** A prompt-cache breakpoint as a request marks it (`cache_control`). */
type CacheControl = { type: 'ephemeral'; ttl?: '5m' | '1h' };

/**
 * The cache breakpoints a request marks (on content parts and tools), refused (400) beyond
 * Anthropic's limit of 4, and by the agents' pipeline, which writes its own prompts.
 */
function checkBreakpoints(body: ChatBody): void {
  const marked = [
    ...body.messages.flatMap((m, i) => (Array.isArray(m.content) ? m.content.flatMap((p, j) => (p.cache_control ? [`messages[${i}].content[${j}]`] : [])) : [])),
    ...(body.tools ?? []).flatMap((t, i) => (t.cache_control ? [`tools[${i}]`] : [])),
  ];
  if (marked.length > 0 && body.model === PIPELINE_MODEL) throw badRequest(`body/${marked[0]!.replace(/\[(\d+)\]/g, '/$1').replace(/\./g, '/')}/cache_control is not taken by the ${PIPELINE_MODEL} model, whose agents write their own prompts`, undefined, `${marked[0]}.cache_control`);
  if (marked.length > MAX_CACHE_BREAKPOINTS) throw badRequest(`body: at most ${MAX_CACHE_BREAKPOINTS} content parts and tools may carry cache_control (${marked.length} do: ${marked.join(', ')})`, 'invalid_cache_control', `${marked[MAX_CACHE_BREAKPOINTS]}.cache_control`);
  const isSystem = (m: ChatBody['messages'][number]) => m.role === 'system' || m.role === 'developer';
  const partsOf = (m: ChatBody['messages'][number]) => (Array.isArray(m.content) ? m.content.map((p) => cacheTtlOf(p.cache_control)) : []);
  const ttls = [...(body.tools ?? []).map((t) => cacheTtlOf(t.cache_control)), ...body.messages.filter(isSystem).flatMap(partsOf), ...body.messages.filter((m) => !isSystem(m)).flatMap(partsOf)].filter((t) => t !== '');
  if (hourAfterFiveMinutes(ttls)) {
    throw badRequest('body: a cache_control with ttl 1h must not come after one with ttl 5m, in the order the prompt is read (tools, system and developer messages, then the others), as Anthropic requires', 'invalid_cache_control');
  }
}

function toChatMessage(m: ChatBody['messages'][number], i: number): ChatMessage {
  const parts = Array.isArray(m.content) ? m.content : undefined;
  const content = typeof m.content === 'string' ? m.content : parts ? parts.map((p) => p.text ?? '').join('') : '';
  if (content.includes('\u0000')) throw badRequest(`body/messages/${i}/content must not contain NUL characters`, undefined, `messages[${i}].content`);
  // The schema requires a tool result's tool_call_id; tool_calls elsewhere than on an assistant
  // message is refused as OpenAI refuses it (a tool_call_id elsewhere than on a tool result is not
  // passed on).
  const calls = m.tool_calls ?? [];
  if (m.role !== 'assistant' && calls.length > 0) throw badRequest(`body/messages/${i}/tool_calls is only allowed on messages with role 'assistant'`, undefined, `messages[${i}].tool_calls`);
  return {
    role: m.role === 'developer' ? 'system' : m.role,
    content,
    name: m.name ?? '',
    toolCallId: m.role === 'tool' ? (m.tool_call_id ?? '') : '',
    toolCalls: calls.map((c) => ({ id: c.id, name: c.function.name, argumentsJson: c.function.arguments })),
    thinking: m.role === 'assistant' ? (m.thinking_blocks ?? []).map((t) => (t.type === 'thinking' ? { text: t.thinking, signature: t.signature, redactedData: '' } : { text: '', signature: '', redactedData: t.data })) : [],
    // Parts go as parts only with an image among them, or a cache breakpoint before the last
    // part of a user's or an assistant's message: else the text is the content, and a breakpoint
    // marks the message's end (where a system or tool message's is, being one block).
    ...(parts && (parts.some((p) => p.image_url) || ((m.role === 'user' || m.role === 'assistant') && parts.slice(0, -1).some((p) => p.cache_control)))
      ? { parts: { parts: parts.map((p) => ({ text: p.text ?? '', imageUrl: p.image_url?.url ?? '', imageDetail: p.image_url?.detail === 'auto' ? '' : (p.image_url?.detail ?? ''), cacheTtl: cacheTtlOf(p.cache_control) })) }, cacheTtl: '' }
      : { cacheTtl: cacheTtlOf(parts?.findLast((p) => p.cache_control)?.cache_control) }),
  };
}

/** `tool_choice` for the broker, checked as OpenAI checks it: a choice but auto needs tools, and a named function must be one of them. */
function toolChoiceOf(body: ChatBody): ToolChoice | undefined {
  const choice = body.tool_choice ?? 'auto';
  if (choice === 'auto') return undefined;
  const tools = body.tools ?? [];
  if (tools.length === 0) throw badRequest('body/tool_choice other than "auto" is only allowed when body/tools are given', 'invalid_tool_choice', 'tool_choice');
  if (choice === 'none') return { mode: ToolChoiceMode.TOOL_CHOICE_MODE_NONE, functionName: '' };
  if (choice === 'required') return { mode: ToolChoiceMode.TOOL_CHOICE_MODE_REQUIRED, functionName: '' };
  const name = choice.function.name;
  if (!tools.some((t) => t.function.name === name)) throw badRequest(`body/tool_choice names the function "${name}", which is not one of body/tools`, 'invalid_tool_choice', 'tool_choice.function.name');
  return { mode: ToolChoiceMode.TOOL_CHOICE_MODE_FUNCTION, functionName: name };
}

/**
 * The prompt tokens the chat would be billed, as the broker counts them for the upstream that would
 * serve it (what its admission reserves): no upstream call, no quota, no budget.
 */
export async function countTokens(ctx: EdgeContext, req: FastifyRequest, reply: FastifyReply, body: ChatBody): Promise<number> {
  if (body.model === PIPELINE_MODEL) throw badRequest(`body/model: the ${PIPELINE_MODEL} model's tokens are its agents', counted as they run`, undefined, 'model');
  annotate({ [ATTR.userId]: req.userId });
  checkBreakpoints(body);
  const request = generateRequest(req.userId, body, body.messages.map(toChatMessage), toolChoiceOf(body), false, 0);
  return (await ctx.gw.broker.countTokens(request, requestScope(reply))).promptTokens;
}

/** The broker's request for choice `index` of a chat completion. */
function generateRequest(userId: string, body: ChatBody, messages: ChatMessage[], toolChoice: ToolChoice | undefined, cache: boolean, index: number): GenerateRequest {
  const maxTokens = body.max_completion_tokens ?? body.max_tokens ?? 0;
  return {
    userId,
    runId: '',
    callerRole: CallerRole.CALLER_ROLE_DIRECT,
    runStarted: false,
    // "upstream" (the default LLM_MODEL alias) means: whatever model the broker is configured with.
    model: body.model === 'upstream' ? '' : body.model,
    messages,
    // Typed for the broker, whose provider adapter writes them in its provider's format.
    tools: (body.tools ?? []).map(({ function: f, cache_control }) => ({ name: f.name, description: f.description ?? '', parametersJsonSchema: f.parameters ? JSON.stringify(f.parameters) : '', cacheTtl: cacheTtlOf(cache_control) })),
    toolsJson: '',
    toolChoice,
    stop: body.stop == null ? [] : typeof body.stop === 'string' ? [body.stop] : body.stop,
    ...(body.top_p != null ? { topP: body.top_p } : {}),
    ...(body.top_k != null ? { topK: body.top_k } : {}),
    ...(body.thinking?.type === 'enabled' ? { thinkingBudgetTokens: body.thinking.budget_tokens } : {}),
    ...(body.thinking?.type === 'adaptive' ? { thinkingAdaptive: true } : {}),
    ...(body.output_config?.effort ? { effort: body.output_config.effort } : {}),
    // Each choice its own repeatable answer (wrapping at the largest seed the schema allows).
    ...(body.seed != null ? { seed: body.seed + index <= Number.MAX_SAFE_INTEGER ? body.seed + index : body.seed + index - 2 * Number.MAX_SAFE_INTEGER - 1 } : {}),
    ...(body.presence_penalty != null ? { presencePenalty: body.presence_penalty } : {}),
    ...(body.frequency_penalty != null ? { frequencyPenalty: body.frequency_penalty } : {}),
    responseFormatJson: body.response_format ? JSON.stringify(body.response_format) : '',
    ...(body.context_management ? { contextManagementJson: JSON.stringify(body.context_management) } : {}),
    ...(body.parallel_tool_calls === false ? { parallelToolCalls: false } : {}),
    ...(body.logprobs ? { logprobs: true, ...(body.top_logprobs ? { topLogprobs: body.top_logprobs } : {}) } : {}),
    ...(body.reasoning_effort ? { reasoningEffort: body.reasoning_effort } : {}),
    ...(body.verbosity ? { verbosity: body.verbosity } : {}),
    ...(body.user ? { endUser: body.user } : {}),
    ...(body.prompt_cache_key ? { promptCacheKey: body.prompt_cache_key } : {}),
    anthropicBetas: body.anthropic_betas ?? [],
    logitBias: body.logit_bias ?? {},
    maxTokens,
    temperature: body.temperature ?? 0,
    hasTemperature: body.temperature !== undefined && body.temperature !== null,
    cache,
    // A caller that does not stream gets the whole answer: so does the upstream call.
    noStream: !body.stream,
    // Nor does it need the text as it comes: the whole answer in one message.
    answerInDone: !body.stream,
    // A caller that streams hears the tool calls as they are generated too.
    streamToolCalls: body.stream === true,
  };
}

/** Choice `index` of a completion: one Generate call through the broker. */
async function* direct(ctx: EdgeContext, userId: string, body: ChatBody, messages: ChatMessage[], toolChoice: ToolChoice | undefined, cache: boolean, signal: AbortSignal, gate: Promise<void> | undefined, index: number): AsyncGenerator<Piece> {
  const req = generateRequest(userId, body, messages, toolChoice, cache, index);
  for await (const msg of ctx.gw.broker.generate(req, signal, gate)) {
    const u = msg.update;
    if (!u) continue;
    if (u.$case === 'queued') {
      if (u.queued.position > 0) yield { queued: u.queued.position, estimatedWaitMs: u.queued.estimatedWaitMs };
    } else if (u.$case === 'cached') yield { cached: u.cached.stale ? 'stale' : 'hit' };
    else if (u.$case === 'delta') {
      if (u.delta.content) yield u.delta.logprobs.length > 0 ? { delta: u.delta.content, logprobs: u.delta.logprobs.map(wireLogprob) } : { delta: u.delta.content };
    } else if (u.$case === 'thinking') {
      const { text, signature, redactedData } = u.thinking;
      yield { thinking: { ...(text ? { text } : {}), ...(signature ? { signature } : {}), ...(redactedData ? { redactedData } : {}) } };
    } else if (u.$case === 'toolCall') {
      const { index, id, name, arguments: args } = u.toolCall;
      yield { toolCall: { index, arguments: args, ...(id || name ? { id, name } : {}) } };
    } else {
      const usage = u.done.usage;
      // answer_in_done: the text and the cache's outcome come with Done (a broker older than it sent them before).
      if (u.done.content) yield u.done.logprobs.length > 0 ? { delta: u.done.content, logprobs: u.done.logprobs.map(wireLogprob) } : { delta: u.done.content };
      if (req.answerInDone && (u.done.cache === CacheStatus.CACHE_STATUS_HIT || u.done.cache === CacheStatus.CACHE_STATUS_STALE)) {
        yield { cached: u.done.cache === CacheStatus.CACHE_STATUS_STALE ? 'stale' : 'hit' };
      }
      // Handed over as it arrives: the answer need not wait for the call's end (its status), which
      // the consumer reads on to without keeping the client waiting (readToEnd). Stopping at
      // `done` instead would cancel a call that already succeeded: a cancel path in the broker.
      yield {
        done: true,
        finishReason: u.done.finishReason || 'stop',
        ...(u.done.stopSequence ? { stopSequence: u.done.stopSequence } : {}),
        model: u.done.model || body.model,
        usage: {
          prompt_tokens: usage?.promptTokens ?? 0,
          completion_tokens: usage?.completionTokens ?? 0,
          total_tokens: usage?.totalTokens ?? 0,
          ...(usage?.reasoningTokens !== undefined ? { completion_tokens_details: { reasoning_tokens: usage.reasoningTokens } } : {}),
          ...(usage?.cacheReadTokens !== undefined ? { prompt_tokens_details: { cached_tokens: usage.cacheReadTokens } } : {}),
        },
        ...(usage?.cacheWriteTokens !== undefined ? { cacheWriteTokens: usage.cacheWriteTokens } : {}),
        ...(usage?.cacheWrite1hTokens !== undefined ? { cacheWrite1hTokens: usage.cacheWrite1hTokens } : {}),
        ...(u.done.contextManagementJson ? { contextManagement: JSON.parse(u.done.contextManagementJson) as Record<string, unknown> } : {}),
        toolCalls: u.done.toolCalls.map((c) => ({ id: c.id, type: 'function', function: { name: c.name, arguments: c.argumentsJson } })),
      };
    }
  }
}

/**
 * The pieces of several choices as they come, each marked with its index. One that fails fails
 * them all; ended early (a failure, the client gone), the others' calls are cancelled.
 */
async function* merged(choices: AsyncGenerator<Piece>[], abort: AbortController): AsyncGenerator<Piece> {
  const pull = (index: number) => {
    const next = choices[index]!.next().then((result) => ({ result, index }));
    next.catch(() => undefined); // raced on the next turn; a failure meanwhile is not unhandled
    return next;
  };
  const pending = new Map(choices.map((_, i) => [i, pull(i)]));
  let ended = false;
  try {
    while (pending.size > 0) {
      const { result, index } = await Promise.race(pending.values());
      if (result.done) {
        pending.delete(index);
        continue;
      }
      pending.set(index, pull(index));
      yield { ...result.value, index };
    }
    ended = true;
  } finally {
    if (!ended) {
      abort.abort();
      await Promise.allSettled([...pending.values()]);
      await Promise.allSettled(choices.map((c) => c.return(undefined)));
    }
  }
}

const sumUsage = (usages: Usage[]): Usage => {
  const sum = (pick: (u: Usage) => number) => usages.reduce((total, u) => total + pick(u), 0);
  const reasoned = usages.some((u) => u.completion_tokens_details);
  const cached = usages.some((u) => u.prompt_tokens_details);
  return {
    prompt_tokens: sum((u) => u.prompt_tokens),
    completion_tokens: sum((u) => u.completion_tokens),
    total_tokens: sum((u) => u.total_tokens),
    ...(reasoned ? { completion_tokens_details: { reasoning_tokens: sum((u) => u.completion_tokens_details?.reasoning_tokens ?? 0) } } : {}),
    ...(cached ? { prompt_tokens_details: { cached_tokens: sum((u) => u.prompt_tokens_details?.cached_tokens ?? 0) } } : {}),
  };
};

/**
 * Reads a completion's pieces after its `done` (the call's end) in the background: the client has
 * its answer, and the call ends as it succeeded instead of being cancelled. From the next turn of
 * the event loop: resuming the call runs what follows its `done` (with the inline broker, the
 * settlement's bookkeeping: ~0.2 ms) at once, which would come before the answer is written.
 */
export function readToEnd(pieces: AsyncGenerator<Piece>, ctx: EdgeContext): void {
  void (async () => {
    await new Promise((resolve) => setImmediate(resolve));
    for (let next = await pieces.next(); !next.done; next = await pieces.next());
  })().catch((err: unknown) => ctx.logger.warn({ err: (err as Error).message }, 'completion call failed after its answer was sent'));
}

async function* pipeline(ctx: EdgeContext, userId: string, messages: ChatMessage[], signal: AbortSignal, gate?: Promise<void>): AsyncGenerator<Piece> {
  const question = [...messages].reverse().find((m) => m.role === 'user')?.content.trim() ?? '';
  if (!question) throw badRequest('body/messages must contain a user message with content', undefined, 'messages');
  if (question.length > ctx.cfg.maxMessageChars) throw badRequest(`the user message must be at most ${ctx.cfg.maxMessageChars} characters`, undefined, 'messages');
  await gate;
  // One conversation per call: the facade is stateless, like the API it imitates.
  const conversationId = newId();
  await ctx.gw.store.createConversation({ userId, conversationId, title: question.slice(0, 60) }, { signal });
  annotate({ [ATTR.conversationId]: conversationId });
  let reporterText = '';
  const events = ctx.gw.orchestrator.startRun({ userId, conversationId, messageId: newId(), content: question }, signal);
  for await (const ev of events) {
    const data = parse(ev);
    switch (ev.type) {
      case 'queued':
        yield { queued: Number(data['position'] ?? 0), estimatedWaitMs: Number(data['estimatedWaitMs'] ?? 0) };
        break;
      case 'agent.started':
        if (data['agent'] === 'reporter') reporterText = '';
        break;
      case 'agent.restarted':
        // An interrupted Reporter starts over; a streaming client already has its first words, so
        // only the non-streamed answer (from run.completed) is exact in that case.
        break;
      case 'token':
        if (data['agent'] === 'reporter' && typeof data['text'] === 'string') {
          reporterText += data['text'];
          yield { delta: data['text'] };
        }
        break;
      case 'run.completed': {
        const answer = typeof data['answer'] === 'string' ? data['answer'] : reporterText;
        if (answer.startsWith(reporterText) && answer.length > reporterText.length) yield { delta: answer.slice(reporterText.length) };
        const u = (data['usage'] ?? {}) as Record<string, unknown>;
        // The prompt tokens the agents' provider read from its cache, when it read any.
        const cached = Number(u['cacheReadTokens'] ?? 0);
        yield {
          done: true,
          finishReason: 'stop',
          model: PIPELINE_MODEL,
          usage: {
            prompt_tokens: Number(u['promptTokens'] ?? 0), completion_tokens: Number(u['completionTokens'] ?? 0), total_tokens: Number(u['totalTokens'] ?? 0),
            ...(cached > 0 ? { prompt_tokens_details: { cached_tokens: cached } } : {}),
          },
          toolCalls: [],
        };
        return;
      }
      case 'run.failed':
        throw new HttpError(data['retryable'] ? 503 : 502, String(data['code'] ?? 'run_failed'), String(data['message'] ?? 'the run failed'));
      case 'degraded':
        throw new HttpError(503, String(data['reason'] ?? 'degraded'), String(data['message'] ?? 'Service busy, please try again shortly.'), 5);
      case 'run.cancelled':
        throw new HttpError(409, 'cancelled', 'the run was cancelled');
      default:
        break;
    }
  }
  throw new HttpError(502, 'incomplete', 'the run ended without an answer');
}

function parse(ev: RunEvent): Record<string, unknown> {
  try {
    const v: unknown = JSON.parse(ev.dataJson);
    return typeof v === 'object' && v !== null ? (v as Record<string, unknown>) : {};
  } catch {
    return {};
  }
}

/** Streams chat.completion.chunk objects; errors before the first piece are HTTP errors. */
async function streamCompletion(call: Begun, id: string, body: ChatBody): Promise<void> {
  const { ctx, pieces, abort, n } = call;
  const started = Date.now();
  const { first, write, close } = await openStream(call);
  const created = Math.floor(Date.now() / 1000);
  const chunk = (delta: Record<string, unknown>, finishReason: string | null, index = 0, model = body.model, logprobs: WireLogprob[] | undefined = undefined) =>
    JSON.stringify({ id, object: 'chat.completion.chunk', created, model, choices: [{ index, delta, logprobs: logprobs ? { content: logprobs, refusal: null } : null, finish_reason: finishReason }] });
  let answered = false;
  const usages: Usage[] = [];
  /** By choice: the tool calls streamed so far, and the thinking. */
  const streamedCalls: Set<number>[] = [];
  const thought: ThinkingBlocks[] = [];
  try {
    for (let index = 0; index < n; index++) await write(`data: ${chunk({ role: 'assistant', content: '' }, null, index)}\n\n`);
    let result = first;
    while (!result.done && !abort.signal.aborted) {
      const p = result.value;
      if ('delta' in p) await write(`data: ${chunk({ content: p.delta }, null, p.index, body.model, p.logprobs)}\n\n`);
      else if ('queued' in p) await write(`: queued position=${p.queued} estimatedWaitMs=${p.estimatedWaitMs}\n\n`);
      else if ('cached' in p) {
        // Said in the header already.
      } else if ('thinking' in p) {
        // As LiteLLM streams it: the text as it comes, and each block whole (signed) at its end, to pass back.
        const blocks = (thought[p.index ?? 0] ??= new ThinkingBlocks());
        blocks.add(p.thinking);
        if (p.thinking.text) await write(`data: ${chunk({ reasoning_content: p.thinking.text }, null, p.index)}\n\n`);
        if (p.thinking.signature || p.thinking.redactedData) await write(`data: ${chunk({ thinking_blocks: [blocks.blocks.at(-1)] }, null, p.index)}\n\n`);
      } else if ('toolCall' in p) {
        // As OpenAI streams a call: its first chunk has its index, id, type and name, the next ones its index and more arguments.
        const { index, id, name, arguments: args } = p.toolCall;
        const calls = (streamedCalls[p.index ?? 0] ??= new Set<number>());
        const first = !calls.has(index);
        calls.add(index);
        const call = first ? { index, id: id ?? '', type: 'function', function: { name: name ?? '', arguments: args } } : { index, function: { arguments: args } };
        await write(`data: ${chunk({ tool_calls: [call] }, null, p.index)}\n\n`);
      } else {
        // A call the broker did not stream (a broker from before it could) comes whole, in one chunk.
        for (const [index, call] of p.toolCalls.entries()) {
          if (streamedCalls[p.index ?? 0]?.has(index)) continue;
          await write(`data: ${chunk({ tool_calls: [{ index, id: call.id, type: 'function', function: call.function }] }, null, p.index)}\n\n`);
        }
        await write(`data: ${chunk({}, p.finishReason, p.index, p.model)}\n\n`);
        usages.push(p.usage);
        if (usages.length < n) {
          result = await pieces.next();
          continue;
        }
        if (body.stream_options?.include_usage) {
          await write(`data: ${JSON.stringify({ id, object: 'chat.completion.chunk', created, model: p.model, choices: [], usage: n === 1 ? p.usage : sumUsage(usages) })}\n\n`);
        }
        await write('data: [DONE]\n\n');
        answered = true;
        break;
      }
      result = await pieces.next();
    }
  } catch (err) {
    const e = err instanceof HttpError ? err : isGrpcError(err) ? fromGrpc(err) : new HttpError(502, 'stream_failed', 'the completion failed');
    if (!abort.signal.aborted) await write(`data: ${JSON.stringify({ error: { message: e.message, type: 'server_error', param: null, code: e.code } })}\n\n`);
  } finally {
    // After [DONE] the stream ends at once and the call's end is read on; otherwise the call stops.
    if (answered) readToEnd(pieces, ctx);
    else await pieces.return(undefined).catch(() => undefined);
    close('/v1/chat/completions', started);
  }
}

/**
 * The answer's first piece (a failure to get it is the request's HTTP error), then the reply opened
 * as an event stream whose header says the cache's outcome: a replayed answer says so first, so the
 * header can tell before any token.
 */
export async function openStream({ ctx, req, reply, pieces, abort, cache }: Begun) {
  const first = await pieces.next();
  const cacheStatus = !first.done && 'cached' in first.value ? first.value.cached : cache ? 'miss' : undefined;
  return { first, ...eventStream(ctx, req, reply, abort, cacheStatus ? { [CACHE_HEADER]: cacheStatus } : {}) };
}

/**
 * A caller that does not stream: the answer's text and its end, the cache's outcome in the
 * response header; the call's end is read on in the background.
 */
export async function wholeAnswer({ ctx, reply, pieces, cache }: Begun): Promise<{ text: string; done: Extract<Piece, { done: true }>; thinking: WholeThinking[]; logprobs: WireLogprob[] }> {
  if (cache) void reply.header(CACHE_HEADER, 'miss');
  let text = '';
  const logprobs: WireLogprob[] = [];
  const thinking = new ThinkingBlocks();
  for (let next = await pieces.next(); !next.done; next = await pieces.next()) {
    const p = next.value;
    if ('delta' in p) {
      text += p.delta;
      if (p.logprobs) logprobs.push(...p.logprobs);
    } else if ('thinking' in p) thinking.add(p.thinking);
    else if ('cached' in p) void reply.header(CACHE_HEADER, p.cached);
    else if ('done' in p) {
      readToEnd(pieces, ctx);
      return { text, done: p, thinking: thinking.blocks, logprobs };
    }
  }
  throw new HttpError(502, 'incomplete', 'the answer ended without a result');
}

/**
 * The reply as an event stream (hijacked: it writes only what is given here, so the reply's headers
 * that apply to a stream — CORS, nosniff, HSTS, … — are passed on, as for a run's stream). Pull-based:
 * the caller reads its next piece only once the client took the last one (gRPC flow control holds
 * the rest), so a slow client costs no memory here. What is written in one turn of the event loop
 * leaves in one write (corked until the turn's end): the pieces that came in one read of the
 * upstream, and the end of an answer, were a system call each. `close` ends it and counts it as a
 * request to `route` that began at `started`.
 */
export function eventStream(ctx: EdgeContext, req: FastifyRequest, reply: FastifyReply, abort: AbortController, headers: Record<string, string>) {
  void reply.hijack();
  req.streaming = true;
  const raw = reply.raw;
  raw.writeHead(200, {
    ...streamHeaders(reply.getHeaders()),
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-cache, no-transform',
    connection: 'keep-alive',
    'x-accel-buffering': 'no',
    ...headers,
  });
  ctx.stats.openStreams.inc();
  const uncork = () => raw.uncork();
  return {
    write: async (text: string) => {
      if (raw.destroyed) return;
      if (raw.writableCorked === 0) {
        raw.cork();
        process.nextTick(uncork);
      }
      if (!raw.write(text)) await Promise.race([once(raw, 'drain'), once(abort.signal, 'abort')]);
    },
    close: (route: string, started: number) => {
      raw.end();
      ctx.stats.openStreams.dec();
      ctx.stats.active.dec();
      ctx.stats.observe(req.method, route, 200, (Date.now() - started) / 1000, true);
    },
  };
}
