// OpenAI-compatible POST /v1/embeddings: one Embed call through the broker, in the same queue and
// quota as the chat calls (the request and its inputs' tokens count against the provider's limits)
// and charged to the user's token budgets. The broker asks the provider for base64 and passes the
// vectors on as 32-bit floats; they are written as the caller asks: JSON numbers or base64.
import type { FastifyInstance } from 'fastify';
import { annotate, ATTR, f32leBytes, f32leFloats } from '@agent-mesh/common';
import type { EmbedInput, EmbedResponse, Embedding } from '@agent-mesh/common/gen/llmbroker/v1/llm_broker';
import type { EdgeContext } from '../context';
import { CACHE_HEADER } from './openai';
import { NO_NUL, openAiErrorResponses } from './schemas';

/** OpenAI's limit on the inputs of one call. */
const MAX_INPUTS = 2048;
/** A text's length, and a token list's, beyond anything an embedding model takes (8,192 tokens): the provider refuses what is over its own limit. */
const MAX_TEXT = 200_000;
const MAX_TOKENS = 65_536;

export interface EmbeddingsBody {
  model: string;
  input: string | string[] | number[] | number[][];
  encoding_format?: 'float' | 'base64' | null;
  dimensions?: number | null;
  user?: string;
}

const text = { type: 'string', minLength: 1, maxLength: MAX_TEXT, pattern: NO_NUL } as const;
const tokenIds = { type: 'array', minItems: 1, maxItems: MAX_TOKENS, items: { type: 'integer', minimum: 0, maximum: 2_147_483_647 } } as const;

/** The body's inputs as the broker takes them: each a text or its token ids. */
export function embedInputs(input: EmbeddingsBody['input']): EmbedInput[] {
  if (typeof input === 'string') return [{ input: { $case: 'text', text: input } }];
  // One token list (numbers), or a list of texts or of token lists.
  if (typeof input[0] === 'number') return [{ input: { $case: 'tokens', tokens: { ids: input as number[] } } }];
  return (input as (string | number[])[]).map((x) => (typeof x === 'string' ? { input: { $case: 'text', text: x } } : { input: { $case: 'tokens', tokens: { ids: x } } }));
}

/** A vector's components as JSON numbers, from its bytes (asked for) or its values (a broker that predates them). */
function numbersOf(e: Embedding): number[] {
  return e.f32le.length > 0 ? Array.from(f32leFloats(e.f32le)) : e.values;
}

/** A vector as base64 of its little-endian 32-bit floats (what OpenAI's `encoding_format: base64` gives). */
export function base64Vector(e: Embedding): string {
  const bytes = e.f32le.length > 0 ? e.f32le : f32leBytes(Float32Array.from(e.values));
  return bytes.toString('base64');
}

/** What the `x-mesh-cache` response header says of a call that asked for the cache: some vector served past its TTL, every vector from it, some, or none. */
export function cacheStatus(r: Pick<EmbedResponse, 'embeddings' | 'cachedInputs' | 'cachedStale'>): 'stale' | 'hit' | 'partial' | 'miss' {
  if (r.cachedStale) return 'stale';
  if (r.cachedInputs === 0) return 'miss';
  return r.cachedInputs === r.embeddings.length ? 'hit' : 'partial';
}

/** The answer in OpenAI's shape. */
export function embeddingsAnswer(r: EmbedResponse, asked: EmbeddingsBody) {
  const base64 = asked.encoding_format === 'base64';
  return {
    object: 'list',
    data: r.embeddings.map((e, index) => ({ object: 'embedding', index, embedding: base64 ? base64Vector(e) : numbersOf(e) })),
    model: r.model || asked.model,
    usage: { prompt_tokens: r.promptTokens, total_tokens: r.promptTokens },
  };
}

export function embeddingsRoutes(app: FastifyInstance, ctx: EdgeContext): void {
  app.post(
    '/v1/embeddings',
    {
      // The rate limit and budget are checked beside the call's admission to the quota (before the upstream call).
      config: { auth: 'bearer', spends: 'beside' },
      bodyLimit: ctx.cfg.v1BodyLimitBytes,
      schema: {
        tags: ['openai'],
        summary: 'OpenAI-compatible embeddings',
        description:
          'Embeds each input (a text, a list of texts, a list of token ids, or a list of such lists; up to 2,048) with `model`, through the llm-broker\'s queue and quota ' +
          '(one request, and the inputs\' tokens) and charged to the caller\'s token budgets. The model goes to the upstream that lists it in LLM_UPSTREAMS, else the first; ' +
          'an upstream whose protocol has no embeddings (Anthropic\'s) answers 400, a model the provider does not serve 404 `model_not_found`, an input over the model\'s own limit ' +
          'the provider\'s 400 (`upstream_rejected`). `encoding_format` base64 gives each vector as base64 of its little-endian 32-bit floats; `dimensions` shortens the vectors ' +
          '(models that allow it: more than the model\'s own size, or a model that cannot shorten them, is the provider\'s 400 `upstream_rejected`). ' +
          'With the request header `x-mesh-cache: on`, each input\'s vector is looked up in the broker\'s response cache first (the same model, `dimensions` and input within LLM_CACHE_TTL_S) ' +
          'and only the inputs not found are embedded by the provider (and stored); `usage` then counts those inputs only, and the response header `x-mesh-cache` says ' +
          '`hit` (every vector from the cache: no provider call, nothing billed), `partial` or `miss`, or `stale` (vectors past their lifetime served while the provider refuses). Without it (or with `off`) nothing is cached.',
        headers: { type: 'object', properties: { [CACHE_HEADER]: { type: 'string', enum: ['on', 'off'] } } },
        body: {
          type: 'object',
          required: ['model', 'input'],
          properties: {
            model: { type: 'string', minLength: 1, maxLength: 200 },
            input: {
              description: 'a text, texts, token ids, or lists of token ids (each non-empty; up to 2,048 inputs)',
              anyOf: [
                text,
                { type: 'array', minItems: 1, maxItems: MAX_INPUTS, items: text },
                tokenIds,
                { type: 'array', minItems: 1, maxItems: MAX_INPUTS, items: tokenIds },
              ],
            },
            encoding_format: { type: ['string', 'null'], enum: ['float', 'base64', null], description: 'float (JSON numbers, the default) or base64' },
            dimensions: { type: ['integer', 'null'], minimum: 1, maximum: 65_536, description: 'the vectors\' size, for models that can shorten them' },
            user: { type: 'string', maxLength: 256 },
          },
          additionalProperties: false,
        },
        response: {
          200: {
            type: 'object',
            required: ['object', 'data', 'model', 'usage'],
            properties: {
              object: { type: 'string', enum: ['list'] },
              data: {
                type: 'array',
                items: {
                  type: 'object',
                  required: ['object', 'index', 'embedding'],
                  properties: {
                    object: { type: 'string', enum: ['embedding'] },
                    index: { type: 'integer' },
                    embedding: { anyOf: [{ type: 'array', items: { type: 'number' } }, { type: 'string', description: 'base64 of little-endian float32' }] },
                  },
                },
              },
              model: { type: 'string' },
              usage: { type: 'object', required: ['prompt_tokens', 'total_tokens'], properties: { prompt_tokens: { type: 'integer' }, total_tokens: { type: 'integer' } } },
            },
          },
          ...openAiErrorResponses(400, 401, 404, 413, 415, 429, 502, 503, 504),
        },
      },
    },
    async (req, reply) => {
      const body = req.body as EmbeddingsBody;
      annotate({ [ATTR.userId]: req.userId });
      const abort = new AbortController();
      // The client left before its answer was written: the call stops, in the queue or upstream.
      reply.raw.once('close', () => { if (!reply.raw.writableFinished) abort.abort(); });
      // Opt-in only: every vector stored takes Redis memory for the cache's lifetime.
      const cache = req.headers[CACHE_HEADER] === 'on';
      const r = await ctx.gw.broker.embed(
        { userId: req.userId, model: body.model, inputs: embedInputs(body.input), dimensions: body.dimensions ?? 0, endUser: body.user ?? '', cache, vectorsAsBytes: true },
        abort.signal,
        req.gate ?? undefined,
      );
      if (cache) void reply.header(CACHE_HEADER, cacheStatus(r));
      return embeddingsAnswer(r, body);
    },
  );
}
