// The store process: config, MongoDB client, gRPC server, metrics, health, retention cleanup and
// shutdown — wiring only.
import { createLogger, createRegistry, Lifecycle,
  loadConfigOrExit, startGrpcServer, startMetricsServer } from '@agent-mesh/common';
import { StoreServiceService } from '@agent-mesh/common/dist/gen/store/v1/store';
import { RetentionCleanup } from './cleanup';
import { loadConfig } from './config';
import { createMongoClient } from './db/connection';
import { DatabaseHealth } from './db/health';
import { ensureIndexes } from './db/indexes';
import { QueryTimer } from './db/instrumented';
import { createStoreMetrics } from './metrics';
import { createRepos, openCollections } from './repos';
import { createStoreServer } from './server';

const SERVICE_NAME = 'store.v1.StoreService';

async function main(): Promise<void> {
  const logger = createLogger('store');
  const cfg = loadConfigOrExit('store', logger, loadConfig);
  const lifecycle = new Lifecycle(logger);
  lifecycle.handleSignals();

  const registry = createRegistry('store');
  const metrics = createStoreMetrics(registry);
  const client = createMongoClient(cfg.mongo, metrics);
  lifecycle.own('mongodb', () => client.close());
  const db = client.db();
  const cols = openCollections(db, new QueryTimer(metrics, logger, cfg.slowQueryMs));

  const metricsServer = await startMetricsServer(registry, cfg.metricsPort, logger, '127.0.0.1');
  lifecycle.own('metrics', () => metricsServer.close());

  const grpc = await startGrpcServer({
    host: '127.0.0.1',
    port: cfg.port,
    services: [{ name: SERVICE_NAME, definition: StoreServiceService, implementation: createStoreServer({ repos: createRepos(cols), logger }) }],
    protoFiles: ['store/v1/store.proto'],
    logger,
  });
  lifecycle.own('grpc', () => grpc.stop(lifecycle.grace));

  const cleanup = new RetentionCleanup(cols, { retentionMs: cfg.retentionMs, runStateRetentionMs: cfg.runStateRetentionMs }, logger, metrics);
  lifecycle.own('cleanup', () => cleanup.stop());

  // Closed before the gRPC server (closers run in reverse), so it cannot flip the status back to
  // SERVING while the server drains.
  const health = new DatabaseHealth(client, grpc, ['', SERVICE_NAME], {
    intervalMs: cfg.healthIntervalMs,
    prepare: () => ensureIndexes(db),
    onReady: () => cleanup.start(cfg.cleanupIntervalMs),
  }, logger, metrics);
  lifecycle.own('db-health', () => health.stop());
  health.start();

  logger.info(
    {
      port: grpc.port,
      metricsPort: metricsServer.port,
      pool: { max: cfg.mongo.maxPoolSize, min: cfg.mongo.minPoolSize },
      readPreference: cfg.mongo.readPreference,
    },
    'listening',
  );
}

main().catch((err: unknown) => {
  // eslint-disable-next-line no-console
  console.error('store failed to start:', err);
  process.exit(1);
});
