import { MeshError, Registry, status, createLogger } from '@agent-mesh/common';
import { createStoreMetrics } from '../metrics';
import { filterShape, QueryTimer } from './instrumented';

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
