// The services' Redis client on a Sentinel-managed Redis (a primary, a replica and three sentinels,
// as `npm start -- --redis sentinel` runs them), through a real failover: the primary killed with
// SIGKILL, the sentinels promoting the replica and announcing it (`+switch-master`). A client whose
// process is busy while it reconnects (its event loop blocked from the moment it starts asking the
// sentinels where the primary is until they have switched, as a loaded service's is) must still
// reach the new primary: ioredis' failover detector, hearing the announcement mid-connect, stopped
// the connector and ioredis then gave the client up for good ("Connection is closed." from then on).
import pino from 'pino';
import { execFileSync } from 'node:child_process';
import { closeRedis, config, createRedis, redisReady, type Redis } from '@agent-mesh/common';
import { testDir, waitFor } from '../support';

// eslint-disable-next-line @typescript-eslint/no-require-imports
const ha = require('../../deploy/local/redis-ha.js') as {
  startSentinel(o: { logDir: string }): Promise<{
    url: string; env: Record<string, string>; sentinels: { port: number }[];
    primary(): Promise<{ port: number; kill(): Promise<void> } | undefined>; stop(): Promise<void>;
  }>;
};

jest.setTimeout(90_000);

type Topology = Awaited<ReturnType<typeof ha.startSentinel>>;
let topology: Topology;
const clients: Redis[] = [];
const warnings: string[] = [];
const logger = pino({ level: 'warn' }, { write: (line: string) => void warnings.push(line) });

beforeAll(async () => {
  topology = await ha.startSentinel({ logDir: testDir('redis-sentinel') });
});

afterAll(async () => {
  for (const c of clients) c.disconnect();
  await topology?.stop();
});

async function client(): Promise<Redis> {
  // The orchestrator's settings: commands wait out a failover in the offline queue.
  const c = createRedis(config.readRedisTarget({ REDIS_URL: topology.url, ...topology.env }), logger, { enableOfflineQueue: true, maxRetriesPerRequest: 8 });
  clients.push(c);
  await redisReady(c);
  return c;
}

/** The primary's port as any sentinel names it, asked synchronously (the caller's event loop stays blocked). */
function primaryPortNow(): number[] {
  return topology.sentinels.map((s) => {
    try {
      return Number(execFileSync('redis-cli', ['-p', String(s.port), 'sentinel', 'get-master-addr-by-name', 'mymaster'], { encoding: 'utf8' }).split('\n')[1]);
    } catch {
      return 0;
    }
  });
}

/** Connections subscribed at the sentinels: the failover detectors of the clients, one per sentinel each. */
function sentinelSubscribers(): number {
  return topology.sentinels.reduce((n, s) => {
    const list = execFileSync('redis-cli', ['-p', String(s.port), 'client', 'list'], { encoding: 'utf8' });
    return n + list.split('\n').filter((l) => / sub=[1-9]/.test(l)).length;
  }, 0);
}

const sleepBlocking = (ms: number) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);

test('a client busy while the sentinels switch to the new primary reconnects to it (not given up)', async () => {
  const c = await client();
  await c.set('before', '1');
  const old = (await topology.primary())!;
  // When the client starts asking a sentinel where the primary is (after its connection to the
  // killed one closed), its process stays busy until a sentinel has switched, and a little longer:
  // the failover detector's `+switch-master` then arrives before the sentinel's answer.
  let blockedMs = 0;
  c.once('connecting', () => {
    const t0 = Date.now();
    while (!primaryPortNow().some((p) => p > 0 && p !== old.port) && Date.now() - t0 < 30_000) sleepBlocking(50);
    sleepBlocking(200);
    blockedMs = Date.now() - t0;
  });
  await old.kill();
  await waitFor('the client blocked through the switch', () => blockedMs > 0, { timeoutMs: 40_000 });
  expect(primaryPortNow().some((p) => p > 0 && p !== old.port)).toBe(true);
  // It reaches the new primary: a write there, and the write from before the failover (replicated).
  await waitFor('the client ready again', () => c.status === 'ready', { timeoutMs: 15_000 });
  await expect(c.set('after', '2')).resolves.toBe('OK');
  await expect(c.mget('before', 'after')).resolves.toEqual(['1', '2']);
  // The hazard was met, not dodged: ioredis gave the client up and it was connected again.
  expect(warnings.some((w) => w.includes('given up during a failover'))).toBe(true);
  console.log(`sentinel: client blocked ${blockedMs} ms through the switch; ready again on the new primary`);
});

test('a client its owner closes stays closed (quit, or disconnect)', async () => {
  const [a, b] = [await client(), await client()];
  await a.quit();
  b.disconnect();
  await new Promise((r) => setTimeout(r, 500));
  expect([a.status, b.status]).toEqual(['end', 'end']);
});

test('a closed client leaves no connection at the sentinels (closeRedis closes its failover detector too)', async () => {
  const before = sentinelSubscribers();
  const c = await client();
  await waitFor('its failover detector subscribed at every sentinel', () => sentinelSubscribers() === before + topology.sentinels.length, { timeoutMs: 10_000 });
  await closeRedis(c);
  await waitFor('the client ended', () => c.status === 'end', { timeoutMs: 5_000 });
  // QUIT alone closed only the connection to the primary: the detector's stayed subscribed.
  await waitFor('the detector\'s connections closed', () => sentinelSubscribers() === before, { timeoutMs: 5_000 });
});
