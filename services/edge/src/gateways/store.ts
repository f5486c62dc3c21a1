// The store peer: the conversation reads and writes the public API needs, and the Responses API's kept answers.
import type { Client } from '@grpc/grpc-js';
import { storeClient, unary } from '@agent-mesh/common';
import type { StoreGateway } from './types';

/** Erasing a user's kept answers deletes every one of them (each up to 12 MiB). */
export const ERASE_RESPONSES_TIMEOUT_MS = 30_000;

export function storeGateway(addr: string): StoreGateway & { client: Client; close(): void } {
  const client = storeClient(addr);
  return {
    client,
    createConversation: (req, scope) => unary(client.createConversation.bind(client), req, scope),
    listConversations: (req, scope) => unary(client.listConversations.bind(client), req, scope),
    getConversation: (req, scope) => unary(client.getConversation.bind(client), req, scope),
    getRun: (req, scope) => unary(client.getRun.bind(client), req, scope),
    saveStoredResponse: (req, scope) => unary(client.saveStoredResponse.bind(client), req, scope),
    getStoredResponse: (req, scope) => unary(client.getStoredResponse.bind(client), req, scope),
    deleteStoredResponse: (req, scope) => unary(client.deleteStoredResponse.bind(client), req, scope),
    listStoredResponses: (req, scope) => unary(client.listStoredResponses.bind(client), req, scope),
    eraseStoredResponses: (req, scope) => unary(client.eraseStoredResponses.bind(client), req, { ...scope, timeoutMs: ERASE_RESPONSES_TIMEOUT_MS }),
    close: () => client.close(),
  };
}
