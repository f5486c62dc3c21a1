// The llm-broker's protections against a failing upstream, as real processes against real Redis
// and the provider emulator (failures injected live): the circuit breaker opens and fails fast,
// half-opens and closes again; retries happen only before the first token and within the retry
// budget; a call that cannot be admitted before its deadline, or finds the queue full, is refused
// at once with RESOURCE_EXHAUSTED and a retry-after.
import { Metadata, status, type ServiceError } from '@grpc/grpc-js';
import { reasonOf, retryAfterOf } from '@agent-mesh/common';
import {
  LlmBrokerServiceClient,
  type GenerateRequest,
  type GenerateResponse,
} from '@agent-mesh/common/gen/llmbroker/v1/llm_broker';
import {
  configureEmulator, emulatorStats, generateRequest, promMetric, startEmulator, startRedis, testDir, waitFor,
  type EmulatorProc, type RedisProc, type ServiceProc,
} from '../support';
import { TestBrokers, type TestBroker } from '../support/brokers';

jest.setTimeout(120_000);

let dir: string;
let redis: RedisProc;
let emulator: EmulatorProc;
/** Each broker gets its own Redis database, so one test's quota state never reaches another. */
let brokers: TestBrokers;

const request = (over: Partial<GenerateRequest> = {}) => generateRequest('How should a small library plan its opening hours?', over);

interface Outcome {
  messages: GenerateResponse[];
  error?: ServiceError;
}

/** Runs one Generate call to its end; a refusal is returned, not thrown. */
async function generate(
  client: LlmBrokerServiceClient,
  opts: { timeoutMs?: number; signal?: AbortSignal; req?: GenerateRequest; messages?: GenerateResponse[] } = {},
): Promise<Outcome> {
  const call = client.generate(opts.req ?? request(), new Metadata(), { deadline: Date.now() + (opts.timeoutMs ?? 60_000) });
  opts.signal?.addEventListener('abort', () => call.cancel(), { once: true });
  const messages: GenerateResponse[] = opts.messages ?? []; // the caller's array, to watch the call as it goes
  try {
    for await (const m of call as AsyncIterable<GenerateResponse>) messages.push(m);
    return { messages };
  } catch (err) {
    return { messages, error: err as ServiceError };
  }
}

const done = (o: Outcome) => o.messages.at(-1)?.update?.$case === 'done';
const deltas = (o: Outcome) => o.messages.filter((m) => m.update?.$case === 'delta').length;

const stats = () => emulatorStats(emulator);
const configure = (patch: Record<string, number>) => configureEmulator(emulator, patch);
const HEALTHY = { failureRate: 0, hangRate: 0, cutRate: 0 };

const metric = (b: ServiceProc, name: string, labels = '') => promMetric(b, name, labels);

const startBroker = (env: Record<string, string> = {}) => brokers.start({ env });
const stopBroker = (b: TestBroker) => brokers.stop(b);

beforeAll(async () => {
  dir = testDir('broker-resilience');
  redis = await startRedis({ logDir: dir });
  emulator = await startEmulator({
    logDir: dir,
    // A fast, constant upstream: the failures are what we inject, not latency.
    env: { EMULATOR_TTFT_MS: '50', EMULATOR_TOKENS_PER_SEC: '400', EMULATOR_COMPLETION_TOKENS: '40', EMULATOR_SEED: '11' },
  });
  brokers = new TestBrokers({ logDir: dir, redisUrl: redis.url, emulatorUrl: emulator.url });
});

afterEach(async () => {
  await configure(HEALTHY);
});

afterAll(async () => {
  await brokers?.stopAll();
  await emulator?.stop();
  await redis?.stop();
});

describe('circuit breaker', () => {
  it('opens after upstream failures, then fails fast without calling the upstream, half-opens and closes after recovery', async () => {
    const RESET_MS = 4_000;
    const b = await startBroker({ LLM_BREAKER_VOLUME_THRESHOLD: '4', LLM_BREAKER_ERROR_PERCENT: '50', LLM_BREAKER_RESET_MS: String(RESET_MS) });
    expect(done(await generate(b.client))).toBe(true);

    await configure({ failureRate: 1 });
    const reasons: Array<string | undefined> = [];
    for (let i = 0; i < 20 && reasons.at(-1) !== 'breaker_open'; i += 1) {
      const o = await generate(b.client);
      expect(o.error?.code).toBe(status.UNAVAILABLE);
      reasons.push(reasonOf(o.error));
    }
    expect(reasons.at(-1)).toBe('breaker_open');
    expect(reasons.slice(0, -1).every((r) => r === 'upstream_error' || r === 'breaker_open')).toBe(true);
    expect(await metric(b.proc, 'llm_breaker_state')).toBe(2);

    // Open: every call is refused at once, and none reaches the upstream.
    const before = await stats();
    const t0 = Date.now();
    const refused = await Promise.all(Array.from({ length: 10 }, () => generate(b.client)));
    const elapsed = Date.now() - t0;
    for (const o of refused) {
      expect(o.error?.code).toBe(status.UNAVAILABLE);
      expect(reasonOf(o.error)).toBe('breaker_open');
      expect(retryAfterOf(o.error)).toBeGreaterThan(0);
    }
    const after = await stats();
    // At most one half-open probe per elapsed reset period may reach the upstream (none, when the
    // ten took less than RESET_MS); a breaker that let calls through would show up to ten.
    expect(after.requests - before.requests).toBeLessThanOrEqual(Math.floor(elapsed / RESET_MS));
    expect(await metric(b.proc, 'llm_refusals_total', 'reason="breaker_open"')).toBeGreaterThanOrEqual(10);

    // The upstream recovers: after the reset timeout a probe goes through and closes the breaker.
    await configure(HEALTHY);
    let recovered: Outcome | undefined;
    await waitFor('breaker closes again', async () => {
      const o = await generate(b.client);
      if (!done(o)) {
        expect(reasonOf(o.error)).toBe('breaker_open');
        return false;
      }
      recovered = o;
      return true;
    }, { timeoutMs: RESET_MS * 4, intervalMs: 250 });
    expect(deltas(recovered!)).toBeGreaterThan(0);
    expect(await metric(b.proc, 'llm_breaker_state')).toBe(0);
    expect(b.proc.log()).toMatch(/half-open/);
    expect(done(await generate(b.client))).toBe(true);
    await stopBroker(b);
  });

  it('counts upstream timeouts (no answer) as failures, aborts them, and opens', async () => {
    const b = await startBroker({
      LLM_BREAKER_VOLUME_THRESHOLD: '3',
      LLM_BREAKER_TIMEOUT_MS: '400',
      LLM_BREAKER_RESET_MS: '30000',
      LLM_RETRY_MAX: '1',
    });
    await configure({ hangRate: 1 });
    const before = await stats();
    const reasons: Array<string | undefined> = [];
    for (let i = 0; i < 10 && reasons.at(-1) !== 'breaker_open'; i += 1) {
      const o = await generate(b.client);
      expect(o.error?.code).toBe(status.UNAVAILABLE);
      reasons.push(reasonOf(o.error));
    }
    expect(reasons.at(-1)).toBe('breaker_open');
    // Every hung attempt was abandoned by the broker, not left open at the provider.
    await waitFor('hung requests aborted', async () => {
      const s = await stats();
      return s.hung - before.hung > 0 && s.aborted - before.aborted === s.hung - before.hung;
    }, { timeoutMs: 10_000 });
    await stopBroker(b);
  });
});

describe('retries', () => {
  it('with every upstream call failing, upstream requests stay within requests × (1 + budget)', async () => {
    const N = 40;
    const BUDGET = 0.1;
    const b = await startBroker({
      LLM_BREAKER_VOLUME_THRESHOLD: '1000000', // the breaker must not hide the budget here
      LLM_RETRY_BUDGET_RATIO: String(BUDGET),
      LLM_RETRY_BUDGET_BURST: '0',
      LLM_RETRY_MAX: '3',
    });
    await configure({ failureRate: 1 });
    const before = await stats();
    const outcomes: Outcome[] = [];
    // 8 callers at a time: a storm, but every call still gets its turn.
    let next = 0;
    await Promise.all(
      Array.from({ length: 8 }, async () => {
        while (next < N) {
          next += 1;
          outcomes.push(await generate(b.client));
        }
      }),
    );
    const after = await stats();
    expect(outcomes).toHaveLength(N);
    for (const o of outcomes) {
      expect(o.error?.code).toBe(status.UNAVAILABLE);
      expect(reasonOf(o.error)).toBe('upstream_error');
    }
    const upstream = after.requests - before.requests;
    const retries = await metric(b.proc, 'llm_upstream_retries_total');
    expect(upstream).toBeGreaterThanOrEqual(N);
    expect(upstream).toBeLessThanOrEqual(Math.floor(N * (1 + BUDGET)));
    // Retries did happen (the budget is spent, not disabled), and only as many as it allows.
    expect(retries).toBeGreaterThanOrEqual(1);
    expect(retries).toBeLessThanOrEqual(N * BUDGET);
    expect(upstream).toBe(N + retries);
    await stopBroker(b);
  });

  it('retries a failure before the first token, never a stream cut after it', async () => {
    const b = await startBroker({ LLM_RETRY_MAX: '2', LLM_BREAKER_VOLUME_THRESHOLD: '1000' });

    // Before the first token: the provider answers 5xx; the broker retries (with backoff) up to the max.
    await configure({ failureRate: 1 });
    let before = await stats();
    const failed = await generate(b.client);
    let after = await stats();
    expect(failed.error?.code).toBe(status.UNAVAILABLE);
    expect(reasonOf(failed.error)).toBe('upstream_error');
    expect(after.requests - before.requests).toBe(1 + 2);

    // After the first token: the stream is cut midway; the caller sees the error, the provider one request.
    await configure({ failureRate: 0, cutRate: 1 });
    const retriesBefore = await metric(b.proc, 'llm_upstream_retries_total');
    before = await stats();
    const cut = await generate(b.client);
    after = await stats();
    expect(cut.error?.code).toBe(status.UNAVAILABLE);
    expect(reasonOf(cut.error)).toBe('upstream_stream_failed');
    expect(cut.messages.some((m) => m.update?.$case === 'done')).toBe(false);
    expect(after.requests - before.requests).toBe(1);
    expect(after.cut - before.cut).toBe(1);
    expect(await metric(b.proc, 'llm_upstream_retries_total')).toBe(retriesBefore);
    expect(await metric(b.proc, 'llm_in_flight')).toBe(0);
    await stopBroker(b);
  });
});

describe('retries in the global RPM window', () => {
  it('counts each request the provider receives, retries included: it never sees more than the RPM in any window', async () => {
    const RPM = 20;
    const b = await startBroker({
      LLM_RPM: String(RPM),
      LLM_TIME_SCALE: '0.05', // a 3 s "minute"
      LLM_QUOTA_WINDOW_MARGIN_MS: '250', // delivery jitter is not what this test is about
      LLM_RETRY_MAX: '3',
      LLM_RETRY_BUDGET_RATIO: '1',
      LLM_RETRY_BUDGET_BURST: '1000',
      LLM_BREAKER_VOLUME_THRESHOLD: '1000000',
    });
    // The referee: the emulator counts the requests it admits per window of 60 s × 0.05, as the
    // broker's; it refuses none itself (no rpm), and 30 % of them fail with a 500/503 once admitted.
    await fetch(`${emulator.url}/_emulator/reset`, { method: 'POST' });
    await configure({ timeScale: 0.05, failureRate: 0.3 });
    try {
      const until = Date.now() + 7_000;
      const outcomes: Outcome[] = [];
      await Promise.all(
        Array.from({ length: 6 }, async () => {
          while (Date.now() < until) outcomes.push(await generate(b.client));
        }),
      );
      const s = await stats();
      const retries = await metric(b.proc, 'llm_upstream_retries_total');
      expect(retries).toBeGreaterThanOrEqual(5);
      // Every call reached the provider, some of them more than once.
      expect(s.requests).toBe(outcomes.length + retries);
      expect(outcomes.filter(done).length).toBeGreaterThan(outcomes.length * 0.9);
      // Admissions and retries together stay within the limit the provider counts...
      expect(s.maxPerWindow).toBeLessThanOrEqual(RPM);
      // ...and use it: 7 s of callers always waiting keep the window nearly full.
      expect(s.maxPerWindow).toBeGreaterThanOrEqual(RPM * 0.8);
    } finally {
      await configure({ timeScale: 1 });
      await stopBroker(b);
    }
  });
});

describe('the retry budget', () => {
  it('gets back a retry that found no place in the RPM window before its deadline', async () => {
    // One request a 3 s "minute", and one retry in the budget, never refilled.
    const b = await startBroker({
      LLM_RPM: '1', LLM_TIME_SCALE: '0.05', LLM_QUOTA_WINDOW_MARGIN_MS: '250',
      LLM_RETRY_MAX: '1', LLM_RETRY_BUDGET_RATIO: '0', LLM_RETRY_BUDGET_BURST: '1',
      LLM_BREAKER_VOLUME_THRESHOLD: '1000000',
    });
    await fetch(`${emulator.url}/_emulator/reset`, { method: 'POST' });
    try {
      // The socket is reset before the first byte: retryable, but the retry is one more request,
      // and the window has none left before this call's deadline.
      await configureEmulator(emulator, { armed: { reset: 1 } });
      const short = await generate(b.client, { timeoutMs: 2_000 });
      expect(short.error?.code).toBe(status.UNAVAILABLE);
      expect(await metric(b.proc, 'llm_upstream_retries_total')).toBe(0);
      // The next call, with time to wait for the next window, still has its retry.
      await configureEmulator(emulator, { armed: { reset: 1 } });
      const patient = await generate(b.client, { timeoutMs: 20_000 });
      expect(patient.error).toBeUndefined();
      expect(done(patient)).toBe(true);
      expect(await metric(b.proc, 'llm_upstream_retries_total')).toBe(1);
    } finally {
      await stopBroker(b);
    }
  });
});

describe('admission refusals', () => {
  it('refuses at once, with deadline_unreachable and a retry-after, a call whose deadline is shorter than the wait', async () => {
    // Two requests a minute: the first takes the pace, the next fits only ~60 s later.
    const b = await startBroker({ LLM_RPM: '2' });
    expect(done(await generate(b.client))).toBe(true);
    const before = await stats();
    const t0 = Date.now();
    const late = await generate(b.client, { timeoutMs: 5_000 });
    const elapsed = Date.now() - t0;
    expect(late.error?.code).toBe(status.RESOURCE_EXHAUSTED);
    expect(reasonOf(late.error)).toBe('deadline_unreachable');
    expect(retryAfterOf(late.error)).toBeGreaterThan(5_000);
    expect(elapsed).toBeLessThan(5_000); // refused early, not left to expire
    expect((await stats()).requests).toBe(before.requests);
    expect(await metric(b.proc, 'llm_refusals_total', 'reason="deadline_unreachable"')).toBeGreaterThanOrEqual(1);
    expect(await metric(b.proc, 'llm_queue_depth')).toBe(0);
    await stopBroker(b);
  });

  it('refuses with queue_full when LLM_QUEUE_MAX calls already wait', async () => {
    const b = await startBroker({ LLM_RPM: '2', LLM_QUEUE_MAX: '2' });
    expect(done(await generate(b.client))).toBe(true);
    // Two callers with a patient deadline wait for the pace.
    const cancel = new AbortController();
    const heard: GenerateResponse[][] = [[], []];
    const waiting = heard.map((messages) => generate(b.client, { timeoutMs: 600_000, signal: cancel.signal, messages }));
    await waitFor('two calls queued', async () => (await metric(b.proc, 'llm_queue_depth')) === 2, { timeoutMs: 10_000, intervalMs: 50 });
    // Each waiting caller hears where it stands. Watched before the cancel, not after: on a busy
    // machine the update can still be on its way, and a cancelled call drops what it has not read
    // (the suite failed once that way, under load, on Node.js 24).
    const toldPosition = (ms: GenerateResponse[]) => ms.some((m) => m.update?.$case === 'queued' && m.update.queued.position > 0);
    await waitFor('each waiting caller told its position', async () => heard.every(toldPosition), { timeoutMs: 10_000, intervalMs: 20 });
    const full = await generate(b.client, { timeoutMs: 600_000 });
    expect(full.error?.code).toBe(status.RESOURCE_EXHAUSTED);
    expect(reasonOf(full.error)).toBe('queue_full');
    expect(retryAfterOf(full.error)).toBeGreaterThan(0);
    expect(await metric(b.proc, 'llm_refusals_total', 'reason="queue_full"')).toBe(1);
    // The waiting calls leave when cancelled.
    cancel.abort();
    const left = await Promise.all(waiting);
    for (const o of left) expect(o.error?.code).toBe(status.CANCELLED);
    await waitFor('queue empty', async () => (await metric(b.proc, 'llm_queue_depth')) === 0, { timeoutMs: 5_000, intervalMs: 50 });
    await stopBroker(b);
  });
});
