// The store's Prometheus metrics: query time, pool usage and retention cleanup.
import { Counter, Gauge, Histogram, type Registry } from '@agent-mesh/common';

export interface StoreMetrics {
  queryTime: Histogram<'op' | 'collection'>;
  slowQueries: Counter<'op' | 'collection'>;
  queryErrors: Counter<'op' | 'collection'>;
  queryRetries: Counter<'op' | 'collection'>;
  poolInUse: Gauge;
  poolSize: Gauge;
  poolMax: Gauge;
  dbUp: Gauge;
  cleanupRunsCleaned: Counter;
  cleanupConversationsDeleted: Counter;
  cleanupMessagesDeleted: Counter;
  cleanupFailures: Counter;
  cleanupLastRun: Gauge;
  cleanupLastDuration: Gauge;
}

export function createStoreMetrics(registry: Registry): StoreMetrics {
  const registers = [registry];
  return {
    queryTime: new Histogram({
      name: 'store_db_query_seconds',
      help: 'MongoDB operation time by operation and collection',
      labelNames: ['op', 'collection'],
      // The brief's target is < 100 ms; buckets around it, and up to the "slow database" runbook's 1 s+.
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers,
    }),
    slowQueries: new Counter({ name: 'store_db_slow_queries_total', help: 'Operations slower than SLOW_QUERY_MS', labelNames: ['op', 'collection'], registers }),
    queryErrors: new Counter({ name: 'store_db_query_errors_total', help: 'Operations that failed', labelNames: ['op', 'collection'], registers }),
    queryRetries: new Counter({ name: 'store_db_query_retries_total', help: 'Operations tried again because the database was restarting (they had not run)', labelNames: ['op', 'collection'], registers }),
    poolInUse: new Gauge({ name: 'store_db_pool_in_use', help: 'Connections checked out of the pool', registers }),
    poolSize: new Gauge({ name: 'store_db_pool_size', help: 'Open connections in the pool', registers }),
    poolMax: new Gauge({ name: 'store_db_pool_max', help: 'maxPoolSize (per server)', registers }),
    dbUp: new Gauge({ name: 'store_db_up', help: '1 while MongoDB answers ping', registers }),
    cleanupRunsCleaned: new Counter({ name: 'store_cleanup_runs_cleaned_total', help: 'Finished runs whose checkpoint state was dropped', registers }),
    cleanupConversationsDeleted: new Counter({ name: 'store_cleanup_conversations_deleted_total', help: 'Conversations deleted by retention', registers }),
    cleanupMessagesDeleted: new Counter({ name: 'store_cleanup_messages_deleted_total', help: 'Messages deleted with their conversations', registers }),
    cleanupFailures: new Counter({ name: 'store_cleanup_failures_total', help: 'Cleanup passes that failed', registers }),
    cleanupLastRun: new Gauge({ name: 'store_cleanup_last_run_timestamp_seconds', help: 'End of the last successful cleanup pass (Unix s)', registers }),
    cleanupLastDuration: new Gauge({ name: 'store_cleanup_last_duration_seconds', help: 'Duration of the last cleanup pass', registers }),
  };
}
