// Messages of a conversation, ordered by (createdAt, seq). Callers check the conversation's owner
// first (ConversationRepo); this repo only knows conversation ids.
import { MeshError } from '@agent-mesh/common';
import { MongoBulkWriteError } from 'mongodb';
import type { InstrumentedCollection } from '../db/instrumented';
import { keysetPage } from './keyset-page';
import type { MessageDoc, Page } from './types';

const PROJECTION = {
  _id: 1, conversationId: 1, runId: 1, role: 1, agent: 1, round: 1, content: 1, status: 1, createdAt: 1, seq: 1,
} as const;

export type NewMessage = Omit<MessageDoc, 'seq'>;

export class MessageRepo {
  constructor(private readonly col: InstrumentedCollection<MessageDoc>) {}

  /**
   * Inserts the messages that are not stored yet and returns how many were new: a retry with the
   * same ids changes nothing. Unordered inserts whose duplicate-key errors mean "already stored"
   * give the same result as upserts with $setOnInsert, and on FerretDB 1.24 (SQLite) they are ~100×
   * faster: its upserts scan, its inserts do not (measured: 4-message batch 1.5 ms vs 35–200 ms).
   */
  async append(conversationId: string, messages: NewMessage[], firstSeq: number): Promise<number> {
    if (messages.length === 0) return 0;
    const docs: MessageDoc[] = messages.map((m, i) => ({ ...m, conversationId, seq: firstSeq + i }));
    const shape = { _id: 'each', conversationId }; // for the slow-query log's shape only
    let inserted: number;
    let duplicates: string[] = [];
    try {
      inserted = (await this.col.run('insertMany', shape, (c) => c.insertMany(docs, { ordered: false }))).insertedCount;
    } catch (err) {
      const writeErrors = err instanceof MongoBulkWriteError ? [err.writeErrors].flat() : [];
      if (!writeErrors.length || !writeErrors.every((e) => e.code === 11000)) throw err;
      inserted = (err as MongoBulkWriteError).result.insertedCount;
      duplicates = writeErrors.map((e) => docs[e.index]?._id).filter((id): id is string => id !== undefined);
    }
    if (duplicates.length) await this.assertAllIn(conversationId, duplicates);
    return inserted;
  }

  /** A duplicate id is a retry only if it is stored in this conversation; otherwise it collides. */
  private async assertAllIn(conversationId: string, ids: string[]): Promise<void> {
    const filter = { _id: { $in: ids }, conversationId: { $ne: conversationId } };
    const clash = await this.col.run('findOne', filter, (c) => c.findOne(filter, { projection: { _id: 1 } }));
    if (clash) throw new MeshError('id_conflict', 'a message id is already used in another conversation');
  }

  /** A page of the conversation's messages, oldest first, from after the cursor in `pageToken`. */
  async page(conversationId: string, size: number, pageToken: string | undefined): Promise<Page<MessageDoc>> {
    return keysetPage(this.col, { scope: { conversationId }, key: 'seq', order: 1, size, pageToken, tokenField: 'message_page_token', projection: PROJECTION });
  }

  /** The most recent `limit` messages, returned oldest first (an agent's history). */
  async recent(conversationId: string, limit: number): Promise<MessageDoc[]> {
    const filter = { conversationId };
    const docs = (await this.col.run('find', filter, (c) =>
      c.find(filter, { projection: PROJECTION }).sort({ createdAt: -1, seq: -1 }).limit(limit).toArray(),
    )) as MessageDoc[];
    return docs.reverse();
  }
}
