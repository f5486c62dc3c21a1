// The llm-broker peer: Generate (server stream of queue updates, deltas and the final usage) and CountTokens.
import { Metadata, type Client } from '@grpc/grpc-js';
import { llmBrokerClient, unary } from '@agent-mesh/common';
import type { BrokerGateway } from './types';
import { iterateCall } from './stream';

/** One completion, queue wait included, must finish within this. */
export const GENERATE_DEADLINE_MS = 5 * 60_000;

export function brokerGateway(addr: string): BrokerGateway & { client: Client; close(): void } {
  const client = llmBrokerClient(addr);
  return {
    client,
    async *generate(req, signal, gate) {
      // The gate first: a call on its way to the broker cannot wait for it there.
      if (gate) await gate;
      yield* iterateCall(client.generate(req, new Metadata(), { deadline: new Date(Date.now() + GENERATE_DEADLINE_MS) }), signal, (m) => m);
    },
    countTokens: (request, scope) => unary(client.countTokens.bind(client), { request }, scope),
    listModels: async (scope) => (await unary(client.listModels.bind(client), {}, scope)).models,
    async embed(req, signal, gate) {
      if (gate) await gate;
      return unary(client.embed.bind(client), req, { signal, timeoutMs: GENERATE_DEADLINE_MS });
    },
    close: () => client.close(),
  };
}
