// The llm-broker's provider seam on real processes, real Redis and the emulator (which speaks both
// protocols): the same calls end to end through an OpenAI-compatible and an Anthropic upstream
// (text, tool calls and their results, usage, an in-stream error, a retried 529), and fallback
// with LLM_UPSTREAMS — the first upstream's breaker open, or its queue unable to admit a call
// before the call's deadline: the next serves it and `Done.upstream` names it.
import { status } from '@grpc/grpc-js';
import { createClient, detailsOf, reasonOf } from '@agent-mesh/common';
import { CacheStatus, LlmBrokerServiceClient, ToolChoiceMode, type GenerateRequest } from '@agent-mesh/common/gen/llmbroker/v1/llm_broker';
import {
  configureEmulator, emulatorStats, freePort, generateRequest, promMetric, runGenerate, startEmulator, startRedis, startService, testDir,
  type EmulatorProc, type GenerateOutcome, type RedisProc, type ServiceProc,
} from '../support';
import { minimalImage } from '@agent-mesh/emulator';

jest.setTimeout(120_000);

const KEY = 'emulator-key-1';
const SEARCH = { name: 'search_web', description: 'Search the web', parametersJsonSchema: JSON.stringify({ type: 'object', properties: { query: { type: 'string' } } }), cacheTtl: '' };

let dir: string;
let redis: RedisProc;
let emulator: EmulatorProc;
const started: Array<{ proc: ServiceProc; client: LlmBrokerServiceClient }> = [];
let nextDb = 1;

async function startBroker(upstreams: unknown[], env: Record<string, string> = {}) {
  const proc = await startService('llm-broker', {
    logDir: dir,
    instance: String(started.length),
    env: {
      REDIS_URL: `${redis.url}/${nextDb++}`,
      LLM_UPSTREAMS: JSON.stringify(upstreams),
      EMU_KEY: KEY,
      WRONG_KEY: 'not-the-key',
      OTEL_SDK_DISABLED: 'true',
      ...env,
    },
  });
  const b = { proc, client: createClient(LlmBrokerServiceClient, proc.addr) };
  started.push(b);
  return b;
}

const doneOf = (o: GenerateOutcome) => {
  const u = o.messages.at(-1)?.update;
  return u?.$case === 'done' ? u.done : undefined;
};
const text = (o: GenerateOutcome) => o.messages.map((m) => (m.update?.$case === 'delta' ? m.update.delta.content : '')).join('');
const metric = (b: ServiceProc, name: string, labels = '') => promMetric(b, name, labels);

beforeAll(async () => {
  dir = testDir('broker-providers');
  redis = await startRedis({ logDir: dir });
  emulator = await startEmulator({
    logDir: dir,
    env: { EMULATOR_TTFT_MS: '50', EMULATOR_TOKENS_PER_SEC: '400', EMULATOR_COMPLETION_TOKENS: '40', EMULATOR_SEED: '11', EMULATOR_API_KEY: KEY },
  });
});

afterAll(async () => {
  for (const b of started) {
    b.client.close();
    await b.proc.stop().catch(() => undefined);
  }
  await emulator?.stop();
  await redis?.stop();
});

describe.each([
  ['openai', 'emulator-1'],
  ['anthropic', 'claude-emulated'],
])('the %s protocol end to end through the broker', (protocol, model) => {
  let broker: Awaited<ReturnType<typeof startBroker>>;
  const ask = (question: string, over: Partial<GenerateRequest> = {}) => generateRequest(question, { model, ...over });

  beforeAll(async () => {
    // One upstream, on its own: `protocol` is all that differs between the two runs.
    broker = await startBroker([{ name: protocol, protocol, baseUrl: `${emulator.url}/v1`, keyEnv: 'EMU_KEY', models: [model], rpm: 100000, maxConcurrent: 20 }]);
  });

  it('streams a text answer, with the usage the provider billed and the upstream that served it', async () => {
    const before = await emulatorStats(emulator);
    const o = await runGenerate(broker.client, ask('How should a small library plan its opening hours?'));
    expect(o.error).toBeUndefined();
    const done = doneOf(o)!;
    expect(text(o).length).toBeGreaterThan(20);
    expect(done).toMatchObject({ finishReason: 'stop', upstream: protocol, model });
    expect(done.usage!.promptTokens).toBeGreaterThan(10);
    expect(done.usage!.completionTokens).toBeGreaterThan(5);
    expect(done.usage!.totalTokens).toBe(done.usage!.promptTokens + done.usage!.completionTokens);
    const after = await emulatorStats(emulator);
    expect(after.requests - before.requests).toBe(1);
    // What the provider charged is what the broker settled.
    expect(await metric(broker.proc, 'llm_tokens_total', `kind="settled"`)).toBeGreaterThanOrEqual(done.usage!.totalTokens);
  });

  it('a caller that does not stream (no_stream): the same answer and usage, the provider asked for the whole answer', async () => {
    const before = (await emulatorStats(emulator)).byMode;
    const o = await runGenerate(broker.client, ask('How should a small library plan its opening hours?', { noStream: true }));
    expect(o.error).toBeUndefined();
    const done = doneOf(o)!;
    expect(text(o).length).toBeGreaterThan(20);
    expect(done).toMatchObject({ finishReason: 'stop', upstream: protocol, model });
    expect(done.usage!.completionTokens).toBeGreaterThan(5);
    expect(done.usage!.totalTokens).toBe(done.usage!.promptTokens + done.usage!.completionTokens);
    const after = (await emulatorStats(emulator)).byMode;
    expect(after).toEqual({ stream: before.stream, whole: before.whole + 1 });
    const tools = await runGenerate(broker.client, ask('Search the latest news about solar power', { tools: [SEARCH], noStream: true }));
    expect(doneOf(tools)).toMatchObject({ finishReason: 'tool_calls', toolCalls: [{ name: 'search_web', argumentsJson: expect.stringMatching(/solar/i) }] });
    expect(doneOf(tools)!.usage!.completionTokens).toBeGreaterThan(0);
    expect((await emulatorStats(emulator)).byMode).toEqual({ stream: before.stream, whole: before.whole + 2 });
  });

  it('offers typed tools, gets a tool call back, and answers the tool result in a second call', async () => {
    const q = 'Search the latest news about solar power';
    const first = await runGenerate(broker.client, ask(q, { tools: [SEARCH] }));
    expect(first.error).toBeUndefined();
    const d1 = doneOf(first)!;
    expect(d1.finishReason).toBe('tool_calls');
    expect(d1.toolCalls).toHaveLength(1);
    const call = d1.toolCalls[0]!;
    expect(call.name).toBe('search_web');
    expect(JSON.parse(call.argumentsJson)).toMatchObject({ query: expect.stringMatching(/solar/i) });
    // Asked for as they come, the same call in pieces: named first, then its arguments as generated.
    const streamed = await runGenerate(broker.client, ask(q, { tools: [SEARCH], streamToolCalls: true }));
    const pieces = streamed.messages.flatMap((m) => (m.update?.$case === 'toolCall' ? [m.update.toolCall] : []));
    expect(pieces[0]).toMatchObject({ index: 0, id: doneOf(streamed)!.toolCalls[0]!.id, name: 'search_web' });
    expect(pieces.length).toBeGreaterThan(2);
    expect(pieces.map((p) => p.arguments).join('')).toBe(doneOf(streamed)!.toolCalls[0]!.argumentsJson);
    const base = ask(q, { tools: [SEARCH] });
    const second = await runGenerate(broker.client, {
      ...base,
      messages: [
        ...base.messages,
        { role: 'assistant', content: '', name: '', toolCallId: '', toolCalls: [call], cacheTtl: '', thinking: [] },
        { role: 'tool', content: JSON.stringify({ results: ['Rooftop panels doubled in the region'] }), name: '', toolCallId: call.id, toolCalls: [], cacheTtl: '', thinking: [] },
      ],
    });
    expect(second.error).toBeUndefined();
    expect(doneOf(second)).toMatchObject({ finishReason: 'stop', upstream: protocol, toolCalls: [] });
    // The emulator quotes the tool result it received: the result reached it in this protocol's shape.
    expect(text(second)).toContain('Rooftop panels');
  });

  it('passes tool_choice on: none answers in text, a named function or required makes a call the question alone does not', async () => {
    const choose = (mode: ToolChoiceMode, functionName = '') => ({ tools: [SEARCH], toolChoice: { mode, functionName } });
    const plain = 'How should a small library plan its opening hours?';
    // Left to choose, the model answers this question in text…
    expect(doneOf(await runGenerate(broker.client, ask(plain, { tools: [SEARCH] })))?.toolCalls).toEqual([]);
    // …and calls the tool when told to.
    const named = await runGenerate(broker.client, ask(plain, choose(ToolChoiceMode.TOOL_CHOICE_MODE_FUNCTION, 'search_web')));
    expect(doneOf(named)?.toolCalls.map((c) => c.name)).toEqual(['search_web']);
    const required = await runGenerate(broker.client, ask(plain, choose(ToolChoiceMode.TOOL_CHOICE_MODE_REQUIRED)));
    expect(doneOf(required)?.toolCalls.map((c) => c.name)).toEqual(['search_web']);
    // A question that makes the call when left to choose answers in text with none.
    const search = 'Search the latest news about solar power';
    expect(doneOf(await runGenerate(broker.client, ask(search, { tools: [SEARCH] })))?.toolCalls).toHaveLength(1);
    const none = await runGenerate(broker.client, ask(search, choose(ToolChoiceMode.TOOL_CHOICE_MODE_NONE)));
    expect(doneOf(none)?.toolCalls).toEqual([]);
    expect(text(none).length).toBeGreaterThan(0);
    // A named function that is not among the tools is refused before the provider is asked.
    const before = (await emulatorStats(emulator)).requests;
    const wrong = await runGenerate(broker.client, ask(plain, choose(ToolChoiceMode.TOOL_CHOICE_MODE_FUNCTION, 'get_weather')));
    expect(wrong.error?.code).toBe(status.INVALID_ARGUMENT);
    expect(detailsOf(wrong.error)).toMatch(/get_weather.*not one of the tools/);
    expect((await emulatorStats(emulator)).requests).toBe(before);
  });

  it('passes parallel_tool_calls: false on (one call where the model makes two), and only with tools', async () => {
    const search = 'Search the latest news about solar power';
    await configureEmulator(emulator, { behaviours: { parallel_tool_calls: 1 } });
    try {
      const calls = async (over: Partial<GenerateRequest>) => doneOf(await runGenerate(broker.client, ask(search, { tools: [SEARCH], ...over })))?.toolCalls.length;
      expect(await calls({})).toBe(2);
      expect(await calls({ parallelToolCalls: true })).toBe(2);
      expect(await calls({ parallelToolCalls: false })).toBe(1);
      // Without tools it changes nothing, and is not sent (OpenAI refuses it without tools).
      const plain = await runGenerate(broker.client, ask('How should a small library plan its opening hours?', { parallelToolCalls: false }));
      expect(plain.error).toBeUndefined();
      expect(doneOf(plain)?.finishReason).toBe('stop');
    } finally {
      await configureEmulator(emulator, { behaviours: {} });
    }
  });

  it('passes stop (the answer ends where it begins), top_p and a json_schema response format (Anthropic\'s output_config.format) on; seed, penalties and JSON mode to OpenAI, and Anthropic, which has none of them, refuses them', async () => {
    const question = 'How should a small library plan its opening hours?';
    // The emulator restarted on one seed gives the same answer to the same request: the cut is exact.
    const answer = async (over: Partial<GenerateRequest>) => {
      await configureEmulator(emulator, { seed: 99 });
      return runGenerate(broker.client, ask(question, over));
    };
    try {
      const whole = text(await answer({ topP: 0.5 }));
      // A word of the answer's, after a space, some way into it.
      const stop = / \w{4,}/.exec(whole.slice(20))![0];
      const at = whole.indexOf(stop);
      expect(at).toBeGreaterThan(0);
      const cut = await answer({ topP: 0.5, stop: ['zz no such words zz', stop] });
      expect(text(cut)).toBe(whole.slice(0, at));
      expect(doneOf(cut)?.finishReason).toBe('stop');
      // Which sequence ended it: Anthropic's Messages API says (stop_sequence); OpenAI's finish_reason does not.
      expect(doneOf(cut)?.stopSequence).toBe(protocol === 'anthropic' ? stop : undefined);
    } finally {
      await configureEmulator(emulator, { seed: 11 });
    }
    // Structured output on either protocol: the answer is JSON with the schema's properties.
    const schema = { type: 'object', properties: { name: { type: 'string' }, size: { type: 'integer' } }, required: ['name', 'size'], additionalProperties: false };
    const shaped = await runGenerate(broker.client, ask('What is a queue?', { responseFormatJson: JSON.stringify({ type: 'json_schema', json_schema: { name: 'thing', schema, strict: true } }) }));
    expect(shaped.error).toBeUndefined();
    expect(JSON.parse(text(shaped))).toEqual({ name: expect.any(String), size: expect.any(Number) });
    if (protocol === 'openai') {
      const json = await runGenerate(broker.client, ask('Answer in JSON: what is a queue?', { responseFormatJson: '{"type":"json_object"}', presencePenalty: 0.5, frequencyPenalty: 0.5 }));
      expect(JSON.parse(text(json))).toEqual({ answer: expect.any(String) });
      const seeded = async (seed: number) => text(await runGenerate(broker.client, ask(question, { seed })));
      const first = await seeded(5);
      expect(await seeded(5)).toBe(first);
      expect(await seeded(6)).not.toBe(first);
    } else {
      const before = (await emulatorStats(emulator)).requests;
      const refused = await runGenerate(broker.client, ask(question, { seed: 5 }));
      expect(refused.error?.code).toBe(status.INVALID_ARGUMENT);
      expect(detailsOf(refused.error)).toMatch(/seed is not supported by the anthropic protocol/);
      for (const over of [{ presencePenalty: 0.5 }, { frequencyPenalty: 0.5 }, { responseFormatJson: '{"type":"json_object"}' }]) {
        expect((await runGenerate(broker.client, ask(question, over))).error?.code).toBe(status.INVALID_ARGUMENT);
      }
      expect((await emulatorStats(emulator)).requests).toBe(before);
    }
  });

  it('passes top_k on to Anthropic (1: the likeliest tokens, the same answer to the same prompt); OpenAI, which has none, refuses it before it is asked', async () => {
    const question = `What makes a good bus timetable? (${protocol} top_k)`;
    if (protocol === 'openai') {
      const before = (await emulatorStats(emulator)).requests;
      const refused = await runGenerate(broker.client, ask(question, { topK: 1 }));
      expect(refused.error?.code).toBe(status.INVALID_ARGUMENT);
      expect(detailsOf(refused.error)).toMatch(/top_k is not supported by the openai protocol/);
      expect((await emulatorStats(emulator)).requests).toBe(before);
      return;
    }
    const greedy = [text(await runGenerate(broker.client, ask(question, { topK: 1 }))), text(await runGenerate(broker.client, ask(question, { topK: 1 })))];
    expect(greedy[0]!.length).toBeGreaterThan(0);
    expect(greedy[1]).toBe(greedy[0]);
    // Sampled from more than the likeliest: each answer its own.
    expect(text(await runGenerate(broker.client, ask(question, { topK: 40 })))).not.toBe(text(await runGenerate(broker.client, ask(question, { topK: 40 }))));
    expect((await runGenerate(broker.client, ask(question, { topK: -1 }))).error?.code).toBe(status.INVALID_ARGUMENT);
  });

  it('extended thinking: what Anthropic refuses beside it is refused before the queue, on either protocol; Anthropic streams the thinking, signed, before the answer; OpenAI refuses it', async () => {
    const question = `Why do trams need priority at lights? (${protocol} thinking)`;
    const before = (await emulatorStats(emulator)).requests;
    const refusals: [Partial<GenerateRequest>, RegExp][] = [
      [{ thinkingBudgetTokens: 512, maxTokens: 4096 }, /at least 1024/],
      [{ thinkingBudgetTokens: 2048, maxTokens: 2048 }, /max_tokens \(2048\) must be greater than thinking_budget_tokens \(2048\)/],
      [{ thinkingBudgetTokens: 1024, maxTokens: 4096, temperature: 0.5, hasTemperature: true }, /temperature may only be 1 with extended thinking/],
      [{ thinkingAdaptive: true, topK: 5 }, /top_k may not be set with extended thinking/],
      [{ thinkingAdaptive: true, thinkingBudgetTokens: 1024, maxTokens: 4096 }, /adaptive or has a budget/],
      [{ effort: 'huge' }, /effort must be low, medium, high, xhigh or max/],
    ];
    for (const [over, said] of refusals) {
      const refused = await runGenerate(broker.client, ask(question, over));
      expect(refused.error?.code).toBe(status.INVALID_ARGUMENT);
      expect(detailsOf(refused.error)).toMatch(said);
    }
    const thinking = { thinkingAdaptive: true, effort: 'low', maxTokens: 2048 };
    if (protocol === 'openai') {
      expect(detailsOf((await runGenerate(broker.client, ask(question, thinking))).error)).toMatch(/thinking is not supported by the openai protocol/);
      expect((await emulatorStats(emulator)).requests).toBe(before);
      return;
    }
    expect((await emulatorStats(emulator)).requests).toBe(before);
    const answered = await runGenerate(broker.client, ask(question, thinking));
    const kinds = answered.messages.map((u) => u.update?.$case).filter((k) => k === 'thinking' || k === 'delta');
    expect(kinds[0]).toBe('thinking');
    expect(kinds.lastIndexOf('thinking')).toBeLessThan(kinds.indexOf('delta'));
    const pieces = answered.messages.flatMap((u) => (u.update?.$case === 'thinking' ? [u.update.thinking] : []));
    expect(pieces.filter((p) => p.signature)).toHaveLength(1);
    expect(pieces.map((p) => p.text).join('').length).toBeGreaterThan(20);
  });

  it("the caller's Anthropic betas: sent on by Anthropic's protocol (a name the provider does not know refused by it, its message passed on), not sent by OpenAI's; a name that cannot be one refused before the queue", async () => {
    const question = `Why do ferries run late? (${protocol} betas)`;
    const betasSeen = async () => (await emulatorStats(emulator)).byBeta;
    const before = await betasSeen();
    const answered = await runGenerate(broker.client, ask(question, { anthropicBetas: ['context-1m-2025-08-07', 'Token-Efficient-Tools-2025-02-19'] }));
    expect(answered.error).toBeUndefined();
    expect(text(answered).length).toBeGreaterThan(0);
    const unknown = await runGenerate(broker.client, ask(question, { anthropicBetas: ['not-a-beta-2099-01-01'] }));
    const after = await betasSeen();
    if (protocol === 'anthropic') {
      expect([after['context-1m-2025-08-07']! - (before['context-1m-2025-08-07'] ?? 0), after['token-efficient-tools-2025-02-19']! - (before['token-efficient-tools-2025-02-19'] ?? 0)]).toEqual([1, 1]);
      // The provider's refusal (upstream_rejected), its message passed on.
      expect(unknown.error?.code).toBe(status.FAILED_PRECONDITION);
      expect(detailsOf(unknown.error)).toContain('Unexpected value(s) `not-a-beta-2099-01-01` for the `anthropic-beta` header');
    } else {
      // OpenAI's API has no betas: none named to it, and a name Anthropic would refuse is no matter.
      expect(after).toEqual(before);
      expect(unknown.error).toBeUndefined();
    }
    const requests = (await emulatorStats(emulator)).requests;
    for (const anthropicBetas of [['not a beta'], Array.from({ length: 33 }, (_, i) => `beta-${i}`)]) {
      const refused = await runGenerate(broker.client, ask(question, { anthropicBetas }));
      expect(refused.error?.code).toBe(status.INVALID_ARGUMENT);
      expect(detailsOf(refused.error)).toMatch(/anthropic_betas are up to 32 names/);
    }
    expect((await emulatorStats(emulator)).requests).toBe(requests);
  });

  it('passes logprobs on to OpenAI: each delta carries its tokens\' figures, Done all of them for a caller that does not stream, a cached answer the same; Anthropic refuses them', async () => {
    const question = `How do tides work? (${protocol} logprobs)`;
    const asked = { seed: 8, logprobs: true, topLogprobs: 2 };
    if (protocol === 'anthropic') {
      const before = (await emulatorStats(emulator)).requests;
      const refused = await runGenerate(broker.client, ask(question, { logprobs: true }));
      expect(refused.error?.code).toBe(status.INVALID_ARGUMENT);
      expect(detailsOf(refused.error)).toMatch(/logprobs is not supported by the anthropic protocol/);
      expect((await emulatorStats(emulator)).requests).toBe(before);
      return;
    }
    const deltas = (o: GenerateOutcome) => o.messages.flatMap((m) => (m.update?.$case === 'delta' ? [m.update.delta] : []));
    const streamed = await runGenerate(broker.client, ask(question, { ...asked, cache: true }));
    expect(doneOf(streamed)?.cache).toBe(CacheStatus.CACHE_STATUS_MISS);
    for (const d of deltas(streamed)) expect(d.logprobs.map((l) => l.token).join('')).toBe(d.content);
    const figures = deltas(streamed).flatMap((d) => d.logprobs);
    expect(figures.length).toBeGreaterThan(5);
    expect(figures.every((l) => l.logprob <= 0 && l.topLogprobs.length === 2)).toBe(true);
    // The whole answer at once: the same figures, in Done.
    const whole = await runGenerate(broker.client, ask(question, { ...asked, noStream: true, answerInDone: true }));
    expect(doneOf(whole)?.logprobs).toEqual(figures);
    // From the response cache: replayed with them.
    const replayed = await runGenerate(broker.client, ask(question, { ...asked, cache: true }));
    expect(doneOf(replayed)?.cache).toBe(CacheStatus.CACHE_STATUS_HIT);
    expect(deltas(replayed)).toEqual(deltas(streamed));
    // Not asked: none.
    expect(deltas(await runGenerate(broker.client, ask(question, { seed: 8 }))).every((d) => d.logprobs.length === 0)).toBe(true);
  });

  it('passes reasoning_effort (its thinking billed as completion tokens), logit_bias and verbosity (the answer\'s length) on to OpenAI; Anthropic thinks adaptively at that effort (refusing what it refuses beside thinking before it is asked), and refuses the other two', async () => {
    const question = 'How should a small library plan its opening hours?';
    const usage = async (over: Partial<GenerateRequest>) => {
      const o = await runGenerate(broker.client, ask(question, protocol === 'openai' ? { seed: 21, ...over } : over));
      const thought = o.messages.flatMap((u) => (u.update?.$case === 'thinking' ? [u.update.thinking] : []));
      return { error: o.error, completion: doneOf(o)?.usage?.completionTokens ?? 0, reasoning: doneOf(o)?.usage?.reasoningTokens, text: text(o), thought };
    };
    if (protocol === 'anthropic') {
      const before = (await emulatorStats(emulator)).requests;
      for (const over of [{ logitBias: { '50256': -100 } }, { verbosity: 'low' }, { reasoningEffort: 'high', thinkingAdaptive: true }, { reasoningEffort: 'low', effort: 'low' }] as Partial<GenerateRequest>[]) {
        expect((await usage(over)).error?.code).toBe(status.INVALID_ARGUMENT);
      }
      // What Anthropic refuses beside thinking, refused before it is asked, as for thinking itself.
      const sampled = await usage({ reasoningEffort: 'high', temperature: 0.2, hasTemperature: true });
      expect(sampled.error?.code).toBe(status.INVALID_ARGUMENT);
      expect(detailsOf(sampled.error)).toMatch(/reasoning_effort high \(adaptive thinking\), where temperature may only be 1, is not supported by the anthropic protocol/);
      expect((await emulatorStats(emulator)).requests).toBe(before);
      // At none it does not think: sampling is the caller's.
      expect((await usage({ reasoningEffort: 'none', temperature: 0.2, hasTemperature: true })).error).toBeUndefined();
      // reasoning_effort is adaptive thinking at that effort: signed thinking first, longer the more the effort; minimal thinks not at all.
      const [low, high, minimal, none, xhigh] = [
        await usage({ reasoningEffort: 'low' }), await usage({ reasoningEffort: 'high' }), await usage({ reasoningEffort: 'minimal' }),
        await usage({ reasoningEffort: 'none' }), await usage({ reasoningEffort: 'xhigh' }),
      ];
      for (const o of [low, high, xhigh]) {
        expect(o.error).toBeUndefined();
        expect(o.thought.filter((p) => p.signature)).toHaveLength(1);
        expect(o.text.length).toBeGreaterThan(20);
      }
      const thoughtOf = (o: typeof low) => o.thought.map((p) => p.text).join('').length;
      expect(thoughtOf(high)).toBeGreaterThan(thoughtOf(low));
      for (const o of [minimal, none]) {
        expect(o.error).toBeUndefined();
        expect(o.thought).toEqual([]);
      }
      return;
    }
    const plain = await usage({});
    const high = await usage({ reasoningEffort: 'high' });
    expect(high.text).toBe(plain.text);
    // OpenAI's newer efforts: none thinks not at all, xhigh more than high.
    expect((await usage({ reasoningEffort: 'none' })).reasoning).toBe(0);
    expect((await usage({ reasoningEffort: 'xhigh' })).reasoning).toBeGreaterThan(high.reasoning!);
    expect(high.completion).toBeGreaterThan(plain.completion);
    // The provider's count of them reaches the caller.
    expect(plain.reasoning).toBe(0);
    expect(high.reasoning).toBe(high.completion - plain.completion);
    expect(await usage({ logitBias: { '50256': -100 } })).toEqual(plain);
    expect((await usage({ verbosity: 'low' })).completion).toBeLessThan(plain.completion * 0.75);
    expect((await usage({ verbosity: 'high' })).completion).toBeGreaterThan(plain.completion * 1.4);
    // Refused before the provider is asked: a value OpenAI would refuse.
    const before = (await emulatorStats(emulator)).requests;
    for (const over of [{ reasoningEffort: 'extreme' }, { logitBias: { hello: 1 } }, { logitBias: { '1': 101 } }, { verbosity: 'terse' }] as Partial<GenerateRequest>[]) expect((await usage(over)).error?.code).toBe(status.INVALID_ARGUMENT);
    expect((await emulatorStats(emulator)).requests).toBe(before);
  });

  it('passes the caller\'s name for its end user on (OpenAI\'s user, Anthropic\'s metadata.user_id), and the cache shares answers across end users', async () => {
    const before = (await emulatorStats(emulator)).users;
    const named = await runGenerate(broker.client, ask('How should a small library plan its opening hours?', { endUser: 'user-42' }));
    expect(named.error).toBeUndefined();
    expect((await emulatorStats(emulator)).users).toBe(before + 1);
    // Cached under the same key whoever asks.
    const question = `What is a good name for a cat, ${protocol}?`;
    const first = await runGenerate(broker.client, ask(question, { cache: true, endUser: 'user-1', temperature: 0, hasTemperature: true }));
    const second = await runGenerate(broker.client, ask(question, { cache: true, endUser: 'user-2', temperature: 0, hasTemperature: true }));
    expect(doneOf(first)!.cache).toBe(CacheStatus.CACHE_STATUS_MISS);
    expect(doneOf(second)!.cache).toBe(CacheStatus.CACHE_STATUS_HIT);
    expect(text(second)).toBe(text(first));
  });

  it('CountTokens counts the prompt as the provider then bills it (system, turns, tools, a tool round trip, an image), calling no upstream', async () => {
    const png = `data:image/png;base64,${minimalImage('image/png', 1024, 1024).toString('base64')}`;
    const q = 'Search the latest news about solar power';
    const base = ask(q, { tools: [SEARCH] });
    const call = { id: 'call_1', name: 'search_web', argumentsJson: '{"query":"solar power"}' };
    const requests: GenerateRequest[] = [
      ask('How should a small library plan its opening hours?'),
      { ...base, messages: [{ role: 'system', content: 'Be brief and cite sources.', name: '', toolCallId: '', toolCalls: [], cacheTtl: '', thinking: [] }, ...base.messages] },
      { ...base, messages: [...base.messages, { role: 'assistant', content: '', name: '', toolCallId: '', toolCalls: [call], cacheTtl: '', thinking: [] }, { role: 'tool', content: '{"results":["Rooftop panels doubled"]}', name: '', toolCallId: 'call_1', toolCalls: [], cacheTtl: '', thinking: [] }] },
      ask('What is in this picture?', { messages: [{ role: 'user', content: 'What is in this picture?', name: '', toolCallId: '', toolCalls: [], cacheTtl: '', thinking: [], parts: { parts: [{ text: 'What is in this picture?', imageUrl: '', imageDetail: '', cacheTtl: '' }, { text: '', imageUrl: png, imageDetail: '', cacheTtl: '' }] } }] }),
    ];
    for (const request of requests) {
      const before = (await emulatorStats(emulator)).requests;
      const counted = await new Promise<{ promptTokens: number; upstream: string; model: string }>((resolve, reject) =>
        broker.client.countTokens({ request }, (err, res) => (err ? reject(err) : resolve(res))));
      expect((await emulatorStats(emulator)).requests).toBe(before);
      expect(counted).toMatchObject({ upstream: protocol, model });
      const billed = doneOf(await runGenerate(broker.client, request))!.usage!.promptTokens;
      // The emulator counts with js-tiktoken, independently of the broker's gpt-tokenizer.
      expect({ question: request.messages.at(-1)!.content, counted: counted.promptTokens }).toEqual({ question: request.messages.at(-1)!.content, counted: billed });
    }
    // Refused as Generate refuses it.
    const refused = await new Promise<unknown>((resolve) => broker.client.countTokens({ request: { ...base, messages: [] } }, (err) => resolve(err)));
    expect(reasonOf(refused)).toBe('invalid_request');
  });

  it('passes a user\'s images on, each billed as its provider bills it; an image the provider cannot read is its 400, and Anthropic refuses a detail it has not', async () => {
    const question = 'What is in this picture?';
    const png = `data:image/png;base64,${minimalImage('image/png', 1024, 1024).toString('base64')}`;
    const withParts = (parts: { text?: string; imageUrl?: string; imageDetail?: string }[]): Partial<GenerateRequest> => ({
      messages: [{ role: 'user', content: question, name: '', toolCallId: '', toolCalls: [], cacheTtl: '', thinking: [], parts: { parts: parts.map((p) => ({ text: '', imageUrl: '', imageDetail: '', cacheTtl: '', ...p })) } }],
    });
    const plain = await runGenerate(broker.client, ask(question, withParts([{ text: question }])));
    const before = await emulatorStats(emulator);
    const seen = await runGenerate(broker.client, ask(question, withParts([{ text: question }, { imageUrl: png }, { imageUrl: 'https://example.com/cat.jpg' }])));
    expect(seen.error).toBeUndefined();
    expect(text(seen).length).toBeGreaterThan(20);
    // 1024 × 1024 and a downloaded one (the emulator's: 512 × 512). OpenAI: 768 × 768 in 2 × 2 tiles,
    // and one tile; Anthropic: pixels / 750.
    const images = protocol === 'openai' ? (85 + 170 * 4) + (85 + 170) : Math.ceil((1024 * 1024) / 750) + Math.ceil((512 * 512) / 750);
    expect(doneOf(seen)!.usage!.promptTokens).toBe(doneOf(plain)!.usage!.promptTokens + images);
    const after = await emulatorStats(emulator);
    expect(after.images - before.images).toBe(2);
    expect(after.promptTokens - before.promptTokens).toBe(doneOf(seen)!.usage!.promptTokens);
    // Bytes that are no PNG: the provider's refusal, before any token.
    const bad = await runGenerate(broker.client, ask(question, withParts([{ imageUrl: `data:image/png;base64,${Buffer.from('not an image').toString('base64')}` }])));
    expect(bad.error?.code).toBe(status.FAILED_PRECONDITION);
    expect(reasonOf(bad.error!)).toBe('upstream_rejected');
    expect(bad.error?.details).toMatch(protocol === 'openai' ? /unsupported image/ : /valid png|process image/i);
    const low = await runGenerate(broker.client, ask(question, withParts([{ text: question }, { imageUrl: png, imageDetail: 'low' }])));
    if (protocol === 'anthropic') {
      expect(low.error?.code).toBe(status.INVALID_ARGUMENT);
      expect(low.error?.details).toMatch(/image_url\.detail/);
    } else expect(doneOf(low)!.usage!.promptTokens).toBe(doneOf(plain)!.usage!.promptTokens + 85);
    expect((await emulatorStats(emulator)).images - after.images).toBe(protocol === 'openai' ? 1 : 0);
  });

  it('an error inside the stream after tokens reached the caller fails the call as upstream_stream_failed', async () => {
    await configureEmulator(emulator, { armed: { stream_error: 1 } });
    const o = await runGenerate(broker.client, ask('How should a city plan for heat waves in summer?'));
    expect(text(o).length).toBeGreaterThan(0);
    expect(doneOf(o)).toBeUndefined();
    expect(o.error?.code).toBe(status.UNAVAILABLE);
    expect(reasonOf(o.error)).toBe('upstream_stream_failed');
    expect(detailsOf(o.error)).toMatch(protocol === 'anthropic' ? /upstream error inside the stream: Overloaded/ : /upstream error inside the stream: The server had an error/);
  });

  it('the provider overloaded before the first token (503, or 529 for Anthropic) is retried', async () => {
    const before = await emulatorStats(emulator);
    await configureEmulator(emulator, { armed: { overloaded: 1 } });
    const o = await runGenerate(broker.client, ask('Search the latest news about wind power', { tools: [SEARCH] }));
    expect(o.error).toBeUndefined();
    expect(doneOf(o)?.finishReason).toBe('tool_calls');
    expect((await emulatorStats(emulator)).requests - before.requests).toBe(2);
    expect(await metric(broker.proc, 'llm_upstream_errors_total', `kind="${protocol === 'anthropic' ? 529 : 503}"`)).toBe(1);
  });

  // Last of its block: the broker adopts the provider's reported limit (2 per minute) afterwards.
  it('a provider 429 pauses the upstream for its retry-after, its reported limit is adopted, and the call is retried', async () => {
    // Two requests per 1.2 s window (the emulator's minute scaled by 0.02): the third is refused.
    // The first two answers carry no limit headers, so that the broker learns the limit from the 429.
    await fetch(`${emulator.url}/_emulator/reset`, { method: 'POST' });
    await configureEmulator(emulator, { rpm: 2, timeScale: 0.02, armed: { no_ratelimit_headers: 2 } });
    try {
      for (const q of ['How do bees find flowers?', 'How do ants find food?']) expect((await runGenerate(broker.client, ask(q))).error).toBeUndefined();
      const before = await emulatorStats(emulator);
      const o = await runGenerate(broker.client, ask('How do birds find north?'));
      expect(o.error).toBeUndefined();
      expect(doneOf(o)?.finishReason).toBe('stop');
      const after = await emulatorStats(emulator);
      expect(after.rateLimited - before.rateLimited).toBe(1);
      // Anthropic says when in whole seconds (retry-after), OpenAI in ms (retry-after-ms).
      expect(o.ms).toBeGreaterThanOrEqual(protocol === 'anthropic' ? 1_000 : 100);
      expect(await metric(broker.proc, 'llm_upstream_rate_limited_total', `upstream="${protocol}"`)).toBe(1);
      // The limit came from anthropic-ratelimit-requests-limit / x-ratelimit-limit-requests.
      expect(await metric(broker.proc, 'llm_effective_limit', `limit="rpm",upstream="${protocol}"`)).toBe(2);
    } finally {
      await configureEmulator(emulator, { rpm: 0, timeScale: 1 });
    }
  });
});

describe('fallback between upstreams (LLM_UPSTREAMS)', () => {
  it('the first upstream\'s breaker open: the next serves the call, and later calls pass the first over without asking it', async () => {
    // The first upstream's key is refused (401): an account problem opens its breaker at once.
    const b = await startBroker([
      { name: 'primary', protocol: 'anthropic', baseUrl: `${emulator.url}/v1`, keyEnv: 'WRONG_KEY', models: ['claude-emulated'] },
      { name: 'secondary', protocol: 'openai', baseUrl: `${emulator.url}/v1`, keyEnv: 'EMU_KEY', models: ['emulator-1'] },
    ], { LLM_BREAKER_RESET_MS: '60000' });
    const before = await emulatorStats(emulator);
    const first = await runGenerate(b.client, generateRequest('How do bees find flowers?'));
    expect(first.error).toBeUndefined();
    expect(doneOf(first)).toMatchObject({ upstream: 'secondary', model: 'emulator-1', finishReason: 'stop' });
    expect(await metric(b.proc, 'llm_breaker_state', 'upstream="primary"')).toBe(2);
    expect(await metric(b.proc, 'llm_upstream_alerts_total', 'reason="invalid_api_key",upstream="primary"')).toBe(1);
    expect(await metric(b.proc, 'llm_upstream_fallbacks_total', 'reason="breaker_open",upstream="primary"')).toBe(1);
    const mid = await emulatorStats(emulator);
    expect(mid.requests - before.requests).toBe(2); // the refused one, then the secondary's

    const second = await runGenerate(b.client, generateRequest('How do ants find food?'));
    expect(doneOf(second)).toMatchObject({ upstream: 'secondary' });
    // ListModels: each upstream's models, in fallback order, whatever their breakers.
    const listed = await new Promise<unknown>((resolve, reject) => b.client.listModels({}, (err, res) => (err ? reject(err) : resolve(res.models))));
    expect(listed).toEqual([{ id: 'claude-emulated', upstream: 'primary' }, { id: 'emulator-1', upstream: 'secondary' }]);
    expect((await emulatorStats(emulator)).requests - mid.requests).toBe(1); // the primary was not asked
    expect(await metric(b.proc, 'llm_upstream_fallbacks_total', 'reason="breaker_open",upstream="primary"')).toBe(2);
  });

  it('a model_not_found from an upstream that lists the model passes the call to the next that lists it; from the last, the caller hears it', async () => {
    const emu = `${emulator.url}/v1`;
    const b = await startBroker([
      { name: 'first', protocol: 'openai', baseUrl: emu, keyEnv: 'EMU_KEY', models: ['emulator-1'] },
      { name: 'second', protocol: 'anthropic', baseUrl: emu, keyEnv: 'EMU_KEY', models: ['emulator-1'] },
    ]);
    // The emulator serves any model; the next request it receives answers 404 model_not_found.
    await configureEmulator(emulator, { armed: { model_not_found: 1 } });
    const served = await runGenerate(b.client, generateRequest('How do bees find flowers?', { model: 'emulator-1' }));
    expect(served.error).toBeUndefined();
    expect(doneOf(served)).toMatchObject({ upstream: 'second', model: 'emulator-1', finishReason: 'stop' });
    expect(await metric(b.proc, 'llm_upstream_fallbacks_total', 'reason="model_not_found",upstream="first"')).toBe(1);
    // Every upstream listing it says so: NOT_FOUND (404 on /v1), with the provider's message.
    await configureEmulator(emulator, { armed: { model_not_found: 2 } });
    const unknown = await runGenerate(b.client, generateRequest('How do ants find food?', { model: 'emulator-1' }));
    expect(unknown.error?.code).toBe(status.NOT_FOUND);
    expect(reasonOf(unknown.error)).toBe('model_not_found');
    expect(detailsOf(unknown.error)).toMatch(/emulator-1/);
    expect(await metric(b.proc, 'llm_breaker_state', 'upstream="first"')).toBe(0);
  });

  it('a call that never reached the first upstream (connection refused) gives its place in that upstream\'s RPM window back', async () => {
    // One request per minute on an upstream nobody listens on: a call that spent it would leave the
    // next one waiting ~60 s there (passed over as deadline_unreachable); one given back lets the
    // next be tried there again at once.
    const b = await startBroker([
      { name: 'dead', protocol: 'openai', baseUrl: `http://127.0.0.1:${await freePort()}/v1`, keyEnv: 'EMU_KEY', models: ['emulator-1'], rpm: 1 },
      { name: 'live', protocol: 'openai', baseUrl: `${emulator.url}/v1`, keyEnv: 'EMU_KEY', models: ['emulator-1'] },
    ], { LLM_RETRY_MAX: '1', LLM_BREAKER_VOLUME_THRESHOLD: '1000' });
    for (const q of ['How do bees find flowers?', 'How do ants find food?', 'How do birds find north?']) {
      const o = await runGenerate(b.client, generateRequest(q), { timeoutMs: 5_000 });
      expect(doneOf(o)).toMatchObject({ upstream: 'live', finishReason: 'stop' });
    }
    expect(await metric(b.proc, 'llm_admissions_total', 'upstream="dead"')).toBe(3);
    expect(await metric(b.proc, 'llm_upstream_fallbacks_total', 'reason="upstream_error",upstream="dead"')).toBe(3);
    expect(await metric(b.proc, 'llm_upstream_fallbacks_total', 'reason="deadline_unreachable",upstream="dead"')).toBe(0);
    // Its retry after the refused connection was made (on the same place), and refused too.
    expect(await metric(b.proc, 'llm_upstream_retries_total', 'upstream="dead"')).toBe(3);
  });

  it('the first upstream\'s queue cannot admit the call before its deadline: the next serves it', async () => {
    // One request per minute on the primary: the first call takes it; the next would wait ~60 s.
    const b = await startBroker([
      { name: 'primary', protocol: 'openai', baseUrl: `${emulator.url}/v1`, keyEnv: 'EMU_KEY', models: ['emulator-1'], rpm: 1 },
      { name: 'secondary', protocol: 'anthropic', baseUrl: `${emulator.url}/v1`, keyEnv: 'EMU_KEY', models: ['claude-emulated'] },
    ]);
    const first = await runGenerate(b.client, generateRequest('How do bees find flowers?'), { timeoutMs: 10_000 });
    expect(doneOf(first)).toMatchObject({ upstream: 'primary', model: 'emulator-1' });

    // Refused by the primary's quota while queued there (its wait is measured only then).
    const second = await runGenerate(b.client, generateRequest('How do ants find food?'), { timeoutMs: 5_000 });
    expect(second.error).toBeUndefined();
    expect(doneOf(second)).toMatchObject({ upstream: 'secondary', model: 'claude-emulated', finishReason: 'stop' });
    expect(await metric(b.proc, 'llm_upstream_fallbacks_total', 'reason="deadline_unreachable",upstream="primary"')).toBe(1);

    // Now the primary's estimate is known to exceed the deadline: passed over before queueing.
    const third = await runGenerate(b.client, generateRequest('How do birds find north?'), { timeoutMs: 5_000 });
    expect(doneOf(third)).toMatchObject({ upstream: 'secondary' });
    expect(third.messages.some((m) => m.update?.$case === 'queued' && m.update.queued.position > 0)).toBe(false);
    expect(await metric(b.proc, 'llm_upstream_fallbacks_total', 'reason="queue_wait",upstream="primary"')).toBe(1);
    expect(await metric(b.proc, 'llm_admissions_total', 'upstream="primary"')).toBe(1);
    expect(await metric(b.proc, 'llm_admissions_total', 'upstream="secondary"')).toBe(2);

    // A call without room to fall back (no other upstream lists its model) is refused, not rerouted.
    const pinned = await runGenerate(b.client, generateRequest('How do fish sleep?', { model: 'emulator-1' }), { timeoutMs: 3_000 });
    expect(reasonOf(pinned.error)).toBe('deadline_unreachable');
  });
});
