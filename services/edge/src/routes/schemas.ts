// JSON schemas shared by the routes (also what /docs describes).
import { isId } from '@agent-mesh/common';
import { badRequest } from '../errors';

/** A conversation id: a lowercase UUID, as the API creates them. */
export const ID_PATTERN = '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$';

/** Text without NUL characters (refused: they end strings in some stores and tools). */
export const NO_NUL = '^[^\\u0000]*$';

/** Some non-whitespace, and no NUL. */
export const NOT_BLANK = '^(?=[\\s\\S]*\\S)[^\\u0000]*$';
/** A provider's token id, as the keys of `logit_bias` write it. */
export const TOKEN_ID = '^[0-9]{1,9}$';
/** An image by URL: https, or a data: URL of a base64 image of a type both providers take (they read the bytes, and refuse bad ones). */
export const IMAGE_URL = '^(https?://|data:image/(png|jpeg|gif|webp);base64,)';
/** A function's (or a JSON schema's) name, as OpenAI checks it. */
export const FUNCTION_NAME = '^[a-zA-Z0-9_-]{1,64}$';

/** OpenAI's `metadata`, as it checks it: on /v1, tags on the call's trace. */
export const metadataSchema = {
  type: ['object', 'null'],
  maxProperties: 16,
  propertyNames: { maxLength: 64 },
  additionalProperties: { type: 'string', maxLength: 512 },
  description: 'up to 16 tags (keys up to 64 characters, values up to 512) on the call\'s trace, as `metadata.<key>` attributes of the edge\'s span (searchable in Jaeger); ' +
    'not sent to the provider, which takes them only with `store`',
} as const;

export const idParams = {
  type: 'object',
  required: ['id'],
  properties: { id: { type: 'string', pattern: ID_PATTERN, description: 'conversation id (lowercase UUID)' } },
} as const;

export const pageQuery = {
  type: 'object',
  additionalProperties: false,
  properties: {
    pageSize: { type: 'string', pattern: '^(100|[1-9][0-9]?)$', description: 'page size (1–100)' },
    pageToken: { type: 'string', pattern: '^[A-Za-z0-9_-]{1,512}$', description: 'nextPageToken of the previous page (opaque, base64url); a token this API did not issue is 400 `invalid_page_token`' },
  },
} as const;

export const errorBody = {
  type: 'object',
  required: ['error'],
  properties: {
    error: { type: 'object', required: ['code', 'message'], properties: { code: { type: 'string' }, message: { type: 'string' } } },
  },
} as const;

/** What each error status means on this API (the descriptions /docs shows). */
const STATUS_MEANING: Record<number, string> = {
  400: 'invalid request: path, query or body not as documented (or a page token this API did not issue: `invalid_page_token`; on /v1, a request the upstream provider refuses: `upstream_rejected`)',
  401: 'missing, malformed, expired or untrusted bearer token',
  403: 'the token lacks the scope this route needs (the ops scope, AUTH_OPS_SCOPE)',
  404: "not found (another user's resource is not found either)",
  409: 'conflict: a run is already in progress on this conversation',
  413: 'body larger than BODY_LIMIT_BYTES',
  415: 'body is not application/json',
  429: 'too many requests, or the token budget is used up: retry after Retry-After',
  502: 'a backend service failed',
  503: 'a dependency is unavailable or this instance is draining: retry after Retry-After',
  504: 'a backend service did not answer in time',
};

/** The 429 body: `budget` says which token budget ran out and when it resets. */
const tooManyBody = {
  ...errorBody,
  properties: {
    ...errorBody.properties,
    budget: {
      type: 'object',
      properties: { name: { type: 'string', enum: ['day', 'minute'] }, limit: { type: 'integer' }, used: { type: 'integer' }, resetsAt: { type: 'string', format: 'date-time' } },
    },
  },
} as const;

/** Documented error answers of a route: the error body under each status, with its meaning. */
export function errorResponses(...codes: number[]): Record<number, object> {
  return Object.fromEntries(codes.map((c) => [c, { ...(c === 429 ? tooManyBody : errorBody), description: STATUS_MEANING[c] ?? 'error' }]));
}

/** The answers every authenticated route can give whatever it does: no/bad token, limits, draining. */
export const AUTHED = [401, 429, 503] as const;
/** …and a route that calls a backend service: it may also be slow or failing. */
export const BACKED = [...AUTHED, 502, 504] as const;

export const conversationBody = {
  type: 'object',
  properties: {
    id: { type: 'string' },
    title: { type: 'string' },
    createdAt: { type: 'string', format: 'date-time' },
    updatedAt: { type: 'string', format: 'date-time' },
    lastRunId: { type: ['string', 'null'] },
  },
} as const;

/** Validates a conversation id from the path: a UUID, nothing else (no operators, no objects). */
export function conversationIdOf(params: unknown): string {
  const id = (params as { id?: unknown }).id;
  if (!isId(id)) throw badRequest('invalid conversation id');
  return id;
}

/** The page query of a conversation's messages (up to 200 a page). */
export const messagePageQuery = {
  ...pageQuery,
  properties: { ...pageQuery.properties, pageSize: { type: 'string', pattern: '^(200|1[0-9]{2}|[1-9][0-9]?)$', description: 'page size (1–200)' } },
} as const;

export function pageSizeOf(query: unknown, max: number): number {
  const raw = (query as { pageSize?: string }).pageSize;
  if (raw === undefined) return 0;
  const n = Number(raw);
  if (n < 1 || n > max) throw badRequest(`querystring/pageSize must be between 1 and ${max}`);
  return n;
}

/** A listing's page as the store takes it: `pageQuery`'s size (0: the store's default) and token. */
export function pageOf(query: unknown, max: number): { pageSize: number; pageToken: string } {
  return { pageSize: pageSizeOf(query, max), pageToken: (query as { pageToken?: string }).pageToken ?? '' };
}

export const iso = (ms: number): string => new Date(ms || 0).toISOString();

/** Errors of the OpenAI-compatible routes, in OpenAI's shape. */
export const openAiErrorBody = {
  type: 'object',
  required: ['error'],
  properties: {
    error: {
      type: 'object',
      required: ['message', 'type', 'code'],
      properties: {
        message: { type: 'string' },
        type: { type: 'string' },
        param: { type: ['string', 'null'], description: 'the request parameter at fault (`messages[0].role`, `n`), when one is' },
        code: { type: 'string' },
      },
    },
  },
} as const;

export function openAiErrorResponses(...codes: number[]): Record<number, object> {
  return Object.fromEntries(codes.map((c) => [c, { ...openAiErrorBody, description: STATUS_MEANING[c] ?? 'error' }]));
}

/** Any JSON object (a response documented by its description). */
export const anyObject = { type: 'object', additionalProperties: true } as const;

/**
 * A prompt-cache breakpoint (Anthropic's `cache_control`, also taken in OpenAI's format as
 * LiteLLM takes it): the prompt up to and including what carries it is cached by an upstream that
 * caches on request (Anthropic), 5 minutes or 1 hour from its last use; an upstream that caches on
 * its own (OpenAI) is not told. At most 4 in one request.
 */
export const cacheControlSchema = {
  type: ['object', 'null'],
  required: ['type'],
  properties: { type: { type: 'string', enum: ['ephemeral'] }, ttl: { type: 'string', enum: ['5m', '1h'] } },
  additionalProperties: false,
  description: 'a prompt-cache breakpoint: the prompt up to here is cached by an upstream that caches on request (Anthropic), for `ttl` (5m, the default, or 1h) from its last use; at most 4 per request',
} as const;

/** A breakpoint's lifetime as the broker takes it: "5m" or "1h"; none: empty. */
export const cacheTtlOf = (c: { type: string; ttl?: string } | null | undefined): string => (c ? (c.ttl ?? '5m') : '');

/** The most breakpoints one request may mark (Anthropic's limit). */
export const MAX_CACHE_BREAKPOINTS = 4;

/**
 * Whether breakpoints' lifetimes, in the order Anthropic reads a prompt (tools, system, the rest),
 * put one of an hour after one of 5 minutes, which Anthropic refuses.
 */
export const hourAfterFiveMinutes = (ttls: readonly string[]): boolean => ttls.includes('5m') && ttls.lastIndexOf('1h') > ttls.indexOf('5m');

/** The least budget of extended thinking (Anthropic's). */
export const MIN_THINKING_BUDGET = 1024;

/** Anthropic's extended thinking, asked for: a budget of the answer's tokens, adaptive (the model decides; a budget beside it, as Claude Code sends 0, is ignored), or off. */
export const thinkingSchema = (description: string) => ({
  anyOf: [
    { type: 'object', required: ['type', 'budget_tokens'], properties: { type: { type: 'string', enum: ['enabled'] }, budget_tokens: { type: 'integer', minimum: MIN_THINKING_BUDGET } }, additionalProperties: false },
    { type: 'object', required: ['type'], properties: { type: { type: 'string', enum: ['adaptive'] }, budget_tokens: { type: 'integer', minimum: 0 } }, additionalProperties: false },
    { type: 'object', required: ['type'], properties: { type: { type: 'string', enum: ['disabled'] } }, additionalProperties: false },
  ],
  description,
}) as const;

/** An assistant's extended thinking, passed back as the model wrote it (the provider checks its signature). */
export const thinkingBlockSchema = {
  type: 'object',
  required: ['type', 'thinking', 'signature'],
  properties: { type: { type: 'string', enum: ['thinking'] }, thinking: { type: 'string', maxLength: 200_000, pattern: NO_NUL }, signature: { type: 'string', maxLength: 100_000, pattern: NO_NUL } },
  additionalProperties: false,
} as const;

/** A thinking block the provider redacted: its encrypted data, passed back as it came. */
export const redactedThinkingBlockSchema = {
  type: 'object',
  required: ['type', 'data'],
  properties: { type: { type: 'string', enum: ['redacted_thinking'] }, data: { type: 'string', maxLength: 200_000, pattern: NO_NUL } },
  additionalProperties: false,
} as const;
