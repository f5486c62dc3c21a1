// Wires the real gRPC/HTTP gateways from the configuration.
import { toolServiceClient, type Redis } from '@agent-mesh/common';
import type { EdgeConfig } from '../config';
import { brokerGateway } from './broker';
import { grpcHealthProbe, redisProbe } from './health';
import { peerMetricsReader } from './metrics';
import { orchestratorGateway } from './orchestrator';
import { storeGateway } from './store';
import { jaegerReader } from '../ops/jaeger';
import { prometheusReader } from '../ops/prometheus';
import type { Gateways } from './types';

export * from './types';

export function createGateways(cfg: EdgeConfig, redis: Redis): Gateways {
  const orchestrator = orchestratorGateway(cfg.peers.orchestrator, { maxQueuedEvents: cfg.sse.bufferMaxEvents });
  const store = storeGateway(cfg.peers.store);
  const broker = brokerGateway(cfg.peers.broker);
  // The tool-service has no gateway here: its client exists for the health check only.
  const tools = toolServiceClient(cfg.peers.tools);
  const probes = {
    llm: grpcHealthProbe(broker.client),
    database: grpcHealthProbe(store.client),
    orchestrator: grpcHealthProbe(orchestrator.client),
    toolService: grpcHealthProbe(tools),
  };
  return {
    orchestrator,
    store,
    broker,
    health: { ...probes, cache: redisProbe(redis) },
    metrics: {
      orchestrator: peerMetricsReader(cfg.metricsAddrs.orchestrator),
      store: peerMetricsReader(cfg.metricsAddrs.store),
      broker: peerMetricsReader(cfg.metricsAddrs.broker),
      tools: peerMetricsReader(cfg.metricsAddrs.tools),
    },
    prometheus: cfg.ops.prometheusUrl ? prometheusReader(cfg.ops.prometheusUrl) : undefined,
    jaeger: cfg.ops.jaegerQueryUrl ? jaegerReader(cfg.ops.jaegerQueryUrl) : undefined,
    close: async () => {
      orchestrator.close();
      store.close();
      broker.close();
      tools.close();
    },
  };
}
