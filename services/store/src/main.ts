// The store process: MongoDB client, gRPC server, metrics, health, retention cleanup — wiring only
// (configuration, listeners and shutdown phases: runService).
import { createRegistry, flushTelemetry, runService, type Service } from '@agent-mesh/common';
import { StoreServiceService } from '@agent-mesh/common/gen/store/v1/store';
import { RetentionCleanup } from './cleanup';
import { loadConfig, type StoreConfig } from './config';
import { createMongoClient } from './db/connection';
import { DatabaseHealth } from './db/health';
import { ensureIndexes } from './db/indexes';
import { QueryTimer } from './db/instrumented';
import { UpdateLimit } from './db/update-limit';
import { createStoreMetrics } from './metrics';
import { createRepos, openCollections } from './repos';
import { createStoreServer } from './server';

const SERVICE_NAME = 'store.v1.StoreService';

void runService({ name: 'store', loadConfig, flushTelemetry, build });

async function build(svc: Service<StoreConfig>): Promise<void> {
  const { config: cfg, logger } = svc;

  const registry = createRegistry('store');
  const metrics = createStoreMetrics(registry);
  const client = createMongoClient(cfg.mongo, metrics);
  svc.onShutdown('clients', 'mongodb', () => client.close());
  const db = client.db();
  const cols = openCollections(db, new QueryTimer(metrics, logger, cfg.slowQueryMs, cfg.dbRetryMs,
    new UpdateLimit(cfg.maxConcurrentUpdates, cfg.mongo.waitQueueTimeoutMS)));

  const metricsServer = await svc.metricsServer(registry, cfg.metricsPort);

  const grpc = await svc.grpcServer({
    port: cfg.port,
    services: [{ name: SERVICE_NAME, definition: StoreServiceService, implementation: createStoreServer({ repos: createRepos(cols), logger }) }],
    protoFiles: ['store/v1/store.proto'],
  });

  const cleanup = new RetentionCleanup(cols, { retentionMs: cfg.retentionMs, runStateRetentionMs: cfg.runStateRetentionMs }, logger, metrics);
  svc.onShutdown('stop', 'cleanup', () => cleanup.stop());

  // Stopped with the NOT_SERVING flip, so that it cannot set the status back to SERVING while the
  // server drains.
  const health = new DatabaseHealth(client, grpc, ['', SERVICE_NAME], {
    intervalMs: cfg.healthIntervalMs,
    prepare: () => ensureIndexes(db),
    onReady: () => cleanup.start(cfg.cleanupIntervalMs),
  }, logger, metrics);
  svc.onShutdown('notServing', 'db-health', () => health.stop());
  health.start();

  logger.info(
    {
      host: svc.host,
      port: grpc.port,
      metricsPort: metricsServer.port,
      pool: { max: cfg.mongo.maxPoolSize, min: cfg.mongo.minPoolSize, maxConcurrentUpdates: cfg.maxConcurrentUpdates },
      readPreference: cfg.mongo.readPreference,
    },
    'listening',
  );
}
