// The llm-broker against a provider that misbehaves like real ones (the emulator's behaviours,
// chosen per request with a `+name` model suffix or armed for the next requests): each failure is
// retried while no token reached the caller, and otherwise reported as what it is — never a short
// answer ending like a complete one. Account problems open the breaker with an alert instead of
// pausing the fleet. Real processes, real Redis.
import { status } from '@grpc/grpc-js';
import Redis from 'ioredis';
import { detailsOf, reasonOf } from '@agent-mesh/common';
import {
  CallerRole,
  LlmBrokerServiceClient,
  type GenerateRequest,
} from '@agent-mesh/common/gen/llmbroker/v1/llm_broker';
import {
  configureEmulator, emulatorStats, generateRequest, promMetric, runGenerate, startEmulator, startRedis, testDir, waitFor,
  type EmulatorProc, type GenerateOutcome, type RedisProc, type ServiceProc,
} from '../support';
import { TestBrokers, type TestBroker } from '../support/brokers';

jest.setTimeout(120_000);

let dir: string;
let redis: RedisProc;
let emulator: EmulatorProc;
let brokers: TestBrokers;

const SEARCH_TOOL = JSON.stringify([{ type: 'function', function: { name: 'search_web', parameters: { type: 'object', properties: { query: { type: 'string' } } } } }]);
const ask = (model = '', over: Partial<GenerateRequest> = {}) => generateRequest('How should a small library plan its opening hours?', { model, ...over });
/** A request the emulator answers with a tool call only: no content delta reaches the caller. */
const search = (model = '') => generateRequest('Search the latest news about solar power', { model, toolsJson: SEARCH_TOOL });

type Outcome = GenerateOutcome;
const generate = (client: LlmBrokerServiceClient, req: GenerateRequest, timeoutMs = 30_000) => runGenerate(client, req, { timeoutMs });
const doneOf = (o: Outcome) => {
  const u = o.messages.at(-1)?.update;
  return u?.$case === 'done' ? u.done : undefined;
};
const deltas = (o: Outcome) => o.messages.filter((m) => m.update?.$case === 'delta').length;
const stats = () => emulatorStats(emulator);
const metric = (b: ServiceProc, name: string, labels = '') => promMetric(b, name, labels);

const startBroker = (env: Record<string, string> = {}) => brokers.start({ env });

let broker: TestBroker;

beforeAll(async () => {
  dir = testDir('broker-upstream');
  redis = await startRedis({ logDir: dir });
  emulator = await startEmulator({
    logDir: dir,
    env: { EMULATOR_TTFT_MS: '50', EMULATOR_TOKENS_PER_SEC: '400', EMULATOR_COMPLETION_TOKENS: '40', EMULATOR_SEED: '5', EMULATOR_STALL_MS: '3000' },
  });
  brokers = new TestBrokers({ logDir: dir, redisUrl: redis.url, emulatorUrl: emulator.url, env: { LLM_RETRY_BUDGET_BURST: '20' } });
  broker = await startBroker({ LLM_STREAM_IDLE_TIMEOUT_MS: '400', LLM_BREAKER_RESET_MS: '1500' });
});

afterAll(async () => {
  await brokers?.stopAll();
  await emulator?.stop();
  await redis?.stop();
});

describe('failures before any token reached the caller are retried', () => {
  it.each([
    ['an error event inside the stream', 'stream_error'],
    ['a data line that is not JSON', 'bad_json'],
    ['a connection reset before the first byte', 'reset'],
    ['a 503 with Retry-After', 'overloaded'],
  ])('%s (%s)', async (_what, behaviour) => {
    const before = await stats();
    await configureEmulator(emulator, { armed: { [behaviour]: 1 } });
    // A tool-call answer: nothing streams to the caller until it is complete.
    const o = await generate(broker.client, search());
    const after = await stats();
    expect(o.error).toBeUndefined();
    const done = doneOf(o);
    expect(done?.finishReason).toBe('tool_calls');
    expect(done?.toolCalls[0]?.name).toBe('search_web');
    expect(after.requests - before.requests).toBe(2);
    expect((after.behaviours[behaviour] ?? 0) - (before.behaviours[behaviour] ?? 0)).toBe(1);
  });
});

describe('failures after tokens reached the caller are reported, never a truncated "stop"', () => {
  it.each([
    ['an error event, then [DONE]', 'stream_error', /upstream error inside the stream: The server had an error/],
    ['an error event, then a closed connection', 'stream_error_close', /upstream error inside the stream/],
    ['a data line that is not JSON', 'bad_json', /stream line that is not JSON: "<html>/],
  ])('%s (%s)', async (_what, behaviour, message) => {
    const before = await stats();
    const o = await generate(broker.client, ask(`emulator-1+${behaviour}`));
    expect(deltas(o)).toBeGreaterThan(0);
    expect(doneOf(o)).toBeUndefined();
    expect(o.error?.code).toBe(status.UNAVAILABLE);
    expect(reasonOf(o.error)).toBe('upstream_stream_failed');
    expect(detailsOf(o.error)).toMatch(message);
    expect(detailsOf(o.error)).not.toMatch(/SyntaxError|Unexpected token/);
    expect((await stats()).requests - before.requests).toBe(1); // not retried: the caller had tokens
  });

  it('an error after a streamed tool call\'s first pieces reached the caller (stream_tool_calls) is reported, not retried', async () => {
    const midStream = () => metric(broker.proc, 'llm_upstream_errors_total', 'kind="mid_stream"');
    const before = await midStream();
    // Tokens 100 ms apart: the call's first pieces and the error (halfway) never arrive in one read
    // (an attempt whose pieces and error came together reached the caller with nothing, and would be retried).
    await configureEmulator(emulator, { tokensPerSec: 10 });
    const o = await generate(broker.client, { ...search('emulator-1+stream_error'), streamToolCalls: true }).finally(() => configureEmulator(emulator, { tokensPerSec: 400 }));
    const pieces = o.messages.filter((m) => m.update?.$case === 'toolCall').length;
    expect(pieces).toBeGreaterThan(0);
    expect(doneOf(o)).toBeUndefined();
    expect(reasonOf(o.error)).toBe('upstream_stream_failed');
    expect(detailsOf(o.error)).toContain(`failed after ${pieces} streamed pieces`);
    expect((await midStream()) - before).toBe(1);
  });

  it('a stall longer than LLM_STREAM_IDLE_TIMEOUT_MS aborts the call (400 ms here, the stall is 3 s)', async () => {
    const before = await stats();
    const o = await generate(broker.client, ask('emulator-1+stall'));
    expect(deltas(o)).toBeGreaterThan(0);
    expect(reasonOf(o.error)).toBe('upstream_stream_failed');
    expect(detailsOf(o.error)).toMatch(/stalled: no data for 400 ms/);
    expect(o.ms).toBeLessThan(2_500);
    // The broker hung up: the provider saw its request aborted.
    const after = await stats();
    expect(after.aborted - before.aborted).toBe(1);
  });
});

describe('account problems open the breaker with an alert and do not pause the fleet', () => {
  it.each([
    ['insufficient_quota', 'insufficient_quota', /out of quota/],
    ['401 for a wrong key', 'wrong_key', /refuses the API key/],
  ])('%s', async (_what, behaviour, message) => {
    const b = await startBroker({ LLM_BREAKER_RESET_MS: '1500' });
    const reason = behaviour === 'wrong_key' ? 'invalid_api_key' : 'insufficient_quota';
    const rc = new Redis(`${redis.url}/${b.db}`);
    const before = await stats();
    const o = await generate(b.client, ask(`emulator-1+${behaviour}`));
    expect(o.error?.code).toBe(status.UNAVAILABLE);
    expect(reasonOf(o.error)).toBe('breaker_open');
    expect(detailsOf(o.error)).toMatch(message);
    expect((await stats()).requests - before.requests).toBe(1); // no retry: no wait fixes it
    expect(await metric(b.proc, 'llm_upstream_alerts_total', `reason="${reason}"`)).toBe(1);
    expect(await metric(b.proc, 'llm_breaker_state')).toBe(2);
    expect(await metric(b.proc, 'llm_upstream_rate_limited_total')).toBe(0);
    expect(await rc.pttl('{mesh:llm}:pause')).toBeLessThan(0); // no fleet-wide pause
    expect(b.proc.log()).toMatch(message);
    // Open: the next call fails fast with the reason, without reaching the provider.
    const fast = await generate(b.client, ask());
    expect(reasonOf(fast.error)).toBe('breaker_open');
    expect(detailsOf(fast.error)).toMatch(message);
    expect((await stats()).requests - before.requests).toBe(1);
    // Fixed (the next request is well-behaved): the half-open probe closes it again.
    await new Promise((r) => setTimeout(r, 1_700));
    expect(doneOf(await generate(b.client, ask()))).toBeDefined();
    expect(await metric(b.proc, 'llm_breaker_state')).toBe(0);
    await rc.quit();
  });

  it('a 404 model_not_found is passed on as NOT_FOUND and does not open the breaker', async () => {
    const outcomes = await Promise.all(Array.from({ length: 12 }, () => generate(broker.client, ask('gpt-nope+model_not_found'))));
    for (const o of outcomes) {
      expect(o.error?.code).toBe(status.NOT_FOUND);
      expect(reasonOf(o.error)).toBe('model_not_found');
      expect(detailsOf(o.error)).toMatch(/The model `gpt-nope` does not exist/);
    }
    expect(await metric(broker.proc, 'llm_breaker_state')).toBe(0);
  });
});

describe('answers shaped unlike the usual', () => {
  it('parallel tool calls whose ids and names arrive late, without a usage chunk: both calls, usage estimated', async () => {
    const o = await generate(broker.client, search('emulator-1+parallel_tool_calls+no_usage'));
    const done = doneOf(o);
    expect(done?.toolCalls).toHaveLength(2);
    for (const call of done?.toolCalls ?? []) {
      expect(call.id).toMatch(/^call_/);
      expect(call.name).toBe('search_web');
      expect(JSON.parse(call.argumentsJson)).toEqual({ query: expect.any(String) });
    }
    expect(done?.toolCalls[0]?.id).not.toBe(done?.toolCalls[1]?.id);
    expect(done?.usage?.completionTokens).toBeGreaterThan(10);
    // Not asked for: no piece before Done.
    expect(o.messages.some((m) => m.update?.$case === 'toolCall')).toBe(false);
  });

  it('with stream_tool_calls, each call comes as it is generated: named once its late id and name came, then its arguments piece by piece, interleaved; Done has them whole', async () => {
    const o = await generate(broker.client, { ...search('emulator-1+parallel_tool_calls'), streamToolCalls: true });
    const pieces = o.messages.flatMap((m) => (m.update?.$case === 'toolCall' ? [m.update.toolCall] : []));
    const done = doneOf(o)!;
    expect(done.toolCalls).toHaveLength(2);
    // Every piece comes before Done.
    expect(o.messages.findIndex((m) => m.update?.$case === 'done')).toBeGreaterThan(o.messages.findLastIndex((m) => m.update?.$case === 'toolCall'));
    for (const [index, call] of done.toolCalls.entries()) {
      const own = pieces.filter((p) => p.index === index);
      expect(own[0]).toMatchObject({ id: call.id, name: 'search_web' });
      expect(own.slice(1).every((p) => p.id === '' && p.name === '')).toBe(true);
      expect(own.length).toBeGreaterThan(2);
      expect(own.map((p) => p.arguments).join('')).toBe(call.argumentsJson);
    }
    // The emulator interleaves the two calls' fragments, and so do the pieces.
    const order = pieces.map((p) => p.index);
    expect(order.indexOf(1)).toBeLessThan(order.lastIndexOf(0));
  });
});

describe('the later calls a run owes (what a first call queued is told it waits behind)', () => {
  it('a run\'s first call owes its further agents\' calls, each paid as it is admitted (a Host\'s call after tools pays the oldest); a direct call owes nothing', async () => {
    const b = await startBroker({ LLM_CACHE_TTL_S: '0' });
    // Calls of a second: a debt lapses after eight calls' lengths, long after each reading below.
    await configureEmulator(emulator, { ttftMs: 1000 });
    try {
      const owed = () => metric(b.proc, 'llm_queue_owed_calls', 'upstream="default"');
      const asked = (o: Outcome) => expect(doneOf(o)?.finishReason).toMatch(/^(stop|length|tool_calls)$/);
      asked(await generate(b.client, { ...search(), callerRole: CallerRole.CALLER_ROLE_DIRECT }));
      expect(await owed()).toBe(0);
      const run = { runId: 'run-owing', runStarted: true };
      asked(await generate(b.client, { ...ask(), runId: run.runId })); // the Planner: the run begins
      expect(await owed()).toBe(3);
      asked(await generate(b.client, { ...ask(), ...run, callerRole: CallerRole.CALLER_ROLE_CRITIC }));
      expect(await owed()).toBe(2);
      const tools = await generate(b.client, { ...search(), ...run, callerRole: CallerRole.CALLER_ROLE_HOST });
      expect(doneOf(tools)?.finishReason).toBe('tool_calls');
      expect(await owed()).toBe(1);
      asked(await generate(b.client, { ...ask(), ...run, callerRole: CallerRole.CALLER_ROLE_HOST })); // after its tools
      expect(await owed()).toBe(0);
    } finally {
      await configureEmulator(emulator, { ttftMs: 50 });
      await brokers.stop(b);
    }
  });

  it('two brokers sharing a quota keep one ledger: a run begun on one is paid by its calls on the other, and each tells half of what is owed', async () => {
    const a = await startBroker({ LLM_CACHE_TTL_S: '0' });
    const b = await brokers.start({ db: a.db, env: { LLM_CACHE_TTL_S: '0' } });
    await configureEmulator(emulator, { ttftMs: 1000 });
    try {
      const owed = (x: TestBroker) => metric(x.proc, 'llm_queue_owed_calls', 'upstream="default"');
      const both = async (calls: number) =>
        waitFor(`${calls} owed on each broker`, async () => (await owed(a)) === calls && (await owed(b)) === calls, { timeoutMs: 3_000, intervalMs: 50 });
      await waitFor('two live replicas', async () => (await metric(a.proc, 'llm_live_replicas')) === 2 && (await metric(b.proc, 'llm_live_replicas')) === 2, { timeoutMs: 10_000 });
      const run = { runId: 'run-on-two', runStarted: true };
      await generate(a.client, { ...ask(), runId: run.runId }); // the Planner, on A: 3 owed by the fleet
      await both(1.5);
      await generate(b.client, { ...ask(), ...run, callerRole: CallerRole.CALLER_ROLE_CRITIC }); // paid on B
      await both(1);
      await generate(b.client, { ...ask(), ...run, callerRole: CallerRole.CALLER_ROLE_HOST });
      await generate(a.client, { ...ask(), ...run, callerRole: CallerRole.CALLER_ROLE_REPORTER });
      await both(0);
    } finally {
      await configureEmulator(emulator, { ttftMs: 50 });
      await Promise.all([brokers.stop(a), brokers.stop(b)]);
    }
  });
});

describe('TPM accounting', () => {
  it('reserve keeps prompt + max_tokens counted; settle counts what the provider billed', async () => {
    const reserve = await startBroker({ LLM_TPM_ACCOUNTING: 'reserve', LLM_TPM: '1000000' });
    const req = ask('', { maxTokens: 400 });
    for (const b of [broker, reserve]) expect(doneOf(await generate(b.client, req))).toBeDefined();
    const tokens = async (b: typeof broker, kind: string) => metric(b.proc, 'llm_tokens_total', `kind="${kind}"`);
    // The same call: reserved alike, settled at the reservation only under `reserve`.
    expect(await tokens(reserve, 'settled')).toBe(await tokens(reserve, 'reserved'));
    expect(await tokens(reserve, 'refunded')).toBe(0);
    expect(await tokens(broker, 'settled')).toBeGreaterThan(0);
    expect(await tokens(broker, 'refunded')).toBeGreaterThan(0);
  });

  // An attempt the provider answered and then failed before any token reached the caller is
  // retried on the same lease; the provider charged it all the same (its prompt, and what it
  // generated; under `no_refund` prompt + max_tokens), so the TPM budget settles it too.
  it.each([
    ['settle', 'stream_error', {}],
    ['settle', 'bad_json', {}],
    ['reserve', 'stream_error', { no_refund: 1 }],
  ] as const)('%s: an attempt that failed inside the stream (%s) and was retried counts against TPM with the one that succeeded', async (accounting, behaviour, perInstance) => {
    const b = accounting === 'reserve' ? await startBroker({ LLM_TPM_ACCOUNTING: 'reserve', LLM_TPM: '1000000' }) : broker;
    const settled = () => metric(b.proc, 'llm_tokens_total', 'kind="settled"');
    await configureEmulator(emulator, { behaviours: perInstance, armed: { [behaviour]: 1 } });
    try {
      const [before, settledBefore] = [await stats(), await settled()];
      const o = await generate(b.client, search());
      const after = await stats();
      expect(o.error).toBeUndefined();
      expect(doneOf(o)?.finishReason).toBe('tool_calls');
      expect(after.requests - before.requests).toBe(2);
      const charged = after.tokensCharged - before.tokensCharged;
      const counted = (await settled()) - settledBefore;
      // What the provider charged for both attempts (give or take the estimate of a partial tool
      // call); the successful attempt alone falls short by at least the failed one's prompt.
      expect({ counted, charged }).toEqual({ counted: expect.closeTo(charged, -1), charged });
    } finally {
      await configureEmulator(emulator, { behaviours: {}, armed: {} });
    }
  });

  it('with no x-ratelimit headers, the configured limits alone give 0 upstream 429s', async () => {
    const L = 12;
    await configureEmulator(emulator, { timeScale: 0.05, rpm: L, behaviours: { no_ratelimit_headers: 1 } });
    await fetch(`${emulator.url}/_emulator/reset`, { method: 'POST' }); // the referee counts from here
    try {
      const b = await startBroker({ LLM_RPM: String(L), LLM_TIME_SCALE: '0.05' });
      const before = await stats();
      const outcomes = await Promise.all(Array.from({ length: 2 * L }, () => generate(b.client, ask(), 60_000)));
      const after = await stats();
      expect(outcomes.map((o) => (doneOf(o) ? 'done' : `${reasonOf(o.error)}: ${detailsOf(o.error)}`)).filter((s) => s !== 'done')).toEqual([]);
      expect(after.rateLimited - before.rateLimited).toBe(0);
      expect(after.maxPerWindow).toBeLessThanOrEqual(L);
      expect(await metric(b.proc, 'llm_effective_limit', 'limit="rpm"')).toBe(L);
    } finally {
      await configureEmulator(emulator, { timeScale: 1, rpm: 0, behaviours: {} });
    }
  });
});

describe('connections to the provider', () => {
  test('as many calls reach the provider at once as the concurrency limit admits (no pool of its own below it)', async () => {
    // Slow answers, so that every call is in flight at once; a provider of its own to count them.
    const slow = await startEmulator({ logDir: dir, env: { EMULATOR_TTFT_MS: '3000', EMULATOR_TOKENS_PER_SEC: '100', EMULATOR_COMPLETION_TOKENS: '5', EMULATOR_SEED: '6' } });
    const calls = 300; // above the 256 connections the broker's pool used to hold
    const b = await brokers.start({ env: { LLM_BASE_URL: `${slow.url}/v1`, LLM_MAX_CONCURRENT: String(calls), LLM_CACHE_TTL_S: '0' } });
    try {
      const outcomes = await Promise.all(Array.from({ length: calls }, (_, i) => generate(b.client, generateRequest(`Question ${i}: how do tides work?`), 60_000)));
      expect(outcomes.filter((o) => doneOf(o) !== undefined)).toHaveLength(calls);
      expect((await emulatorStats(slow)).maxInFlight).toBe(calls);
    } finally {
      await brokers.stop(b);
      await slow.stop();
    }
  });
});
