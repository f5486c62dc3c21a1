// Runs: a multi-agent run's durable state (status, checkpoint, usage). Owned by a user through
// the conversation it answers.
import { notFound } from '@agent-mesh/common';
import { isDuplicateKey, type InstrumentedCollection } from '../db/instrumented';
import { TERMINAL_RUN_STATUSES, type RunDoc } from './types';

const PROJECTION = {
  _id: 1, conversationId: 1, userId: 1, messageId: 1, status: 1, checkpoint: 1, usage: 1, costUsd: 1,
  createdAt: 1, updatedAt: 1, completedAt: 1, error: 1,
} as const;

/**
 * A run's state as its owner saves it: the document, with `id` for `_id` and without `updatedAt`
 * (the save sets it). An empty `checkpoint` keeps the stored one; `completedAt` is used when the
 * status is terminal and defaults to now.
 */
export type RunUpdate = Omit<RunDoc, '_id' | 'updatedAt'> & { id: string };

export class RunRepo {
  constructor(private readonly col: InstrumentedCollection<RunDoc>) {}

  /**
   * Upserts the run. Saving the same state twice stores it once. Returns the stored run and
   * whether this save created it. A run id that belongs to another user or conversation collides
   * on `_id` and answers NOT_FOUND, like any run the caller does not own.
   */
  async save(run: RunUpdate, now: number): Promise<{ run: RunDoc; created: boolean }> {
    const terminal = TERMINAL_RUN_STATUSES.includes(run.status);
    // A run that has ended stays ended: a late non-terminal save (e.g. a checkpoint written by a
    // replica that lost the run) matches nothing, and is answered with the stored, ended run.
    const filter = terminal
      ? { _id: run.id, userId: run.userId, conversationId: run.conversationId }
      : { _id: run.id, userId: run.userId, conversationId: run.conversationId, status: { $nin: [...TERMINAL_RUN_STATUSES] } };
    const set: Partial<RunDoc> = { status: run.status, usage: run.usage, costUsd: run.costUsd, updatedAt: now };
    if (run.checkpoint) set.checkpoint = run.checkpoint;
    if (run.error) set.error = run.error;
    if (terminal) set.completedAt = run.completedAt || now;
    const insertOnly: Partial<RunDoc> = { userId: run.userId, conversationId: run.conversationId, createdAt: run.createdAt };
    if (run.messageId) insertOnly.messageId = run.messageId;
    const upsert = () =>
      this.col.run('findOneAndUpdate', filter, (c) =>
        c.findOneAndUpdate(filter, { $set: set, $setOnInsert: insertOnly }, {
          upsert: true,
          returnDocument: 'after',
          // No projection: FerretDB 1.24 does not implement it for findAndModify.
          includeResultMetadata: true,
        }),
      );
    let res;
    try {
      res = await upsert();
    } catch (err) {
      if (!isDuplicateKey(err)) throw err;
      // A concurrent first save of the same run won the insert: this one now matches it.
      try {
        res = await upsert();
      } catch (err2) {
        if (!isDuplicateKey(err2)) throw err2;
        const stored = await this.get(run.userId, run.id); // NOT_FOUND when another user's
        if (stored.conversationId !== run.conversationId || !TERMINAL_RUN_STATUSES.includes(stored.status)) throw notFound('run');
        return { run: stored, created: false };
      }
    }
    if (!res.value) throw notFound('run');
    const created = res.lastErrorObject?.updatedExisting === false;
    return { run: res.value as RunDoc, created };
  }

  async get(userId: string, id: string): Promise<RunDoc> {
    const filter = { _id: id, userId };
    const doc = await this.col.run('findOne', filter, (c) => c.findOne(filter, { projection: PROJECTION }));
    if (!doc) throw notFound('run');
    return doc as RunDoc;
  }
}
