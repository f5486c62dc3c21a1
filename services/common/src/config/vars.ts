// The variables more than one service reads (their peers' addresses, Redis, the shutdown budget,
// each service's port and interface), and those every process reads outside its config.ts
// (logging, telemetry, gRPC TLS). A service's config.ts names the shared ones it reads beside its
// own; docs/configuration.md lists a variable read by several services once, with who reads it.
import { defineVars } from './spec';

export const DEFAULT_PORTS = {
  EDGE: 8080,
  ORCHESTRATOR: 50051,
  LLM_BROKER: 50052,
  TOOL_SERVICE: 50053,
  STORE: 50054,
} as const;

/** Port of a service's HTTP side channel (Prometheus /metrics, JSON /metrics.json): gRPC port + 1000. */
export function metricsPortFor(grpcPort: number): number {
  return grpcPort + 1000;
}

const port = (service: string, p: number) => ({ type: 'int', default: p, min: 0, max: 65535, doc: `${service}'s ${service === 'the edge' ? 'HTTP' : 'gRPC'} port (0: any free port)` }) as const;
const host = (service: string) => ({
  type: 'string',
  default: '127.0.0.1',
  doc: `the interface every listener of ${service} binds (${service === 'the edge' ? 'HTTP' : 'gRPC and metrics'}); \`0.0.0.0\` in containers and Kubernetes`,
}) as const;
const peer = (service: string, p: number) => ({
  type: 'addrList',
  default: `127.0.0.1:${p}`,
  doc: `${service}: one \`host:port\` (a DNS name: every address it resolves to) or a comma-separated list of \`ip:port\` replicas; calls are balanced round-robin`,
}) as const;

export const sharedVars = defineVars({
  EDGE_PORT: port('the edge', DEFAULT_PORTS.EDGE),
  ORCHESTRATOR_PORT: port('the orchestrator', DEFAULT_PORTS.ORCHESTRATOR),
  LLM_BROKER_PORT: port('the llm-broker', DEFAULT_PORTS.LLM_BROKER),
  TOOL_SERVICE_PORT: port('the tool-service', DEFAULT_PORTS.TOOL_SERVICE),
  STORE_PORT: port('the store', DEFAULT_PORTS.STORE),
  EDGE_HOST: host('the edge'),
  ORCHESTRATOR_HOST: host('the orchestrator'),
  LLM_BROKER_HOST: host('the llm-broker'),
  TOOL_SERVICE_HOST: host('the tool-service'),
  STORE_HOST: host('the store'),
  ORCHESTRATOR_ADDR: peer('the orchestrator', DEFAULT_PORTS.ORCHESTRATOR),
  LLM_BROKER_ADDR: peer('the llm-broker', DEFAULT_PORTS.LLM_BROKER),
  TOOL_SERVICE_ADDR: peer('the tool-service', DEFAULT_PORTS.TOOL_SERVICE),
  STORE_ADDR: peer('the store', DEFAULT_PORTS.STORE),
  METRICS_PORT: {
    type: 'int', min: 0, max: 65535, defaultDoc: 'gRPC port + 1000',
    doc: 'the HTTP side channel of a gRPC service: Prometheus `/metrics`, JSON `/metrics.json`, probes `/healthz` and `/readyz`',
  },
  REDIS_URL: {
    type: 'string', default: 'redis://127.0.0.1:6379',
    doc: 'Redis: quota state, limits, caches, run logs, leases. With `REDIS_SENTINELS` or `REDIS_CLUSTER_NODES` only its credentials, database and `rediss:` (TLS) are used',
  },
  REDIS_SENTINELS: {
    type: 'addrList', default: '', defaultDoc: 'none',
    doc: 'Sentinel-managed Redis: the sentinels, `host:port,host:port,…`; the client asks them for the primary of `REDIS_SENTINEL_NAME` (again after a failover)',
  },
  REDIS_SENTINEL_NAME: { type: 'string', default: 'mymaster', doc: 'the primary\'s name the sentinels monitor (with `REDIS_SENTINELS`)' },
  REDIS_CLUSTER_NODES: {
    type: 'addrList', default: '', defaultDoc: 'none',
    doc: 'Redis Cluster: some of its nodes, `host:port,host:port,…` (the client learns the rest); exclusive with `REDIS_SENTINELS`; Redis 7.0 or later (sharded Pub/Sub)',
  },
  SHUTDOWN_GRACE_MS: { type: 'int', default: 10_000, min: 0, doc: 'the whole shutdown budget, spent in phases (see [Start and shutdown](#start-and-shutdown))' },
});

/** Read by every process outside its config.ts: the logger, the telemetry preload, gRPC credentials. */
export const processVars = defineVars({
  LOG_LEVEL: { type: 'string', default: 'info', doc: 'pino level; `debug` adds message bodies' },
  OTEL_EXPORTER_OTLP_ENDPOINT: { type: 'string', default: 'http://127.0.0.1:4318', doc: 'where traces go (OTLP/HTTP)' },
  OTEL_EXPORTER_OTLP_PROTOCOL: { type: 'string', default: 'http/protobuf', values: ['http/protobuf', 'http/json'], doc: "the traces' encoding: protobuf (OpenTelemetry's default; less than half the bytes, and less of the service's CPU) or JSON" },
  OTEL_SERVICE_NAME: { type: 'string', default: 'agent-mesh', doc: "the traces' service name (the launcher and the manifests set each service's)" },
  OTEL_SDK_DISABLED: { type: 'bool', default: false, doc: 'true: no tracing at all' },
  OTEL_BSP_SCHEDULE_DELAY: { type: 'int', default: 1000, min: 0, doc: 'ms between two exports of buffered spans' },
  GRPC_TLS_CA: { type: 'string', default: '', doc: 'with `GRPC_TLS_CERT` and `GRPC_TLS_KEY` (all three or none): mutual TLS on every gRPC server and client, PEM files re-read every 5 s; empty: plaintext' },
  GRPC_TLS_CERT: { type: 'string', default: '', doc: "this process's certificate (PEM), for mutual TLS" },
  GRPC_TLS_KEY: { type: 'string', default: '', doc: "this process's private key (PEM), for mutual TLS" },
  GRPC_ALLOWED_CALLERS: {
    type: 'string', default: '', defaultDoc: 'empty',
    doc: "with mutual TLS: the callers this service's gRPC server serves, by their certificate's common name, each for all its methods or for some (`edge,orchestrator,tool-service:SavePlan+GetPlan+ListPlans`); others are refused with PERMISSION_DENIED (health and reflection stay open to the CA's certificates); empty: every certificate of the CA",
  },
  PROTO_DIR: { type: 'string', defaultDoc: 'the repository\'s `proto/`', doc: 'where the .proto files are (images that move them set it)' },
});

/** The Redis variables every service that uses Redis reads (spread into its VARS). */
export const redisVars = {
  REDIS_URL: sharedVars.REDIS_URL,
  REDIS_SENTINELS: sharedVars.REDIS_SENTINELS,
  REDIS_SENTINEL_NAME: sharedVars.REDIS_SENTINEL_NAME,
  REDIS_CLUSTER_NODES: sharedVars.REDIS_CLUSTER_NODES,
};
