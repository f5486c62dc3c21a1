// The services' Redis client with coalesceWrites (the edge's and the broker's), on a real Redis: the
// commands of one turn of the event loop leave together when the turn ends, a turn's batch leaves
// while an earlier one is still unanswered (ioredis' auto-pipelining holds it back), answers come
// back to the right callers, and a reconnected client batches on its new connection too. The edge's
// client as the edge makes it (edgeRedis) is held to the same.
import pino from 'pino';
import { createRedis, redisReady, type Redis } from '@agent-mesh/common';
import { edgeRedis } from '../../services/edge/src/redis';
import { startRedis, testDir, waitFor, type RedisProc } from '../support';

jest.setTimeout(60_000);

const logger = pino({ level: 'silent' });
let redis: RedisProc;
const clients: Redis[] = [];

beforeAll(async () => {
  redis = await startRedis({ logDir: testDir('redis-writes') });
});

afterAll(async () => {
  for (const c of clients) c.disconnect();
  await redis?.stop();
});

async function client(options: Parameters<typeof createRedis>[2]): Promise<Redis> {
  return ready(createRedis(redis.url, logger, options));
}

async function ready(c: Redis): Promise<Redis> {
  clients.push(c);
  await redisReady(c);
  return c;
}

const edgeClient = () => ready(edgeRedis({ mode: 'single', url: redis.url }, logger));

const socketOf = (c: Redis) => (c as unknown as { stream: { bytesWritten: number; writableLength: number } }).stream;
/** Bytes given to the socket (sent or held in it). */
const written = (c: Redis) => socketOf(c).bytesWritten;
const endOfTurn = () => new Promise((resolve) => setImmediate(resolve));

/** Issues 20 commands in one turn: the bytes the socket holds unsent before the turn ends, and after. */
async function oneTurn(c: Redis, tag: string): Promise<{ during: number; after: number }> {
  const answers = Array.from({ length: 20 }, (_, i) => c.set(`${tag}:${i}`, String(i)));
  const during = socketOf(c).writableLength;
  await endOfTurn();
  const after = socketOf(c).writableLength;
  expect(await Promise.all(answers)).toEqual(Array(20).fill('OK'));
  return { during, after };
}

test.each([
  ['coalesceWrites', () => client({ coalesceWrites: true })],
  ["the edge's client", edgeClient],
] as const)('the commands of one turn leave together when the turn ends: %s', async (name, make) => {
  const c = await make();
  const { during, after } = await oneTurn(c, `turn:${name}`);
  expect(during).toBeGreaterThan(20 * 'SET'.length); // all held until the turn ends
  expect(after).toBe(0); // then written, in one go
  // Each answer reached its own caller.
  expect(await c.mget(`turn:${name}:0`, `turn:${name}:7`, `turn:${name}:19`)).toEqual(['0', '7', '19']);
});

test('without it, each command is written at once (what the first test tells apart)', async () => {
  const c = await client({});
  const { during } = await oneTurn(c, 'plain');
  expect(during).toBe(0);
});

test.each([
  ['coalesceWrites', () => client({ coalesceWrites: true }), true],
  ["the edge's client (its calls' admissions not behind other calls' settlements)", edgeClient, true],
  ["ioredis' auto-pipelining, which holds it back until the earlier batch is answered", () => client({ enableAutoPipelining: true }), false],
] as const)('a turn\'s batch leaves while an earlier one is unanswered: %s', async (name, make, leaves) => {
  const c = await make();
  // The first batch: a pop that blocks the connection for 300 ms (the list is empty).
  const blocked = c.blpop(`empty:${name}`, 0.3);
  await endOfTurn();
  await endOfTurn();
  const before = written(c);
  const next = c.set(`after:${name}`, 'x');
  await endOfTurn();
  await endOfTurn();
  expect(written(c) > before).toBe(leaves);
  // Answered in order once the pop gives up.
  expect(await blocked).toBeNull();
  expect(await next).toBe('OK');
});

test('a client that reconnects batches on its new connection', async () => {
  const c = await client({ coalesceWrites: true });
  const first = (c as unknown as { stream: object }).stream;
  // Redis drops every normal client: the client reconnects on its own.
  const admin = await client({});
  await admin.client('KILL', 'TYPE', 'normal', 'SKIPME', 'yes');
  await waitFor('a new connection', () => c.status === 'ready' && (c as unknown as { stream: object }).stream !== first);
  const { during, after } = await oneTurn(c, 'again');
  expect(during).toBeGreaterThan(20 * 'SET'.length);
  expect(after).toBe(0);
});
