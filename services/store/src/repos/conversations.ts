// Conversations: a user's chats. Every query carries the owner's userId, so another user's
// conversation is indistinguishable from a missing one.
import { MeshError, notFound } from '@agent-mesh/common';
import { isDuplicateKey, type InstrumentedCollection } from '../db/instrumented';
import { keysetPage } from './keyset-page';
import type { ConversationDoc, Page } from './types';

const PROJECTION = { _id: 1, userId: 1, title: 1, createdAt: 1, updatedAt: 1, lastRunId: 1 } as const;
export type ConversationView = Omit<ConversationDoc, 'messageSeq'>;

/** Drops internal fields: findOneAndUpdate cannot project on FerretDB 1.24 (no `fields`). */
function view(d: ConversationDoc): ConversationView {
  const { messageSeq: _internal, ...rest } = d;
  return rest;
}

export class ConversationRepo {
  constructor(private readonly col: InstrumentedCollection<ConversationDoc>) {}

  /** Creates the conversation, or returns it when a retry finds it already created. */
  async create(userId: string, id: string, title: string, now: number): Promise<ConversationView> {
    const filter = { _id: id, userId };
    const upsert = () =>
      this.col.run('findOneAndUpdate', filter, (c) =>
        c.findOneAndUpdate(
          filter,
          { $setOnInsert: { userId, title, createdAt: now, updatedAt: now, messageSeq: 0 } },
          { upsert: true, returnDocument: 'after' },
        ),
      );
    try {
      return view((await upsert()) as ConversationDoc);
    } catch (err) {
      if (!isDuplicateKey(err)) throw err;
    }
    // Two concurrent creates of the same id race on insert: the loser's retry matches. If it
    // still collides, the id is another user's.
    try {
      return view((await upsert()) as ConversationDoc);
    } catch (err) {
      if (isDuplicateKey(err)) throw new MeshError('id_conflict', 'conversation_id is already in use');
      throw err;
    }
  }

  async get(userId: string, id: string): Promise<ConversationView> {
    const filter = { _id: id, userId };
    const doc = await this.col.run('findOne', filter, (c) => c.findOne(filter, { projection: PROJECTION }));
    if (!doc) throw notFound('conversation');
    return doc as ConversationView;
  }

  /** Ownership check: one indexed lookup returning only `_id`. Throws NOT_FOUND. */
  async assertOwned(userId: string, id: string): Promise<void> {
    const filter = { _id: id, userId };
    const doc = await this.col.run('findOne', filter, (c) => c.findOne(filter, { projection: { _id: 1 } }));
    if (!doc) throw notFound('conversation');
  }

  /**
   * Before appending `count` messages: checks ownership, bumps updatedAt (and lastRunId when
   * given), and reserves `count` sequence numbers — in one round trip. Returns the first one.
   * A retried append reserves new numbers, but its already-stored messages keep their old ones.
   */
  async reserveMessageSeq(userId: string, id: string, count: number, now: number, lastRunId?: string): Promise<number> {
    const filter = { _id: id, userId };
    const doc = await this.col.run('findOneAndUpdate', filter, (c) =>
      c.findOneAndUpdate(
        filter,
        { $inc: { messageSeq: count }, $set: { updatedAt: now, ...(lastRunId ? { lastRunId } : {}) } },
        { returnDocument: 'before' },
      ),
    );
    if (!doc) throw notFound('conversation');
    return (doc.messageSeq ?? 0) + 1;
  }

  async setLastRun(id: string, runId: string): Promise<void> {
    const filter = { _id: id };
    await this.col.run('updateOne', filter, (c) => c.updateOne(filter, { $set: { lastRunId: runId } }));
  }

  /** The user's conversations, newest first, from after the cursor in `pageToken`. */
  async list(userId: string, size: number, pageToken: string | undefined): Promise<Page<ConversationView>> {
    return keysetPage(this.col, { scope: { userId }, key: '_id', order: -1, size, pageToken, tokenField: 'page_token', projection: PROJECTION });
  }
}
