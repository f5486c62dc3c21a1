import { anthropicProtocol } from './anthropic';
import { embedBatches, embeddingsAnswer, embedPromptTokens } from './embeddings';
import { openAiProtocol } from './openai';
import { UpstreamError, type EmbedSpec, type ProviderRequest } from './provider';

const embedCall = (embed: EmbedSpec, over: Partial<ProviderRequest> = {}): ProviderRequest => ({ model: 'text-embedding-3-small', messages: [], tools: [], maxTokens: 0, stream: false, embed, ...over });
const b64 = (values: number[]) => Buffer.from(new Float32Array(values).buffer).toString('base64');

describe('OpenAI embeddings request', () => {
  it('posts to /embeddings, asks base64, passes dimensions and the end user; the key as a bearer', () => {
    const r = openAiProtocol.request(embedCall({ inputs: ['a text', [1, 2, 3]], dimensions: 256 }, { endUser: 'u-7' }), 'sk-test', false);
    expect(r.path).toBe('/embeddings');
    expect(r.headers.authorization).toBe('Bearer sk-test');
    expect(JSON.parse(r.body)).toEqual({ model: 'text-embedding-3-small', input: ['a text', [1, 2, 3]], encoding_format: 'base64', dimensions: 256, user: 'u-7' });
    expect(JSON.parse(openAiProtocol.request(embedCall({ inputs: ['x'] }), '', false).body)).toEqual({ model: 'text-embedding-3-small', input: ['x'], encoding_format: 'base64' });
  });

  it('reserves the inputs\' tokens: a text by cl100k_base, token ids one each', () => {
    expect(embedPromptTokens({ inputs: ['hello world'] })).toBe(2);
    expect(embedPromptTokens({ inputs: ['hello world', [5, 6, 7]] })).toBe(5);
    expect(openAiProtocol.countPromptTokens(embedCall({ inputs: ['hello world', [5, 6, 7]] }))).toBe(5);
  });

  it('is a parameter the Anthropic protocol cannot send', () => {
    expect(anthropicProtocol.unsupported?.(embedCall({ inputs: ['x'] }))).toBe('embeddings');
  });
});

describe('OpenAI embeddings answer', () => {
  const spec: EmbedSpec = { inputs: ['a', 'b'] };

  it('reads base64 float32 and JSON numbers, in index order, with the model and the usage', () => {
    const body = JSON.stringify({
      object: 'list', model: 'text-embedding-3-small-v2',
      data: [{ object: 'embedding', index: 1, embedding: [0.25, -1] }, { object: 'embedding', index: 0, embedding: b64([0.5, 0.125]) }],
      usage: { prompt_tokens: 2, total_tokens: 2 },
    });
    const { events } = openAiProtocol.answer!(body, embedCall(spec));
    expect(events).toEqual([
      { type: 'model', model: 'text-embedding-3-small-v2' },
      { type: 'embeddings', vectors: [new Float32Array([0.5, 0.125]), new Float32Array([0.25, -1])] },
      { type: 'usage', usage: { promptTokens: 2, completionTokens: 0, totalTokens: 2 } },
    ]);
  });

  it('counts the inputs itself for a provider that reports no usage', () => {
    const { events } = embeddingsAnswer(JSON.stringify({ data: [{ embedding: [1] }] }), { inputs: ['hello world'] });
    expect(events.at(-1)).toEqual({ type: 'usage', usage: { promptTokens: 2, completionTokens: 0, totalTokens: 2 } });
  });

  it.each([
    ['not JSON', 'not json', /not JSON/],
    ['an error object', JSON.stringify({ error: { message: 'boom', code: 'server_error' } }), /boom/],
    ['a vector missing', JSON.stringify({ data: [{ index: 0, embedding: [1] }] }), /1 vectors for 2 inputs/],
    ['an index twice', JSON.stringify({ data: [{ index: 0, embedding: [1] }, { index: 0, embedding: [2] }] }), /index 0/],
    ['an index out of range', JSON.stringify({ data: [{ index: 0, embedding: [1] }, { index: 2, embedding: [2] }] }), /index 2/],
    ['base64 that is not float32', JSON.stringify({ data: [{ embedding: 'AAA=' }, { embedding: [1] }] }), /not base64 float32/],
    ['no vector', JSON.stringify({ data: [{ index: 0 }, { index: 1, embedding: [1] }] }), /no vector/],
    ['vectors of different sizes', JSON.stringify({ data: [{ embedding: [1, 2] }, { embedding: [1] }] }), /different sizes/],
  ])('refuses %s as an UpstreamError (retried, nothing reached the caller)', (_what, body, says) => {
    let caught: unknown;
    try {
      embeddingsAnswer(body, spec);
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(UpstreamError);
    expect((caught as UpstreamError).message).toMatch(says);
    expect((caught as UpstreamError).retryable).toBe(true);
  });
});

describe('embeddings batches (one provider request each)', () => {
  it('keeps one batch while the tokens fit, in order, each batch as full as the cap allows', () => {
    expect(embedBatches([5, 5, 5], 15)).toEqual([[0, 3]]);
    expect(embedBatches([5, 5, 5], 14)).toEqual([[0, 2], [2, 3]]);
    expect(embedBatches([3, 4, 3, 9, 1, 1], 10)).toEqual([[0, 3], [3, 5], [5, 6]]);
    expect(embedBatches([10, 10, 10], 10)).toEqual([[0, 1], [1, 2], [2, 3]]);
  });

  it('puts an input over the cap in a batch of its own, never an empty batch', () => {
    expect(embedBatches([2, 50, 2], 10)).toEqual([[0, 1], [1, 2], [2, 3]]);
    expect(embedBatches([50], 10)).toEqual([[0, 1]]);
    expect(embedBatches([], 10)).toEqual([]);
  });

  it('cuts 2,048 inputs of 150 tokens (307,200) under OpenAI’s 300,000 into two requests', () => {
    const batches = embedBatches(Array.from({ length: 2048 }, () => 150), 300_000);
    expect(batches).toEqual([[0, 2000], [2000, 2048]]);
  });
});
