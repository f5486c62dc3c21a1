// The tool-service as real processes over one real Redis: two replicas share limits, cache and
// single-flight; a third (own key prefix) talks to a failing search API to exercise the breaker;
// the plan tool goes through the real store on FerretDB when the store is built.
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import Redis from 'ioredis';
import { codeOf, createClient, GlobalLimiter, LLM_QUOTA_KEY_PREFIX, status, unary } from '@agent-mesh/common';
import { ToolServiceClient, type InvokeResponse } from '@agent-mesh/common/gen/tools/v1/tools';
import { freePort, startFerret, startRedis, startService, testDir, waitFor, type Proc, type ServiceProc } from '../support';

jest.setTimeout(120_000);

const ROOT = path.resolve(__dirname, '../..');
const HAS_STORE = fs.existsSync(path.join(ROOT, 'services/store/dist/main.js'));
const PREWARM = ['agent', 'redis', 'stream', 'quota', 'tool'];
/** As the brokers are configured (the tool-service reads names and quota keys only). */
const LLM_UPSTREAMS = [
  { name: 'openai', baseUrl: 'https://api.example/v1', keyEnv: 'LLM_API_KEY', models: ['m'] },
  { name: 'claude', protocol: 'anthropic', baseUrl: 'https://claude.example/v1', keyEnv: 'ANTHROPIC_API_KEY', models: ['c'] },
];

const procs: Proc[] = [];
const clients: ToolServiceClient[] = [];
let a: ServiceProc;
let b: ServiceProc;
let c: ServiceProc;
let ca: ToolServiceClient;
let cb: ToolServiceClient;
let cc: ToolServiceClient;
/** A replica of c (same Redis prefix, same search API): sees c's breaker through Redis. */
let cd: ToolServiceClient;
let searchApi: http.Server;
let redisUrl: string;
let logDir: string;
let searchFails = true;
let searchRequests = 0;

const client = (p: ServiceProc) => {
  const cl = createClient(ToolServiceClient, p.addr);
  clients.push(cl);
  return cl;
};
const call = (cl: ToolServiceClient, toolName: string, args: unknown, userId = 'user-1'): Promise<InvokeResponse> =>
  unary(cl.invoke.bind(cl), { userId, runId: 'run-1', callId: 'call-1', toolName, argumentsJson: JSON.stringify(args) }, { timeoutMs: 30_000 });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Sum of one Prometheus counter (with label filter) across processes. */
async function metric(ps: ServiceProc[], name: string, labels: Record<string, string>): Promise<number> {
  let sum = 0;
  for (const p of ps) {
    const text = await (await fetch(`http://127.0.0.1:${p.metricsPort}/metrics`)).text();
    for (const line of text.split('\n')) {
      if (!line.startsWith(`${name}{`)) continue;
      if (Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) sum += Number(line.split(' ').pop());
    }
  }
  return sum;
}

beforeAll(async () => {
  logDir = testDir('tool-service');
  const redis = await startRedis({ logDir });
  procs.push(redis);
  redisUrl = redis.url;
  // A SearxNG stand-in that fails (HTTP 500) until the test heals it.
  searchApi = http.createServer((req, res) => {
    searchRequests += 1;
    if (searchFails) {
      res.writeHead(500).end('boom');
      return;
    }
    const q = new URL(req.url ?? '/', 'http://x').searchParams.get('q');
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ results: [{ title: `About ${q}`, url: 'https://example.org/a', content: `All about ${q}.` }] }));
  });
  await new Promise<void>((r) => searchApi.listen(0, '127.0.0.1', r));
  const searchUrl = `http://127.0.0.1:${(searchApi.address() as AddressInfo).port}`;

  let storeAddr = '127.0.0.1:1';
  if (HAS_STORE) {
    const ferret = await startFerret({ logDir });
    procs.push(ferret);
    const store = await startService('store', { logDir, env: { MONGODB_URI: ferret.uri, OTEL_SDK_DISABLED: 'true' } });
    procs.push(store);
    storeAddr = store.addr;
  }

  const shared = {
    REDIS_URL: redis.url,
    STORE_ADDR: storeAddr,
    OTEL_SDK_DISABLED: 'true',
    TOOL_TEST_TOOLS: '1',
    TOOL_CORPUS_SOURCES: 'docs',
    // A burst fraction of 1 admits a tool's whole per-minute limit at once, so counts are exact.
    TOOL_BURST_FRACTION: '1',
    TOOL_OVERRIDES: JSON.stringify({
      test_echo: { cache: { ttlSeconds: 2 } },
      test_quota: { rateLimit: { maxPerMinute: 7 }, cache: { enabled: false } },
      test_slots: { rateLimit: { maxConcurrent: 3, timeoutMs: 10_000 }, cache: { enabled: false } },
      search_web: { rateLimit: { maxPerMinute: 3 } },
    }),
    TOOL_PREWARM_QUERIES: PREWARM.join(','),
    TOOL_PREWARM_INTERVAL_MS: '1500',
    // The brokers' two upstreams: the LLM is paused only while both are.
    LLM_UPSTREAMS: JSON.stringify(LLM_UPSTREAMS),
  };
  [a, b] = await Promise.all([
    startService('tool-service', { logDir, instance: 'a', env: shared }),
    startService('tool-service', { logDir, instance: 'b', env: shared }),
  ]);
  const breakerEnv = {
    ...shared, TOOL_REDIS_PREFIX: 'mesh:tool:c', SEARCH_URL: searchUrl, TOOL_OVERRIDES: '', TOOL_PREWARM_INTERVAL_MS: '0',
    TOOL_BREAKER_VOLUME: '3', TOOL_BREAKER_RESET_MS: '1500', TOOL_BURST_FRACTION: '0.1',
  };
  let d: ServiceProc;
  [c, d] = await Promise.all([
    startService('tool-service', { logDir, instance: 'c', env: breakerEnv }),
    startService('tool-service', { logDir, instance: 'd', env: breakerEnv }),
  ]);
  procs.push(a, b, c, d);
  [ca, cb, cc, cd] = [client(a), client(b), client(c), client(d)];
});

afterAll(async () => {
  clients.forEach((cl) => cl.close());
  await Promise.all([...procs].reverse().filter((p) => p.name.startsWith('tool-service')).map((p) => p.stop()));
  for (const p of [...procs].reverse().filter((p) => !p.name.startsWith('tool-service'))) await p.stop();
  await new Promise((r) => searchApi?.close(r));
});

it('lists the tools with their JSON schemas', async () => {
  const res = await unary(ca.listTools.bind(ca), {});
  const names = res.tools.map((t) => t.name);
  expect(names).toEqual(expect.arrayContaining(['search_web', 'plan', 'calculator', 'current_time']));
  const search = res.tools.find((t) => t.name === 'search_web')!;
  expect(JSON.parse(search.parametersJsonSchema)).toMatchObject({ type: 'object', required: ['query'] });
});

it('answers bad arguments with clear, structured errors (never gRPC errors)', async () => {
  const r1 = await call(ca, 'search_web', { limit: 50, foo: 1 });
  expect(r1.ok).toBe(false);
  expect(r1.error?.code).toBe('invalid_arguments');
  expect(r1.error?.message).toContain('query: is required');
  expect(r1.error?.message).toContain('foo: is not a known parameter');
  expect(r1.error?.message).toContain('limit: must be <= 20');
  const r2 = await unary(ca.invoke.bind(ca), { userId: 'user-1', runId: '', callId: '', toolName: 'calculator', argumentsJson: '{"expression": ' });
  expect(r2.error?.code).toBe('invalid_arguments');
  expect(r2.error?.message).toMatch(/not valid JSON/);
  const r3 = await call(ca, 'no_such_tool', {});
  expect(r3.error?.code).toBe('unknown_tool');
  const r4 = await call(ca, 'calculator', { expression: 'import({})' });
  expect(r4.error).toEqual({ code: 'invalid_arguments', message: 'function "import" is not allowed' });
  const r5 = await call(ca, 'current_time', { timeZone: 'Mars/Olympus' });
  expect(r5.error?.code).toBe('invalid_arguments');
  // Only a malformed request itself is a gRPC error.
  const badUser = await call(ca, 'calculator', { expression: '1+1' }, '$where').then(() => undefined, (e: unknown) => e);
  expect(codeOf(badUser)).toBe(status.INVALID_ARGUMENT);
});

it('calculator and current_time answer', async () => {
  const r = await call(cb, 'calculator', { expression: '(2 + 3) * sqrt(16)' });
  expect(JSON.parse(r.resultJson)).toEqual({ expression: '(2 + 3) * sqrt(16)', value: 20 });
  const t = await call(cb, 'current_time', { timeZone: 'Asia/Shanghai' });
  expect(JSON.parse(t.resultJson)).toMatchObject({ timeZone: 'Asia/Shanghai', utcOffset: '+08:00' });
});

it('admits exactly maxPerMinute calls in total across two replicas', async () => {
  const results = await Promise.all(Array.from({ length: 30 }, (_, i) => call(i % 2 ? ca : cb, 'test_quota', { text: `q${i}` })));
  const ok = results.filter((r) => r.ok && !r.degraded);
  const refused = results.filter((r) => r.error?.code === 'rate_limited');
  expect(ok).toHaveLength(7);
  expect(refused).toHaveLength(23);
  expect(refused[0]!.error!.message).toMatch(/calls per minute.*retry after \d+ ms/);
  // Both replicas admitted some: the limit is shared, not split.
  expect(await metric([a, b], 'tool_refusals_total', { tool: 'test_quota', reason: 'rpm' })).toBe(23);
});

it('never runs more than maxConcurrent at once across two replicas', async () => {
  const results = await Promise.all(Array.from({ length: 12 }, (_, i) => call(i % 2 ? ca : cb, 'test_slots', { text: `s${i}`, delayMs: 1_500 })));
  expect(results.filter((r) => r.ok)).toHaveLength(3);
  const refused = results.filter((r) => r.error?.code === 'rate_limited');
  expect(refused).toHaveLength(9);
  expect(refused[0]!.error!.message).toMatch(/too many calls at once/);
  // The slots are free again once the calls finished.
  expect((await call(ca, 'test_slots', { text: 'after' })).ok).toBe(true);
});

it('a replica that starts while Redis is away runs a tool within its share of the limits (TOOL_FALLBACK_REPLICAS)', async () => {
  // Redis at a port nothing listens on; test_slots allows 3 at once, over 3 replicas: 1 each. Its
  // lease (timeout + 5 s) is also how long a replica that lost Redis holds its share back for calls
  // the others were admitted in the shared state: 1 s + 5 s here.
  const e = await startService('tool-service', {
    logDir,
    instance: 'e',
    env: {
      REDIS_URL: `redis://127.0.0.1:${await freePort()}`, STORE_ADDR: '127.0.0.1:1', OTEL_SDK_DISABLED: 'true', TOOL_TEST_TOOLS: '1',
      TOOL_CORPUS_SOURCES: 'docs', TOOL_FALLBACK_REPLICAS: '3',
      TOOL_OVERRIDES: JSON.stringify({ test_slots: { rateLimit: { maxConcurrent: 3, timeoutMs: 1_000 }, cache: { enabled: false } } }),
    },
  });
  procs.push(e);
  const ce = client(e);
  await waitFor('its share admitting', async () => (await call(ce, 'test_slots', { text: 'probe' })).ok, { timeoutMs: 15_000, intervalMs: 250 });
  const results = await Promise.all(Array.from({ length: 6 }, (_, i) => call(ce, 'test_slots', { text: `e${i}`, delayMs: 500 })));
  expect(results.filter((r) => r.ok)).toHaveLength(1);
  expect(results.filter((r) => r.error?.code === 'rate_limited')).toHaveLength(5);
  // Its metrics say so (the alert MeshToolLimitsOnLocalShares reads them); a replica with Redis shares them.
  const metricsOf = (p: ServiceProc) => fetch(`http://127.0.0.1:${p.metricsPort}/metrics`).then((r) => r.text());
  expect(await metricsOf(e)).toMatch(/^tool_limits_shared\{tool="test_slots"[^}]*\} 0$/m);
  const shared = await metricsOf(a);
  expect(shared).toMatch(/^tool_limits_shared\{tool="test_slots"[^}]*\} 1$/m);
  expect(Number(/^tool_live_replicas\{tool="test_slots"[^}]*\} (\d+)$/m.exec(shared)?.[1])).toBeGreaterThanOrEqual(2);
  expect(shared).toMatch(/^tool_departed_replicas\{tool="test_slots"[^}]*\} 0$/m);
});

it('serves from the cache within the TTL, on either replica, and misses after it', async () => {
  const first = await call(ca, 'test_echo', { text: 'cache-me' });
  expect(first).toMatchObject({ ok: true, cached: false });
  const second = await call(cb, 'test_echo', { text: 'cache-me' });
  expect(second).toMatchObject({ ok: true, cached: true, resultJson: first.resultJson });
  // Same arguments in another order and with defaults spelled out: same key.
  const third = await call(ca, 'test_echo', { delayMs: 0, text: 'cache-me' });
  expect(third.cached).toBe(true);
  await sleep(3_000);
  const after = await call(cb, 'test_echo', { text: 'cache-me' });
  expect(after).toMatchObject({ ok: true, cached: false });
  expect(after.resultJson).not.toEqual(first.resultJson);
});

it('keeps results 6× longer while the LLM is paused (every upstream\'s pause key), as for an open breaker', async () => {
  const r = new Redis(redisUrl);
  const HOUR_MS = 3_600_000; // the calculator's TTL
  const ttlOf = async (resultJson: string) => {
    for (const key of await r.keys('mesh:tool:cache:calculator:*')) if ((await r.get(key)) === resultJson) return r.pttl(key);
    throw new Error('entry not found');
  };
  try {
    const normal = await call(ca, 'calculator', { expression: '17 * 23' });
    expect(await ttlOf(normal.resultJson)).toBeLessThanOrEqual(HOUR_MS);
    // What a broker's GlobalLimiter writes when a provider 429 pauses the fleet (Retry-After 5 s):
    // the first upstream only — runs' calls fall back to the second, so the LLM is not paused.
    await r.set(GlobalLimiter.pauseKey(LLM_QUOTA_KEY_PREFIX), String(Date.now() + 5_000), 'PX', 5_000);
    await sleep(1_100); // the tool-service reads the pause at most once a second
    const one = await call(cb, 'calculator', { expression: '13 * 31' });
    expect(await ttlOf(one.resultJson)).toBeLessThanOrEqual(HOUR_MS);
    // Both upstreams paused: the LLM is.
    await r.set(GlobalLimiter.pauseKey(`${LLM_QUOTA_KEY_PREFIX}:upstream:claude`), String(Date.now() + 5_000), 'PX', 5_000);
    await sleep(1_100);
    const paused = await call(cb, 'calculator', { expression: '19 * 29' });
    expect(paused.cached).toBe(false);
    expect(await ttlOf(paused.resultJson)).toBeGreaterThan(5 * HOUR_MS); // × TOOL_DEGRADED_TTL_FACTOR 6
    // A hit while paused stretches an entry written before.
    expect((await call(cb, 'calculator', { expression: '17 * 23' })).cached).toBe(true);
    await waitFor('the hit to stretch the entry', async () => (await ttlOf(normal.resultJson)) > 5 * HOUR_MS, { timeoutMs: 2_000, intervalMs: 50 });
  } finally {
    await r.del(GlobalLimiter.pauseKey(LLM_QUOTA_KEY_PREFIX), GlobalLimiter.pauseKey(`${LLM_QUOTA_KEY_PREFIX}:upstream:claude`));
    await r.quit();
  }
});

it('runs identical concurrent calls once, within and across replicas', async () => {
  const before = await metric([a, b], 'tool_executions_total', { tool: 'test_echo' });
  // 500 ms: the calls must all arrive while the leader runs (else some are plain cache hits), and a
  // follower waits at most the tool's timeout (1 s) for the leader's answer before it runs alone;
  // 500 leaves half a second for both on a busy machine (with 700, CI once saw two executions).
  const results = await Promise.all(Array.from({ length: 10 }, (_, i) => call(i % 2 ? ca : cb, 'test_echo', { text: 'single-flight', delayMs: 500 })));
  expect(results.every((r) => r.ok)).toBe(true);
  expect(new Set(results.map((r) => r.resultJson)).size).toBe(1);
  expect((await metric([a, b], 'tool_executions_total', { tool: 'test_echo' })) - before).toBe(1);
  expect(await metric([a, b], 'tool_singleflight_merges_total', { tool: 'test_echo' })).toBeGreaterThanOrEqual(8);
});

it('times out a slow call with a structured timeout error', async () => {
  const r = await call(ca, 'test_echo', { text: 'slow', delayMs: 5_000 });
  expect(r.ok).toBe(false);
  expect(r.error?.code).toBe('timeout');
  expect(r.error?.message).toMatch(/did not answer within 1000 ms/);
  expect(r.durationMs).toBeLessThan(4_000);
});

it('opens the breaker on failures, answers degraded, and closes after a half-open probe', async () => {
  const first = await call(cc, 'search_web', { query: 'failing one' });
  // The web backend failed: the local corpus answers, flagged degraded.
  expect(first).toMatchObject({ ok: true, degraded: true });
  expect(first.degradedReason).toMatch(/^failed:/);
  expect(JSON.parse(first.resultJson).backend).toBe('local');
  for (let i = 0; i < 4; i++) await call(cc, 'search_web', { query: `failing ${i}` });
  const open = await call(cc, 'search_web', { query: 'while open' });
  expect(open).toMatchObject({ ok: true, degraded: true });
  expect(open.degradedReason).toMatch(/^breaker_open:/);
  expect(await metric([c], 'tool_breaker_state', { tool: 'search_web' })).toBe(2);
  // Another replica, whose own breaker never saw a failure, fails fast too: the state is shared.
  const before = searchRequests;
  const elsewhere = await call(cd, 'search_web', { query: 'on the other replica' });
  expect(elsewhere).toMatchObject({ ok: true, degraded: true });
  expect(elsewhere.degradedReason).toMatch(/^breaker_open:/);
  expect(searchRequests).toBe(before);
  searchFails = false;
  await sleep(2_000); // > TOOL_BREAKER_RESET_MS: the next call is the half-open probe
  const probe = await call(cc, 'search_web', { query: 'healed' });
  expect(probe).toMatchObject({ ok: true, degraded: false });
  expect(JSON.parse(probe.resultJson)).toMatchObject({ backend: 'web', results: [{ title: 'About healed' }] });
  expect(await metric([c], 'tool_breaker_state', { tool: 'search_web' })).toBe(0);
});

it('pre-warms the configured queries without exceeding the tool limit', async () => {
  // search_web allows 3 calls a minute across both replicas: only 3 of the 5 queries can be warmed.
  await waitFor('pre-warming to hit the limit', async () => (await metric([a, b], 'tool_prewarm_total', { tool: 'search_web', result: 'refused' })) >= 1, { timeoutMs: 60_000, intervalMs: 300 });
  expect(await metric([a, b], 'tool_prewarm_total', { tool: 'search_web', result: 'filled' })).toBe(3);
  const results = await Promise.all(PREWARM.map((q) => call(ca, 'search_web', { query: q })));
  expect(results.filter((r) => r.cached)).toHaveLength(3);
  // The others are refused: the quota is spent (by pre-warming), and the local backend has no fallback.
  expect(results.filter((r) => r.error?.code === 'rate_limited')).toHaveLength(2);
  const hit = results.find((r) => r.cached)!;
  const body = JSON.parse(hit.resultJson);
  expect(body.backend).toBe('local');
  expect(body.results.length).toBeGreaterThan(0);
  expect(body.results[0]).toEqual(expect.objectContaining({ title: expect.any(String), url: expect.stringMatching(/^file:\/\//), snippet: expect.any(String), score: expect.any(Number) }));
});

(HAS_STORE ? it : it.skip)('plan: creates, reads, updates and lists the user\'s plans through the store', async () => {
  const created = await call(ca, 'plan', { action: 'create', title: 'Trip', steps: ['book', 'pack'] }, 'plan-user');
  expect(created.ok).toBe(true);
  const plan = JSON.parse(created.resultJson).plan;
  expect(plan).toMatchObject({ title: 'Trip', steps: ['book', 'pack'], status: 'draft' });
  const updated = await call(cb, 'plan', { action: 'update', planId: plan.id, status: 'active' }, 'plan-user');
  expect(JSON.parse(updated.resultJson).plan).toMatchObject({ id: plan.id, status: 'active', steps: ['book', 'pack'] });
  const got = await call(ca, 'plan', { action: 'get', planId: plan.id }, 'plan-user');
  expect(JSON.parse(got.resultJson).plan.status).toBe('active');
  const listed = await call(ca, 'plan', { action: 'list' }, 'plan-user');
  expect(JSON.parse(listed.resultJson).plans.map((p: { id: string }) => p.id)).toContain(plan.id);
  // Another user cannot see it.
  const other = await call(ca, 'plan', { action: 'get', planId: plan.id }, 'someone-else');
  expect(other.error?.code).toBe('invalid_arguments');
  const missing = await call(ca, 'plan', { action: 'create', steps: [] }, 'plan-user');
  expect(missing.error?.message).toContain('title: is required');
});
