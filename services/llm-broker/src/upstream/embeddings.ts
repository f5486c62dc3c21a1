// OpenAI's embeddings endpoint (`POST ${baseUrl}/embeddings`), the part of the OpenAI protocol that
// is not a chat: the request body, its prompt tokens (the TPM reservation), and the answer read into
// the broker's events. Vectors are asked as base64 (little-endian float32, as OpenAI's SDKs ask
// them: a quarter of the JSON numbers' bytes and no number parsing); an answer with JSON numbers
// (a provider that ignores `encoding_format`) is read too.
import { f32leFloats } from '@agent-mesh/common';
import { countText } from '../tokens';
import { answerJson, UpstreamError, type EmbedSpec, type ProviderRequest, type StreamEvent, type ToolCallOut } from './provider';

/** The request body, as OpenAI's API takes it. */
export function embeddingsRequestBody(req: ProviderRequest & { embed: EmbedSpec }): Record<string, unknown> {
  const { inputs, dimensions } = req.embed;
  return {
    model: req.model,
    input: inputs,
    encoding_format: 'base64',
    ...(dimensions ? { dimensions } : {}),
    ...(req.endUser ? { user: req.endUser } : {}),
  };
}

/** The inputs' tokens: a text counted by cl100k_base (OpenAI's embedding models' tokenizer), token ids one each. */
export function embedPromptTokens(spec: EmbedSpec): number {
  let n = 0;
  for (const input of spec.inputs) n += typeof input === 'string' ? countText(input) : input.length;
  return n;
}

interface RawEmbeddings {
  error?: { message?: string; code?: string | null } | string;
  model?: string;
  data?: Array<{ index?: number; embedding?: string | number[] }>;
  usage?: { prompt_tokens?: number; total_tokens?: number };
}

const invalid = (message: string) => new UpstreamError(`upstream embeddings answer ${message}`, 0, undefined, {}, 'invalid_response');

/** One vector as the provider wrote it (base64 of little-endian float32, or numbers). */
function vectorOf(embedding: string | number[] | undefined, i: number): Float32Array {
  if (Array.isArray(embedding)) return Float32Array.from(embedding);
  if (typeof embedding !== 'string') throw invalid(`has no vector at index ${i}`);
  const bytes = Buffer.from(embedding, 'base64');
  if (bytes.length === 0 || bytes.length % 4 !== 0) throw invalid(`has a vector at index ${i} that is not base64 float32`);
  return f32leFloats(bytes);
}

/**
 * A 200 answer → the events the broker reads: the model, the vectors (one per input, in the inputs'
 * order, all of one size), the usage. An error object, a missing or extra vector, or vectors of
 * different sizes are an UpstreamError (retried as any failure before the caller heard anything).
 */
export function embeddingsAnswer(text: string, spec: EmbedSpec): { events: StreamEvent[]; toolCalls: ToolCallOut[] } {
  const raw = answerJson<RawEmbeddings>(text);
  if (raw.error !== undefined) {
    const e = typeof raw.error === 'string' ? { message: raw.error, code: undefined } : raw.error;
    throw new UpstreamError(`upstream error in the answer: ${e.message || 'the provider reported an error'}`, 0, undefined, {}, e.code ?? undefined);
  }
  const data = raw.data ?? [];
  if (data.length !== spec.inputs.length) throw invalid(`has ${data.length} vectors for ${spec.inputs.length} inputs`);
  const vectors: Float32Array[] = new Array<Float32Array>(data.length);
  for (const [i, d] of data.entries()) {
    const index = d.index ?? i;
    if (!Number.isInteger(index) || index < 0 || index >= data.length || vectors[index]) throw invalid(`has a vector with index ${String(d.index)}`);
    vectors[index] = vectorOf(d.embedding, i);
  }
  if (vectors.some((v) => v.length !== vectors[0]!.length)) throw invalid('has vectors of different sizes');
  const events: StreamEvent[] = [];
  if (raw.model) events.push({ type: 'model', model: raw.model });
  events.push({ type: 'embeddings', vectors });
  const prompt = raw.usage?.prompt_tokens ?? embedPromptTokens(spec);
  events.push({ type: 'usage', usage: { promptTokens: prompt, completionTokens: 0, totalTokens: raw.usage?.total_tokens ?? prompt } });
  return { events, toolCalls: [] };
}

/**
 * The inputs cut, in order, into batches of at most `maxTokens` of their tokens each (`tokens[i]`:
 * input i's): one provider request per batch, as a provider caps one request's tokens (OpenAI:
 * 300,000). An input over the cap alone is a batch of its own (the provider says why it refuses it).
 * Each batch is `[start, end)` into the inputs.
 */
export function embedBatches(tokens: readonly number[], maxTokens: number): Array<[number, number]> {
  const batches: Array<[number, number]> = [];
  let start = 0;
  let sum = 0;
  for (const [i, n] of tokens.entries()) {
    if (i > start && sum + n > maxTokens) {
      batches.push([start, i]);
      start = i;
      sum = 0;
    }
    sum += n;
  }
  if (tokens.length > 0) batches.push([start, tokens.length]);
  return batches;
}
