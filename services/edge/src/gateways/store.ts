// The store peer: the conversation reads and writes the public API needs.
import { createClient, unary } from '@agent-mesh/common';
import { StoreServiceClient } from '@agent-mesh/common/dist/gen/store/v1/store';
import type { StoreGateway } from './types';

export function storeGateway(addr: string): StoreGateway & { close(): void } {
  const client = createClient(StoreServiceClient, addr);
  return {
    createConversation: (req) => unary(client.createConversation.bind(client), req, { timeoutMs: 5_000 }),
    listConversations: (req) => unary(client.listConversations.bind(client), req, { timeoutMs: 5_000 }),
    getConversation: (req) => unary(client.getConversation.bind(client), req, { timeoutMs: 5_000 }),
    close: () => client.close(),
  };
}
