// A user's data is theirs: exporting all of a conversation (stored documents and retained run
// logs) and erasing it everywhere — cancelling its active run first, then the store's documents,
// then the runs' Redis state (logs, checkpoints, leases, flags).
import { notFound, type CallScope, type Logger } from '@agent-mesh/common';
import type {
  EraseConversationResponse, ExportConversationResponse, RunLog as RunLogMessage,
} from '@agent-mesh/common/gen/orchestrator/v1/orchestrator';
import type { StoreGateway } from '../gateways/store';
import type { RunLog } from '../runlog/runlog';
import type { RunManager } from './manager';
import type { RunRegistry } from './registry';

export interface ConversationDataDeps {
  runs: RunManager;
  registry: RunRegistry;
  log: RunLog;
  store: StoreGateway;
  logger: Logger;
  /** Longest wait for a cancelled run to end before erasing anyway. @default 10000 */
  cancelWaitMs?: number;
  /** Events read per run log (the log's own bound). */
  maxEvents: number;
}

export class ConversationData {
  constructor(private readonly d: ConversationDataDeps) {}

  /** `caller`: the ExportConversation call's deadline and cancellation, for the store's export. */
  async export(userId: string, conversationId: string, caller: CallScope = {}): Promise<ExportConversationResponse> {
    const stored = await this.d.store.exportConversation(userId, conversationId, { ...caller, timeoutMs: 15_000 });
    const runIds = new Set(stored.runs.map((r) => r.id));
    // A run just started may not be stored yet: its log is the conversation's too.
    const current = await this.d.registry.currentRun(conversationId);
    if (current) {
      const meta = await this.d.registry.meta(current);
      if (meta?.userId === userId && meta.conversationId === conversationId) runIds.add(current);
    }
    const runLogs: RunLogMessage[] = [];
    for (const runId of runIds) {
      const events = await this.d.log.read(runId, 0, this.d.maxEvents);
      if (events.length) runLogs.push({ runId, events });
    }
    return { stored, runLogs };
  }

  /** `caller`: the EraseConversation call's deadline and cancellation, for the cancel and the store's erase. */
  async erase(userId: string, conversationId: string, caller: CallScope = {}): Promise<EraseConversationResponse> {
    // Cancel first and wait for the run's end: its last writes (outputs, the run record) land
    // before the erase, not after it. A run of another user's conversation is NOT_FOUND here.
    const active = await this.d.registry.activeRun(conversationId);
    let cancelledRunId = '';
    if (active) {
      const meta = await this.d.registry.meta(active);
      if (meta && meta.userId !== userId) throw notFound('conversation');
      await this.d.runs.cancel(userId, conversationId, caller);
      cancelledRunId = active;
      await this.waitForEnd(conversationId, active);
    }
    const erased = await this.d.store.eraseConversation(userId, conversationId, { ...caller, timeoutMs: 15_000 });
    const runIds = new Set(erased.runIds);
    if (active) runIds.add(active);
    const current = await this.d.registry.currentRun(conversationId);
    if (current) runIds.add(current);
    await this.d.registry.erase(conversationId, [...runIds], erased.messageIds);
    this.d.logger.info(
      { conversationId, runs: runIds.size, messages: erased.messagesErased, plans: erased.plansErased, alreadyErased: erased.alreadyErased },
      'conversation erased',
    );
    return { cancelledRunId, alreadyErased: erased.alreadyErased, runsErased: runIds.size, messagesErased: erased.messagesErased };
  }

  private async waitForEnd(conversationId: string, runId: string): Promise<void> {
    const deadline = Date.now() + (this.d.cancelWaitMs ?? 10_000);
    while (Date.now() < deadline) {
      if ((await this.d.registry.activeRun(conversationId)) !== runId) return;
      await new Promise((r) => setTimeout(r, 50));
    }
    this.d.logger.warn({ conversationId, runId }, 'cancelled run did not end in time: erasing anyway (its late writes are refused)');
  }
}
