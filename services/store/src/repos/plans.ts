// Plans kept by the plan tool, owned by a user.
import { notFound } from '@agent-mesh/common';
import { isDuplicateKey, type InstrumentedCollection } from '../db/instrumented';
import { keysetPage } from './keyset-page';
import type { Page, PlanDoc, PlanStatus } from './types';

const PROJECTION = { _id: 1, userId: 1, conversationId: 1, title: 1, steps: 1, status: 1, createdAt: 1, updatedAt: 1 } as const;

export interface PlanUpdate {
  id: string;
  userId: string;
  conversationId?: string;
  title: string;
  steps: string[];
  status: PlanStatus;
}

export class PlanRepo {
  constructor(private readonly col: InstrumentedCollection<PlanDoc>) {}

  /** Creates or updates the plan (upsert by id). Another user's plan id answers NOT_FOUND. */
  async save(plan: PlanUpdate, now: number): Promise<PlanDoc> {
    const filter = { _id: plan.id, userId: plan.userId };
    const set: Partial<PlanDoc> = { title: plan.title, steps: plan.steps, status: plan.status, updatedAt: now };
    if (plan.conversationId) set.conversationId = plan.conversationId;
    const upsert = () =>
      this.col.run('findOneAndUpdate', filter, (c) =>
        c.findOneAndUpdate(filter, { $set: set, $setOnInsert: { userId: plan.userId, createdAt: now } }, {
          upsert: true,
          returnDocument: 'after', // no projection: FerretDB 1.24 does not implement it here
        }),
      );
    try {
      return (await upsert()) as PlanDoc;
    } catch (err) {
      if (!isDuplicateKey(err)) throw err;
    }
    try {
      return (await upsert()) as PlanDoc;
    } catch (err) {
      if (isDuplicateKey(err)) throw notFound('plan');
      throw err;
    }
  }

  async get(userId: string, id: string): Promise<PlanDoc> {
    const filter = { _id: id, userId };
    const doc = await this.col.run('findOne', filter, (c) => c.findOne(filter, { projection: PROJECTION }));
    if (!doc) throw notFound('plan');
    return doc as PlanDoc;
  }

  /** The user's plans, newest first. */
  async list(userId: string, size: number, pageToken: string | undefined): Promise<Page<PlanDoc>> {
    return keysetPage(this.col, { scope: { userId }, key: '_id', order: -1, size, pageToken, tokenField: 'page_token', projection: PROJECTION });
  }
}
