import { MeshError, Registry, status, createLogger } from '@agent-mesh/common';
import { createStoreMetrics } from '../metrics';
import { MongoServerError } from 'mongodb';
import { filterShape, QueryTimer, unavailableReason } from './instrumented';

// The driver does not export its pool's timeout error: take the class the pool itself throws.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const { WaitQueueTimeoutError } = require('mongodb/lib/cmap/errors') as { WaitQueueTimeoutError: new (message: string, address: string) => Error };

describe('unavailableReason', () => {
  it("knows the driver's pool timeout by the name it really has", () => {
    expect(unavailableReason(new WaitQueueTimeoutError('Timed out while checking out a connection from connection pool', '127.0.0.1:27017'))).toBe('db_pool_exhausted');
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

  it('passes other errors through', async () => {
    const timer = new QueryTimer(metrics, logger, 1_000);
    const boom = new Error('boom');
    await expect(timer.time('runs', 'findOne', {}, async () => { throw boom; })).rejects.toBe(boom);
  });
});
