// A listing page by keyset: the documents after the cursor in (createdAt, tie-break) order, one
// more than asked to know whether another page follows. Conversations, plans and messages page
// this way (see page-token.ts for why not skip/offset).
import type { Document, Filter } from 'mongodb';
import type { InstrumentedCollection } from '../db/instrumented';
import { decodePageToken, encodePageToken } from './page-token';
import type { Page } from './types';

export interface KeysetQuery<T> {
  /** Which documents (the caller's scope: a user's, a conversation's). */
  scope: Filter<T>;
  /** The tie-break after createdAt: `_id` (a UUID unless isKey says otherwise) or `seq` (a number). */
  key: '_id' | 'seq';
  /** What an `_id` in a page token must be (default: a UUID). */
  isKey?: (k: unknown) => boolean;
  /** 1: oldest first; -1: newest first. */
  order: 1 | -1;
  size: number;
  pageToken: string | undefined;
  /** The request field the token came in (named in the error when it is malformed). */
  tokenField: string;
  projection: Document;
}

export async function keysetPage<T extends Document, V extends { createdAt: number }>(col: InstrumentedCollection<T>, q: KeysetQuery<T>): Promise<Page<V>> {
  const cursor = decodePageToken(q.tokenField, q.pageToken, q.key === 'seq' ? 'number' : 'string', q.isKey);
  const after = q.order === 1 ? '$gt' : '$lt';
  const filter = (cursor
    ? { ...q.scope, $or: [{ createdAt: { [after]: cursor.t } }, { createdAt: cursor.t, [q.key]: { [after]: cursor.k } }] }
    : q.scope) as Filter<T>;
  const docs = (await col.run('find', filter, (c) =>
    c.find(filter, { projection: q.projection }).sort({ createdAt: q.order, [q.key]: q.order }).limit(q.size + 1).toArray(),
  )) as unknown as V[];
  const items = docs.slice(0, q.size);
  const last = items[items.length - 1] as (V & Record<string, string | number>) | undefined;
  return { items, nextPageToken: docs.length > q.size && last ? encodePageToken({ t: last.createdAt, k: last[q.key]! }) : undefined };
}
