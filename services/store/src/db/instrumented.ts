// One door for every collection operation: it times the operation into store_db_query_seconds,
// logs slow ones with their shape (collection, op, filter keys — never values), tries again an
// operation that never ran because the database was restarting (for STORE_DB_RETRY_MS), and turns
// "database unreachable" driver errors into UNAVAILABLE so callers can retry.
import { MeshError, type Logger } from '@agent-mesh/common';
import { MongoServerError, type Collection, type Db, type Document } from 'mongodb';
import type { StoreMetrics } from '../metrics';
import { TWO_CONNECTION_OPS, UpdateLimit } from './update-limit';

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
  // A bulk write (insertMany) wraps what stopped it: a pool timeout, a lost connection …
  const wrapped = (err as { errorResponse?: unknown })?.errorResponse;
  if (wrapped instanceof Error && wrapped !== err) return unavailableReason(wrapped);
  const name = (err as Error)?.name ?? '';
  if (name === 'MongoWaitQueueTimeoutError' || name === 'UpdateWaitTimeout') return 'db_pool_exhausted';
  if (UNREACHABLE.has(name)) return 'db_unavailable';
  if (err instanceof MongoServerError && BACKEND_DOWN.test(err.message)) return 'db_unavailable';
  return undefined;
}

/**
 * True when the operation certainly did not run, so running it again is safe whatever it does
 * (an `$inc` included): no server could be selected, or FerretDB could not reach PostgreSQL, or
 * PostgreSQL ended the statement's connection (a restart) before it committed. A dropped
 * connection to the database itself is not one of these: the operation may have run.
 */
export function neverRan(err: unknown): boolean {
  const name = (err as Error)?.name ?? '';
  if (name === 'MongoServerSelectionError' || name === 'MongoNotConnectedError') return true;
  return err instanceof MongoServerError && BACKEND_DOWN.test(err.message);
}

/** Waits between attempts of an operation that never ran: 100 ms doubling to 1 s, ±20 %. */
export function retryDelayMs(attempt: number, random = Math.random): number {
  return Math.min(1_000, 100 * 2 ** (attempt - 1)) * (0.8 + 0.4 * random());
}

/** True for a unique-index violation (E11000): an upsert whose id belongs to someone else. */
export function isDuplicateKey(err: unknown): boolean {
  return err instanceof MongoServerError && err.code === 11000;
}

export class QueryTimer {
  /**
   * `retryMs`: how long an operation that never ran (the database restarting) is tried again
   * before the caller is told UNAVAILABLE; 0: never.
   */
  constructor(
    private readonly metrics: StoreMetrics,
    private readonly logger: Logger,
    private readonly slowQueryMs: number,
    private readonly retryMs = 0,
    /** Bounds the updates running at once (see UpdateLimit); none by default. */
    private readonly updates = new UpdateLimit(0, 0),
  ) {}

  async time<R>(collection: string, op: string, filter: unknown, fn: () => Promise<R>): Promise<R> {
    const start = process.hrtime.bigint();
    const elapsedMs = () => Number(process.hrtime.bigint() - start) / 1e6;
    try {
      for (let attempt = 1; ; attempt += 1) {
        try {
          return await (TWO_CONNECTION_OPS.has(op) ? this.updates.run(fn) : fn());
        } catch (err) {
          const delay = retryDelayMs(attempt);
          if (!neverRan(err) || elapsedMs() + delay > this.retryMs) throw err;
          this.metrics.queryRetries.inc({ op, collection });
          await new Promise((r) => setTimeout(r, delay));
        }
      }
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
