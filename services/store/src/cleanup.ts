// Retention on a schedule (FerretDB has no TTL indexes): drops the checkpoint state of runs that
// finished over RUN_STATE_RETENTION_MS ago, and deletes conversations idle for RETENTION_DAYS
// with their messages and runs, and the Responses API's answers kept for longer than that. A
// running run is never touched.
import type { Logger } from '@agent-mesh/common';
import type { Collections } from './repos';
import { TERMINAL_RUN_STATUSES } from './repos/types';
import type { StoreMetrics } from './metrics';

export interface CleanupOptions {
  /** Conversations whose updatedAt is older than this are deleted. */
  retentionMs: number;
  /** Finished runs' checkpoints older than this (by completedAt) are unset. */
  runStateRetentionMs: number;
  /** Conversations deleted per batch (one `$in` per child collection). @default 500 */
  batchSize?: number;
  /** Injectable clock. @default Date.now */
  now?: () => number;
}

export interface CleanupResult {
  runsCleaned: number;
  conversationsDeleted: number;
  messagesDeleted: number;
  runsDeleted: number;
  responsesDeleted: number;
}

export class RetentionCleanup {
  private timer?: NodeJS.Timeout;
  private running?: Promise<CleanupResult>;

  constructor(
    private readonly cols: Collections,
    private readonly opts: CleanupOptions,
    private readonly logger: Logger,
    private readonly metrics?: StoreMetrics,
  ) {}

  /** One pass. Concurrent calls share the pass in progress. */
  runOnce(): Promise<CleanupResult> {
    this.running ??= this.pass().finally(() => { this.running = undefined; });
    return this.running;
  }

  /** Runs a pass every intervalMs (the first after one interval) until stop(). */
  start(intervalMs: number): void {
    this.timer = setInterval(() => {
      this.runOnce().catch((err: unknown) => {
        this.metrics?.cleanupFailures.inc();
        this.logger.warn({ err }, 'retention cleanup failed; will retry next interval');
      });
    }, intervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    await this.running?.catch(() => undefined);
  }

  private async pass(): Promise<CleanupResult> {
    const started = Date.now();
    const now = (this.opts.now ?? Date.now)();
    const runsCleaned = await this.dropFinishedRunState(now - this.opts.runStateRetentionMs);
    const expired = await this.deleteIdleConversations(now - this.opts.retentionMs);
    const old = { createdAt: { $lt: now - this.opts.retentionMs } };
    const responses = await this.cols.responses.run('deleteMany', old, (c) => c.deleteMany(old));
    const result = { runsCleaned, ...expired, responsesDeleted: responses.deletedCount };
    if (this.metrics) {
      this.metrics.cleanupRunsCleaned.inc(runsCleaned);
      this.metrics.cleanupConversationsDeleted.inc(expired.conversationsDeleted);
      this.metrics.cleanupMessagesDeleted.inc(expired.messagesDeleted);
      this.metrics.cleanupLastRun.set(Date.now() / 1000);
      this.metrics.cleanupLastDuration.set((Date.now() - started) / 1000);
    }
    this.logger.info({ ...result, durationMs: Date.now() - started }, 'retention cleanup done');
    return result;
  }

  private async dropFinishedRunState(cutoff: number): Promise<number> {
    // The status filter is what keeps live runs safe: a running run has no completedAt anyway,
    // but a run saved back to "running" after a takeover must keep its checkpoint.
    const filter = { status: { $in: [...TERMINAL_RUN_STATUSES] }, completedAt: { $lt: cutoff }, checkpoint: { $exists: true } };
    const res = await this.cols.runs.run('updateMany', filter, (c) => c.updateMany(filter, { $unset: { checkpoint: '' } }));
    return res.modifiedCount;
  }

  private async deleteIdleConversations(cutoff: number): Promise<Omit<CleanupResult, 'runsCleaned' | 'responsesDeleted'>> {
    const total = { conversationsDeleted: 0, messagesDeleted: 0, runsDeleted: 0 };
    const batchSize = this.opts.batchSize ?? 500;
    for (;;) {
      const filter = { updatedAt: { $lt: cutoff } };
      const batch = await this.cols.conversations.run('find', filter, (c) =>
        c.find(filter, { projection: { _id: 1 } }).limit(batchSize).toArray(),
      );
      if (batch.length === 0) return total;
      const ids = batch.map((d) => d._id);
      // Children first: if the pass dies half-way, the conversation is still there and the next
      // pass finds it again, so nothing is left orphaned.
      const byConversation = { conversationId: { $in: ids } };
      const m = await this.cols.messages.run('deleteMany', byConversation, (c) => c.deleteMany(byConversation));
      const r = await this.cols.runs.run('deleteMany', byConversation, (c) => c.deleteMany(byConversation));
      // The cutoff is checked again: a conversation that got a message meanwhile stays.
      const stillIdle = { _id: { $in: ids }, updatedAt: { $lt: cutoff } };
      const cv = await this.cols.conversations.run('deleteMany', stillIdle, (c) => c.deleteMany(stillIdle));
      total.conversationsDeleted += cv.deletedCount;
      total.messagesDeleted += m.deletedCount;
      total.runsDeleted += r.deletedCount;
      if (batch.length < batchSize) return total;
    }
  }
}
