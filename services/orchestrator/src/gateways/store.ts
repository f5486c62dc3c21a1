// The store behind promises: conversation ownership, messages and runs. Deadlines always set.
import { storeClient, unary, type CallOpts } from '@agent-mesh/common';
import type {
  StoreServiceClient, EraseConversationResponse, ExportConversationResponse, Message, Run,
} from '@agent-mesh/common/gen/store/v1/store';

export type { Message, Run };

export class StoreGateway {
  readonly client: StoreServiceClient;
  constructor(addr: string) {
    this.client = storeClient(addr);
  }

  /** Resolves when the conversation exists and belongs to the user; NOT_FOUND otherwise. */
  async assertConversation(userId: string, conversationId: string, opts: CallOpts = {}): Promise<void> {
    await unary(this.client.getConversation.bind(this.client), { userId, conversationId, messagePageSize: 1, messagePageToken: '' }, opts);
  }

  async listMessages(userId: string, conversationId: string, limit: number, opts: CallOpts = {}): Promise<Message[]> {
    const res = await unary(this.client.listMessages.bind(this.client), { userId, conversationId, limit }, opts);
    return res.messages;
  }

  async appendMessages(userId: string, conversationId: string, messages: Message[], opts: CallOpts = {}): Promise<void> {
    await unary(this.client.appendMessages.bind(this.client), { userId, conversationId, messages }, opts);
  }

  async saveRun(userId: string, run: Run, opts: CallOpts = {}): Promise<void> {
    await unary(this.client.saveRun.bind(this.client), { userId, run }, opts);
  }

  async getRun(userId: string, runId: string, opts: CallOpts = {}): Promise<Run | undefined> {
    const res = await unary(this.client.getRun.bind(this.client), { userId, runId }, opts);
    return res.run;
  }

  async exportConversation(userId: string, conversationId: string, opts: CallOpts = {}): Promise<ExportConversationResponse> {
    return unary(this.client.exportConversation.bind(this.client), { userId, conversationId }, opts);
  }

  async eraseConversation(userId: string, conversationId: string, opts: CallOpts = {}): Promise<EraseConversationResponse> {
    return unary(this.client.eraseConversation.bind(this.client), { userId, conversationId }, opts);
  }

  close(): void {
    this.client.close();
  }
}
