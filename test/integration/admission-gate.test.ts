// The admission gate's model in a real Redis, shared by two gates as by two orchestrators: a new
// run is admitted while the observed first call's remaining wait plus the marginal wait of every
// run admitted after it stays under the limit; the gates' clocks are the test's.
import Redis from 'ioredis';
import { AdmissionGate, type GateDecision } from '../../services/orchestrator/src/runs/admission';
import { startRedis, testDir, type RedisProc } from '../support';

let redis: RedisProc;
const clients: Redis[] = [];
let t = 1_000_000;
const now = () => t;
const quiet = { warn: () => undefined };
let n = 0;

beforeAll(async () => {
  redis = await startRedis({ logDir: testDir('admission-gate') });
});

afterAll(async () => {
  for (const c of clients) c.disconnect();
  await redis?.stop();
});

/** Two gates (two orchestrators) on one fresh key, limit 10 s. */
function gates(limitMs = 10_000): [AdmissionGate, AdmissionGate] {
  const key = `test:gate:${++n}`;
  const make = () => {
    const c = new Redis(redis.url, { maxRetriesPerRequest: 1 });
    clients.push(c);
    return new AdmissionGate(c, limitMs, quiet, now, key);
  };
  return [make(), make()];
}

function admitted(d: GateDecision) {
  if (!d.admitted) throw new Error(`refused (retry after ${d.retryAfterMs} ms)`);
  return d.observer!;
}

it('admits while the queue has room, counting the runs admitted on any replica after the one observed', async () => {
  const [a, b] = gates();
  const first = admitted(await a.check());
  // Its first call joined with 4 s to wait; each further first call waits 2 s more.
  await first.observe(4_000, 2_000);
  // Behind it: 6 s for the second run, 8 s, 10 s for the fourth (not over the limit); 12 s for the fifth.
  expect((await b.check()).admitted).toBe(true);
  expect((await a.check()).admitted).toBe(true);
  expect((await b.check()).admitted).toBe(true);
  const refused = await a.check();
  expect(refused).toEqual({ admitted: false, retryAfterMs: 2_000 });
  expect(await b.check()).toEqual({ admitted: false, retryAfterMs: 2_000 });
});

it('reopens by itself as the queue drains, and only for the room that drained', async () => {
  const [a, b] = gates();
  await admitted(await a.check()).observe(14_000, 1_000);
  expect(await b.check()).toEqual({ admitted: false, retryAfterMs: 5_000 }); // 15 s
  t += 5_500; // 8.5 s left: room for one more run (9.5 s), not two (10.5 s)
  expect((await b.check()).admitted).toBe(true);
  expect((await a.check()).admitted).toBe(false);
});

it('keeps the newest run\'s observation: an older one arriving late is ignored', async () => {
  const [a, b] = gates();
  const older = admitted(await a.check());
  const newer = admitted(await b.check());
  await newer.observe(2_000, 1_000);
  await older.observe(30_000, 1_000); // measured before the newer one: stale
  expect((await a.check()).admitted).toBe(true);
  await newer.observe(30_000, 1_000); // the newest says the queue is full now
  expect((await a.check()).admitted).toBe(false);
});

it('a first call admitted at once does not undo what the runs admitted before it will cost, and keeps the last marginal wait known', async () => {
  const [a, b] = gates();
  await admitted(await a.check()).observe(9_000, 3_000);
  expect((await b.check()).admitted).toBe(false); // 12 s
  t += 9_000; // 3 s left
  const next = admitted(await b.check()); // 6 s
  await next.observe(0, 0);
  expect((await a.check()).admitted).toBe(true); // 6 s → 9 s
  expect((await b.check()).admitted).toBe(true); // 9 s → 12 s
  expect((await a.check()).admitted).toBe(false);
  t += 3_000; // the marginal wait kept: 3 s a run
  expect((await a.check()).admitted).toBe(true);
  expect((await a.check()).admitted).toBe(false);
});

it('reopens as the queue drains even when the runs admitted last never report (their first calls answered from the cache)', async () => {
  const [a, b] = gates();
  await admitted(await a.check()).observe(0, 4_000);
  expect((await b.check()).admitted).toBe(true); // 4 s
  expect((await a.check()).admitted).toBe(true); // 8 s
  expect((await b.check()).admitted).toBe(false); // 12 s
  t += 2_000;
  expect((await b.check()).admitted).toBe(true); // 10 s
  t += 14_000;
  expect((await a.check()).admitted).toBe(true);
});

it('lets in the first run and ten more before any reported what one more adds (a cold deployment)', async () => {
  const [a, b] = gates();
  for (let i = 0; i < 11; i++) expect((await (i % 2 ? a : b).check()).admitted).toBe(true);
  expect((await a.check()).admitted).toBe(false);
  t += 1_000; // the queue drains meanwhile: room for one more
  expect((await b.check()).admitted).toBe(true);
  expect((await b.check()).admitted).toBe(false);
});

it('admits everything with the limit at 0, and admits when Redis is unreachable', async () => {
  const [off] = gates(0);
  const c = new Redis(redis.url, { maxRetriesPerRequest: 0, lazyConnect: true, enableOfflineQueue: false });
  clients.push(c);
  const unreachable = new AdmissionGate(c, 10_000, quiet, now, 'test:gate:unreachable');
  expect(await off.check()).toEqual({ admitted: true });
  expect(await unreachable.check()).toEqual({ admitted: true });
});
