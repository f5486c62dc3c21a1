// Process entry of the orchestrator: config, clients, run manager, gRPC and metrics servers,
// shutdown. Wiring only.
import { createLogger, createRedis, Lifecycle,
  loadConfigOrExit, redisReady, startGrpcServer, startMetricsServer } from '@agent-mesh/common';
import { OrchestratorServiceService } from '@agent-mesh/common/dist/gen/orchestrator/v1/orchestrator';
import { loadConfig } from './config';
import { BrokerGateway } from './gateways/broker';
import { StoreGateway } from './gateways/store';
import { ToolServiceGateway } from './gateways/tools';
import { createMetrics } from './metrics';
import { loadPrompts } from './pipeline/prompts';
import { RunLog } from './runlog/runlog';
import { RunNotifications } from './runlog/watch';
import { keys } from './runs/keys';
import { RunManager } from './runs/manager';
import { RunRegistry } from './runs/registry';
import { orchestratorService } from './server';

async function main(): Promise<void> {
  const logger = createLogger('orchestrator');
  const config = loadConfigOrExit('orchestrator', logger, loadConfig);
  const lifecycle = new Lifecycle(logger);
  lifecycle.handleSignals();
  const metrics = createMetrics();

  const redis = createRedis(config.redisUrl, logger);
  // Pub/Sub needs its own connection; it carries every watcher's notifications and the cancels.
  const subscriber = createRedis(config.redisUrl, logger, { enableOfflineQueue: true, maxRetriesPerRequest: null });
  lifecycle.own('redis', async () => void (await redis.quit().catch(() => undefined)));
  lifecycle.own('redis-subscriber', async () => void (await subscriber.quit().catch(() => undefined)));
  await Promise.all([redisReady(redis), redisReady(subscriber)]);

  const broker = new BrokerGateway(config.brokerAddr);
  const tools = new ToolServiceGateway(config.toolServiceAddr);
  const store = new StoreGateway(config.storeAddr);
  lifecycle.own('peers', () => {
    broker.close();
    tools.close();
    store.close();
  });

  const registry = new RunRegistry(redis, config.runLeaseMs);
  const log = new RunLog(redis, { maxEvents: config.runLogMaxEvents, retentionS: config.runLogRetentionS });
  const runs = new RunManager({ config, logger, metrics, registry, log, store, llm: broker, tools, prompts: loadPrompts() });
  const notes = new RunNotifications(subscriber, (channel, message) => {
    if (channel === keys.cancelChannel) runs.onCancelNotice(message);
  });
  await subscriber.subscribe(keys.cancelChannel);

  const server = await startGrpcServer({
    host: '127.0.0.1',
    port: config.port,
    services: [{ name: 'orchestrator.v1.OrchestratorService', definition: OrchestratorServiceService, implementation: orchestratorService({ logger, runs, log, notes }) }],
    protoFiles: ['orchestrator/v1/orchestrator.proto'],
    logger,
  });
  // Closers run last-registered first: stop serving, then hand the runs over, then the clients.
  lifecycle.own('runs', () => runs.stop());
  lifecycle.own('grpc', () => server.stop(Math.max(1_000, lifecycle.grace - 3_000)));
  const metricsServer = await startMetricsServer(metrics.registry, config.metricsPort, logger, '127.0.0.1');
  lifecycle.own('metrics', () => metricsServer.close());

  runs.startBackground();
  server.serve();
  logger.info({ port: server.port, overlap: config.agentOverlap, maxRounds: config.maxRounds }, 'listening');
}

main().catch((err: unknown) => {
  // eslint-disable-next-line no-console
  console.error('orchestrator failed to start:', err);
  process.exit(1);
});
