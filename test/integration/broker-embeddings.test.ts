// Embed through the llm-broker over gRPC against the emulator's /v1/embeddings: the vectors come
// back whole and in order, the call takes its place in the quota (its request, its inputs' tokens
// settled as billed), failures before the answer are retried, the global concurrency limit holds
// for embeddings as for chats, what no upstream can serve is refused saying why, and with the cache
// asked for only the inputs not stored yet reach the provider. Real processes, real Redis.
import { Metadata, status } from '@grpc/grpc-js';
import Redis from 'ioredis';
import { createClient, detailsOf, f32leFloats, reasonOf } from '@agent-mesh/common';
import { LlmBrokerServiceClient, type EmbedRequest, type EmbedResponse } from '@agent-mesh/common/gen/llmbroker/v1/llm_broker';
import {
  configureEmulator, emulatorStats, promMetric, startEmulator, startRedis, startService, testDir,
  type EmulatorProc, type RedisProc, type ServiceProc,
} from '../support';

jest.setTimeout(120_000);

const KEY = 'sk-embeddings-test';
let dir: string;
let redis: RedisProc;
let emulator: EmulatorProc;
const started: Array<{ proc: ServiceProc; client: LlmBrokerServiceClient }> = [];
let nextDb = 1;

async function startBroker(env: Record<string, string>) {
  const proc = await startService('llm-broker', {
    logDir: dir,
    instance: String(started.length),
    env: { REDIS_URL: `${redis.url}/${nextDb++}`, EMU_KEY: KEY, OTEL_SDK_DISABLED: 'true', LLM_RETRY_BUDGET_BURST: '20', ...env },
  });
  const b = { proc, client: createClient(LlmBrokerServiceClient, proc.addr) };
  started.push(b);
  return b;
}

type Broker = Awaited<ReturnType<typeof startBroker>>;
const embed = (b: Broker, req: Partial<EmbedRequest>) =>
  new Promise<{ res?: EmbedResponse; err?: Error & { code?: number } }>((resolve) =>
    b.client.embed({ userId: 'embed-user', model: 'text-embedding-3-small', inputs: [], dimensions: 0, endUser: '', cache: false, vectorsAsBytes: false, ...req }, new Metadata(), { deadline: new Date(Date.now() + 30_000) }, (err, res) =>
      resolve(err ? { err } : { res }),
    ),
  );
const text = (t: string) => ({ input: { $case: 'text' as const, text: t } });
const tokens = (ids: number[]) => ({ input: { $case: 'tokens' as const, tokens: { ids } } });
const norm = (v: number[]) => Math.sqrt(v.reduce((s, x) => s + x * x, 0));
/** An input's tokens as the provider bills them: one call of it alone, not cached. */
const tokensOf = async (input: ReturnType<typeof text>) => (await embed(broker, { inputs: [input] })).res!.promptTokens;
const metric = (b: Broker, name: string, labels = '') => promMetric(b.proc, name, labels);

let broker: Broker;

beforeAll(async () => {
  dir = testDir('broker-embeddings');
  redis = await startRedis({ logDir: dir });
  // No concurrency cap of its own: the referee counts what the broker lets through.
  emulator = await startEmulator({ logDir: dir, env: { EMULATOR_TTFT_MS: '80', EMULATOR_SEED: '3', EMULATOR_API_KEY: KEY } });
  broker = await startBroker({
    LLM_UPSTREAMS: JSON.stringify([
      { name: 'openai', protocol: 'openai', baseUrl: `${emulator.url}/v1`, keyEnv: 'EMU_KEY', models: ['emulator-1', 'text-embedding-3-small'] },
      { name: 'claude', protocol: 'anthropic', baseUrl: `${emulator.url}/v1`, keyEnv: 'EMU_KEY', models: ['claude-emulated'] },
    ]),
    LLM_MAX_CONCURRENT: '2',
  });
});

afterAll(async () => {
  for (const b of started) {
    b.client.close();
    await b.proc.stop();
  }
  await emulator?.stop();
  await redis?.stop();
});

describe('Embed', () => {
  it('answers one unit vector per input, in order, as the provider made it; its request and tokens are admitted and settled as billed', async () => {
    const before = await emulatorStats(emulator);
    const settledBefore = await metric(broker, 'llm_tokens_total', 'kind="settled",upstream="openai"');
    const { res, err } = await embed(broker, { inputs: [text('How do bees find flowers?'), text('What is a queue?')] });
    expect(err).toBeUndefined();
    const after = await emulatorStats(emulator);
    expect(res!.embeddings).toHaveLength(2);
    for (const e of res!.embeddings) {
      expect(e.values).toHaveLength(1536);
      expect(norm(e.values)).toBeCloseTo(1, 3);
    }
    expect(res!.embeddings[0]!.values).not.toEqual(res!.embeddings[1]!.values);
    expect(res).toMatchObject({ model: 'text-embedding-3-small', upstream: 'openai' });
    // What the provider billed is what the call reports and what the quota settled.
    expect(res!.promptTokens).toBe(after.promptTokens - before.promptTokens);
    expect(res!.promptTokens).toBeGreaterThan(3);
    expect(await metric(broker, 'llm_tokens_total', 'kind="settled",upstream="openai"') - settledBefore).toBe(res!.promptTokens);
    expect(after.requests - before.requests).toBe(1);

    // The provider's vectors, unchanged: the same input twice gives the same vector; `dimensions` shortens them.
    const again = await embed(broker, { inputs: [text('How do bees find flowers?')] });
    expect(again.res!.embeddings[0]!.values).toEqual(res!.embeddings[0]!.values);
    const short = await embed(broker, { inputs: [text('How do bees find flowers?')], dimensions: 64 });
    expect(short.res!.embeddings[0]!.values).toHaveLength(64);
    expect(norm(short.res!.embeddings[0]!.values)).toBeCloseTo(1, 3);
    // Asked as bytes (as the edge asks): the same vectors, each the little-endian bytes of its floats.
    const asBytes = (await embed(broker, { inputs: [text('How do bees find flowers?'), text('What is a queue?')], vectorsAsBytes: true })).res!;
    expect(asBytes.embeddings.map((e) => [e.values.length, e.f32le.length])).toEqual([[0, 1536 * 4], [0, 1536 * 4]]);
    expect(asBytes.embeddings.map((e) => Array.from(f32leFloats(e.f32le)))).toEqual(res!.embeddings.map((e) => e.values));
    // Token ids: one each in the count.
    const ids = await embed(broker, { inputs: [tokens([791, 4062, 14198]), tokens([17])] });
    expect(ids.res!.embeddings.map((e) => e.values.length)).toEqual([1536, 1536]);
    expect(ids.res!.promptTokens).toBe(4);
  });

  it('retries a failure before the answer (a 503 with Retry-After): the caller gets its vectors', async () => {
    const before = await emulatorStats(emulator);
    await configureEmulator(emulator, { armed: { overloaded: 1 } });
    const { res, err } = await embed(broker, { inputs: [text('a retried call')] });
    expect(err).toBeUndefined();
    expect(res!.embeddings).toHaveLength(1);
    const after = await emulatorStats(emulator);
    expect(after.requests - before.requests).toBe(2);
    expect((after.behaviours['overloaded'] ?? 0) - (before.behaviours['overloaded'] ?? 0)).toBe(1);
  });

  it('keeps to the global concurrency limit (2) under 10 calls at once, the provider counting', async () => {
    await fetch(`${emulator.url}/_emulator/reset`, { method: 'POST' });
    const calls = await Promise.all(Array.from({ length: 10 }, (_, i) => embed(broker, { inputs: [text(`question number ${i}`)] })));
    expect(calls.map((c) => c.err?.message)).toEqual(Array.from({ length: 10 }, () => undefined));
    const stats = await emulatorStats(emulator);
    expect(stats.requests).toBe(10);
    expect(stats.maxInFlight).toBe(2);
    expect(stats.rateLimited).toBe(0);
  });

  it('with the cache asked for, reuses each input\'s vector: only the inputs not found go to the provider, all found is no provider call and nothing billed', async () => {
    const [a, b, c] = ['the cached tide', 'the cached queue', 'the new bee'].map(text);
    const hits = () => metric(broker, 'llm_cache_embedding_inputs_total', 'result="hit"');
    const misses = () => metric(broker, 'llm_cache_embedding_inputs_total', 'result="miss"');
    const [hitsBefore, missesBefore] = [await hits(), await misses()];
    // What the provider makes of `c` alone, not cached.
    const alone = (await embed(broker, { inputs: [c!] })).res!;
    const aTokens = await tokensOf(a!);

    let before = await emulatorStats(emulator);
    const first = (await embed(broker, { inputs: [a!, b!], cache: true })).res!;
    let after = await emulatorStats(emulator);
    expect(after.requests - before.requests).toBe(1);
    expect(first).toMatchObject({ cachedInputs: 0, cachedPromptTokens: 0, promptTokens: after.promptTokens - before.promptTokens });

    // Two of three found: the provider embeds `c` only, billing its tokens; the vectors in the asked order.
    before = after;
    const settled = await metric(broker, 'llm_tokens_total', 'kind="settled",upstream="openai"');
    const mixed = (await embed(broker, { inputs: [b!, c!, a!], cache: true })).res!;
    after = await emulatorStats(emulator);
    expect(after.requests - before.requests).toBe(1);
    expect(after.promptTokens - before.promptTokens).toBe(alone.promptTokens);
    expect(mixed).toMatchObject({ cachedInputs: 2, cachedPromptTokens: first.promptTokens, promptTokens: alone.promptTokens });
    expect(mixed.embeddings.map((e) => e.values)).toEqual([first.embeddings[1]!.values, alone.embeddings[0]!.values, first.embeddings[0]!.values]);
    expect(await metric(broker, 'llm_tokens_total', 'kind="settled",upstream="openai"') - settled).toBe(alone.promptTokens);

    // All found: no provider call, nothing admitted or settled.
    before = after;
    const admitted = await metric(broker, 'llm_admissions_total', 'upstream="openai"');
    const all = (await embed(broker, { inputs: [c!, a!], cache: true })).res!;
    expect((await emulatorStats(emulator)).requests).toBe(before.requests);
    expect(all).toMatchObject({ promptTokens: 0, cachedInputs: 2, cachedPromptTokens: alone.promptTokens + aTokens, model: 'text-embedding-3-small', upstream: 'openai' });
    expect(all.embeddings.map((e) => e.values)).toEqual([alone.embeddings[0]!.values, first.embeddings[0]!.values]);
    expect(await metric(broker, 'llm_admissions_total', 'upstream="openai"')).toBe(admitted);
    expect([(await hits()) - hitsBefore, (await misses()) - missesBefore]).toEqual([4, 3]);

    // Another size is another vector; a call that does not ask for the cache goes to the provider.
    before = await emulatorStats(emulator);
    const short = (await embed(broker, { inputs: [a!], dimensions: 64, cache: true })).res!;
    expect(short).toMatchObject({ cachedInputs: 0 });
    expect(short.embeddings[0]!.values).toHaveLength(64);
    await embed(broker, { inputs: [a!] });
    expect((await emulatorStats(emulator)).requests - before.requests).toBe(2);
  });

  it('with the cache, 6 identical calls at once make one provider request: the others get the vectors it stored', async () => {
    const inputs = [text('asked by many at once'), text('and this too')];
    const before = await emulatorStats(emulator);
    const followed = await metric(broker, 'llm_cache_single_flight_total', 'outcome="followed"');
    const calls = await Promise.all(Array.from({ length: 6 }, () => embed(broker, { inputs, cache: true })));
    expect(calls.map((c) => c.err?.message)).toEqual(Array.from({ length: 6 }, () => undefined));
    expect((await emulatorStats(emulator)).requests - before.requests).toBe(1);
    expect(calls.map((c) => c.res!.cachedInputs).sort()).toEqual([0, 2, 2, 2, 2, 2]);
    for (const c of calls) expect(c.res!.embeddings).toEqual(calls[0]!.res!.embeddings);
    expect(await metric(broker, 'llm_cache_single_flight_total', 'outcome="followed"') - followed).toBe(5);
  });

  it('splits a call over the provider\'s 300,000 tokens per request into requests under it, answered as one call (the provider refused it whole)', async () => {
    // 2,048 distinct inputs of ~155 tokens: ~317,000 in all.
    const filler = ' river'.repeat(150);
    const inputs = Array.from({ length: 2048 }, (_, i) => text(`passage ${i}:${filler}`));
    const before = await emulatorStats(emulator);
    const { res, err } = await embed(broker, { inputs });
    expect(err).toBeUndefined();
    const after = await emulatorStats(emulator);
    expect(res!.promptTokens).toBeGreaterThan(300_000);
    expect(after.requests - before.requests).toBe(2);
    expect(after.promptTokens - before.promptTokens).toBe(res!.promptTokens);
    expect(after.invalid - before.invalid).toBe(0);
    // Every vector in its input's place: the last one is what the provider makes of that input alone.
    expect(res!.embeddings).toHaveLength(2048);
    const last = (await embed(broker, { inputs: [inputs[2047]!] })).res!;
    expect(res!.embeddings[2047]!.values).toEqual(last.embeddings[0]!.values);
    // Not split (a cap above the provider's), the provider refuses the call whole.
    const unsplit = await startBroker({
      LLM_UPSTREAMS: JSON.stringify([{ name: 'openai', protocol: 'openai', baseUrl: `${emulator.url}/v1`, keyEnv: 'EMU_KEY', models: ['text-embedding-3-small'] }]),
      LLM_EMBED_BATCH_TOKENS: '1000000',
    });
    const refused = await embed(unsplit, { inputs });
    expect(reasonOf(refused.err!)).toBe('upstream_rejected');
    expect(detailsOf(refused.err!)).toMatch(/max 300000 tokens per request/);
  });

  describe('with a cap of 12 tokens per request (LLM_EMBED_BATCH_TOKENS)', () => {
    let small: Broker;
    const inputs = ['the first of five short inputs', 'the second of five short inputs', 'the third of five short inputs', 'the fourth of five', 'the fifth'].map(text);

    beforeAll(async () => {
      small = await startBroker({
        LLM_UPSTREAMS: JSON.stringify([{ name: 'openai', protocol: 'openai', baseUrl: `${emulator.url}/v1`, keyEnv: 'EMU_KEY', models: ['text-embedding-3-small'] }]),
        LLM_EMBED_BATCH_TOKENS: '12',
      });
    });

    it('asks the provider in batches of at most 12 tokens, in order: the same vectors and tokens as one request', async () => {
      const whole = (await embed(broker, { inputs })).res!;
      const each = await Promise.all(inputs.map(tokensOf));
      // What the batches must be, counted as the provider bills each input.
      let batches = 1;
      for (let i = 1, sum = each[0]!; i < each.length; i += 1) {
        if (sum + each[i]! > 12) [batches, sum] = [batches + 1, 0];
        sum += each[i]!;
      }
      expect(batches).toBeGreaterThan(1);
      const before = await emulatorStats(emulator);
      const { res, err } = await embed(small, { inputs });
      expect(err).toBeUndefined();
      const after = await emulatorStats(emulator);
      expect(after.requests - before.requests).toBe(batches);
      expect(res!.embeddings.map((e) => e.values)).toEqual(whole.embeddings.map((e) => e.values));
      expect(res!.promptTokens).toBe(whole.promptTokens);
      expect(after.promptTokens - before.promptTokens).toBe(whole.promptTokens);
      expect(await metric(small, 'llm_admissions_total', 'upstream="openai"')).toBe(batches);
      // Counted as embeddings requests, one per batch, not as chats.
      expect(await metric(small, 'llm_upstream_requests_total', 'outcome="completed",upstream="openai",api="embeddings"')).toBe(batches);
      expect(await metric(small, 'llm_upstream_requests_total', 'api="chat"')).toBe(0);
    });

    it('with the cache, a call refused in a later batch keeps the vectors it was billed for: asked again, only what failed goes to the provider', async () => {
      const fresh = ['kept after a failure, one', 'kept after a failure, two'].map(text);
      // An input over the model's 8,192 tokens: a batch of its own, refused by the provider.
      const tooLong = text(' tide'.repeat(9_000));
      const failed = await embed(small, { inputs: [...fresh, tooLong], cache: true });
      expect(failed.err?.code).toBe(status.FAILED_PRECONDITION);
      expect(reasonOf(failed.err!)).toBe('upstream_rejected');
      expect(detailsOf(failed.err!)).toMatch(/maximum context length is 8192 tokens/);
      const before = await emulatorStats(emulator);
      const again = (await embed(small, { inputs: [...fresh, text('asked instead of the long one')], cache: true })).res!;
      expect((await emulatorStats(emulator)).requests - before.requests).toBe(1);
      expect(again).toMatchObject({ cachedInputs: 2 });
    });

    it('a caller gone while its first batch\'s vectors are being stored asks none of the other batches', async () => {
      const inputs = ['gone early, one', 'gone early, two', 'gone early, three', 'gone early, four'].map(text);
      const pauser = new Redis(redis.url);
      await configureEmulator(emulator, { ttftMs: 1_000 });
      try {
        const before = await emulatorStats(emulator);
        let result: { err?: Error & { code?: number } } | undefined;
        const call = small.client.embed(
          { userId: 'embed-user', model: 'text-embedding-3-small', inputs, dimensions: 0, endUser: '', cache: true, vectorsAsBytes: false },
          new Metadata(), { deadline: new Date(Date.now() + 30_000) }, (err) => (result = { err: err ?? undefined }),
        );
        // The first batch reached the provider (its lookup, lock and admission are behind it): Redis
        // takes no writes for 1.4 s from now, so its vectors, answered a second later, wait to be
        // stored (the store gives up after 500 ms: it must not), and the caller goes meanwhile.
        while ((await emulatorStats(emulator)).requests === before.requests) await new Promise((r) => setTimeout(r, 10));
        await pauser.call('CLIENT', 'PAUSE', '1400', 'WRITE');
        while ((await emulatorStats(emulator)).completed === before.completed) await new Promise((r) => setTimeout(r, 10));
        await new Promise((r) => setTimeout(r, 150));
        call.cancel();
        // Stored once Redis takes writes again: the other batches, had they been asked, reach the provider then.
        await new Promise((r) => setTimeout(r, 2_000));
        expect(result?.err?.code).toBe(status.CANCELLED);
        expect((await emulatorStats(emulator)).requests - before.requests).toBe(1);
        // The first input's vector was stored (the caller went while that waited, not before).
        expect((await embed(small, { inputs: inputs.slice(0, 1), cache: true })).res).toMatchObject({ cachedInputs: 1 });
      } finally {
        await pauser.call('CLIENT', 'UNPAUSE').catch(() => undefined);
        pauser.disconnect();
        await configureEmulator(emulator, { ttftMs: 80 });
      }
    });
  });

  it('refuses what no upstream serves, saying why: a model the provider does not know (NOT_FOUND), one only an Anthropic upstream lists (INVALID_ARGUMENT), no input', async () => {
    await configureEmulator(emulator, { models: ['emulator-1', 'text-embedding-3-small'] });
    try {
      const unknown = await embed(broker, { model: 'text-embedding-nope', inputs: [text('x')] });
      expect(unknown.err?.code).toBe(status.NOT_FOUND);
      expect(reasonOf(unknown.err!)).toBe('model_not_found');
    } finally {
      await configureEmulator(emulator, { models: [] });
    }
    const before = await emulatorStats(emulator);
    const anthropic = await embed(broker, { model: 'claude-emulated', inputs: [text('x')] });
    expect(anthropic.err?.code).toBe(status.INVALID_ARGUMENT);
    expect(detailsOf(anthropic.err!)).toMatch(/embeddings is not supported by the anthropic protocol/);
    const none = await embed(broker, { inputs: [] });
    expect(none.err?.code).toBe(status.INVALID_ARGUMENT);
    expect(detailsOf(none.err!)).toMatch(/inputs must hold 1 to 2048/);
    const mixed = await embed(broker, { inputs: [text('x'), tokens([1])] });
    expect(detailsOf(mixed.err!)).toMatch(/all texts or all token lists/);
    // What only the provider knows (the model's size) is its 400, passed on.
    const tooLong = await embed(broker, { inputs: [text('x')], dimensions: 4096 });
    expect(tooLong.err?.code).toBe(status.FAILED_PRECONDITION);
    expect(reasonOf(tooLong.err!)).toBe('upstream_rejected');
    expect(detailsOf(tooLong.err!)).toMatch(/dimensions/);
    expect((await emulatorStats(emulator)).requests - before.requests).toBe(1); // the provider's 400 only
  });
});
