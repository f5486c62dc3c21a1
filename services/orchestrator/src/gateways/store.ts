// The store behind promises: conversation ownership, messages and runs. Deadlines always set.
// The wire's enums (role, agent, status) are mapped here: the orchestrator speaks their names.
import {
  agentRoles, messageRoles, messageStatuses, runStatuses, storeClient, unary,
  type AgentRoleName, type CallOpts, type MessageRoleName, type MessageStatusName, type RunStatusName,
} from '@agent-mesh/common';
import {
  AgentRole, type StoreServiceClient, type EraseConversationResponse, type ExportConversationResponse, type Message as WireMessage, type Run as WireRun,
} from '@agent-mesh/common/gen/store/v1/store';

/** A conversation's message as the orchestrator writes and reads it. `agent`: for agent messages. */
export interface Message extends Omit<WireMessage, 'role' | 'agent' | 'status'> {
  role: MessageRoleName;
  agent?: AgentRoleName;
  status: MessageStatusName;
}

/** A run's durable state as the orchestrator saves it. */
export interface Run extends Omit<WireRun, 'status'> {
  status: RunStatusName;
}

const toWireMessage = (m: Message): WireMessage => ({
  ...m,
  role: messageRoles.toWire(m.role),
  agent: m.agent ? agentRoles.toWire(m.agent) : AgentRole.AGENT_ROLE_UNSPECIFIED,
  status: messageStatuses.toWire(m.status),
});

/** undefined for a message whose role this build does not know. */
function fromWireMessage(m: WireMessage): Message | undefined {
  const role = messageRoles.fromWire(m.role);
  if (!role) return undefined;
  return { ...m, role, agent: agentRoles.fromWire(m.agent), status: messageStatuses.fromWire(m.status) ?? 'complete' };
}

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
    return res.messages.map(fromWireMessage).filter((m): m is Message => m !== undefined);
  }

  async appendMessages(userId: string, conversationId: string, messages: Message[], opts: CallOpts = {}): Promise<void> {
    await unary(this.client.appendMessages.bind(this.client), { userId, conversationId, messages: messages.map(toWireMessage) }, opts);
  }

  async saveRun(userId: string, run: Run, opts: CallOpts = {}): Promise<void> {
    await unary(this.client.saveRun.bind(this.client), { userId, run: { ...run, status: runStatuses.toWire(run.status) } }, opts);
  }

  /** The run's stored checkpoint (JSON), empty when none. */
  async runCheckpoint(userId: string, runId: string, opts: CallOpts = {}): Promise<string> {
    const res = await unary(this.client.getRun.bind(this.client), { userId, runId }, opts);
    return res.run?.checkpointJson ?? '';
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
