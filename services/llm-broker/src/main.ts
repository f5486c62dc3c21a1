// Process entry of the llm-broker: the broker (assemble.ts) behind its gRPC and metrics servers —
// wiring only (configuration, listeners and shutdown phases: runService).
import { createRegistry, flushTelemetry, runService, type Service } from '@agent-mesh/common';
import { assembleBroker, describeUpstreams } from './assemble';
import { loadConfig, type BrokerConfig } from './config';
import { brokerService, PROTO_FILES } from './server';

void runService({ name: 'llm-broker', loadConfig, flushTelemetry, build });

async function build(svc: Service<BrokerConfig>): Promise<void> {
  const { config: cfg, logger } = svc;
  const registry = createRegistry('llm-broker');
  const { broker } = await assembleBroker(svc, cfg, registry);
  const server = await svc.grpcServer({ port: cfg.port, services: [brokerService(broker, logger)], protoFiles: PROTO_FILES });
  const metricsServer = await svc.metricsServer(registry, cfg.metricsPort);
  server.serve();
  logger.info(
    {
      host: svc.host,
      port: server.port,
      metricsPort: metricsServer.port,
      upstreams: describeUpstreams(cfg),
      timeScale: cfg.timeScale,
      breaker: cfg.breaker,
      retry: cfg.retry,
      cache: cfg.cache,
    },
    'listening',
  );
}
