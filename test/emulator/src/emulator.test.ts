// The emulator over HTTP, started in-process on a free port and spoken to with fetch and the OpenAI SDK.
import { getEncoding } from 'js-tiktoken';
import OpenAI from 'openai';
import { anthropicImageTokens, minimalImage, openAiImageTokens, startEmulator, type EmulatorOptions, type EmulatorStats, type ImageMediaType, type RunningEmulator } from './index';
import { statsWhen } from './testing';

const FAST: EmulatorOptions = { port: 0, timeScale: 0.02, seed: 42 };
const AUTH = { authorization: 'Bearer test-key', 'content-type': 'application/json' };
const SEARCH_TOOL = { type: 'function', function: { name: 'search_web', description: 'Search the web', parameters: { type: 'object', properties: { query: { type: 'string' } } } } };

interface Chunk {
  id: string;
  object: string;
  created: number;
  model: string;
  choices: { index: number; delta: Record<string, unknown> & { role?: string; content?: string | null; tool_calls?: ToolCallDelta[] }; finish_reason: string | null }[];
  usage?: { prompt_tokens: number; completion_tokens: number; total_tokens: number } | null;
}
interface ToolCallDelta {
  index: number;
  id?: string;
  type?: string;
  function?: { name?: string; arguments?: string };
}

let emulator: RunningEmulator;

beforeEach(async () => {
  emulator = await startEmulator(FAST);
});
afterEach(async () => {
  await emulator.close();
});

function chat(body: unknown, init: { headers?: Record<string, string>; signal?: AbortSignal } = {}): Promise<Response> {
  return fetch(`${emulator.url}/v1/chat/completions`, {
    method: 'POST',
    headers: init.headers ?? AUTH,
    body: typeof body === 'string' ? body : JSON.stringify(body),
    signal: init.signal,
  });
}

/** The `data:` payloads of an SSE body, in order. */
function events(body: string): string[] {
  return body
    .split('\n\n')
    .filter((block) => block.trim() !== '')
    .map((block) => {
      expect(block.startsWith('data: ')).toBe(true);
      return block.slice('data: '.length);
    });
}

const waitForStats = (predicate: (s: EmulatorStats) => boolean) => statsWhen(emulator, predicate);

const messages = [
  { role: 'system', content: 'You are the Host. Answer the question.' },
  { role: 'user', content: 'How does a token bucket rate limiter work?' },
];

describe('POST /v1/chat/completions, streamed', () => {
  it('sends role first, one token per chunk, finish_reason, the usage chunk and [DONE] last', async () => {
    const res = await chat({ model: 'gpt-test', messages, stream: true, stream_options: { include_usage: true } });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/);
    const payloads = events(await res.text());
    expect(payloads.at(-1)).toBe('[DONE]');
    const chunks = payloads.slice(0, -1).map((p) => JSON.parse(p) as Chunk);
    for (const c of chunks) {
      expect(c.object).toBe('chat.completion.chunk');
      expect(c.model).toBe('gpt-test');
      expect(c.id).toBe(chunks[0]?.id);
    }
    expect(chunks[0]?.choices[0]?.delta.role).toBe('assistant');
    const usageChunk = chunks.at(-1);
    const finishChunk = chunks.at(-2);
    expect(usageChunk?.choices).toEqual([]);
    expect(finishChunk?.choices[0]?.finish_reason).toBe('stop');
    const text = chunks.map((c) => c.choices[0]?.delta.content ?? '').join('');
    const enc = getEncoding('cl100k_base');
    const usage = usageChunk?.usage;
    expect(usage?.completion_tokens).toBe(enc.encode(text).length);
    expect(usage?.total_tokens).toBe((usage?.prompt_tokens ?? 0) + (usage?.completion_tokens ?? 0));
    // Content chunks carry one token each.
    const contentChunks = chunks.filter((c) => (c.choices[0]?.delta.content ?? '') !== '');
    expect(contentChunks.length).toBe(usage?.completion_tokens);
  });

  it('leaves the usage chunk out unless asked', async () => {
    const payloads = events(await (await chat({ model: 'm', messages, stream: true })).text());
    const chunks = payloads.slice(0, -1).map((p) => JSON.parse(p) as Chunk);
    expect(chunks.every((c) => c.usage === undefined && c.choices.length === 1)).toBe(true);
  });

  it('is read by the OpenAI SDK, usage included', async () => {
    const client = new OpenAI({ baseURL: `${emulator.url}/v1`, apiKey: 'test-key', maxRetries: 0 });
    const stream = await client.chat.completions.create({
      model: 'gpt-test',
      messages: [{ role: 'system', content: 'You are the Reporter.' }, { role: 'user', content: 'Summarize the plan' }],
      stream: true,
      stream_options: { include_usage: true },
    });
    let text = '';
    let completionTokens = 0;
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta.content ?? '';
      completionTokens = chunk.usage?.completion_tokens ?? completionTokens;
    }
    expect(text.startsWith('Final answer:')).toBe(true);
    expect(completionTokens).toBeGreaterThan(0);
    const models = await client.models.list();
    expect(models.data.map((m) => m.id)).toEqual(['emulator-1']);
  });
});

describe('POST /v1/chat/completions, not streamed', () => {
  it('bills exactly the tokens js-tiktoken counts', async () => {
    const body = { model: 'm', messages, tools: [SEARCH_TOOL] };
    const res = await chat(body);
    expect(res.status).toBe(200);
    const completion = (await res.json()) as {
      object: string;
      choices: { message: { role: string; content: string }; finish_reason: string }[];
      usage: { prompt_tokens: number; completion_tokens: number; total_tokens: number };
    };
    expect(completion.object).toBe('chat.completion');
    const enc = getEncoding('cl100k_base');
    // OpenAI's accounting: 4 tokens around each message, 3 priming the reply, the tools' JSON.
    const expectedPrompt = 3 + messages.reduce((sum, m) => sum + 4 + enc.encode(m.content).length, 0) + enc.encode(JSON.stringify(body.tools)).length;
    const choice = completion.choices[0];
    expect(choice?.finish_reason).toBe('stop');
    expect(completion.usage.prompt_tokens).toBe(expectedPrompt);
    expect(completion.usage.completion_tokens).toBe(enc.encode(choice?.message.content ?? '').length);
    expect(completion.usage.total_tokens).toBe(completion.usage.prompt_tokens + completion.usage.completion_tokens);
    const stats = emulator.stats();
    expect(stats).toMatchObject({ requests: 1, completed: 1, promptTokens: expectedPrompt, completionTokens: completion.usage.completion_tokens, inFlight: 0 });
    expect(stats.byRole.host).toBe(1);
    expect(stats.byMode).toEqual({ stream: 0, whole: 1 });
  });

  it('stops at max_tokens with finish_reason "length"', async () => {
    const completion = (await (await chat({ model: 'm', messages, max_tokens: 5 })).json()) as {
      choices: { finish_reason: string }[];
      usage: { completion_tokens: number };
    };
    expect(completion.choices[0]?.finish_reason).toBe('length');
    expect(completion.usage.completion_tokens).toBe(5);
  });

  it('gives the same answer for the same request and seed, another for another seed', async () => {
    type Completion = { choices: { message: { content: string } }[] };
    const answer = async (seed: number) => ((await (await chat({ model: 'm', messages, seed })).json()) as Completion).choices[0]!.message.content;
    const first = await answer(7);
    expect(await answer(7)).toBe(first);
    expect(await answer(8)).not.toBe(first);
  });

  it('ends the answer where a stop sequence begins, leaving it out, with finish_reason "stop"', async () => {
    type Completion = { choices: { message: { content: string }; finish_reason: string }[]; usage: { completion_tokens: number } };
    const ask = async (extra: Record<string, unknown>) => (await (await chat({ model: 'm', messages, seed: 3, ...extra })).json()) as Completion;
    const whole = (await ask({})).choices[0]!.message.content;
    const word = whole.split(/\s+/)[4]!;
    const cut = await ask({ stop: ['no such words', ` ${word}`] });
    expect(cut.choices[0]!.message.content).toBe(whole.slice(0, whole.indexOf(` ${word}`)));
    expect(cut.choices[0]!.finish_reason).toBe('stop');
    expect(cut.usage.completion_tokens).toBe(getEncoding('cl100k_base').encode(cut.choices[0]!.message.content).length);
    expect((await chat({ model: 'm', messages, stop: ['a', 'b', 'c', 'd', 'e'] })).status).toBe(400);
  });

  it('answers in JSON when asked (JSON mode only if the messages say "json", as OpenAI requires), or to a schema', async () => {
    type Completion = { choices: { message: { content: string } }[]; error?: { message: string; param: string } };
    const ask = async (extra: Record<string, unknown>, content = 'Answer in JSON: what is a queue?') =>
      chat({ model: 'm', messages: [{ role: 'user', content }], ...extra });
    const mode = (await (await ask({ response_format: { type: 'json_object' } })).json()) as Completion;
    expect(JSON.parse(mode.choices[0]!.message.content)).toEqual({ answer: expect.any(String) });
    const refused = await ask({ response_format: { type: 'json_object' } }, 'What is a queue?');
    expect(refused.status).toBe(400);
    expect(((await refused.json()) as Completion).error?.message).toMatch(/must contain the word 'json'/);
    const schema = { type: 'object', properties: { summary: { type: 'string' }, score: { type: 'number' }, tags: { type: 'array' } } };
    const shaped = (await (await ask({ response_format: { type: 'json_schema', json_schema: { name: 'a', schema } } }, 'What is a queue?')).json()) as Completion;
    expect(JSON.parse(shaped.choices[0]!.message.content)).toEqual({ summary: expect.stringMatching(/\w/), score: 1, tags: [] });
  });

  it('gives each token\'s log probability when asked (logprobs, top_logprobs), in the answer and in the chunk that carries it', async () => {
    type Entry = { token: string; logprob: number; bytes: number[]; top_logprobs: Entry[] };
    type Completion = { choices: { message: { content: string }; logprobs: { content: Entry[]; refusal: null } | null }[] };
    const messages = [{ role: 'user', content: 'How do tides work?' }];
    const plain = (await (await chat({ model: 'm', messages, seed: 5 })).json()) as Completion;
    expect(plain.choices[0]!.logprobs).toBeNull();
    const whole = (await (await chat({ model: 'm', messages, seed: 5, logprobs: true, top_logprobs: 3 })).json()) as Completion;
    const { message, logprobs } = whole.choices[0]!;
    expect(message.content).toBe(plain.choices[0]!.message.content);
    expect(logprobs!.content.map((e) => e.token).join('')).toBe(message.content);
    for (const e of logprobs!.content) {
      expect(e.logprob).toBeLessThanOrEqual(0);
      expect(Buffer.from(e.bytes).toString('utf8')).toBe(e.token);
      expect(e.top_logprobs).toHaveLength(3);
      expect(e.top_logprobs.map((t) => t.logprob)).toEqual([...e.top_logprobs.map((t) => t.logprob)].sort((x, y) => y - x));
      expect(e.top_logprobs).toContainEqual({ token: e.token, logprob: e.logprob, bytes: e.bytes });
      expect(new Set(e.top_logprobs.map((t) => t.token)).size).toBe(3);
      // Probabilities: the alternatives share what the token leaves.
      expect(e.top_logprobs.reduce((sum, t) => sum + Math.exp(t.logprob), 0)).toBeLessThanOrEqual(1 + 1e-9);
    }
    // Streamed, each chunk's figures are its own tokens': together the same as the whole answer's.
    const streamed = events(await (await chat({ model: 'm', messages, seed: 5, logprobs: true, top_logprobs: 3, stream: true })).text())
      .filter((e) => e !== '[DONE]')
      .flatMap((e) => (JSON.parse(e) as { choices: { delta: { content?: string }; logprobs: { content: Entry[] } | null }[] }).choices);
    for (const c of streamed) expect(c.logprobs === null).toBe(!c.delta.content);
    expect(streamed.flatMap((c) => c.logprobs?.content ?? [])).toEqual(logprobs!.content);
    // Without top_logprobs, no alternatives; and the checks OpenAI makes.
    const bare = (await (await chat({ model: 'm', messages, seed: 5, logprobs: true })).json()) as Completion;
    expect(bare.choices[0]!.logprobs!.content.every((e) => e.top_logprobs.length === 0)).toBe(true);
    const refused = async (extra: Record<string, unknown>) => {
      const res = await chat({ model: 'm', messages, ...extra });
      expect(res.status).toBe(400);
      return ((await res.json()) as { error: { param: string; code: string } }).error;
    };
    expect(await refused({ top_logprobs: 2 })).toMatchObject({ param: 'top_logprobs', code: 'invalid_value' });
    expect(await refused({ logprobs: true, top_logprobs: 21 })).toMatchObject({ param: 'top_logprobs', code: 'integer_above_max_value' });
    expect(await refused({ logprobs: 'yes' })).toMatchObject({ param: 'logprobs', code: 'invalid_type' });
  });

  it('reasoning_effort: the model thinks first, the more the more effort, billed as completion tokens within max_completion_tokens; logit_bias checked as OpenAI checks it', async () => {
    type Completion = { choices: { message: { content: string }; finish_reason: string }[]; usage: { completion_tokens: number; completion_tokens_details: { reasoning_tokens: number } } };
    const messages = [{ role: 'user', content: 'How do tides work?' }];
    const ask = async (extra: Record<string, unknown>) => (await (await chat({ model: 'm', messages, seed: 4, ...extra })).json()) as Completion;
    const plain = await ask({});
    expect(plain.usage.completion_tokens_details.reasoning_tokens).toBe(0);
    const reasoning = async (effort: string) => {
      const r = await ask({ reasoning_effort: effort });
      // The same answer, with the thinking billed on top.
      expect(r.choices[0]!.message.content).toBe(plain.choices[0]!.message.content);
      expect(r.usage.completion_tokens).toBe(plain.usage.completion_tokens + r.usage.completion_tokens_details.reasoning_tokens);
      return r.usage.completion_tokens_details.reasoning_tokens;
    };
    expect(await reasoning('none')).toBe(0);
    expect(await reasoning('minimal')).toBe(0);
    const low = await reasoning('low');
    expect(low).toBeGreaterThan(0);
    const high = await reasoning('high');
    expect(high).toBeGreaterThan(low);
    expect(await reasoning('xhigh')).toBeGreaterThan(high);
    // Thinking past max_completion_tokens leaves no room for the answer.
    const capped = await ask({ reasoning_effort: 'high', max_completion_tokens: 20 });
    expect(capped.choices[0]).toMatchObject({ message: { content: '' }, finish_reason: 'length' });
    expect(capped.usage).toMatchObject({ completion_tokens: 20, completion_tokens_details: { reasoning_tokens: 20 } });
    const refused = async (extra: Record<string, unknown>) => {
      const res = await chat({ model: 'm', messages, ...extra });
      expect(res.status).toBe(400);
      return ((await res.json()) as { error: { param: string; code: string } }).error;
    };
    expect(await refused({ reasoning_effort: 'extreme' })).toMatchObject({ param: 'reasoning_effort', code: 'invalid_value' });
    expect((await chat({ model: 'm', messages, logit_bias: { '1734': -100, '50256': 5 } })).status).toBe(200);
    expect(await refused({ logit_bias: { hello: 1 } })).toMatchObject({ param: 'logit_bias', code: 'invalid_value' });
    expect(await refused({ logit_bias: { '1734': 101 } })).toMatchObject({ param: 'logit_bias', code: 'invalid_value' });
  });

  it('user: the end user a request names is counted (stats.users); another type than a string is refused as OpenAI refuses it', async () => {
    const messages = [{ role: 'user', content: 'How do tides work?' }];
    const before = emulator.stats().users;
    expect((await chat({ model: 'm', messages, user: 'user-42' })).status).toBe(200);
    expect((await chat({ model: 'm', messages })).status).toBe(200);
    expect(emulator.stats().users).toBe(before + 1);
    const res = await chat({ model: 'm', messages, user: 42 });
    expect(res.status).toBe(400);
    expect(((await res.json()) as { error: unknown }).error).toMatchObject({ param: 'user', code: 'invalid_type' });
  });

  it('verbosity: a shorter answer at low, a longer one at high, checked as OpenAI checks it', async () => {
    type Completion = { usage: { completion_tokens: number } };
    const messages = [{ role: 'user', content: 'How do tides work?' }];
    const length = async (extra: Record<string, unknown>) => ((await (await chat({ model: 'm', messages, seed: 6, ...extra })).json()) as Completion).usage.completion_tokens;
    const medium = await length({});
    expect(await length({ verbosity: 'medium' })).toBe(medium);
    expect(await length({ verbosity: 'low' })).toBeLessThan(medium * 0.75);
    expect(await length({ verbosity: 'high' })).toBeGreaterThan(medium * 1.4);
    const res = await chat({ model: 'm', messages, verbosity: 'terse' });
    expect(res.status).toBe(400);
    expect(((await res.json()) as { error: unknown }).error).toMatchObject({ param: 'verbosity', code: 'invalid_value', message: expect.stringContaining("'low', 'medium', and 'high'") });
  });

  it('ends the Critic with a VERDICT line that follows the round', async () => {
    emulator.configure({ reviseRate: 1 });
    const critique = async (round: number): Promise<string> => {
      const res = await chat({ model: 'm', messages: [{ role: 'system', content: `You are the Critic. Round: ${round}` }, { role: 'user', content: 'Plan:\n1. Measure\n2. Fix' }] });
      const body = (await res.json()) as { choices: { message: { content: string } }[] };
      return body.choices[0]?.message.content ?? '';
    };
    expect((await critique(1)).split('\n').at(-1)).toBe('VERDICT: REVISE');
    expect((await critique(3)).split('\n').at(-1)).toBe('VERDICT: APPROVE');
    expect(emulator.stats().verdicts).toEqual({ approve: 1, revise: 1 });
  });
});

describe('tool calls', () => {
  it('streams a search_web call for a search question, then answers from the tool result', async () => {
    const conversation: Record<string, unknown>[] = [
      { role: 'system', content: 'You are the Host.' },
      { role: 'user', content: 'Search for the latest news about Postgres 17 performance' },
    ];
    const res = await chat({ model: 'm', messages: conversation, tools: [SEARCH_TOOL], stream: true });
    const chunks = events(await res.text())
      .slice(0, -1)
      .map((p) => JSON.parse(p) as Chunk);
    const calls = chunks.flatMap((c) => c.choices[0]?.delta.tool_calls ?? []);
    const first = calls[0];
    expect(first).toMatchObject({ index: 0, type: 'function', function: { name: 'search_web' } });
    expect(first?.id).toMatch(/^call_/);
    expect(calls.length).toBeGreaterThan(2); // the arguments come in pieces
    const args = calls.map((c) => c.function?.arguments ?? '').join('');
    const { query } = JSON.parse(args) as { query: string };
    expect(query).toMatch(/Postgres/i);
    expect(chunks.at(-1)?.choices[0]?.finish_reason).toBe('tool_calls');

    conversation.push(
      { role: 'assistant', content: null, tool_calls: [{ id: first?.id, type: 'function', function: { name: 'search_web', arguments: args } }] },
      { role: 'tool', tool_call_id: first?.id, content: 'Postgres 17 speeds up vacuum and bulk loading.' },
    );
    const answer = (await (await chat({ model: 'm', messages: conversation, tools: [SEARCH_TOOL] })).json()) as {
      choices: { message: { content: string; tool_calls?: unknown }; finish_reason: string }[];
    };
    expect(answer.choices[0]?.finish_reason).toBe('stop');
    expect(answer.choices[0]?.message.tool_calls).toBeUndefined();
    expect(answer.choices[0]?.message.content).toContain('"Postgres 17 speeds up vacuum and bulk loading."');
    expect(emulator.stats().toolCalls).toBe(1);
  });
});

describe('provider limits', () => {
  it('answers 429 with Retry-After and x-ratelimit headers over the RPM, and admits again once the window slid', async () => {
    // A 1.2 s window (60 s × 0.02) and near-instant answers.
    emulator.configure({ rpm: 2, timeScale: 0.02, ttftMs: 1, tokensPerSec: 100_000 });
    const first = await chat({ model: 'm', messages });
    expect(first.status).toBe(200);
    expect(first.headers.get('x-ratelimit-limit-requests')).toBe('2');
    expect(first.headers.get('x-ratelimit-remaining-requests')).toBe('1');
    expect(first.headers.get('x-ratelimit-reset-requests')).toMatch(/^\d+(\.\d+)?m?s$/);
    expect(first.headers.get('x-ratelimit-limit-tokens')).toBeNull(); // TPM is off
    await first.text();
    await (await chat({ model: 'm', messages })).text();

    const refused = await chat({ model: 'm', messages });
    expect(refused.status).toBe(429);
    const body = (await refused.json()) as { error: { type: string; code: string; message: string } };
    expect(body.error).toMatchObject({ type: 'rate_limit_exceeded', code: 'rate_limit_exceeded' });
    expect(Number(refused.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    const retryAfterMs = Number(refused.headers.get('retry-after-ms'));
    expect(retryAfterMs).toBeGreaterThan(0);
    expect(retryAfterMs).toBeLessThanOrEqual(1200);
    expect(refused.headers.get('x-ratelimit-remaining-requests')).toBe('0');
    expect(emulator.stats()).toMatchObject({ requests: 3, completed: 2, rateLimited: 1 });

    await new Promise((r) => setTimeout(r, retryAfterMs + 20));
    const again = await chat({ model: 'm', messages });
    expect(again.status).toBe(200);
    await again.text();
  });

  it('answers 429 over the TPM with the token headers', async () => {
    emulator.configure({ tpm: 300, ttftMs: 1, tokensPerSec: 100_000 });
    const first = await chat({ model: 'm', messages, max_tokens: 200 });
    expect(first.status).toBe(200);
    expect(Number(first.headers.get('x-ratelimit-remaining-tokens'))).toBeLessThan(100);
    await first.text();
    const refused = await chat({ model: 'm', messages, max_tokens: 200 });
    expect(refused.status).toBe(429);
    expect(refused.headers.get('x-ratelimit-limit-tokens')).toBe('300');
    expect(((await refused.json()) as { error: { message: string } }).error.message).toMatch(/tokens per min/);
  });

  it('with an output limit (otpm): max_tokens held against it until the answer ends, the rest refunded; x-ratelimit-*-tokens stay the input limit', async () => {
    emulator.configure({ timeScale: 1, tpm: 1000, otpm: 200, ttftMs: 1, tokensPerSec: 100, completionTokens: 20 });
    // Streamed answers send their headers at admission: the first holds its 150 until it ends.
    const first = await chat({ model: 'm', messages, max_tokens: 150, stream: true, stream_options: { include_usage: true } });
    expect(first.status).toBe(200);
    const refused = await chat({ model: 'm', messages, max_tokens: 100 });
    expect(refused.status).toBe(429);
    expect(((await refused.json()) as { error: unknown }).error).toMatchObject({
      type: 'rate_limit_exceeded',
      code: 'rate_limit_exceeded',
      message: 'Rate limit reached on output tokens per min (OTPM): Limit 200, Used 150, Requested 100.',
    });
    // The input limit still has room; OpenAI has no headers for an output limit.
    expect(refused.headers.get('x-ratelimit-limit-tokens')).toBe('1000');
    expect(Number(refused.headers.get('x-ratelimit-remaining-tokens'))).toBeGreaterThan(900);
    expect([...refused.headers.keys()].filter((k) => k.includes('output'))).toEqual([]);
    const generated = (JSON.parse(events(await first.text()).at(-2)!) as Chunk).usage!.completion_tokens;
    expect(generated).toBeLessThan(100);
    // Refunded to what the first generated, the output limit lets the second in.
    const again = await chat({ model: 'm', messages, max_tokens: 100 });
    expect(again.status).toBe(200);
    const answered = ((await again.json()) as { usage: { completion_tokens: number } }).usage.completion_tokens;
    // `no_refund`: its max_tokens stays charged.
    await (await chat({ model: 'm+no_refund', messages, max_tokens: 60 })).text();
    const s = emulator.stats();
    expect(s).toMatchObject({ rateLimited: 1, completed: 3, inputTokensCharged: s.promptTokens, outputTokensCharged: generated + answered + 60 });
    expect(s.tokensCharged).toBe(s.inputTokensCharged + s.outputTokensCharged);
  });

  it('refuses requests beyond the concurrency limit and frees slots when clients abort', async () => {
    emulator.configure({ maxConcurrent: 2, timeScale: 1, ttftMs: 60_000 });
    const controllers = [new AbortController(), new AbortController()];
    // Streamed answers send their headers at admission, so both hold a slot once fetch resolves.
    const held = await Promise.all(controllers.map((c) => chat({ model: 'm', messages, stream: true }, { signal: c.signal })));
    expect(held.map((r) => r.status)).toEqual([200, 200]);
    expect(emulator.stats()).toMatchObject({ inFlight: 2, maxInFlight: 2 });

    const refused = await chat({ model: 'm', messages });
    expect(refused.status).toBe(429);
    expect(((await refused.json()) as { error: { code: string } }).error.code).toBe('rate_limit_exceeded');
    expect(Number(refused.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);

    controllers.forEach((c) => c.abort());
    const stats = await waitForStats((s) => s.aborted === 2);
    expect(stats).toMatchObject({ aborted: 2, inFlight: 0, completed: 0 });
    emulator.configure({ timeScale: 0.02, ttftMs: 1 });
    expect((await chat({ model: 'm', messages })).status).toBe(200);
  });
});

describe('client aborts and injected failures', () => {
  it('stops a stream the client abandons and counts it as aborted', async () => {
    emulator.configure({ timeScale: 1, ttftMs: 1, tokensPerSec: 20 });
    const controller = new AbortController();
    const res = await chat({ model: 'm', messages, stream: true }, { signal: controller.signal });
    const reader = res.body?.getReader();
    const first = await reader?.read();
    expect(new TextDecoder().decode(first?.value)).toContain('"role":"assistant"');
    controller.abort();
    const stats = await waitForStats((s) => s.aborted === 1);
    expect(stats).toMatchObject({ aborted: 1, completed: 0, inFlight: 0 });
    expect(stats.completionTokens).toBeLessThan(60); // billed only what was generated
  });

  it('fails with an OpenAI-style 5xx at the failure rate', async () => {
    emulator.configure({ failureRate: 1 });
    const res = await chat({ model: 'm', messages, stream: true });
    expect([500, 503]).toContain(res.status);
    const body = (await res.json()) as { error: { type: string; message: string } };
    expect(body.error.type).toBe('server_error');
    expect(emulator.stats()).toMatchObject({ failed: 1, inFlight: 0 });
  });

  it('cuts a stream midway without [DONE]', async () => {
    emulator.configure({ cutRate: 1 });
    const res = await chat({ model: 'm', messages, stream: true });
    expect(res.status).toBe(200);
    let received = '';
    const error = await (async () => {
      try {
        const reader = res.body?.getReader();
        for (;;) {
          const part = await reader?.read();
          if (part === undefined || part.done) return undefined;
          received += new TextDecoder().decode(part.value);
        }
      } catch (err) {
        return err;
      }
    })();
    expect(error).toBeDefined();
    expect(received).toContain('"role":"assistant"');
    expect(received).not.toContain('[DONE]');
    expect(emulator.stats()).toMatchObject({ failed: 1, cut: 1, inFlight: 0 });
  });

  it('never answers a hung request until the client gives up', async () => {
    emulator.configure({ hangRate: 1 });
    const controller = new AbortController();
    const pending = chat({ model: 'm', messages }, { signal: controller.signal });
    await waitForStats((s) => s.inFlight === 1);
    await new Promise((r) => setTimeout(r, 50)); // far longer than a scaled answer takes
    expect(emulator.stats()).toMatchObject({ hung: 1, inFlight: 1, completed: 0 });
    controller.abort();
    await expect(pending).rejects.toThrow();
    expect(await waitForStats((s) => s.aborted === 1)).toMatchObject({ aborted: 1, inFlight: 0 });
  });
});

describe('images (vision)', () => {
  const dataUrl = (type: ImageMediaType, width: number, height: number, bytes = minimalImage(type, width, height)) => `data:${type};base64,${bytes.toString('base64')}`;
  const image = (url: string, detail?: string) => ({ type: 'image_url', image_url: { url, ...(detail === undefined ? {} : { detail }) } });
  const question = { type: 'text', text: 'What is in this picture?' };
  type Completion = { usage: { prompt_tokens: number }; error?: { message: string; type: string; param: string | null; code: string } };
  const ask = async (parts: unknown[], role = 'user') => {
    const res = await chat({ model: 'm', messages: [{ role: 'system', content: 'You are the Host.' }, { role, content: [question, ...parts] }] });
    return { status: res.status, body: (await res.json()) as Completion };
  };

  it('bills an image as OpenAI does: low 85; high and auto 85 + 170 a 512-px tile, once fitted in 2048×2048 and its shortest side cut to 768', () => {
    expect(openAiImageTokens({ width: 4000, height: 3000 }, 'low')).toBe(85);
    expect(openAiImageTokens({ width: 1024, height: 1024 }, 'high')).toBe(85 + 170 * 4); // 2×2 tiles
    // 2048×4096 fits as 1024×2048, whose shortest side 768 makes it 768×1536: 2×3 tiles.
    expect(openAiImageTokens({ width: 2048, height: 4096 }, 'high')).toBe(85 + 170 * 6);
    expect(openAiImageTokens({ width: 2048, height: 4096 }, 'auto')).toBe(1105);
    expect(openAiImageTokens({ width: 100, height: 100 }, 'high')).toBe(85 + 170); // small images are not scaled up
    // 3000×1000 fits as 2048×682 (shortest side under 768 already): 4×2 tiles.
    expect(openAiImageTokens({ width: 3000, height: 1000 }, 'auto')).toBe(85 + 170 * 8);
  });

  it('bills an image as Anthropic does: long edge at most 1568, then at most 1.15 megapixels, ceil(w×h/750)', () => {
    expect(anthropicImageTokens({ width: 1000, height: 1000 })).toBe(1334); // ceil(1,000,000 / 750)
    expect(anthropicImageTokens({ width: 512, height: 512 })).toBe(350); // ceil(262,144 / 750)
    // 3136×500: long edge to 1568 → 1568×250 = 392,000 px, under 1.15 MP.
    expect(anthropicImageTokens({ width: 3136, height: 500 })).toBe(Math.ceil((1568 * 250) / 750));
    // 2000×1000 → 1568×784 = 1,229,312 px, over 1.15 MP: × √(1,150,000 / 1,229,312) → 1516×758 = 1,149,128 px.
    expect(anthropicImageTokens({ width: 2000, height: 1000 })).toBe(Math.ceil((1516 * 758) / 750));
  });

  it('reads each image\'s size from its bytes (PNG, JPEG, GIF, WebP) or takes a URL\'s as 512×512, adds its tokens to the prompt and counts it in stats.images', async () => {
    const text = await ask([]);
    expect(text.status).toBe(200);
    const parts = [
      image(dataUrl('image/png', 1024, 1024), 'high'), // 765
      image(dataUrl('image/jpeg', 2048, 4096)), // auto: 1105
      image(dataUrl('image/gif', 100, 100), 'auto'), // 255
      image(dataUrl('image/webp', 4000, 3000), 'low'), // 85
      image('https://images.example.com/cat.png', 'high'), // 512×512: 255
    ];
    const withImages = await ask(parts);
    expect(withImages.status).toBe(200);
    expect(withImages.body.usage.prompt_tokens).toBe(text.body.usage.prompt_tokens + 765 + 1105 + 255 + 85 + 255);
    expect(emulator.stats()).toMatchObject({ completed: 2, images: 5, promptTokens: text.body.usage.prompt_tokens * 2 + 2465 });
  });

  it('takes images through the OpenAI SDK, the answer unchanged by them', async () => {
    const client = new OpenAI({ baseURL: `${emulator.url}/v1`, apiKey: 'test-key', maxRetries: 0 });
    const ask = (content: OpenAI.Chat.ChatCompletionContentPart[]) =>
      client.chat.completions.create({ model: 'gpt-test', seed: 9, messages: [{ role: 'system', content: 'You are the Host.' }, { role: 'user', content }] });
    const plain = await ask([{ type: 'text', text: 'What is in this picture?' }]);
    const seen = await ask([{ type: 'text', text: 'What is in this picture?' }, { type: 'image_url', image_url: { url: dataUrl('image/png', 1024, 1024), detail: 'high' } }]);
    expect(seen.choices[0]?.message.content).toBe(plain.choices[0]?.message.content);
    expect(seen.usage?.prompt_tokens).toBe((plain.usage?.prompt_tokens ?? 0) + 765);
    const refused = ask([{ type: 'image_url', image_url: { url: 'https://cdn.example.invalid/cat.png' } }]);
    await expect(refused).rejects.toBeInstanceOf(OpenAI.BadRequestError);
    await expect(refused).rejects.toMatchObject({ status: 400, code: 'invalid_image_url' });
  });

  it('refuses as OpenAI does: images outside user messages, a missing url, an unknown detail, bytes that are not the image declared, a URL it cannot download', async () => {
    const png = minimalImage('image/png', 64, 64);
    const unsupported = { status: 400, body: { error: { message: 'You uploaded an unsupported image. Please make sure your image is valid.', type: 'invalid_request_error', param: null, code: 'invalid_image_format' } } };
    expect(await ask([image(dataUrl('image/png', 64, 64))], 'system')).toEqual({
      status: 400,
      body: { error: { message: "Invalid 'messages[1]'. Image URLs are only allowed for messages with role 'user', but this message with role 'system' contains an image URL.", type: 'invalid_request_error', param: 'messages[1]', code: 'invalid_value' } },
    });
    expect(await ask([image('https://images.example.com/cat.png')], 'assistant')).toMatchObject({ status: 400, body: { error: { param: 'messages[1]', code: 'invalid_value' } } });
    expect(await ask([{ type: 'image_url', image_url: { detail: 'low' } }])).toMatchObject({
      status: 400,
      body: { error: { message: "Missing required parameter: 'messages[1].content[1].image_url.url'.", param: 'messages[1].content[1].image_url.url', code: 'missing_required_parameter' } },
    });
    expect(await ask([{ type: 'image_url' }])).toMatchObject({ status: 400, body: { error: { param: 'messages[1].content[1].image_url', code: 'missing_required_parameter' } } });
    expect(await ask([image(dataUrl('image/png', 64, 64), 'ultra')])).toMatchObject({
      status: 400,
      body: { error: { message: "Invalid value: 'ultra'. Supported values are: 'auto', 'low', and 'high'.", param: 'messages[1].content[1].image_url.detail', code: 'invalid_value' } },
    });
    expect(await ask([image('data:image/png;base64,bm90IGFuIGltYWdl')])).toEqual(unsupported); // "not an image"
    expect(await ask([image('data:image/png;base64,not base64!')])).toEqual(unsupported);
    expect(await ask([image(dataUrl('image/png', 64, 64, minimalImage('image/jpeg', 64, 64)))])).toEqual(unsupported); // JPEG bytes
    expect(await ask([image(`data:image/bmp;base64,${png.toString('base64')}`)])).toEqual(unsupported);
    expect(await ask([image(`data:image/png,${png.toString('latin1')}`)])).toEqual(unsupported); // not base64
    expect(await ask([image('https://images.example.invalid/cat.png')])).toEqual({
      status: 400,
      body: { error: { message: 'Error while downloading https://images.example.invalid/cat.png.', type: 'invalid_request_error', param: null, code: 'invalid_image_url' } },
    });
    expect(await ask([image('ftp://images.example.com/cat.png')])).toMatchObject({ status: 400, body: { error: { code: 'invalid_image_url' } } });
    expect(emulator.stats()).toMatchObject({ requests: 12, invalid: 12, images: 0 });
  });
});

describe('request validation', () => {
  it('answers 400 to a malformed JSON body', async () => {
    const res = await chat('{"model": "m", "messages": [');
    expect(res.status).toBe(400);
    const body = (await res.json()) as { error: { type: string; code: string; message: string } };
    expect(body.error).toMatchObject({ type: 'invalid_request_error', code: 'invalid_json' });
  });

  it('answers 400 when messages are missing or empty', async () => {
    const missing = await chat({ model: 'm' });
    expect(missing.status).toBe(400);
    expect(((await missing.json()) as { error: { param: string } }).error.param).toBe('messages');
    const empty = await chat({ model: 'm', messages: [] });
    expect(((await empty.json()) as { error: { code: string } }).error.code).toBe('empty_array');
  });

  it('answers 401 without a bearer token', async () => {
    const res = await chat({ model: 'm', messages }, { headers: { 'content-type': 'application/json' } });
    expect(res.status).toBe(401);
    expect(((await res.json()) as { error: { type: string } }).error.type).toBe('invalid_request_error');
    const empty = await chat({ model: 'm', messages }, { headers: { authorization: 'Bearer ' } });
    expect(empty.status).toBe(401);
    expect(emulator.stats()).toMatchObject({ requests: 2, invalid: 2, completed: 0 });
  });

  it('answers 404 to an unknown route, OpenAI-style', async () => {
    const res = await fetch(`${emulator.url}/v1/no-such-endpoint`, { method: 'POST', headers: AUTH, body: '{}' });
    expect(res.status).toBe(404);
    expect(((await res.json()) as { error: { message: string } }).error.message).toBe('Invalid URL (POST /v1/no-such-endpoint)');
  });
});

describe('admin endpoints', () => {
  it('reports stats, applies config live, resets, and answers health', async () => {
    expect((await fetch(`${emulator.url}/health`)).status).toBe(200);
    await (await chat({ model: 'm', messages })).text();
    const stats = (await (await fetch(`${emulator.url}/_emulator/stats`)).json()) as EmulatorStats;
    expect(stats).toMatchObject({ requests: 1, completed: 1 });
    expect(stats.admissions).toHaveLength(1);

    const configured = await fetch(`${emulator.url}/_emulator/config`, { method: 'POST', body: JSON.stringify({ rpm: 7, failureRate: 0.1 }) });
    expect(configured.status).toBe(200);
    expect(emulator.config()).toMatchObject({ rpm: 7, failureRate: 0.1 });
    const refused = await fetch(`${emulator.url}/_emulator/config`, { method: 'POST', body: JSON.stringify({ rmp: 7 }) });
    expect(refused.status).toBe(400);
    const outOfRange = await fetch(`${emulator.url}/_emulator/config`, { method: 'POST', body: JSON.stringify({ failureRate: 2 }) });
    expect(outOfRange.status).toBe(400);

    expect((await fetch(`${emulator.url}/_emulator/reset`, { method: 'POST' })).status).toBe(200);
    expect(emulator.stats()).toMatchObject({ requests: 0, completed: 0, admissions: [] });
  });

  it('replays the same answers for the same seed', async () => {
    const answer = async (): Promise<string> => {
      const body = (await (await chat({ model: 'm', messages })).json()) as { choices: { message: { content: string } }[] };
      return body.choices[0]?.message.content ?? '';
    };
    const first = [await answer(), await answer()];
    emulator.configure({ seed: 42 });
    expect([await answer(), await answer()]).toEqual(first);
  });
});
