import pino from 'pino';
import { createRedis } from './index';

const logger = pino({ level: 'silent' });

describe('createRedis', () => {
  test('auto-pipelining as asked on one Redis, never on a cluster (a MOVED during failover would fail the batch)', () => {
    const single = createRedis({ mode: 'single', url: 'redis://127.0.0.1:1' }, logger, { enableAutoPipelining: true, lazyConnect: true });
    const cluster = createRedis({ mode: 'cluster', url: 'redis://127.0.0.1:1', nodes: [{ host: '127.0.0.1', port: 1 }] }, logger, { enableAutoPipelining: true, lazyConnect: true });
    try {
      expect(single.options.enableAutoPipelining).toBe(true);
      const options = (cluster as unknown as { options: { enableAutoPipelining?: boolean; redisOptions?: { enableAutoPipelining?: boolean } } }).options;
      expect(options.enableAutoPipelining).toBe(false);
      expect(options.redisOptions?.enableAutoPipelining).toBeUndefined();
    } finally {
      single.disconnect();
      cluster.disconnect();
    }
  });
});
