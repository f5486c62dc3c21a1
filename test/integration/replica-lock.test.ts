// Single flight across replicas (ReplicaLock) on a real Redis: a follower is woken by its leader's
// release announcement, not at its next look, whether the leader stored a value or failed.
// (A leader that dies, its lock lapsing, is in broker-cache.test.ts.)
import Redis from 'ioredis';
import { ReplicaLock } from '@agent-mesh/common';
import { startRedis, testDir, type RedisProc } from '../support';

jest.setTimeout(60_000);

let redis: RedisProc;
let a: Redis;
let b: Redis;
const locks: ReplicaLock[] = [];

beforeAll(async () => {
  redis = await startRedis({ logDir: testDir('replica-lock') });
  a = new Redis(redis.url);
  b = new Redis(redis.url);
});

afterAll(async () => {
  locks.forEach((l) => l.close());
  a?.disconnect();
  b?.disconnect();
  await redis?.stop();
});

/** One replica's lock, on its own connection; each looks for the leader's value only every `pollMs`. */
const replica = (client: Redis, pollMs: number) => {
  const lock = new ReplicaLock(client, { pollMs });
  locks.push(lock);
  return lock;
};
const readerOf = (client: Redis, key: string) => async () => (await client.get(key)) ?? undefined;

test("followers on other replicas get the leader's value as soon as it releases, long before their next look", async () => {
  const leader = await replica(a, 20_000).turn('t1:lock', { leaseMs: 30_000, waitMs: 50_000, ready: readerOf(a, 't1') });
  expect(leader.role).toBe('leader');
  const followers = [replica(b, 20_000), replica(b, 20_000)].map((lock) =>
    lock.turn('t1:lock', { leaseMs: 30_000, waitMs: 50_000, ready: readerOf(b, 't1') }),
  );
  // Both have looked once and are waiting (their next look would be 20 s away).
  await new Promise((r) => setTimeout(r, 500));
  const released = Date.now();
  await a.set('t1', 'the answer');
  if (leader.role === 'leader') await leader.release();
  for (const turn of await Promise.all(followers)) expect(turn).toEqual({ role: 'follower', value: 'the answer' });
  expect(Date.now() - released).toBeLessThan(10_000);
});

test('a leader that releases without a value (its call failed) hands the lead to a follower at once', async () => {
  const first = await replica(a, 20_000).turn('t2:lock', { leaseMs: 30_000, waitMs: 50_000, ready: readerOf(a, 't2') });
  expect(first.role).toBe('leader');
  const next = replica(b, 20_000).turn('t2:lock', { leaseMs: 30_000, waitMs: 50_000, ready: readerOf(b, 't2') });
  await new Promise((r) => setTimeout(r, 500));
  const released = Date.now();
  if (first.role === 'leader') await first.release();
  const turn = await next;
  expect(turn).toMatchObject({ role: 'leader', tookOver: true });
  expect(Date.now() - released).toBeLessThan(10_000);
  if (turn.role === 'leader') await turn.release();
});

test("a follower whose caller gives up stops waiting at once, with the caller's reason", async () => {
  const leader = await replica(a, 20_000).turn('t3:lock', { leaseMs: 30_000, waitMs: 50_000, ready: readerOf(a, 't3') });
  expect(leader.role).toBe('leader');
  const gaveUp = new AbortController();
  const looks = jest.fn(readerOf(b, 't3'));
  const following = replica(b, 20_000).turn('t3:lock', { leaseMs: 30_000, waitMs: 50_000, ready: looks, signal: gaveUp.signal });
  await new Promise((r) => setTimeout(r, 500));
  const asked = Date.now();
  gaveUp.abort(new Error('the client left'));
  await expect(following).rejects.toThrow('the client left');
  expect(Date.now() - asked).toBeLessThan(10_000);
  expect(looks).toHaveBeenCalledTimes(1); // its one look before waiting: no more after the abort
  if (leader.role === 'leader') await leader.release();
});
