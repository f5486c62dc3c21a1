// The store peer: the conversation reads and writes the public API needs.
import type { Client } from '@grpc/grpc-js';
import { storeClient, unary } from '@agent-mesh/common';
import type { StoreGateway } from './types';

export function storeGateway(addr: string): StoreGateway & { client: Client; close(): void } {
  const client = storeClient(addr);
  return {
    client,
    createConversation: (req) => unary(client.createConversation.bind(client), req),
    listConversations: (req) => unary(client.listConversations.bind(client), req),
    getConversation: (req) => unary(client.getConversation.bind(client), req),
    getRun: (req) => unary(client.getRun.bind(client), req),
    close: () => client.close(),
  };
}
