// The indexes the store's queries need, created at start (createIndexes is idempotent). Only plain
// single/compound indexes: FerretDB has no TTL or partial indexes, so retention is a scheduled
// deleteMany (cleanup.ts) and uniqueness comes from `_id` (client-generated UUIDs).
import type { Db, IndexDescription } from 'mongodb';

export const COLLECTIONS = {
  conversations: 'conversations',
  messages: 'messages',
  runs: 'runs',
  plans: 'plans',
  /** Answers of the Responses API kept for a later call (`_id` is the response's). */
  responses: 'responses',
  /** Tombstones of erased conversations (`_id` is the conversation's). */
  erasures: 'erasures',
} as const;

export const INDEXES: Record<keyof typeof COLLECTIONS, IndexDescription[]> = {
  conversations: [
    // The brief's: a user's conversations, newest first (ListConversations pages on createdAt, _id).
    { key: { userId: 1, createdAt: -1 }, name: 'userId_createdAt' },
    // Retention: conversations idle since before the cutoff.
    { key: { updatedAt: 1 }, name: 'updatedAt' },
  ],
  messages: [
    // The brief's: a conversation's messages by time.
    { key: { conversationId: 1, createdAt: -1 }, name: 'conversationId_createdAt' },
    // Messages of the same millisecond are ordered by their per-conversation seq.
    { key: { conversationId: 1, createdAt: -1, seq: -1 }, name: 'conversationId_createdAt_seq' },
  ],
  runs: [
    { key: { conversationId: 1, createdAt: -1 }, name: 'conversationId_createdAt' },
    // Cleanup: finished runs completed before the cutoff.
    { key: { status: 1, completedAt: 1 }, name: 'status_completedAt' },
  ],
  plans: [
    // The brief's: a user's plans, newest first.
    { key: { userId: 1, createdAt: -1 }, name: 'userId_createdAt' },
  ],
  responses: [
    // Retention: answers kept since before the cutoff.
    { key: { createdAt: 1 }, name: 'createdAt' },
    // A user's, newest first (their listing, their erase).
    { key: { userId: 1, createdAt: -1 }, name: 'userId_createdAt' },
  ],
  erasures: [],
};

export async function ensureIndexes(db: Db): Promise<void> {
  for (const [name, indexes] of Object.entries(INDEXES) as [keyof typeof COLLECTIONS, IndexDescription[]][]) {
    // One index per command: FerretDB 1.24 drops the connection (a panic on its side) when one
    // createIndexes command lists several indexes of which some already exist.
    for (const index of indexes) await db.collection(COLLECTIONS[name]).createIndexes([index]);
  }
}
