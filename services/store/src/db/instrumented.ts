// One door for every collection operation: it times the operation into store_db_query_seconds,
// logs slow ones with their shape (collection, op, filter keys — never values), and turns
// "database unreachable" driver errors into UNAVAILABLE so callers can retry.
import { MeshError, type Logger } from '@agent-mesh/common';
import { MongoServerError, type Collection, type Db, type Document } from 'mongodb';
import type { StoreMetrics } from '../metrics';

/** The keys and operators of a filter, without its values: `userId,$or[createdAt.$lt|createdAt,_id.$lt]`. */
export function filterShape(filter: unknown): string {
  if (Array.isArray(filter)) return `[${filter.map(filterShape).join('|')}]`;
  if (filter === null || typeof filter !== 'object' || filter instanceof Date) return '';
  return Object.entries(filter as Record<string, unknown>)
    .map(([key, value]) => {
      if (Array.isArray(value)) return key.startsWith('$') ? `${key}${filterShape(value)}` : key;
      if (value !== null && typeof value === 'object' && !(value instanceof Date)) {
        const ops = Object.keys(value).filter((k) => k.startsWith('$'));
        if (ops.length) return `${key}.${ops.join('.')}`;
        return `${key}{${filterShape(value)}}`;
      }
      return key;
    })
    .join(',');
}

const UNREACHABLE = new Set([
  'MongoServerSelectionError',
  'MongoNetworkError',
  'MongoNetworkTimeoutError',
  'MongoNotConnectedError',
  'MongoTopologyClosedError',
  'MongoServerClosedError',
  'MongoWaitQueueTimeoutError',
  'MongoPoolClearedError',
  'PoolClearedOnNetworkError',
  'MongoOperationTimeoutError',
]);

/**
 * FerretDB answers with an ordinary server error when its own backend (PostgreSQL) cannot be
 * reached or is restarting: the database is unavailable all the same.
 */
const BACKEND_DOWN = /failed to connect to `|connection refused|the database system is (shutting down|starting up|in recovery mode)|SQLSTATE 57P0[1-3]/;

/** Which unavailability an error means, if it means one. */
export function unavailableReason(err: unknown): 'db_pool_exhausted' | 'db_unavailable' | undefined {
  const name = (err as Error)?.name ?? '';
  if (name === 'MongoWaitQueueTimeoutError') return 'db_pool_exhausted';
  if (UNREACHABLE.has(name)) return 'db_unavailable';
  if (err instanceof MongoServerError && BACKEND_DOWN.test(err.message)) return 'db_unavailable';
  return undefined;
}

/** True for a unique-index violation (E11000): an upsert whose id belongs to someone else. */
export function isDuplicateKey(err: unknown): boolean {
  return err instanceof MongoServerError && err.code === 11000;
}

export class QueryTimer {
  constructor(
    private readonly metrics: StoreMetrics,
    private readonly logger: Logger,
    private readonly slowQueryMs: number,
  ) {}

  async time<R>(collection: string, op: string, filter: unknown, fn: () => Promise<R>): Promise<R> {
    const start = process.hrtime.bigint();
    const elapsedMs = () => Number(process.hrtime.bigint() - start) / 1e6;
    try {
      return await fn();
    } catch (err) {
      this.metrics.queryErrors.inc({ op, collection });
      const reason = unavailableReason(err);
      if (reason) {
        this.logger.warn({ collection, op, err: (err as Error).message }, 'database unreachable');
        throw new MeshError(reason, 'the database is unavailable, try again shortly');
      }
      throw err;
    } finally {
      const ms = elapsedMs();
      this.metrics.queryTime.observe({ op, collection }, ms / 1000);
      if (ms >= this.slowQueryMs) {
        this.metrics.slowQueries.inc({ op, collection });
        this.logger.warn({ collection, op, filter: filterShape(filter), durationMs: Math.round(ms) }, 'slow query');
      }
    }
  }
}

/** A collection whose every operation goes through the timer: `col.run('find', filter, (c) => …)`. */
export class InstrumentedCollection<T extends Document> {
  constructor(
    readonly raw: Collection<T>,
    private readonly timer: QueryTimer,
  ) {}

  get name(): string {
    return this.raw.collectionName;
  }

  run<R>(op: string, filter: unknown, fn: (c: Collection<T>) => Promise<R>): Promise<R> {
    return this.timer.time(this.raw.collectionName, op, filter, () => fn(this.raw));
  }
}

export function instrumented<T extends Document>(db: Db, name: string, timer: QueryTimer): InstrumentedCollection<T> {
  return new InstrumentedCollection<T>(db.collection<T>(name), timer);
}
