// The llm-broker as real processes against real Redis and the provider emulator: streaming,
// no overshoot across replicas, cancellation reaching the upstream, provider 429s pausing every
// replica, leases of a killed broker expiring. Redis down: broker-redis-down.test.ts.
import { Metadata, type ServiceError } from '@grpc/grpc-js';
import Redis from 'ioredis';
import { createClient } from '@agent-mesh/common';
import {
  CallerRole,
  LlmBrokerServiceClient,
  type GenerateRequest,
  type GenerateResponse,
} from '@agent-mesh/common/gen/llmbroker/v1/llm_broker';
import { countPromptTokens } from '../../services/llm-broker/dist/tokens';
import {
  configureEmulator, emulatorStats, generateRequest, promMetric, startEmulator, startRedis, startService, testDir, waitFor,
  type EmulatorProc, type RedisProc, type ServiceProc,
} from '../support';

jest.setTimeout(120_000);

const LIMIT = 4;
let dir: string;
let redis: RedisProc;
let emulator: EmulatorProc;
const brokers: ServiceProc[] = [];
const clients: LlmBrokerServiceClient[] = [];
let rc: Redis;

const request = (over: Partial<GenerateRequest> = {}) => generateRequest('How should a city plan for heat waves in summer?', over);

async function generate(client: LlmBrokerServiceClient, req: GenerateRequest, opts: { timeoutMs?: number; onMessage?: (m: GenerateResponse, cancel: () => void) => void } = {}) {
  const call = client.generate(req, new Metadata(), { deadline: Date.now() + (opts.timeoutMs ?? 60_000) });
  const messages: GenerateResponse[] = [];
  for await (const m of call as AsyncIterable<GenerateResponse>) {
    messages.push(m);
    opts.onMessage?.(m, () => call.cancel());
  }
  return messages;
}

const stats = () => emulatorStats(emulator);
const configure = (patch: Record<string, number>) => configureEmulator(emulator, patch);
const metric = (b: ServiceProc, name: string, labels = '') => promMetric(b, name, labels);

async function startBroker(env: Record<string, string> = {}) {
  const b = await startService('llm-broker', {
    logDir: dir,
    instance: String(brokers.length),
    env: {
      REDIS_URL: redis.url,
      LLM_BASE_URL: `${emulator.url}/v1`,
      LLM_API_KEY: 'k',
      LLM_MAX_CONCURRENT: String(LIMIT),
      LLM_RPM: '100000',
      LLM_TIME_SCALE: '0.25', // the emulator's scale: both see the same "minute"
      OTEL_SDK_DISABLED: 'true',
      ...env,
    },
  });
  brokers.push(b);
  clients.push(createClient(LlmBrokerServiceClient, b.addr));
  return b;
}

beforeAll(async () => {
  dir = testDir('broker');
  redis = await startRedis({ logDir: dir });
  emulator = await startEmulator({
    logDir: dir,
    env: { EMULATOR_MAX_CONCURRENT: String(LIMIT), EMULATOR_TIME_SCALE: '0.25', EMULATOR_COMPLETION_TOKENS: '40', EMULATOR_SEED: '7' },
  });
  await Promise.all([startBroker(), startBroker(), startBroker()]);
  rc = new Redis(redis.url);
});

afterAll(async () => {
  clients.forEach((c) => c.close());
  await rc?.quit().catch(() => undefined);
  for (const b of brokers) await b.stop().catch(() => undefined);
  await emulator?.stop();
  await redis?.stop();
});

it('streams deltas and ends with usage; the tokenizer agrees with the provider', async () => {
  const req = request();
  const messages = await generate(clients[0]!, req);
  const deltas = messages.filter((m) => m.update?.$case === 'delta');
  const done = messages.at(-1)?.update;
  expect(deltas.length).toBeGreaterThan(3);
  expect(done?.$case).toBe('done');
  if (done?.$case !== 'done') return;
  expect(done.done.usage?.completionTokens).toBeGreaterThan(0);
  expect(done.done.finishReason).toBe('stop');
  const ours = countPromptTokens(req.messages.map((m) => ({ role: m.role, content: m.content })));
  const theirs = done.done.usage!.promptTokens;
  expect(Math.abs(ours - theirs) / theirs).toBeLessThan(0.05);
});

it('a run\'s first call admitted at once hears its marginal wait (position 0); a direct call, which starts no run, gets no such message', async () => {
  const positions = (messages: GenerateResponse[]) => messages.flatMap((m) => (m.update?.$case === 'queued' ? [m.update.queued.position] : []));
  const planner = await generate(clients[0]!, request({ maxTokens: 8 }));
  const direct = await generate(clients[0]!, request({ maxTokens: 8, callerRole: CallerRole.CALLER_ROLE_DIRECT }));
  expect(positions(planner)).toEqual([0]);
  expect(positions(direct)).toEqual([]);
  expect(direct.at(-1)?.update?.$case).toBe('done');
});

it('answers `done` without waiting for Redis to take the settlement, which lands once, afterwards', async () => {
  // Redis holds every write for PAUSE_MS from the first delta on: the lease's release is sent when
  // the (fast) answer ends, and waits there. PAUSE_MS stays under the broker's Redis timeout (500 ms).
  // The answer stalls 200 ms halfway (`+stall`, 800 ms before the emulator's 0.25 time scale): the
  // pause has landed before the answer can end, however slowly this process hears the first delta.
  const PAUSE_MS = 450;
  await configure({ tokensPerSec: 2_000, stallMs: 800 });
  const b = brokers[0]!;
  const tokens = async () => Promise.all(['reserved', 'settled', 'refunded'].map((k) => metric(b, 'llm_tokens_total', `kind="${k}"`)));
  const before = await tokens();
  let pausedAt = 0;
  let doneAt = 0;
  let heldAtDone: Promise<number> | undefined;
  const messages = await generate(clients[0]!, request({ model: 'emulator-1+stall' }), {
    onMessage: (m) => {
      if (m.update?.$case === 'delta' && pausedAt === 0) {
        pausedAt = Date.now();
        void rc.call('CLIENT', 'PAUSE', String(PAUSE_MS), 'WRITE');
      }
      if (m.update?.$case === 'done') {
        doneAt = Date.now();
        heldAtDone = rc.zcard('{mesh:llm}:leases'); // a read: Redis answers it during the pause
      }
    },
  });
  await configure({ tokensPerSec: 40 });
  const done = messages.at(-1)?.update;
  expect(done?.$case).toBe('done');
  expect(doneAt - pausedAt).toBeGreaterThanOrEqual(180); // the stall came between the two
  expect(doneAt - pausedAt).toBeLessThan(PAUSE_MS - 100);
  expect(await heldAtDone).toBe(1); // the slot is still taken when the caller has its answer…
  await waitFor('the lease released', async () => (await rc.zcard('{mesh:llm}:leases')) === 0, { timeoutMs: 5_000, intervalMs: 20 });
  // …and freed once the pause is over; the call was settled once, to what the provider billed.
  const [reserved, settled, refunded] = (await tokens()).map((v, i) => v - before[i]!);
  if (done?.$case !== 'done') return;
  expect(settled).toBe(done.done.usage!.totalTokens);
  expect(refunded).toBe(reserved! - settled!);
  expect(await metric(b, 'llm_in_flight')).toBe(0);
  expect(b.log()).not.toContain('could not settle the lease');
});

it('does not overshoot the provider\'s concurrency limit with three brokers under a burst', async () => {
  const before = await stats();
  const results = await Promise.all(
    Array.from({ length: 24 }, (_, i) =>
      generate(clients[i % 3]!, request({ userId: `00000000-0000-4000-8000-${String(i % 6).padStart(12, '0')}` })),
    ),
  );
  const after = await stats();
  expect(results.every((r) => r.at(-1)?.update?.$case === 'done')).toBe(true);
  expect(results.some((r) => r.some((m) => m.update?.$case === 'queued' && m.update.queued.position > 0))).toBe(true);
  expect(after.rateLimited - before.rateLimited).toBe(0);
  expect(after.maxInFlight).toBeLessThanOrEqual(LIMIT);
});

it('cancelling mid-stream aborts the upstream request and refunds the reservation', async () => {
  const before = await stats();
  const refundedBefore = await metric(brokers[0]!, 'llm_tokens_total', 'kind="refunded"');
  let deltas = 0;
  await expect(
    generate(clients[0]!, request(), {
      onMessage: (m, cancel) => {
        if (m.update?.$case === 'delta' && (deltas += 1) === 2) cancel();
      },
    }),
  ).rejects.toMatchObject({ code: 1 }); // CANCELLED
  await waitFor('upstream abort', async () => (await stats()).aborted > before.aborted, { timeoutMs: 5_000 });
  await waitFor('refund', async () => (await metric(brokers[0]!, 'llm_tokens_total', 'kind="refunded"')) > refundedBefore, { timeoutMs: 5_000 });
  expect(await metric(brokers[0]!, 'llm_in_flight')).toBe(0);
});

it('a provider 429 with Retry-After pauses every replica', async () => {
  // One request per (scaled) 15 s minute, and none in the provider's window yet: the earlier tests'
  // requests would make the first call below meet the 429 (and its retry, counted in the learnt
  // RPM, would then pace the second call instead of letting the provider refuse it).
  await fetch(`${emulator.url}/_emulator/reset`, { method: 'POST' });
  await configure({ rpm: 1 });
  const pausedBefore = await metric(brokers[1]!, 'llm_refusals_total', 'reason="paused"');
  await generate(clients[0]!, request()); // takes the provider's only slot
  // The next one is refused by the provider: broker 0 pauses everyone and retries after Retry-After.
  const second = generate(clients[0]!, request(), { timeoutMs: 60_000 }).catch((e: ServiceError) => e);
  await waitFor('pause set in Redis', async () => (await rc.pttl('{mesh:llm}:pause')) > 0, { timeoutMs: 10_000, intervalMs: 20 });
  const third = generate(clients[1]!, request(), { timeoutMs: 60_000 });
  await waitFor('broker 1 paused', async () => (await metric(brokers[1]!, 'llm_refusals_total', 'reason="paused"')) > pausedBefore, { timeoutMs: 10_000 });
  await configure({ rpm: 0 });
  const [r2, r3] = await Promise.all([second, third]);
  expect(Array.isArray(r2) ? r2.at(-1)?.update?.$case : (r2 as ServiceError).code).toBe('done');
  expect(r3.at(-1)?.update?.$case).toBe('done');
  expect(await metric(brokers[0]!, 'llm_upstream_rate_limited_total')).toBeGreaterThan(0);
});

it('a broker killed with SIGKILL leaks its slot no longer than the lease', async () => {
  const victim = await startBroker({ LLM_LEASE_MS: '2000' });
  const client = clients.at(-1)!;
  // The previous test's requests, paced at the RPM of 1 its 429 taught the brokers, left the shared
  // RPM window's next free time up to ~15 s ahead: this call would queue behind it, not take a slot.
  await rc.del('{mesh:llm}:rpm');
  await configure({ ttftMs: 20_000 });
  const pending = generate(client, request(), { timeoutMs: 60_000 }).catch(() => undefined);
  await waitFor('lease taken', async () => (await rc.zcard('{mesh:llm}:leases')) === 1, { timeoutMs: 10_000, intervalMs: 20 });
  const killedAt = Date.now();
  await victim.kill();
  await configure({ ttftMs: 400 });
  await waitFor('lease expired', async () => {
    const now = Number((await rc.time())[0]) * 1000;
    return (await rc.zcount('{mesh:llm}:leases', now, '+inf')) === 0;
  }, { timeoutMs: 10_000, intervalMs: 50 });
  expect(Date.now() - killedAt).toBeLessThan(2_000 + 1_500);
  await pending;
});

it('LLM_QUOTA_BURST_FRACTION sets how much of the RPM goes at once: three of four calls from idle admitted together at 5 % of 60 RPM', async () => {
  // 60 RPM over the 15 s window of this file's time scale: at the default 2 % the bucket holds one
  // request and the pacing admits one every ~254 ms, so the third call would wait ~500 ms; at 5 % it
  // holds three, and the fourth waits for the next interval (15 s ÷ 57 ≈ 263 ms).
  await startBroker({ REDIS_URL: `${redis.url}/2`, LLM_RPM: '60', LLM_QUOTA_BURST_FRACTION: '0.05', LLM_ADMIT_AHEAD: '0' });
  const client = clients.at(-1)!;
  const results = await Promise.all(Array.from({ length: 4 }, () => generate(client, request())));
  const waits = results.map((r) => {
    const last = r.at(-1)?.update;
    if (last?.$case !== 'done') throw new Error(`a call did not finish: ${JSON.stringify(last)}`);
    return last.done.queueWaitMs;
  }).sort((a, b) => a - b);
  expect(waits[2]).toBeLessThan(200);
  expect(waits[3]).toBeGreaterThan(150);
});

it('the caller role on the wire sets the priority: a queued Host call is served before a Planner call queued earlier', async () => {
  // One slot, on a Redis database of its own (no other broker's calls take it), held by a slow call.
  await startBroker({ REDIS_URL: `${redis.url}/1`, LLM_MAX_CONCURRENT: '1' });
  const client = clients.at(-1)!;
  await configure({ ttftMs: 20_000 });
  const served: string[] = [];
  const queued = new Set<string>();
  const call = (name: string, callerRole: CallerRole) =>
    generate(client, request({ callerRole }), {
      onMessage: (m) => {
        if (m.update?.$case === 'queued' && m.update.queued.position > 0) queued.add(name);
        if (m.update?.$case === 'done') served.push(name);
      },
    });
  const blocker = call('blocker', CallerRole.CALLER_ROLE_DIRECT);
  await waitFor('the slot taken', async () => (await metric(brokers.at(-1)!, 'llm_admissions_total')) === 1, { timeoutMs: 10_000, intervalMs: 20 });
  const planner = call('planner', CallerRole.CALLER_ROLE_PLANNER);
  await waitFor('planner queued', async () => queued.has('planner'), { timeoutMs: 10_000, intervalMs: 20 });
  const host = call('host', CallerRole.CALLER_ROLE_HOST);
  await waitFor('host queued', async () => queued.has('host'), { timeoutMs: 10_000, intervalMs: 20 });
  await configure({ ttftMs: 400 });
  await Promise.all([blocker, planner, host]);
  // Both caller roles would be direct's priority if the role did not reach the queue: first come, first served.
  expect(served).toEqual(['blocker', 'host', 'planner']);
});
