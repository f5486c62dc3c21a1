import { MeshError, Registry, status, createLogger } from '@agent-mesh/common';
import { createStoreMetrics } from '../metrics';
import { MongoBulkWriteError, MongoServerError } from 'mongodb';
import { filterShape, neverRan, QueryTimer, retryDelayMs, unavailableReason } from './instrumented';

// The driver does not export its pool's timeout error: take the class the pool itself throws.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const { WaitQueueTimeoutError } = require('mongodb/lib/cmap/errors') as { WaitQueueTimeoutError: new (message: string, address: string) => Error };

describe('unavailableReason', () => {
  it("knows the driver's pool timeout by the name it really has", () => {
    expect(unavailableReason(new WaitQueueTimeoutError('Timed out while checking out a connection from connection pool', '127.0.0.1:27017'))).toBe('db_pool_exhausted');
  });
  it('looks inside a bulk write for what stopped it', () => {
    const timeout = new WaitQueueTimeoutError('Timed out while checking out a connection from connection pool', '127.0.0.1:27017');
    // The driver's own class, built the way its bulk executor builds it (bulk/common.js).
    expect(unavailableReason(new MongoBulkWriteError(timeout as never, { insertedCount: 0 } as never))).toBe('db_pool_exhausted');
    const duplicate = new MongoBulkWriteError({ message: 'E11000 duplicate key error', code: 11000, writeErrors: [] }, { insertedCount: 1 } as never);
    expect(unavailableReason(duplicate)).toBeUndefined();
  });
  it("takes FerretDB's own backend being down or restarting for an unavailable database", () => {
    const down = new MongoServerError({ errmsg: '[msg_find.go:344] failed to connect to `user=postgres database=ferretdb`: dial tcp 127.0.0.1:5432: connect: connection refused' });
    const restarting = new MongoServerError({ errmsg: 'FATAL: terminating connection due to administrator command (SQLSTATE 57P01)' });
    expect(unavailableReason(down)).toBe('db_unavailable');
    expect(unavailableReason(restarting)).toBe('db_unavailable');
  });
  it('leaves other server errors alone', () => {
    expect(unavailableReason(new MongoServerError({ errmsg: 'E11000 duplicate key error', code: 11000 }))).toBeUndefined();
    expect(unavailableReason(new Error('boom'))).toBeUndefined();
  });
});

describe('filterShape', () => {
  it('lists keys and operators, never values', () => {
    const shape = filterShape({
      userId: 'secret-user',
      $or: [{ createdAt: { $lt: 5 } }, { createdAt: 5, _id: { $lt: 'secret-id' } }],
    });
    expect(shape).toBe('userId,$or[createdAt.$lt|createdAt,_id.$lt]');
    expect(shape).not.toContain('secret');
  });
  it('handles $in, $exists and nested documents', () => {
    expect(filterShape({ status: { $in: ['completed'] }, checkpoint: { $exists: true } })).toBe('status.$in,checkpoint.$exists');
    expect(filterShape({ usage: { total: 1 } })).toBe('usage{total}');
    expect(filterShape(undefined)).toBe('');
  });
});

describe('QueryTimer', () => {
  const registry = new Registry();
  const metrics = createStoreMetrics(registry);
  const logger = createLogger('test', 'silent');

  it('records the histogram and counts slow queries', async () => {
    const timer = new QueryTimer(metrics, logger, 0);
    await expect(timer.time('messages', 'find', { conversationId: 'x' }, async () => 7)).resolves.toBe(7);
    const text = await registry.metrics();
    expect(text).toMatch(/store_db_query_seconds_count\{op="find",collection="messages"\} 1/);
    expect(text).toMatch(/store_db_slow_queries_total\{op="find",collection="messages"\} 1/);
  });

  it('turns an unreachable database into UNAVAILABLE', async () => {
    const timer = new QueryTimer(metrics, logger, 1_000);
    const down = Object.assign(new Error('connect ECONNREFUSED'), { name: 'MongoServerSelectionError' });
    const err = await timer.time('runs', 'findOne', {}, async () => { throw down; }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(MeshError);
    expect((err as MeshError).code).toBe(status.UNAVAILABLE);
    expect((err as MeshError).reason).toBe('db_unavailable');
  });

  it('tries an operation that never ran again while the database restarts, within its budget', async () => {
    const timer = new QueryTimer(metrics, logger, 1_000, 2_000);
    const restarting = new MongoServerError({ errmsg: 'failed to connect to `user=postgres database=ferretdb`: dial tcp 127.0.0.1:5432: connect: connection refused' });
    let calls = 0;
    const op = async () => { calls += 1; if (calls < 3) throw restarting; return 'done'; };
    await expect(timer.time('conversations', 'findOneAndUpdate', {}, op)).resolves.toBe('done');
    expect(calls).toBe(3);
    expect(await registry.metrics()).toMatch(/store_db_query_retries_total\{op="findOneAndUpdate",collection="conversations"\} 2/);
    // Still down when the budget is spent: UNAVAILABLE, after ~the budget and not much longer.
    const started = Date.now();
    const err = await timer.time('runs', 'updateOne', {}, async () => { throw restarting; }).catch((e: unknown) => e);
    expect((err as MeshError).reason).toBe('db_unavailable');
    expect(Date.now() - started).toBeGreaterThanOrEqual(1_000);
    expect(Date.now() - started).toBeLessThan(2_500);
  });

  it('never tries again what may have run, nor anything when the budget is 0', async () => {
    const lost = Object.assign(new Error('connection 3 to 127.0.0.1:27017 closed'), { name: 'MongoNetworkError' });
    expect(neverRan(lost)).toBe(false);
    expect(neverRan(new MongoServerError({ errmsg: 'E11000 duplicate key error', code: 11000 }))).toBe(false);
    let calls = 0;
    const timer = new QueryTimer(metrics, logger, 1_000, 2_000);
    await timer.time('runs', 'updateOne', {}, async () => { calls += 1; throw lost; }).catch(() => undefined);
    expect(calls).toBe(1);
    const restarting = new MongoServerError({ errmsg: 'FATAL: the database system is starting up (SQLSTATE 57P03)' });
    const never = new QueryTimer(metrics, logger, 1_000);
    await never.time('runs', 'updateOne', {}, async () => { calls += 1; throw restarting; }).catch(() => undefined);
    expect(calls).toBe(2);
  });

  it('waits 100 ms doubling to 1 s between attempts, jittered', () => {
    expect([1, 2, 3, 4, 5, 9].map((a) => retryDelayMs(a, () => 0.5))).toEqual([100, 200, 400, 800, 1000, 1000]);
    expect(retryDelayMs(1, () => 0)).toBe(80);
    expect(retryDelayMs(1, () => 1)).toBeCloseTo(120);
  });

  it('passes other errors through', async () => {
    const timer = new QueryTimer(metrics, logger, 1_000);
    const boom = new Error('boom');
    await expect(timer.time('runs', 'findOne', {}, async () => { throw boom; })).rejects.toBe(boom);
  });
});
