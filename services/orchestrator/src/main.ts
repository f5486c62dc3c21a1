// Process entry of the orchestrator: clients, run manager, gRPC and metrics servers — wiring only
// (configuration, listeners and shutdown phases: runService).
import { closeRedis, createRedis, createSubscriber, flushTelemetry, redisReady, runService, type Service } from '@agent-mesh/common';
import { OrchestratorServiceService } from '@agent-mesh/common/gen/orchestrator/v1/orchestrator';
import { loadConfig, type OrchestratorConfig } from './config';
import { BrokerGateway } from './gateways/broker';
import { StoreGateway } from './gateways/store';
import { ToolServiceGateway } from './gateways/tools';
import { createMetrics } from './metrics';
import { loadPrompts } from './pipeline/prompts';
import { RunLog } from './runlog/runlog';
import { RunNotifications } from './runlog/watch';
import { keys } from './runs/keys';
import { ConversationData } from './runs/conversation-data';
import { RunManager } from './runs/manager';
import { AdmissionGate } from './runs/admission';
import { RunRegistry } from './runs/registry';
import { orchestratorService } from './server';

void runService({ name: 'orchestrator', loadConfig, flushTelemetry, build });

async function build(svc: Service<OrchestratorConfig>): Promise<void> {
  const { config, logger } = svc;
  const metrics = createMetrics();

  // Run state has no fallback: a command waits out a short outage (a Sentinel or Cluster failover
  // takes seconds) instead of failing the run; ~9 s of reconnect attempts, then it fails.
  const redis = createRedis(config.redis, logger, { enableOfflineQueue: true, maxRetriesPerRequest: 8 });
  // Pub/Sub needs its own connection; it carries every watcher's notifications and the cancels.
  const subscriber = createSubscriber(config.redis, logger);
  svc.onShutdown('clients', 'redis', () => closeRedis(redis));
  svc.onShutdown('clients', 'redis-subscriber', () => closeRedis(subscriber));
  await Promise.all([redisReady(redis), redisReady(subscriber)]);

  const broker = new BrokerGateway(config.brokerAddr);
  const tools = new ToolServiceGateway(config.toolServiceAddr);
  const store = new StoreGateway(config.storeAddr);
  svc.onShutdown('clients', 'peers', () => {
    broker.close();
    tools.close();
    store.close();
  });

  const registry = new RunRegistry(redis, config.runLeaseMs, config.runLogRetentionS);
  const log = new RunLog(redis, { maxEvents: config.runLogMaxEvents, retentionS: config.runLogRetentionS });
  const gate = new AdmissionGate(redis, config.runMaxQueueWaitMs, logger);
  const runs = new RunManager({ config, logger, metrics, registry, log, store, llm: broker, tools, prompts: loadPrompts(config.promptsDir), gate });
  const notes = new RunNotifications(subscriber, (channel, message) => {
    if (channel === keys.cancelChannel) runs.onCancelNotice(message);
  });
  await subscriber.subscribe(keys.cancelChannel);
  log.onAppended = (runId, firstSeq, events) => notes.appended(runId, firstSeq, events);

  const server = await svc.grpcServer({
    port: config.port,
    services: [{ name: 'orchestrator.v1.OrchestratorService', definition: OrchestratorServiceService, implementation: orchestratorService({ logger, runs, log, notes, data: new ConversationData({ runs, registry, log, store, logger, maxEvents: config.runLogMaxEvents }) }) }],
    protoFiles: ['orchestrator/v1/orchestrator.proto'],
  });
  // Runs still going when the drain ends are handed over to other replicas (from their checkpoint).
  svc.onShutdown('stop', 'runs', () => runs.stop());
  const metricsServer = await svc.metricsServer(metrics.registry, config.metricsPort);

  runs.startBackground();
  server.serve();
  logger.info({ host: svc.host, port: server.port, metricsPort: metricsServer.port, overlap: config.agentOverlap, maxRounds: config.maxRounds }, 'listening');
}
