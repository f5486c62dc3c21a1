// The llm-broker peer: Generate (server stream of queue updates, deltas and the final usage).
import { Metadata } from '@grpc/grpc-js';
import { createClient } from '@agent-mesh/common';
import { LlmBrokerServiceClient } from '@agent-mesh/common/dist/gen/llmbroker/v1/llm_broker';
import type { BrokerGateway } from './types';
import { iterateCall } from './stream';

/** One completion, queue wait included, must finish within this. */
const GENERATE_DEADLINE_MS = 5 * 60_000;

export function brokerGateway(addr: string): BrokerGateway & { close(): void } {
  const client = createClient(LlmBrokerServiceClient, addr);
  return {
    generate: (req, signal) =>
      iterateCall(client.generate(req, new Metadata(), { deadline: new Date(Date.now() + GENERATE_DEADLINE_MS) }), signal, (m) => m),
    close: () => client.close(),
  };
}
