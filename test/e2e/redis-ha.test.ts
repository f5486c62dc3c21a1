// Redis that survives losing a node: the fleet (two replicas of every service behind nginx) on a
// Sentinel-managed Redis (a primary, a replica, three sentinels) and on a Redis Cluster (three
// primaries with a replica each), as `npm start -- --replicas 2 --redis sentinel|cluster` runs
// them. During runs and /v1 load the primary holding the runs (and, in the cluster, then the one
// holding the LLM quota) is killed with SIGKILL: the upstream never sees more calls at once than
// the global limit (the emulator refuses any beyond it with a 429 and counts them), every run
// completes with each of its events delivered exactly once (streams resume), and /v1 calls get
// answers or clear refusals, never a 500.
import { slotOf } from '@agent-mesh/common';
import { emulatorStats, EventSourceRun, logDigest, waitFor, type EmulatorProc } from '../support';
import { FLEET_CONCURRENCY as CONCURRENCY, startTestFleet, type TestFleet } from '../support/fleet';
import { keys } from '../../services/orchestrator/src/runs/keys';
import { GlobalLimiter, LLM_QUOTA_KEY_PREFIX } from '@agent-mesh/common';

// eslint-disable-next-line @typescript-eslint/no-require-imports
const ha = require('../../deploy/local/redis-ha.js') as {
  startSentinel(o: { logDir: string }): Promise<Topology & { primary(): Promise<Node | undefined> }>;
  startCluster(o: { logDir: string }): Promise<Topology & { primaryOf(slot: number): Promise<Node | undefined> }>;
};
interface Node { port: number; kill(): Promise<void>; proc: { pid?: number } }
interface Topology { url: string; env: Record<string, string>; nodes: Node[]; stop(): Promise<void> }

jest.setTimeout(240_000);

let asked = 0;
const question = () => `Search the latest news about wind turbines and plan a short summary (${++asked})`;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const until = (what: string, check: () => Promise<boolean>, timeoutMs = 60_000) => waitFor(what, check, { timeoutMs });

describe.each(['sentinel', 'cluster'] as const)('Redis %s', (mode) => {
  type Ha = Awaited<ReturnType<typeof ha.startSentinel>> | Awaited<ReturnType<typeof ha.startCluster>>;
  let setup: TestFleet & { redis: Ha }, redis: Ha, emulator: EmulatorProc;

  beforeAll(async () => {
    setup = await startTestFleet({
      name: `redis-ha-${mode}`, jwtSecret: 'redis-ha-test-secret-long-enough-for-hs256',
      redis: (logDir): Promise<Ha> => (mode === 'sentinel' ? ha.startSentinel({ logDir }) : ha.startCluster({ logDir })),
      ttftMs: 200, runLeaseMs: 3000,
    });
    ({ redis, emulator } = setup);
  }, 240_000);

  afterAll(() => setup?.stop());

  const call = (p: string, init?: RequestInit, user?: string) => setup.call(p, init, user);
  const newConversation = (user: string) => setup.newConversation(user);

  /** /v1 calls from `users` callers, one after the other each, until `stop`: each call's HTTP status and when it ended. */
  function v1Load(users: number, stop: { now: boolean }): Promise<{ status: number; at: number }[]> {
    const out: { status: number; at: number }[] = [];
    let n = 0;
    const loop = async (u: number) => {
      while (!stop.now) {
        const res = await call('/v1/chat/completions', {
          method: 'POST', body: JSON.stringify({ model: 'upstream', messages: [{ role: 'user', content: `Say something about tides (${mode} ${u} ${++n})` }] }),
        }, `v1-${u}`).catch(() => undefined);
        await res?.text();
        out.push({ status: res?.status ?? 0, at: Date.now() });
        if (!res) await sleep(100);
      }
    };
    return Promise.all(Array.from({ length: users }, (_, u) => loop(u))).then(() => out);
  }

  test('kill -9 of the primary during runs and /v1 load: the quota holds, runs finish, streams resume', async () => {
    const t0 = Date.now();
    const before = await emulatorStats(emulator);
    const stop = { now: false };
    const v1 = v1Load(3, stop);
    try {
      await killDuringLoad(stop, v1, t0, before);
    } catch (err) {
      // What the services saw, for a failure to be understood from CI's output alone.
      console.log(`redis ${mode}: the fleet's warnings and resumes:\n${logDigest(setup.dir)}`);
      throw err;
    } finally {
      stop.now = true;
    }
  });

  async function killDuringLoad(stop: { now: boolean }, v1: Promise<{ status: number; at: number }[]>, t0: number, before: Awaited<ReturnType<typeof emulatorStats>>): Promise<void> {
    const runs = await Promise.all(['h1', 'h2', 'h3', 'h4', 'h5'].map(async (u) => new EventSourceRun(call, `${mode}-${u}`, await newConversation(`${mode}-${u}`), question())));
    await until('every run streaming', async () => runs.every((r) => r.seqs.length >= 3), 60_000);
    // The node holding the runs' keys (and in a cluster, then the one holding the LLM quota).
    const victims: Node[] = [];
    let killedAt = 0;
    if (mode === 'sentinel') {
      const s = redis as Awaited<ReturnType<typeof ha.startSentinel>>;
      const primary = (await s.primary())!;
      killedAt = Date.now();
      await primary.kill();
      victims.push(primary);
      await until('the sentinels promote the replica', async () => (await s.primary())?.port !== primary.port, 30_000);
    } else {
      const c = redis as Awaited<ReturnType<typeof ha.startCluster>>;
      for (const key of [keys.leases, GlobalLimiter.pauseKey(LLM_QUOTA_KEY_PREFIX)]) {
        const slot = slotOf(key);
        const primary = (await c.primaryOf(slot))!;
        if (victims.includes(primary)) continue;
        killedAt ||= Date.now();
        await primary.kill();
        victims.push(primary);
        await until(`the cluster promotes a replica for slot ${slot}`, async () => {
          const p = await c.primaryOf(slot);
          return p !== undefined && p.port !== primary.port;
        }, 30_000);
      }
    }
    const failedOverMs = Date.now() - killedAt;
    await Promise.all(runs.map((r) => r.done));
    // More /v1 traffic after the failover, on the new primary.
    await sleep(3_000);
    stop.now = true;
    const calls = await v1;
    const after = await emulatorStats(emulator);
    const statuses: Record<number, number> = {};
    for (const c of calls) statuses[c.status] = (statuses[c.status] ?? 0) + 1;
    const okAfter = calls.filter((c) => c.status === 200 && c.at > killedAt + failedOverMs).length;
    console.log(`redis ${mode}: killed ${victims.length} primar${victims.length > 1 ? 'ies' : 'y'}, failover done ${failedOverMs} ms after the first kill; `
      + `runs ${runs.map((r) => `${r.terminal?.event}/${r.seqs.length} events/${r.connections} conn`).join(', ')}; `
      + `/v1 statuses ${JSON.stringify(statuses)} (${okAfter} answered after the failover); upstream 429s ${after.rateLimited - before.rateLimited}, `
      + `max in flight ${after.maxInFlight} (limit ${CONCURRENCY}); ${Math.round((Date.now() - t0) / 1000)} s`);
    expect(after.rateLimited - before.rateLimited).toBe(0);
    expect(after.maxInFlight).toBeLessThanOrEqual(CONCURRENCY);
    for (const r of runs) {
      // The whole terminal event, so that a failure says which step failed and why.
      expect(`${r.terminal?.event} ${JSON.stringify(r.terminal?.data)}`).toMatch(/^run\.completed /);
      expect(r.seqs).toEqual(Array.from({ length: r.seqs.length }, (_, i) => i + 1));
    }
    // /v1 callers get answers or clear refusals (a busy mesh: 429/503), never a 500 or a dropped connection.
    expect(Object.keys(statuses).map(Number).filter((s) => ![200, 429, 503].includes(s))).toEqual([]);
    expect(okAfter).toBeGreaterThan(0);
  }
});
