// Wires the real gRPC/HTTP gateways from the configuration.
import type { Redis } from '@agent-mesh/common';
import type { EdgeConfig } from '../config';
import { brokerGateway } from './broker';
import { grpcHealthProbe, redisProbe } from './health';
import { peerMetricsReader } from './metrics';
import { orchestratorGateway } from './orchestrator';
import { storeGateway } from './store';
import type { Gateways } from './types';

export * from './types';

export function createGateways(cfg: EdgeConfig, redis: Redis): Gateways {
  const orchestrator = orchestratorGateway(cfg.peers.orchestrator, { maxQueuedEvents: cfg.sse.bufferMaxEvents });
  const store = storeGateway(cfg.peers.store);
  const broker = brokerGateway(cfg.peers.broker);
  const probes = {
    llm: grpcHealthProbe(cfg.peers.broker),
    database: grpcHealthProbe(cfg.peers.store),
    orchestrator: grpcHealthProbe(cfg.peers.orchestrator),
    toolService: grpcHealthProbe(cfg.peers.tools),
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
    close: async () => {
      orchestrator.close();
      store.close();
      broker.close();
      Object.values(probes).forEach((p) => p.close());
    },
  };
}
