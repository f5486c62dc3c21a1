// How the emulator speaks each protocol it serves: OpenAI's chat completions
// (`POST /v1/chat/completions`) and Anthropic's Messages (`POST /v1/messages`) — their keys,
// request validation, error bodies, rate-limit headers and answer streams. The admission, answers,
// pacing and misbehaviours behind them are shared (server.ts, completion.ts).
import type { IncomingHttpHeaders, IncomingMessage } from 'node:http';
import type { AnswerWire, CompletionJob } from './completion';
import { openAiWire } from './completion';
import { openAiError } from './http';
import type { Rejection } from './limits';
import { messagesWire } from './messages';
import { anthropicError, betasOf, InvalidMessagesRequestError, KNOWN_BETAS, parseMessagesRequest, unknownBetasMessage } from './messages-request';
import { InvalidRequestError, parseChatCompletionRequest, type ChatCompletionRequest } from './request';

export interface Refusal {
  status: number;
  body: unknown;
}

/** A request the dialect refuses as invalid, in its words (`type`: OpenAI's, when not `invalid_request_error`). */
export class DialectInvalid extends Error {
  constructor(
    message: string,
    readonly code: string | null,
    readonly param: string | null = null,
    readonly type?: string,
  ) {
    super(message);
  }
}

export interface Dialect {
  /** Headers of every response (request id, version). */
  headers(requestId: string): Record<string, string>;
  /** Undefined when the key is accepted; `wrongKey` refuses whatever was sent. */
  authorize(req: IncomingMessage, expectedKey: string, wrongKey: boolean): Refusal | undefined;
  /** Validates the body (and the headers that change what it may hold); throws DialectInvalid. */
  parse(body: unknown, headers: IncomingHttpHeaders): ChatCompletionRequest;
  invalid(message: string, code: string | null, param: string | null, type?: string): unknown;
  /** The provider's rate-limit headers, from the emulator's `x-ratelimit-*` ones (ProviderLimits.headers). */
  limitHeaders(openAi: Record<string, string>): Record<string, string>;
  modelNotFound(model: string): Refusal;
  insufficientQuota(): Refusal;
  overloaded(): Refusal;
  /** Whether `overloaded` says when to come back (Retry-After). */
  overloadedRetryAfter: boolean;
  /** The body of a 429 from the emulator's limits, in the provider's words. */
  rateLimited(rejection: Rejection): unknown;
  wire(job: CompletionJob): AnswerWire;
}

const maskKey = (key: string) => (key.length > 8 ? `${key.slice(0, 3)}*****${key.slice(-4)}` : '*****');

/** The emulator's name for the output-token limit (Anthropic's OTPM) in its `x-ratelimit-*` headers. */
const OUTPUT_TOKENS = 'output-tokens';

export const OPENAI: Dialect = {
  headers: (id) => ({ 'x-request-id': id, 'openai-version': '2020-10-01' }),
  authorize(req, expected, wrongKey) {
    const key = /^Bearer\s+(\S+)/i.exec(req.headers.authorization ?? '')?.[1];
    if (key !== undefined && (wrongKey || (expected !== '' && key !== expected))) {
      // OpenAI's words for a key it does not know (only the key's last four characters are echoed).
      return {
        status: 401,
        body: openAiError(`Incorrect API key provided: ${maskKey(key)}. You can find your API key at https://platform.openai.com/account/api-keys.`, 'invalid_request_error', 'invalid_api_key'),
      };
    }
    if (key !== undefined) return undefined;
    return {
      status: 401,
      body: openAiError(
        "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
        'invalid_request_error',
        'invalid_api_key',
      ),
    };
  },
  parse(body) {
    try {
      return parseChatCompletionRequest(body);
    } catch (err) {
      if (err instanceof InvalidRequestError) throw new DialectInvalid(err.message, err.code, err.param, err.type);
      throw err;
    }
  },
  invalid: (message, code, param, type) => openAiError(message, type ?? 'invalid_request_error', code, param),
  // OpenAI has no output-token limit, nor headers for one: `tokens` stays the TPM (the ITPM, with one set).
  limitHeaders: (h) => Object.fromEntries(Object.entries(h).filter(([name]) => !name.endsWith(`-${OUTPUT_TOKENS}`))),
  modelNotFound: (model) => ({ status: 404, body: openAiError(`The model \`${model}\` does not exist or you do not have access to it.`, 'invalid_request_error', 'model_not_found') }),
  insufficientQuota: () => ({
    status: 429,
    body: openAiError(
      'You exceeded your current quota, please check your plan and billing details. For more information on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors.',
      'insufficient_quota',
      'insufficient_quota',
    ),
  }),
  overloaded: () => ({ status: 503, body: openAiError('The engine is currently overloaded, please try again later.', 'server_error', 'service_unavailable') }),
  overloadedRetryAfter: true,
  rateLimited: ({ message }) => openAiError(message, 'rate_limit_exceeded', 'rate_limit_exceeded'),
  wire: openAiWire,
};

export const ANTHROPIC_VERSION_HEADER = 'anthropic-version';

/** Of the input (`tokens`) and output token limits in the emulator's headers, the one with fewer tokens remaining. */
function tightestTokens(h: Record<string, string>): string {
  const input = h['x-ratelimit-remaining-tokens'];
  const output = h[`x-ratelimit-remaining-${OUTPUT_TOKENS}`];
  return input !== undefined && (output === undefined || Number(input) <= Number(output)) ? 'tokens' : OUTPUT_TOKENS;
}

export const ANTHROPIC: Dialect = {
  headers: (id) => ({ 'request-id': id }),
  authorize(req, expected, wrongKey) {
    // `x-api-key`, or a bearer token (what Anthropic's own SDK sends since its 1.x releases).
    const raw = req.headers['x-api-key'];
    const key = (Array.isArray(raw) ? raw[0] : raw) || /^Bearer\s+(\S+)/i.exec(req.headers.authorization ?? '')?.[1];
    if (!key) return { status: 401, body: anthropicError('authentication_error', 'x-api-key header is required') };
    if (wrongKey || (expected !== '' && key !== expected)) return { status: 401, body: anthropicError('authentication_error', 'invalid x-api-key') };
    if (!req.headers[ANTHROPIC_VERSION_HEADER]) return { status: 400, body: anthropicError('invalid_request_error', 'anthropic-version: header is required') };
    return undefined;
  },
  parse(body, headers) {
    try {
      // The betas asked for (`anthropic-beta`) admit the fields they add, as `context_management`;
      // one Anthropic does not know is refused, as Anthropic refuses it.
      const betas = betasOf(headers['anthropic-beta']);
      const unknown = [...betas].filter((b) => !KNOWN_BETAS.has(b));
      if (unknown.length > 0) throw new DialectInvalid(unknownBetasMessage(unknown), 'invalid_request_error');
      return parseMessagesRequest(body, betas);
    } catch (err) {
      if (err instanceof InvalidMessagesRequestError) throw new DialectInvalid(err.message, 'invalid_request_error');
      throw err;
    }
  },
  invalid: (message) => anthropicError('invalid_request_error', message),
  limitHeaders(h) {
    const out: Record<string, string> = {};
    const copy = (from: string, to: string) => {
      const limit = h[`x-ratelimit-limit-${from}`];
      const remaining = h[`x-ratelimit-remaining-${from}`];
      if (limit !== undefined) out[`anthropic-ratelimit-${to}-limit`] = limit;
      if (remaining !== undefined) out[`anthropic-ratelimit-${to}-remaining`] = remaining;
    };
    copy('requests', 'requests');
    if (h[`x-ratelimit-limit-${OUTPUT_TOKENS}`] === undefined) {
      copy('tokens', 'tokens');
      return out;
    }
    // Anthropic's own limits: input and output apart, and `tokens` the most restrictive of those in effect.
    copy('tokens', 'input-tokens');
    copy(OUTPUT_TOKENS, 'output-tokens');
    copy(tightestTokens(h), 'tokens');
    return out;
  },
  modelNotFound: (model) => ({ status: 404, body: anthropicError('not_found_error', `model: ${model}`) }),
  // What Anthropic answers an account without credit.
  insufficientQuota: () => ({ status: 400, body: anthropicError('invalid_request_error', 'Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits.') }),
  overloaded: () => ({ status: 529, body: anthropicError('overloaded_error', 'Overloaded') }),
  overloadedRetryAfter: false,
  rateLimited: ({ message, anthropicMessage }) => anthropicError('rate_limit_error', anthropicMessage ?? message),
  wire: messagesWire,
};
