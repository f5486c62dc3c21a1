// POST /v1/embeddings over HTTP, on an emulator started in-process on a free port: the answer's
// shape and vectors, OpenAI's refusals, and the limits, misbehaviours and stats it shares with the
// chat completions. Expected token counts come from js-tiktoken directly, not from the emulator.
import { getEncoding } from 'js-tiktoken';
import OpenAI from 'openai';
import { BEHAVIOUR_HEADER } from './behaviours';
import { INVALID_INPUT } from './embeddings';
import { startEmulator, type EmulatorStats, type RunningEmulator } from './index';
import { statsWhen } from './testing';

const AUTH = { authorization: 'Bearer test-key', 'content-type': 'application/json' };
const SMALL = 'text-embedding-3-small';
const LARGE = 'text-embedding-3-large';
const ADA = 'text-embedding-ada-002';
const enc = getEncoding('cl100k_base');

interface Embeddings {
  object: string;
  data: { object: string; index: number; embedding: number[] | string }[];
  model: string;
  usage: { prompt_tokens: number; total_tokens: number };
}
interface ErrorBody {
  error: { message: string; type: string; param: string | null; code: string | null };
}

let emulator: RunningEmulator;
beforeEach(async () => {
  emulator = await startEmulator({ port: 0, timeScale: 0.02, seed: 42 });
});
afterEach(async () => {
  await emulator.close();
});

function embed(body: unknown, init: { headers?: Record<string, string>; behaviour?: string; signal?: AbortSignal } = {}): Promise<Response> {
  const headers = { ...(init.headers ?? AUTH), ...(init.behaviour === undefined ? {} : { [BEHAVIOUR_HEADER]: init.behaviour }) };
  return fetch(`${emulator.url}/v1/embeddings`, { method: 'POST', headers, body: typeof body === 'string' ? body : JSON.stringify(body), signal: init.signal });
}

async function vectors(body: Record<string, unknown>): Promise<number[][]> {
  const res = await embed(body);
  expect(res.status).toBe(200);
  return ((await res.json()) as Embeddings).data.map((d) => d.embedding as number[]);
}

const norm = (v: readonly number[]): number => Math.sqrt(v.reduce((s, x) => s + x * x, 0));
const dot = (a: readonly number[], b: readonly number[]): number => a.reduce((s, x, i) => s + x * (b[i] as number), 0);

function decodeBase64(text: string): number[] {
  const bytes = Buffer.from(text, 'base64');
  return Array.from({ length: bytes.length / 4 }, (_, i) => bytes.readFloatLE(i * 4));
}

const waitForStats = (predicate: (s: EmulatorStats) => boolean) => statsWhen(emulator, predicate);

describe('POST /v1/embeddings: the answer', () => {
  it('answers a list of unit vectors, one per input in order, as long as the model\'s, with usage and the chat\'s headers', async () => {
    emulator.configure({ rpm: 100, tpm: 10_000 });
    const texts = ['The food was delicious and the waiter was kind.', 'Heat waves and city planning'];
    const res = await embed({ model: SMALL, input: texts });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('application/json');
    expect(res.headers.get('x-request-id')).toMatch(/^req_[0-9a-f]{32}$/);
    const body = (await res.json()) as Embeddings;
    expect(body.object).toBe('list');
    expect(body.model).toBe(SMALL);
    expect(body.data.map((d) => [d.object, d.index])).toEqual([['embedding', 0], ['embedding', 1]]);
    for (const d of body.data) {
      const v = d.embedding as number[];
      expect(v).toHaveLength(1536);
      expect(v.every((x) => typeof x === 'number' && Number.isFinite(x))).toBe(true);
      expect(norm(v)).toBeCloseTo(1, 5);
    }
    const tokens = texts.reduce((n, t) => n + enc.encode(t).length, 0);
    expect(body.usage).toEqual({ prompt_tokens: tokens, total_tokens: tokens });
    // The same rate-limit headers as a chat call, this one counted in them.
    expect(res.headers.get('x-ratelimit-limit-requests')).toBe('100');
    expect(res.headers.get('x-ratelimit-remaining-requests')).toBe('99');
    expect(res.headers.get('x-ratelimit-remaining-tokens')).toBe(String(10_000 - tokens));

    const [large] = await vectors({ model: LARGE, input: 'one text' });
    expect(large).toHaveLength(3072);
    expect(norm(large!)).toBeCloseTo(1, 5);
    const [ada] = await vectors({ model: ADA, input: 'one text' });
    expect(ada).toHaveLength(1536);
  });

  it('gives the same vector for the same model and input, whatever the seed or order; another for another input or model', async () => {
    const [a1, b1] = await vectors({ model: SMALL, input: ['alpha beta', 'gamma delta'] });
    emulator.configure({ seed: 7 });
    const [b2, a2] = await vectors({ model: SMALL, input: ['gamma delta', 'alpha beta'] });
    expect(a2).toEqual(a1);
    expect(b2).toEqual(b1);
    expect(b1).not.toEqual(a1);
    // Unrelated vectors in 1536 dimensions are nearly orthogonal.
    expect(Math.abs(dot(a1!, b1!))).toBeLessThan(0.2);
    const [other] = await vectors({ model: `${SMALL}-other`, input: 'alpha beta' });
    expect(Math.abs(dot(a1!, other!))).toBeLessThan(0.2);
  });

  it('base64: the same float32 values, little-endian; the OpenAI SDK (which asks for base64) reads them', async () => {
    const [floats] = await vectors({ model: SMALL, input: 'pack me', encoding_format: 'float' });
    const res = await embed({ model: SMALL, input: 'pack me', encoding_format: 'base64' });
    const packed = ((await res.json()) as Embeddings).data[0]!.embedding;
    expect(typeof packed).toBe('string');
    expect(Buffer.from(packed as string, 'base64')).toHaveLength(1536 * 4);
    expect(decodeBase64(packed as string)).toEqual(floats);

    const sdk = new OpenAI({ baseURL: `${emulator.url}/v1`, apiKey: 'test-key', maxRetries: 0 });
    const viaSdk = await sdk.embeddings.create({ model: SMALL, input: 'pack me' });
    expect(viaSdk.data[0]?.embedding).toEqual(floats);
    expect(viaSdk.usage.prompt_tokens).toBe(enc.encode('pack me').length);
  });

  it('dimensions: the start of the full vector, renormalised; up to the model\'s length', async () => {
    const [full] = await vectors({ model: SMALL, input: 'shorten me' });
    const [short] = await vectors({ model: SMALL, input: 'shorten me', dimensions: 256 });
    expect(short).toHaveLength(256);
    expect(norm(short!)).toBeCloseTo(1, 5);
    const head = full!.slice(0, 256);
    const scale = norm(head);
    short!.forEach((x, i) => expect(x).toBeCloseTo((head[i] as number) / scale, 6));
    const [one] = await vectors({ model: SMALL, input: 'x', dimensions: 1 });
    expect(one).toHaveLength(1);
    expect(Math.abs(one![0]!)).toBeCloseTo(1, 6);
    expect(await vectors({ model: SMALL, input: 'x', dimensions: 1536 })).toEqual(await vectors({ model: SMALL, input: 'x' }));
    expect((await vectors({ model: LARGE, input: 'x', dimensions: 3072 }))[0]).toHaveLength(3072);
  });

  it('takes token ids, one list or several, billed at their length; a text and its ids embed alike', async () => {
    const text = 'Token arrays are embedded too.';
    const ids = enc.encode(text);
    const res = await embed({ model: SMALL, input: ids });
    expect(res.status).toBe(200);
    const one = (await res.json()) as Embeddings;
    expect(one.data).toHaveLength(1);
    expect(one.usage.prompt_tokens).toBe(ids.length);
    const [fromText] = await vectors({ model: SMALL, input: text });
    expect(one.data[0]!.embedding).toEqual(fromText);

    const many = (await (await embed({ model: SMALL, input: [[1, 2, 3], [40, 50], [100_000]] })).json()) as Embeddings;
    expect(many.data.map((d) => d.index)).toEqual([0, 1, 2]);
    expect(many.usage).toEqual({ prompt_tokens: 6, total_tokens: 6 });
  });
});

describe('POST /v1/embeddings: refusals', () => {
  async function refusal(body: unknown, status = 400): Promise<ErrorBody['error']> {
    const res = await embed(body);
    expect({ status: res.status, requestId: res.headers.get('x-request-id') }).toEqual({ status, requestId: expect.stringMatching(/^req_/) });
    return ((await res.json()) as ErrorBody).error;
  }
  const invalidInput = { type: 'invalid_request_error', param: 'input', code: null, message: INVALID_INPUT };

  it('refuses a missing or non-string model, a body that is not a JSON object, an unknown behaviour suffix', async () => {
    expect(await refusal({ input: 'x' })).toEqual({ type: 'invalid_request_error', param: 'model', code: 'missing_required_parameter', message: 'you must provide a model parameter' });
    expect(await refusal({ model: 42, input: 'x' })).toMatchObject({ type: 'invalid_request_error', param: 'model', code: 'invalid_type' });
    expect(await refusal({ model: '', input: 'x' })).toMatchObject({ param: 'model', code: 'invalid_type' });
    expect(await refusal('{"model": "m", "input": [')).toMatchObject({ type: 'invalid_request_error', param: null, code: 'invalid_json', message: expect.stringContaining('We could not parse the JSON body') });
    expect(await refusal([{ model: SMALL, input: 'x' }])).toMatchObject({ type: 'invalid_request_error', param: null, code: 'invalid_type' });
    expect(await refusal({ model: `${SMALL}+no_such_thing`, input: 'x' })).toMatchObject({ param: 'model', code: 'invalid_behaviour' });
    expect(emulator.stats()).toMatchObject({ requests: 6, invalid: 6, completed: 0, promptTokens: 0 });
  });

  it('refuses an input that is missing, of the wrong type, empty, mixed, or of bad token ids, as OpenAI does', async () => {
    expect(await refusal({ model: SMALL })).toEqual({ type: 'invalid_request_error', param: 'input', code: 'missing_required_parameter', message: "Missing required parameter: 'input'." });
    const bad: unknown[] = [42, true, { text: 'x' }, '', [], [''], ['a', ''], [[]], [[1], []], ['a', 1], [1, 'a'], [['a']], [-1], [1.5], [[1, 2], [3, -4]], [[1, 'a']], [null]];
    for (const input of bad) expect([input, await refusal({ model: SMALL, input })]).toEqual([input, invalidInput]);
    expect(emulator.stats()).toMatchObject({ requests: 1 + bad.length, invalid: 1 + bad.length, completed: 0 });
  });

  it('refuses more than 2048 inputs (2048 pass)', async () => {
    expect(await refusal({ model: SMALL, input: Array.from({ length: 2049 }, () => 'a') })).toEqual(invalidInput);
    expect(await refusal({ model: SMALL, input: Array.from({ length: 2049 }, () => [1]) })).toEqual(invalidInput);
    const res = await embed({ model: SMALL, input: Array.from({ length: 2048 }, (_, i) => [i]), dimensions: 8 });
    expect(res.status).toBe(200);
    expect(((await res.json()) as Embeddings).data).toHaveLength(2048);
  });

  it('refuses an input over 8192 tokens with OpenAI\'s context-length message, and over 300,000 tokens in all', async () => {
    const long = 'lorem ipsum dolor sit amet '.repeat(1700);
    const tokens = enc.encode(long).length;
    expect(tokens).toBeGreaterThan(8192);
    expect(await refusal({ model: SMALL, input: ['short', long] })).toEqual({
      type: 'invalid_request_error',
      param: 'input',
      code: null,
      message: `This model's maximum context length is 8192 tokens, however you requested ${tokens} tokens (${tokens} in your prompt; 0 for the completion). Please reduce your prompt; or completion length.`,
    });
    expect(await refusal({ model: SMALL, input: Array.from({ length: 8193 }, () => 1) })).toMatchObject({ param: 'input', message: expect.stringContaining('you requested 8193 tokens') });
    expect((await embed({ model: SMALL, input: Array.from({ length: 8192 }, () => 1), dimensions: 4 })).status).toBe(200);
    // 37 inputs of 8192 tokens: each fits, together they do not.
    const batch = Array.from({ length: 37 }, () => Array.from({ length: 8192 }, () => 7));
    expect(await refusal({ model: SMALL, input: batch })).toEqual({ type: 'max_tokens_per_request', param: 'input', code: 'max_tokens_per_request', message: 'Requested 303104 tokens, max 300000 tokens per request' });
  });

  it('refuses dimensions below 1, above the model\'s length, not an integer, or given to text-embedding-ada-002', async () => {
    expect(await refusal({ model: SMALL, input: 'x', dimensions: 0 })).toEqual({
      type: 'invalid_request_error', param: 'dimensions', code: 'integer_below_min_value',
      message: "Invalid 'dimensions': integer below minimum value. Expected a value >= 1, but got 0 instead.",
    });
    expect(await refusal({ model: SMALL, input: 'x', dimensions: 1537 })).toEqual({
      type: 'invalid_request_error', param: 'dimensions', code: 'integer_above_max_value',
      message: "Invalid 'dimensions': integer above maximum value. Expected a value <= 1536, but got 1537 instead.",
    });
    expect(await refusal({ model: LARGE, input: 'x', dimensions: 3073 })).toMatchObject({ param: 'dimensions', message: expect.stringContaining('<= 3072') });
    expect(await refusal({ model: SMALL, input: 'x', dimensions: 2.5 })).toMatchObject({ param: 'dimensions', code: 'invalid_type' });
    expect(await refusal({ model: SMALL, input: 'x', dimensions: '256' })).toMatchObject({ param: 'dimensions', code: 'invalid_type' });
    expect(await refusal({ model: ADA, input: 'x', dimensions: 1536 })).toEqual({ type: 'invalid_request_error', param: 'dimensions', code: null, message: 'This model does not support specifying dimensions.' });
    expect(await refusal({ model: `${ADA}+no_ratelimit_headers`, input: 'x', dimensions: 256 })).toMatchObject({ param: 'dimensions' });
  });

  it('refuses an unknown encoding_format and a user that is not a string; counts a named user', async () => {
    expect(await refusal({ model: SMALL, input: 'x', encoding_format: 'binary' })).toEqual({
      type: 'invalid_request_error', param: 'encoding_format', code: 'invalid_value', message: 'Invalid value: "binary". Supported values are: \'float\' and \'base64\'.',
    });
    expect(await refusal({ model: SMALL, input: 'x', user: 5 })).toMatchObject({ param: 'user', code: 'invalid_type' });
    expect((await embed({ model: SMALL, input: 'x', user: 'user-1234' })).status).toBe(200);
    expect(emulator.stats()).toMatchObject({ users: 1, invalid: 2 });
  });

  it('answers 413 to a body over the limit, as for chat', async () => {
    const res = await embed({ model: SMALL, input: 'x'.repeat(17 * 1024 * 1024) });
    expect(res.status).toBe(413);
    expect(((await res.json()) as ErrorBody).error).toMatchObject({ type: 'invalid_request_error', code: 'request_too_large' });
  });

  it('answers 404 model_not_found for a model the account does not have', async () => {
    emulator.configure({ models: [SMALL] });
    expect(await refusal({ model: LARGE, input: 'x' }, 404)).toEqual({
      type: 'invalid_request_error', param: null, code: 'model_not_found', message: `The model \`${LARGE}\` does not exist or you do not have access to it.`,
    });
    expect((await embed({ model: SMALL, input: 'x' })).status).toBe(200);
    expect((await embed({ model: SMALL, input: 'x' }, { behaviour: 'model_not_found' })).status).toBe(404);
    expect(emulator.stats()).toMatchObject({ requests: 3, refused: 2, completed: 1 });
  });

  it('answers 401 to a missing or wrong key, OpenAI-style, and to the wrong_key behaviour', async () => {
    emulator.configure({ apiKey: 'sk-right-one' });
    const wrong = await embed({ model: SMALL, input: 'x' }, { headers: { authorization: 'Bearer sk-wrong-key', 'content-type': 'application/json' } });
    expect(wrong.status).toBe(401);
    const body = (await wrong.json()) as ErrorBody;
    expect(body.error).toMatchObject({ type: 'invalid_request_error', code: 'invalid_api_key' });
    expect(body.error.message).not.toContain('sk-wrong-key');
    expect((await embed({ model: SMALL, input: 'x' }, { headers: { 'content-type': 'application/json' } })).status).toBe(401);
    const right = { authorization: 'Bearer sk-right-one', 'content-type': 'application/json' };
    expect((await embed({ model: SMALL, input: 'x' }, { headers: right })).status).toBe(200);
    expect((await embed({ model: `${SMALL}+wrong_key`, input: 'x' }, { headers: right })).status).toBe(401);
    expect(emulator.stats()).toMatchObject({ requests: 4, invalid: 3, completed: 1 });
  });
});

describe('POST /v1/embeddings: limits, misbehaviours, stats', () => {
  it('shares the RPM window with chat completions: 429 with the chat\'s headers and body once it is full', async () => {
    emulator.configure({ rpm: 3, ttftMs: 1, tokensPerSec: 100_000 });
    const chat = await fetch(`${emulator.url}/v1/chat/completions`, { method: 'POST', headers: AUTH, body: JSON.stringify({ model: 'm', messages: [{ role: 'user', content: 'hi' }], max_tokens: 2 }) });
    expect(chat.status).toBe(200);
    await chat.text();
    expect((await embed({ model: SMALL, input: 'x' })).status).toBe(200);
    const last = await embed({ model: SMALL, input: 'x' });
    expect(last.headers.get('x-ratelimit-remaining-requests')).toBe('0');
    const refused = await embed({ model: SMALL, input: 'x' });
    expect(refused.status).toBe(429);
    expect(((await refused.json()) as ErrorBody).error).toMatchObject({ type: 'rate_limit_exceeded', code: 'rate_limit_exceeded', message: expect.stringContaining('requests per min (RPM): Limit 3, Used 3') });
    expect(Number(refused.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    const retryAfterMs = Number(refused.headers.get('retry-after-ms'));
    expect(retryAfterMs).toBeGreaterThan(0);
    expect(retryAfterMs).toBeLessThanOrEqual(1200); // a 60 s × 0.02 window
    expect(refused.headers.get('x-request-id')).toMatch(/^req_/);
    // And a chat call is refused by the embeddings that filled the window.
    const chatRefused = await fetch(`${emulator.url}/v1/chat/completions`, { method: 'POST', headers: AUTH, body: JSON.stringify({ model: 'm', messages: [{ role: 'user', content: 'hi' }] }) });
    expect(chatRefused.status).toBe(429);
    expect(emulator.stats()).toMatchObject({ requests: 5, completed: 3, rateLimited: 2, byEndpoint: { chat: 1, messages: 0, embeddings: 2 } });
  });

  it('charges its prompt tokens against the TPM on arrival and keeps them charged', async () => {
    const text = 'tokens per minute '.repeat(20);
    const tokens = enc.encode(text).length;
    emulator.configure({ tpm: tokens * 2 + 5 });
    const first = await embed({ model: SMALL, input: text });
    expect(Number(first.headers.get('x-ratelimit-remaining-tokens'))).toBe(tokens + 5);
    await first.json();
    const second = await embed({ model: SMALL, input: text });
    expect(second.status).toBe(200);
    expect(Number(second.headers.get('x-ratelimit-remaining-tokens'))).toBe(5);
    await second.json();
    const refused = await embed({ model: SMALL, input: text });
    expect(refused.status).toBe(429);
    expect(((await refused.json()) as ErrorBody).error.message).toMatch(/^Rate limit reached on tokens per min \(TPM\): Limit \d+, Used \d+, Requested \d+\.$/);
    expect(emulator.stats()).toMatchObject({ completed: 2, rateLimited: 1, promptTokens: 2 * tokens, tokensCharged: 2 * tokens, completionTokens: 0 });
    emulator.reset();
    emulator.configure({ tpm: 10 });
    expect(((await (await embed({ model: SMALL, input: text })).json()) as ErrorBody).error.message).toMatch(/^Request too large on tokens per min/);
  });

  it('holds a concurrency slot for a time-to-first-token latency; a second call meanwhile is refused', async () => {
    emulator.configure({ maxConcurrent: 1, timeScale: 1, ttftMs: 600 });
    const started = performance.now();
    const first = embed({ model: SMALL, input: 'slow' });
    const during = await waitForStats((s) => s.inFlight === 1);
    expect(during).toMatchObject({ inFlight: 1, maxInFlight: 1, byEndpoint: { embeddings: 1 } });
    const refused = await embed({ model: SMALL, input: 'again' });
    expect(refused.status).toBe(429);
    expect(((await refused.json()) as ErrorBody).error.message).toMatch(/Too many concurrent requests/);
    const res = await first;
    expect(res.status).toBe(200);
    expect(performance.now() - started).toBeGreaterThanOrEqual(600 * 0.85 - 5);
    expect(Number(res.headers.get('openai-processing-ms'))).toBeGreaterThanOrEqual(600 * 0.85 - 5);
    expect(emulator.stats()).toMatchObject({ inFlight: 0, completed: 1, rateLimited: 1 });
  });

  it('counts the calls in the stats as chat calls are counted, distinguished by endpoint', async () => {
    const inputs = ['first text', 'second text'];
    for (const input of inputs) await (await embed({ model: SMALL, input })).json();
    await (await embed({ model: SMALL, input: [[1, 2, 3]] })).json();
    await (await embed({ model: SMALL })).json();
    const tokens = inputs.reduce((n, t) => n + enc.encode(t).length, 0) + 3;
    const stats = (await (await fetch(`${emulator.url}/_emulator/stats`)).json()) as EmulatorStats;
    expect(stats).toMatchObject({
      requests: 4, completed: 3, invalid: 1, inFlight: 0, maxInFlight: 1, promptTokens: tokens, completionTokens: 0, tokensCharged: tokens,
      byMode: { stream: 0, whole: 3 }, byEndpoint: { chat: 0, messages: 0, embeddings: 3 },
    });
    expect(stats.byRole.other).toBe(3);
    expect(stats.admissions).toHaveLength(3);
    expect(stats.maxPerWindow).toBe(3);
  });

  it('applies the refusing behaviours: insufficient_quota, overloaded, no_ratelimit_headers, reset; the stream-only ones change nothing', async () => {
    emulator.configure({ rpm: 1000 });
    const quota = await embed({ model: SMALL, input: 'x' }, { behaviour: 'insufficient_quota' });
    expect(quota.status).toBe(429);
    expect(quota.headers.get('retry-after')).toBeNull();
    expect(((await quota.json()) as ErrorBody).error).toMatchObject({ type: 'insufficient_quota', code: 'insufficient_quota' });
    const overloaded = await embed({ model: `${SMALL}+overloaded`, input: 'x' });
    expect(overloaded.status).toBe(503);
    expect(Number(overloaded.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    expect(Number(overloaded.headers.get('retry-after-ms'))).toBe(40);
    expect(((await overloaded.json()) as ErrorBody).error).toMatchObject({ type: 'server_error', code: 'service_unavailable' });

    const plain = await embed({ model: SMALL, input: 'x' });
    expect(plain.headers.get('x-ratelimit-limit-requests')).toBe('1000');
    const bare = await embed({ model: `${SMALL}+no_ratelimit_headers`, input: 'x' });
    expect(bare.status).toBe(200);
    expect([...bare.headers.keys()].filter((k) => k.startsWith('x-ratelimit'))).toEqual([]);
    expect(((await bare.json()) as Embeddings).model).toBe(SMALL); // the suffix stripped

    const err = await embed({ model: SMALL, input: 'x' }, { behaviour: 'reset' }).then(() => undefined, (e: Error & { cause?: { code?: string } }) => e);
    expect(err?.cause?.code).toMatch(/ECONNRESET|UND_ERR_SOCKET/);

    const streamOnly = await embed({ model: SMALL, input: 'x' }, { behaviour: 'stream_error,stall,bad_json,no_usage,parallel_tool_calls' });
    expect(streamOnly.status).toBe(200);
    expect(((await streamOnly.json()) as Embeddings).data[0]?.embedding).toHaveLength(1536);
    expect(emulator.stats()).toMatchObject({ refused: 3, rateLimited: 0, completed: 3, behaviours: { insufficient_quota: 1, overloaded: 1, reset: 1, stream_error: 1 } });
  });

  it('slow_prefill: a longer input takes longer', async () => {
    emulator.configure({ timeScale: 0.1, ttftPerPromptTokenMs: 5 });
    const time = async (input: string): Promise<number> => {
      const started = performance.now();
      expect((await embed({ model: `${SMALL}+slow_prefill`, input })).status).toBe(200);
      return performance.now() - started;
    };
    const short = await time('hi');
    const long = await time('heat waves and city planning '.repeat(300)); // ~1500 tokens → +750 ms scaled
    expect(long - short).toBeGreaterThan(500);
  });

  it('fails at the instance failure rate with OpenAI\'s 5xx, and hangs at the hang rate until the client gives up', async () => {
    emulator.configure({ failureRate: 1 });
    const failed = await embed({ model: SMALL, input: 'x' });
    expect([500, 503]).toContain(failed.status);
    expect(((await failed.json()) as ErrorBody).error.type).toBe('server_error');
    emulator.configure({ failureRate: 0, hangRate: 1 });
    const controller = new AbortController();
    const hung = embed({ model: SMALL, input: 'x' }, { signal: controller.signal }).catch((e: Error) => e.name);
    await waitForStats((s) => s.hung === 1 && s.inFlight === 1);
    controller.abort();
    expect(await hung).toBe('AbortError');
    expect(await waitForStats((s) => s.aborted === 1)).toMatchObject({ failed: 1, hung: 1, aborted: 1, inFlight: 0, completed: 0 });
  });
});
