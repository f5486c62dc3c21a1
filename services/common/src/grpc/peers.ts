// One client factory per callee, so that every caller of a service gets the same client: the
// shared channel options (channel.ts) and, for health checks, the very channel of that client.
import { loadPackageDefinition, type Client, type ServiceError } from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { LlmBrokerServiceClient } from '../gen/llmbroker/v1/llm_broker';
import { OrchestratorServiceClient } from '../gen/orchestrator/v1/orchestrator';
import { StoreServiceClient } from '../gen/store/v1/store';
import { ToolServiceClient } from '../gen/tools/v1/tools';
import { createClient } from './client';
import { HEALTH_PROTO_PATH } from './health-proto';

export const orchestratorClient = (addr: string) => createClient(OrchestratorServiceClient, addr);
export const llmBrokerClient = (addr: string) => createClient(LlmBrokerServiceClient, addr);
export const toolServiceClient = (addr: string) => createClient(ToolServiceClient, addr);
export const storeClient = (addr: string) => createClient(StoreServiceClient, addr);

/** grpc.health.v1.Health, as proto-loader builds it (`status` as its enum name). */
export interface HealthClient extends Client {
  Check(
    req: { service: string },
    opts: { deadline: number },
    cb: (err: ServiceError | null, res?: { status: string }) => void,
  ): void;
}
type HealthCtor = new (addr: string, creds: null, options: { channelOverride: ReturnType<Client['getChannel']> }) => HealthClient;

let healthCtor: HealthCtor | undefined;

/**
 * The standard health client of a peer, over the peer client's own channel: the same connection
 * and options as the peer's calls (closing the peer client closes it too).
 */
export function healthClientOf(peer: Client): HealthClient {
  healthCtor ??= (
    loadPackageDefinition(loadSync(HEALTH_PROTO_PATH, { keepCase: true, enums: String })) as unknown as {
      grpc: { health: { v1: { Health: HealthCtor } } };
    }
  ).grpc.health.v1.Health;
  return new healthCtor(peer.getChannel().getTarget(), null, { channelOverride: peer.getChannel() });
}
