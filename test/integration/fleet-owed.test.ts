// The fleet's ledger of owed calls (FleetOwedCalls) on a real Redis, kept by two brokers as by two
// replicas sharing a quota: a run begun on one is paid by calls admitted on the other, each tells
// its share of what the fleet still owes, debts lapse and the share that came is learned as on one
// broker, and a broker whose Redis is gone tells its own ledger. The clock is the test's; each
// broker hands over when the test says (sync), not on its timer.
import Redis from 'ioredis';
import { FleetOwedCalls, owedKeys } from '../../services/llm-broker/src/queue/fleet-owed';
import { OwedCalls } from '../../services/llm-broker/src/queue/owed';
import { startRedis, testDir, waitFor, type RedisProc } from '../support';

let redis: RedisProc;
const clients: Redis[] = [];
const ledgers: FleetOwedCalls[] = [];
let t = 1_000_000;
const now = () => t;
let callMs: number | undefined;
let n = 0;

beforeAll(async () => {
  redis = await startRedis({ logDir: testDir('fleet-owed') });
});

beforeEach(() => {
  callMs = undefined;
});

afterAll(async () => {
  for (const l of ledgers) l.close();
  for (const c of clients) c.disconnect();
  await redis?.stop();
});

async function client(): Promise<Redis> {
  const c = new Redis(redis.url, { maxRetriesPerRequest: 1 });
  clients.push(c);
  await waitFor('redis client', () => c.status === 'ready', { timeoutMs: 10_000 });
  return c;
}

/** `count` brokers on one fresh quota key, each on its own connection. */
async function fleet(count: number): Promise<{ key: string; brokers: FleetOwedCalls[] }> {
  const key = `test:owed:${++n}`;
  const brokers: FleetOwedCalls[] = [];
  for (let i = 0; i < count; i++) {
    const l = new FleetOwedCalls(await client(), key, () => callMs, () => count, now, 3_600_000);
    ledgers.push(l);
    brokers.push(l);
  }
  return { key, brokers };
}

const syncAll = (brokers: FleetOwedCalls[]) => Promise.all(brokers.map((b) => b.sync()));

it('two brokers keep one ledger: runs begun on one, paid by calls on the other, each tells half of what the fleet owes', async () => {
  const { brokers: [a, b] } = await fleet(2);
  for (let i = 0; i < 4; i++) a!.owe(3); // four runs begun on A
  // Before anything was handed over, each tells its own ledger.
  expect(a!.expected()).toBe(12);
  expect(b!.expected()).toBe(0);
  await syncAll([a!, b!]);
  expect(a!.expected()).toBe(6);
  expect(b!.expected()).toBe(6);
  // Six of their later calls are admitted on B: on its own ledger they would pay nothing.
  for (let i = 0; i < 6; i++) b!.paid();
  expect(b!.expected()).toBe(3); // handed over yet or not, its share counts them
  await syncAll([b!, a!]);
  expect(a!.expected()).toBe(3);
  expect(b!.expected()).toBe(3);
  // Paying beyond what is owed leaves nothing owed, not a credit.
  for (let i = 0; i < 10; i++) a!.paid();
  await syncAll([a!, b!]);
  expect(a!.expected()).toBe(0);
  expect(b!.expected()).toBe(0);
});

it('with one broker, tells what its own ledger tells: debts paid oldest first, lapsed after eight calls\' lengths, and the share that came', async () => {
  const { key, brokers: [fleetOne] } = await fleet(1);
  const own = new OwedCalls(() => callMs, now);
  const both = (f: (l: { owe(n: number): void; paid(): void }) => void) => {
    f(fleetOne!);
    f(own);
  };
  both((l) => l.owe(3));
  t += 1_000;
  both((l) => l.owe(3));
  for (let i = 0; i < 4; i++) both((l) => l.paid());
  await fleetOne!.sync();
  expect(fleetOne!.expected()).toBeCloseTo(own.expected(), 9);
  expect(fleetOne!.expected()).toBe(2);
  // The second run's two calls never come: its debt lapses 8 calls' lengths after it began.
  callMs = 1_000;
  t += 8_001;
  both((l) => l.owe(3));
  await fleetOne!.sync();
  expect(own.expected()).toBeLessThan(3);
  expect(fleetOne!.expected()).toBeCloseTo(own.expected(), 9);
  const admin = await client();
  expect(await admin.lrange(owedKeys(key).debts, 0, -1)).toEqual([`${t}:3`]);
});

it('a broker whose Redis is gone tells its own ledger once the fleet\'s figure is a second old', async () => {
  const { brokers: [a, b] } = await fleet(2);
  a!.owe(3);
  b!.owe(3);
  await syncAll([a!, b!]);
  await a!.sync(); // hears B's
  expect(a!.expected()).toBe(3);
  const gone = clients.at(-2)!; // A's connection
  gone.disconnect();
  a!.owe(3);
  expect(a!.expected()).toBe(4.5); // the fleet's 6 as last heard, and half of its own 3 not handed over
  await a!.sync(); // fails: what it handed over is lost (it would otherwise come back as one late debt)
  expect(a!.expected()).toBe(3);
  t += 1_001;
  expect(a!.expected()).toBe(6); // its own ledger: the two runs begun on it
  await b!.sync();
  expect(b!.expected()).toBe(3);
});
