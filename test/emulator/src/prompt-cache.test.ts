// Prompt caching: the cache itself (lifetimes, the least recently used dropped, Anthropic's
// lookback), and over HTTP — Anthropic's breakpoints, their usage fields, their refusals and what
// the ITPM counts of them; OpenAI's automatic prefixes in steps of 128 tokens and `cached_tokens`.
import { configFromEnv } from './config';
import { countPromptTokens, countTokens, startEmulator, type RunningEmulator } from './index';
import { anthropicCachePlan, PrefixStore, type CacheBoundary, type CacheTtl } from './prompt-cache';

/** `n` tokens of text (cl100k_base: each " word" one token). */
const words = (n: number, word = 'hello'): string => word + ` ${word}`.repeat(n - 1);
const EPHEMERAL = { type: 'ephemeral' };
/** The tokens of a prefix made of a system prompt alone, as the emulator counts it (3 + 4 + its text). */
const systemPrefix = (text: string): number => countPromptTokens({ messages: [{ role: 'system', content: text }], tools: undefined });

describe('PrefixStore', () => {
  it('keeps an entry for its lifetime, renews it on use for as long again, and never shortens it', () => {
    const clock = { now: 0 };
    const store = new PrefixStore(10, () => clock.now);
    store.put('a', 1_000);
    clock.now = 900;
    expect(store.has('a')).toBe(true);
    store.put('a'); // a read renews it for its own lifetime
    clock.now = 1_800;
    expect(store.has('a')).toBe(true);
    store.put('b', 60_000);
    store.put('b', 1_000); // written again with 5 minutes, an hour's entry keeps its hour
    clock.now = 2_000;
    expect(store.has('a')).toBe(false);
    clock.now = 50_000;
    expect(store.has('b')).toBe(true);
  });

  it('drops the least recently used past its capacity', () => {
    const store = new PrefixStore(2);
    store.put('a', 1_000);
    store.put('b', 1_000);
    store.put('a'); // used: now the newest
    store.put('c', 1_000);
    expect([store.has('a'), store.has('b'), store.has('c'), store.size]).toEqual([true, false, true, 2]);
  });
});

describe('anthropicCachePlan', () => {
  /** Boundaries of 100 tokens each; `marks` maps an index to its breakpoint's lifetime. */
  const boundaries = (n: number, marks: Record<number, CacheTtl>, salt = ''): CacheBoundary[] =>
    Array.from({ length: n }, (_, i) => ({ digest: `${salt}${i}`, ttl: marks[i], tokens: () => (i + 1) * 100 }));
  const settings = { minTokens: 1024, timeScale: 1 };

  it('reads at a stored boundary up to 20 blocks before a breakpoint, not further', () => {
    const store = new PrefixStore(100);
    anthropicCachePlan(boundaries(40, { 10: '5m' }), 'm', 4_000, store, settings).commit(); // stores 1,100 tokens
    expect(anthropicCachePlan(boundaries(40, { 30: '5m' }), 'm', 4_000, store, settings)).toMatchObject({ read: 1_100, creation: 2_000 });
    expect(anthropicCachePlan(boundaries(40, { 31: '5m' }), 'm', 4_000, store, settings)).toMatchObject({ read: 0, creation: 3_200 });
    // Another model has a cache of its own.
    expect(anthropicCachePlan(boundaries(40, { 30: '5m' }), 'other', 4_000, store, settings)).toMatchObject({ read: 0 });
  });

  it('splits the creation by lifetime, stores only on commit, and caches nothing under the minimum', () => {
    const store = new PrefixStore(100);
    const plan = anthropicCachePlan(boundaries(40, { 14: '1h', 29: '5m' }), 'm', 4_000, store, settings);
    expect(plan).toMatchObject({ read: 0, creation: 3_000, creation1h: 1_500 });
    expect(anthropicCachePlan(boundaries(40, { 14: '1h', 29: '5m' }), 'm', 4_000, store, settings).read).toBe(0);
    plan.commit();
    expect(anthropicCachePlan(boundaries(40, { 14: '1h', 29: '5m' }), 'm', 4_000, store, settings)).toMatchObject({ read: 3_000, creation: 0, creation1h: 0 });
    const short = anthropicCachePlan(boundaries(40, { 5: '5m' }, 'x'), 'm', 4_000, store, settings);
    expect(short).toMatchObject({ read: 0, creation: 0 });
    short.commit();
    expect(store.has('x5')).toBe(false);
    expect(store.size).toBe(2);
  });
});

describe('configuration', () => {
  it('reads EMULATOR_CACHE_MIN_TOKENS and EMULATOR_CACHE_READS_LIMITED', () => {
    expect(configFromEnv({})).toMatchObject({ cacheMinTokens: 1024, cacheReadsLimited: false });
    expect(configFromEnv({ EMULATOR_CACHE_MIN_TOKENS: '2048', EMULATOR_CACHE_READS_LIMITED: '1' })).toMatchObject({ cacheMinTokens: 2048, cacheReadsLimited: true });
    expect(() => configFromEnv({ EMULATOR_CACHE_READS_LIMITED: 'yes' })).toThrow(/EMULATOR_CACHE_READS_LIMITED/);
    expect(() => configFromEnv({ EMULATOR_CACHE_MIN_TOKENS: '-1' })).toThrow(/EMULATOR_CACHE_MIN_TOKENS/);
  });
});

let emulator: RunningEmulator;
beforeEach(async () => {
  emulator = await startEmulator({ port: 0, timeScale: 0.02, seed: 42 });
});
afterEach(async () => {
  await emulator.close();
});

const HEADERS = { 'x-api-key': 'test-key', 'anthropic-version': '2023-06-01', 'content-type': 'application/json' };
const post = (body: unknown) => fetch(`${emulator.url}/v1/messages`, { method: 'POST', headers: HEADERS, body: JSON.stringify(body) });

interface Usage {
  input_tokens: number;
  cache_creation_input_tokens: number;
  cache_read_input_tokens: number;
  cache_creation: { ephemeral_5m_input_tokens: number; ephemeral_1h_input_tokens: number };
  output_tokens: number;
}

/** A Messages call not streamed: its status, usage (or error) and headers. */
async function message(body: Record<string, unknown>): Promise<{ status: number; usage: Usage; error: { type: string; message: string }; headers: Headers }> {
  const res = await post({ model: 'claude-emulated', max_tokens: 100, ...body });
  const json = (await res.json()) as { usage: Usage; error: { type: string; message: string } };
  return { status: res.status, usage: json.usage, error: json.error, headers: res.headers };
}

const cached = (u: Usage) => [u.input_tokens, u.cache_creation_input_tokens, u.cache_read_input_tokens];
const total = (u: Usage) => u.input_tokens + u.cache_creation_input_tokens + u.cache_read_input_tokens;

describe('Anthropic prompt caching (POST /v1/messages)', () => {
  const SYSTEM = `You are the Host. ${words(2_000)}`;
  const question = (text = 'How do libraries plan opening hours?') => [{ role: 'user', content: text }];
  const cachedSystem = (text = SYSTEM, ttl?: string) => [{ type: 'text', text, cache_control: ttl ? { ...EPHEMERAL, ttl } : EPHEMERAL }];

  it('writes a marked system prompt on the first call and reads it on the second; the three add up to the prompt both times', async () => {
    const prefix = systemPrefix(SYSTEM);
    const uncached = await message({ system: SYSTEM, messages: question() });
    const first = await message({ system: cachedSystem(), messages: question() });
    expect(first.status).toBe(200);
    expect(cached(first.usage)).toEqual([total(uncached.usage) - prefix, prefix, 0]);
    expect(first.usage.cache_creation).toEqual({ ephemeral_5m_input_tokens: prefix, ephemeral_1h_input_tokens: 0 });
    const second = await message({ system: cachedSystem(), messages: question() });
    expect(cached(second.usage)).toEqual([total(uncached.usage) - prefix, 0, prefix]);
    expect(total(second.usage)).toBe(total(uncached.usage));
    expect(emulator.stats()).toMatchObject({ cacheCreationTokens: prefix, cacheReadTokens: prefix, promptTokens: 3 * total(uncached.usage) });
  });

  it('streams the split in message_start and again in message_delta', async () => {
    const body = { model: 'claude-emulated', max_tokens: 100, stream: true, system: cachedSystem(SYSTEM, '1h'), messages: question() };
    await (await post(body)).text();
    const text = await (await post(body)).text();
    const data = text.split('\n\n').filter((b) => b.trim() !== '').map((b) => JSON.parse(b.split('\n')[1]!.slice('data: '.length)) as Record<string, any>);
    const start = data.find((e) => e.type === 'message_start')!.message.usage as Usage;
    const delta = data.find((e) => e.type === 'message_delta')!.usage as Usage;
    const prefix = systemPrefix(SYSTEM);
    expect(start).toMatchObject({ cache_creation_input_tokens: 0, cache_read_input_tokens: prefix, cache_creation: { ephemeral_5m_input_tokens: 0, ephemeral_1h_input_tokens: 0 } });
    expect(delta).toEqual({ input_tokens: start.input_tokens, cache_creation_input_tokens: 0, cache_read_input_tokens: prefix, output_tokens: expect.any(Number) });
  });

  it('does not cache a prefix under the minimum (EMULATOR_CACHE_MIN_TOKENS), silently', async () => {
    const short = words(500, 'cache');
    for (let i = 0; i < 2; i++) {
      const { status, usage } = await message({ system: cachedSystem(short), messages: question() });
      expect(status).toBe(200);
      expect(usage).toMatchObject({ cache_creation_input_tokens: 0, cache_read_input_tokens: 0 });
    }
    emulator.configure({ cacheMinTokens: 256 });
    await message({ system: cachedSystem(short), messages: question() });
    expect((await message({ system: cachedSystem(short), messages: question() })).usage.cache_read_input_tokens).toBe(systemPrefix(short));
  });

  it('forgets a prefix once its lifetime (5 minutes × the time scale) has passed without use', async () => {
    emulator.configure({ timeScale: 0.001 }); // 5 minutes: 300 ms
    await message({ system: cachedSystem(), messages: question() });
    expect((await message({ system: cachedSystem(), messages: question() })).usage.cache_read_input_tokens).toBeGreaterThan(0);
    await new Promise((r) => setTimeout(r, 450));
    const late = await message({ system: cachedSystem(), messages: question() });
    expect(late.usage).toMatchObject({ cache_read_input_tokens: 0, cache_creation_input_tokens: systemPrefix(SYSTEM) });
  });

  it('with the breakpoint moved later, reads the earlier prefix and writes the rest', async () => {
    const prefix = systemPrefix(SYSTEM);
    await message({ system: cachedSystem(), messages: question() });
    const turns = [
      { role: 'user', content: [{ type: 'text', text: 'How do libraries plan opening hours?', cache_control: EPHEMERAL }] },
      { role: 'assistant', content: 'They count visitors.' },
      { role: 'user', content: 'And on holidays?' },
    ];
    const through = countPromptTokens({ messages: [{ role: 'system', content: SYSTEM }, { role: 'user', content: 'How do libraries plan opening hours?' }], tools: undefined });
    const moved = await message({ system: SYSTEM, messages: turns });
    expect(moved.usage).toMatchObject({ cache_read_input_tokens: prefix, cache_creation_input_tokens: through - prefix });
    expect(moved.usage.input_tokens).toBeGreaterThan(0);
    const again = await message({ system: SYSTEM, messages: turns });
    expect(cached(again.usage)).toEqual([moved.usage.input_tokens, 0, through]);
  });

  it('caches tools first: another tool, another prefix for the same system prompt', async () => {
    const tool = (name: string) => ({ name, description: 'Search the web', input_schema: { type: 'object', properties: { query: { type: 'string' } } } });
    await message({ tools: [tool('search_web')], system: cachedSystem(), messages: question() });
    expect((await message({ tools: [tool('search_web')], system: cachedSystem(), messages: question() })).usage.cache_read_input_tokens).toBeGreaterThan(systemPrefix(SYSTEM));
    expect((await message({ tools: [tool('search_news')], system: cachedSystem(), messages: question() })).usage.cache_read_input_tokens).toBe(0);
  });

  it('refuses a fifth breakpoint, another ttl or type, and an hour after 5 minutes, in Anthropic\'s words', async () => {
    const text = (t: string, cache_control: unknown = EPHEMERAL) => ({ type: 'text', text: t, cache_control });
    const five = await message({ system: [text('a'), text('b')], messages: [{ role: 'user', content: [text('c'), text('d'), text('e')] }] });
    expect(five.status).toBe(400);
    expect(five.error).toEqual({ type: 'invalid_request_error', message: 'A maximum of 4 blocks with cache_control may be provided. Found 5.' });
    const ttl = await message({ system: [text('a', { type: 'ephemeral', ttl: '10m' })], messages: question() });
    expect([ttl.status, ttl.error]).toEqual([400, { type: 'invalid_request_error', message: "system.0.cache_control.ttl: Input should be '5m' or '1h'" }]);
    const type = await message({ messages: [{ role: 'user', content: [text('a', { type: 'persistent' })] }] });
    expect([type.status, type.error.message]).toEqual([400, "messages.0.content.0.cache_control.type: Input should be 'ephemeral'"]);
    const order = await message({ system: [text('a')], messages: [{ role: 'user', content: [text('b', { type: 'ephemeral', ttl: '1h' })] }] });
    expect(order.status).toBe(400);
    expect(order.error.message).toMatch(/^messages\.0\.content\.0\.cache_control\.ttl: a ttl='1h' cache_control block must not come after a ttl='5m' cache_control block\./);
    expect((await message({ system: [text('a', null)], messages: question() })).status).toBe(200);
  });
});

describe('Anthropic\'s ITPM and the prompt cache', () => {
  const SYSTEM = `You are the Host. ${words(1_900)}`;
  const body = { system: [{ type: 'text', text: SYSTEM, cache_control: EPHEMERAL }], messages: [{ role: 'user', content: words(90, 'question') }] };

  async function twice(readsLimited: boolean) {
    emulator.configure({ timeScale: 1, ttftMs: 1, tokensPerSec: 100_000 });
    const probe = await message(body);
    const prompt = total(probe.usage);
    emulator.reset(); // the probe's charge and its cache entry gone
    // An ITPM that admits one such prompt a window, and a little more.
    emulator.configure({ tpm: prompt + 150, otpm: 100_000, cacheReadsLimited: readsLimited });
    const first = await message(body);
    expect(first.status).toBe(200);
    expect(first.headers.get('anthropic-ratelimit-input-tokens-remaining')).toBe('150');
    return { prompt, second: await message(body) };
  }

  it('does not count the tokens read from the cache: a second call of the same long prompt passes, charged its uncached part', async () => {
    const { prompt, second } = await twice(false);
    expect(second.status).toBe(200);
    const read = second.usage.cache_read_input_tokens;
    expect(read).toBe(systemPrefix(SYSTEM));
    expect(second.usage.input_tokens).toBe(prompt - read);
    expect(second.headers.get('anthropic-ratelimit-input-tokens-remaining')).toBe(String(150 - (prompt - read)));
    expect(emulator.stats()).toMatchObject({ inputTokensCharged: prompt + (prompt - read), promptTokens: 2 * prompt, cacheReadTokens: read, cacheCreationTokens: read });
  });

  it('with EMULATOR_CACHE_READS_LIMITED, counts them as well: the second call is refused', async () => {
    const { second } = await twice(true);
    expect(second.status).toBe(429);
    expect(second.error.message).toMatch(/input tokens per minute/);
  });
});

describe('OpenAI prompt caching (POST /v1/chat/completions)', () => {
  const chat = async (content: string, stream = false) => {
    const res = await fetch(`${emulator.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: 'Bearer test-key', 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'gpt-emulated', messages: [{ role: 'user', content }], ...(stream ? { stream, stream_options: { include_usage: true } } : {}) }),
    });
    const text = await res.text();
    const body = stream ? JSON.parse(text.split('\n\n').filter((l) => l.includes('"usage":{'))[0]!.slice('data: '.length)) : JSON.parse(text);
    return body.usage as { prompt_tokens: number; prompt_tokens_details: { cached_tokens: number } };
  };
  // 3 + 4 + 1,493 = 1,500 prompt tokens.
  const PROMPT = words(1_493);

  it('caches a prompt of 1,024 tokens or more on its own, in steps of 128 tokens: 1,408 of 1,500 on the second call', async () => {
    const first = await chat(PROMPT);
    expect(first).toMatchObject({ prompt_tokens: 1_500, prompt_tokens_details: { cached_tokens: 0 } });
    expect(await chat(PROMPT)).toMatchObject({ prompt_tokens: 1_500, prompt_tokens_details: { cached_tokens: 1_408 } });
    expect(await chat(PROMPT, true)).toMatchObject({ prompt_tokens: 1_500, prompt_tokens_details: { cached_tokens: 1_408 } });
    // The first 1,197 tokens the same (4 of the message's, 1,193 of text): 1,152 read.
    expect((await chat(`${words(1_193)} ${words(300, 'world')}`)).prompt_tokens_details.cached_tokens).toBe(1_152);
    // The TPM counts every prompt token, cached or not.
    expect(emulator.stats()).toMatchObject({ cacheReadTokens: 1_408 * 2 + 1_152, cacheCreationTokens: 0 });
    expect(emulator.stats().inputTokensCharged).toBe(emulator.stats().promptTokens);
  });

  it('does not tokenize or cache a prompt under the minimum', async () => {
    const short = words(1_000);
    await chat(short);
    expect((await chat(short)).prompt_tokens_details.cached_tokens).toBe(0);
    expect(countTokens(short)).toBe(1_000);
  });
});
