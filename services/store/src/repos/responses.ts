// Answers of the Responses API kept for their user: written once per answer (a retry overwrites
// it), read by id, deleted by id, listed (ids and times) and erased all at once by their user.
// Another user's id answers NOT_FOUND, as an unknown one does.
import { MeshError, notFound } from '@agent-mesh/common';
import { isDuplicateKey, type InstrumentedCollection } from '../db/instrumented';
import { isResponseId } from '../validation';
import { keysetPage } from './keyset-page';
import type { Page, ResponseDoc } from './types';

/** A listing carries no JSON: a page of 100 answers of up to 12 MiB each would not fit a message. */
const LISTED = { _id: 1, userId: 1, createdAt: 1 } as const;

export class ResponseRepo {
  constructor(private readonly col: InstrumentedCollection<ResponseDoc>) {}

  /** Upserts the answer; with `onlyIfPending`, writes only over one still pending (else response_not_pending). */
  async save(doc: ResponseDoc, onlyIfPending = false): Promise<void> {
    const filter = { _id: doc._id, userId: doc.userId };
    const set = { createdAt: doc.createdAt, response: doc.response, items: doc.items, pending: doc.pending === true, updatedAt: doc.updatedAt };
    if (onlyIfPending) {
      const guarded = { ...filter, pending: true };
      const res = await this.col.run('updateOne', guarded, (c) => c.updateOne(guarded, { $set: set }));
      if (res.matchedCount === 0) throw new MeshError('response_not_pending', 'the response is not pending: it has ended, or was cancelled');
      return;
    }
    try {
      await this.col.run('updateOne', filter, (c) => c.updateOne(filter, { $set: set }, { upsert: true }));
    } catch (err) {
      // The id is another user's: the upsert's insert collided with their document.
      if (isDuplicateKey(err)) throw notFound('response');
      throw err;
    }
  }

  async get(userId: string, id: string): Promise<ResponseDoc> {
    const filter = { _id: id, userId };
    const doc = await this.col.run('findOne', filter, (c) => c.findOne(filter));
    if (!doc) throw notFound('response');
    return doc as ResponseDoc;
  }

  async delete(userId: string, id: string): Promise<void> {
    const filter = { _id: id, userId };
    const res = await this.col.run('deleteOne', filter, (c) => c.deleteOne(filter));
    if (res.deletedCount === 0) throw notFound('response');
  }

  /** The user's kept answers, newest first: ids and times only. */
  async list(userId: string, size: number, pageToken: string | undefined): Promise<Page<Pick<ResponseDoc, '_id' | 'userId' | 'createdAt'>>> {
    return keysetPage(this.col, { scope: { userId }, key: '_id', isKey: isResponseId, order: -1, size, pageToken, tokenField: 'page_token', projection: LISTED });
  }

  /** Deletes every kept answer of the user; how many there were. */
  async eraseAll(userId: string): Promise<number> {
    const filter = { userId };
    const res = await this.col.run('deleteMany', filter, (c) => c.deleteMany(filter));
    return res.deletedCount;
  }
}
