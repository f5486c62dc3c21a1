// A user's data is theirs: all of one conversation at once, to export or to erase. Erasing leaves
// a tombstone (the ids and the time, nothing the user wrote), so that erasing again answers as
// the first time did for the owner and NOT_FOUND for anyone else.
import { notFound } from '@agent-mesh/common';
import type { InstrumentedCollection } from '../db/instrumented';
import type { ConversationView } from './conversations';
import type { ConversationDoc, ErasureDoc, MessageDoc, PlanDoc, RunDoc } from './types';

export interface ConversationExport {
  conversation: ConversationView;
  messages: MessageDoc[];
  runs: RunDoc[];
  plans: PlanDoc[];
}

export interface ErasureResult {
  alreadyErased: boolean;
  runIds: string[];
  /** Ids of the user's messages (each started a run; the run registry keys them). */
  userMessageIds: string[];
  messagesErased: number;
  runsErased: number;
  plansErased: number;
}

export interface ConversationDataCollections {
  conversations: InstrumentedCollection<ConversationDoc>;
  messages: InstrumentedCollection<MessageDoc>;
  runs: InstrumentedCollection<RunDoc>;
  plans: InstrumentedCollection<PlanDoc>;
  erasures: InstrumentedCollection<ErasureDoc>;
}

export class ConversationDataRepo {
  constructor(private readonly c: ConversationDataCollections) {}

  async export(userId: string, id: string): Promise<ConversationExport> {
    const owned = { _id: id, userId };
    const conv = await this.c.conversations.run('findOne', owned, (c) => c.findOne(owned));
    if (!conv) throw notFound('conversation');
    const { messageSeq: _internal, ...conversation } = conv;
    const byConversation = { conversationId: id };
    const plansFilter = { userId, conversationId: id };
    const [messages, runs, plans] = await Promise.all([
      this.c.messages.run('find', byConversation, (c) => c.find(byConversation).sort({ seq: 1 }).toArray()),
      this.c.runs.run('find', byConversation, (c) => c.find(byConversation).sort({ createdAt: 1 }).toArray()),
      this.c.plans.run('find', plansFilter, (c) => c.find(plansFilter).sort({ createdAt: 1 }).toArray()),
    ]);
    return { conversation, messages: messages as MessageDoc[], runs: runs as RunDoc[], plans: plans as PlanDoc[] };
  }

  /**
   * Erases the conversation and everything stored with it. The tombstone is written first and the
   * conversation deleted next: from then on every write into it (messages, runs, plans check the
   * conversation's owner) is refused; the children go last, and a repeated erase (after a crash
   * half-way, or a client retry) deletes whatever is left.
   */
  async erase(userId: string, id: string, now: number): Promise<ErasureResult> {
    const owned = { _id: id, userId };
    const conv = await this.c.conversations.run('findOne', owned, (c) => c.findOne(owned, { projection: { _id: 1 } }));
    let alreadyErased = false;
    if (!conv) {
      const tomb = await this.c.erasures.run('findOne', owned, (c) => c.findOne(owned, { projection: { _id: 1 } }));
      if (!tomb) throw notFound('conversation');
      alreadyErased = true;
    } else {
      const filter = { _id: id };
      await this.c.erasures.run('updateOne', filter, (c) =>
        c.updateOne(filter, { $setOnInsert: { userId, erasedAt: now } }, { upsert: true }));
      await this.c.conversations.run('deleteOne', owned, (c) => c.deleteOne(owned));
    }
    const byConversation = { conversationId: id };
    const [runs, userMessages] = await Promise.all([
      this.c.runs.run('find', byConversation, (c) => c.find(byConversation, { projection: { _id: 1 } }).toArray()),
      this.c.messages.run('find', { ...byConversation, role: 'user' }, (c) =>
        c.find({ ...byConversation, role: 'user' }, { projection: { _id: 1 } }).toArray()),
    ]);
    const plansFilter = { userId, conversationId: id };
    const m = await this.c.messages.run('deleteMany', byConversation, (c) => c.deleteMany(byConversation));
    const r = await this.c.runs.run('deleteMany', byConversation, (c) => c.deleteMany(byConversation));
    const p = await this.c.plans.run('deleteMany', plansFilter, (c) => c.deleteMany(plansFilter));
    return {
      alreadyErased,
      runIds: runs.map((d) => d._id),
      userMessageIds: userMessages.map((d) => d._id),
      messagesErased: m.deletedCount,
      runsErased: r.deletedCount,
      plansErased: p.deletedCount,
    };
  }
}
