// OpenAI's embeddings (`POST /v1/embeddings`): the request as OpenAI checks it, and the answer a
// model would give — unit vectors as long as the model's, the same for the same model and input —
// without any model: each vector is drawn from a generator seeded by a hash of both. Admission,
// limits and misbehaviours are the chat calls' (server.ts); only the delivery is its own, a single
// JSON body after a first token's latency.
import { createHash } from 'node:crypto';
import type { ServerResponse } from 'node:http';
import { splitModel, type Behaviour } from './behaviours';
import { openAiFailure, type CompletionOutcome, type Fate } from './completion';
import { sendJson } from './http';
import { SeededRandom } from './random';
import { InvalidRequestError, invalidType, isObject, missing, optional, typeName } from './request';
import { countTokens, encode } from './tokens';

/** OpenAI's limits for every embedding model: inputs per request, tokens per input, tokens per request. */
export const MAX_INPUTS = 2048;
export const MAX_INPUT_TOKENS = 8192;
export const MAX_REQUEST_TOKENS = 300_000;

export const ENCODING_FORMATS = ['float', 'base64'] as const;
export type EncodingFormat = (typeof ENCODING_FORMATS)[number];

/** The models that predate `dimensions` and refuse it. */
const FIXED_DIMENSION_MODELS: readonly string[] = ['text-embedding-ada-002'];

/** What OpenAI answers for an input of the wrong shape, whatever is wrong with it (its schema check). */
export const INVALID_INPUT = "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference.";

/** One input: a text, or the token ids of one. */
export type EmbeddingInput = string | number[];

/** A validated request; `model` is the model as asked, without its `+behaviour` suffix. */
export interface EmbeddingsRequest {
  model: string;
  inputs: EmbeddingInput[];
  encodingFormat: EncodingFormat;
  /** The length of every vector: `dimensions`, or the model's own. */
  dimensions: number;
  /** `user`: the caller's name for its end user. */
  endUser: string | undefined;
  /** The inputs' tokens (cl100k_base; a token list: its length), billed as prompt tokens. */
  promptTokens: number;
}

/** The length of a model's vectors: 3072 for a "large" one (text-embedding-3-large), else 1536. */
export function defaultDimensions(model: string): number {
  return model.includes('large') ? 3072 : 1536;
}

const invalidInput = (): InvalidRequestError => new InvalidRequestError(INVALID_INPUT, 'input', null);

/** A list of token ids: at least one, each a non-negative integer. */
function tokenList(raw: unknown): number[] {
  if (!Array.isArray(raw) || raw.length === 0) throw invalidInput();
  if (!raw.every((id) => typeof id === 'number' && Number.isInteger(id) && id >= 0)) throw invalidInput();
  return raw as number[];
}

/**
 * `input` in its four shapes: a text, a token list, or an array of up to 2048 of either (not
 * mixed). No text may be empty, no array either.
 */
function readInputs(raw: unknown): EmbeddingInput[] {
  if (raw === undefined || raw === null) throw missing('input');
  if (typeof raw === 'string') {
    if (raw === '') throw invalidInput();
    return [raw];
  }
  if (!Array.isArray(raw) || raw.length === 0) throw invalidInput();
  if (raw.every((item) => typeof item === 'number')) return [tokenList(raw)];
  if (raw.length > MAX_INPUTS) throw invalidInput();
  if (raw.every((item) => typeof item === 'string')) {
    if (raw.some((text) => text === '')) throw invalidInput();
    return raw as string[];
  }
  if (raw.every((item) => Array.isArray(item))) return raw.map(tokenList);
  throw invalidInput();
}

/** Tokens of every input, each within the model's context and all within the per-request cap. */
function countInputs(inputs: readonly EmbeddingInput[]): number {
  let total = 0;
  for (const input of inputs) {
    const tokens = typeof input === 'string' ? countTokens(input) : input.length;
    if (tokens > MAX_INPUT_TOKENS) {
      throw new InvalidRequestError(
        `This model's maximum context length is ${MAX_INPUT_TOKENS} tokens, however you requested ${tokens} tokens (${tokens} in your prompt; 0 for the completion). Please reduce your prompt; or completion length.`,
        'input',
        null,
      );
    }
    total += tokens;
  }
  if (total > MAX_REQUEST_TOKENS) {
    throw new InvalidRequestError(`Requested ${total} tokens, max ${MAX_REQUEST_TOKENS} tokens per request`, 'input', 'max_tokens_per_request', 'max_tokens_per_request');
  }
  return total;
}

/** `dimensions`: 1 to the model's own length, refused outright by the models that predate it. */
function readDimensions(raw: unknown, model: string): number {
  const full = defaultDimensions(model);
  if (raw === undefined) return full;
  if (typeof raw !== 'number' || !Number.isInteger(raw)) throw invalidType('dimensions', 'an integer', raw);
  if (FIXED_DIMENSION_MODELS.includes(model)) throw new InvalidRequestError('This model does not support specifying dimensions.', 'dimensions', null);
  if (raw < 1) {
    throw new InvalidRequestError(`Invalid 'dimensions': integer below minimum value. Expected a value >= 1, but got ${raw} instead.`, 'dimensions', 'integer_below_min_value');
  }
  if (raw > full) {
    throw new InvalidRequestError(`Invalid 'dimensions': integer above maximum value. Expected a value <= ${full}, but got ${raw} instead.`, 'dimensions', 'integer_above_max_value');
  }
  return raw;
}

/**
 * Validates a parsed JSON body as OpenAI does; throws InvalidRequestError on the first problem,
 * UnknownBehaviourError for an unknown `+behaviour` suffix on the model (whose behaviours it returns).
 */
export function parseEmbeddingsRequest(body: unknown): { request: EmbeddingsRequest; asked: Behaviour[] } {
  if (!isObject(body)) throw new InvalidRequestError(`Invalid body: expected an object, but got ${typeName(body)} instead.`, null, 'invalid_type');
  const rawModel = body['model'];
  if (rawModel === undefined || rawModel === null) throw new InvalidRequestError('you must provide a model parameter', 'model', 'missing_required_parameter');
  if (typeof rawModel !== 'string' || rawModel === '') throw invalidType('model', 'a non-empty string', rawModel);
  const { model, behaviours } = splitModel(rawModel);

  const inputs = readInputs(body['input']);
  const promptTokens = countInputs(inputs);
  const encodingFormat = optional(body, 'encoding_format') ?? 'float';
  if (!ENCODING_FORMATS.includes(encodingFormat as EncodingFormat)) {
    throw new InvalidRequestError(`Invalid value: ${JSON.stringify(encodingFormat)}. Supported values are: 'float' and 'base64'.`, 'encoding_format', 'invalid_value');
  }
  const dimensions = readDimensions(optional(body, 'dimensions'), model);
  const endUser = optional(body, 'user');
  if (endUser !== undefined && typeof endUser !== 'string') throw invalidType('user', 'a string', endUser);

  return {
    request: { model, inputs, encodingFormat: encodingFormat as EncodingFormat, dimensions, endUser: endUser as string | undefined, promptTokens },
    asked: behaviours,
  };
}

/** Taken once: in a vm context (jest's), every `Math.x` in a hot loop is a slow global lookup. */
const { cos, log, sin, sqrt, PI } = Math;

/**
 * The vector of one input: standard normal draws seeded by sha256(model, token ids), so that a
 * text and its token ids embed alike, scaled to unit length. Only the first `dimensions` draws
 * are taken: a shortened vector is the start of the full one renormalised, as text-embedding-3's are.
 */
export function embeddingVector(model: string, input: EmbeddingInput, dimensions: number): Float32Array {
  const ids = typeof input === 'string' ? encode(input) : input;
  const digest = createHash('sha256').update(`${model}\n${ids.join(',')}`).digest();
  const rng = new SeededRandom(digest.readUInt32LE(0));
  const values = new Float64Array(dimensions);
  for (let i = 0; i < dimensions; i += 2) {
    // Box–Muller: two normal draws from two uniform ones.
    const radius = sqrt(-2 * log(1 - rng.next()));
    const angle = 2 * PI * rng.next();
    values[i] = radius * cos(angle);
    if (i + 1 < dimensions) values[i + 1] = radius * sin(angle);
  }
  let sumOfSquares = 0;
  for (const value of values) sumOfSquares += value * value;
  const norm = sqrt(sumOfSquares) || 1;
  return Float32Array.from(values, (value) => value / norm);
}

/** `base64`: the float32 values, little-endian, as OpenAI packs them; `float`: the same values as numbers. */
function encodeVector(vector: Float32Array, format: EncodingFormat): number[] | string {
  if (format === 'float') return Array.from(vector);
  const bytes = Buffer.alloc(vector.length * 4);
  vector.forEach((value, i) => bytes.writeFloatLE(value, i * 4));
  return bytes.toString('base64');
}

/** The 200 body: one `embedding` per input, in order, and the prompt tokens billed. */
export function embeddingsBody(request: EmbeddingsRequest): unknown {
  return {
    object: 'list',
    data: request.inputs.map((input, index) => ({
      object: 'embedding',
      index,
      embedding: encodeVector(embeddingVector(request.model, input, request.dimensions), request.encodingFormat),
    })),
    model: request.model,
    usage: { prompt_tokens: request.promptTokens, total_tokens: request.promptTokens },
  };
}

/** An admitted embeddings call: its fate, drawn at admission, and its latency. */
export interface EmbeddingsJob {
  request: EmbeddingsRequest;
  fate: Fate;
  rng: SeededRandom;
  /** Already scaled by the time scale. */
  latencyMs: number;
  /** Rate-limit and request-id headers decided at admission. */
  headers: Record<string, string>;
}

/**
 * Answers an admitted call once its latency has passed — or fails it (500 or 503), hangs it, or
 * drops its connection halfway, as its fate says — and calls `onEnd` exactly once, when it is over
 * (a hung call ends only when the client gives up). Nothing is streamed, so the stream-only
 * misbehaviours (stream_error, bad_json, stall, no_usage, parallel_tool_calls) have nothing to act on.
 */
export function deliverEmbeddings(res: ServerResponse, job: EmbeddingsJob, onEnd: (outcome: CompletionOutcome) => void): void {
  const startedAt = performance.now();
  let timer: NodeJS.Timeout | undefined;
  let ended = false;
  const end = (outcome: CompletionOutcome): void => {
    if (ended) return;
    ended = true;
    if (timer !== undefined) clearTimeout(timer);
    onEnd(outcome);
  };
  const at = (ms: number, fn: () => void): void => {
    timer = setTimeout(fn, ms);
  };
  res.on('close', () => end('aborted'));

  switch (job.fate) {
    case 'hang':
      return; // accepted, never answered: only the client's abort ends it
    case 'fail': {
      const failure = openAiFailure(job.rng.chance(0.5) ? 500 : 503);
      at(job.latencyMs * (0.2 + 0.8 * job.rng.next()), () => {
        end('failed');
        sendJson(res, failure.status, failure.body, job.headers);
      });
      return;
    }
    case 'cut':
      // The connection drops before any byte of the answer.
      at(job.latencyMs / 2, () => {
        end('cut');
        res.socket?.destroy();
      });
      return;
    default:
      at(job.latencyMs, () => {
        const body = embeddingsBody(job.request);
        end('completed');
        sendJson(res, 200, body, { ...job.headers, 'openai-processing-ms': String(Math.round(performance.now() - startedAt)) });
      });
  }
}
