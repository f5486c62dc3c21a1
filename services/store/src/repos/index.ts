// The repositories over one database, each collection behind the instrumented helper.
import type { Db } from 'mongodb';
import { COLLECTIONS } from '../db/indexes';
import { instrumented, type QueryTimer } from '../db/instrumented';
import { ConversationDataRepo } from './conversation-data';
import { ConversationRepo } from './conversations';
import { MessageRepo } from './messages';
import { PlanRepo } from './plans';
import { ResponseRepo } from './responses';
import { RunRepo } from './runs';
import type { ConversationDoc, ErasureDoc, MessageDoc, PlanDoc, ResponseDoc, RunDoc } from './types';

export interface Repos {
  conversations: ConversationRepo;
  messages: MessageRepo;
  runs: RunRepo;
  plans: PlanRepo;
  responses: ResponseRepo;
  conversationData: ConversationDataRepo;
}

export interface Collections {
  conversations: ReturnType<typeof instrumented<ConversationDoc>>;
  messages: ReturnType<typeof instrumented<MessageDoc>>;
  runs: ReturnType<typeof instrumented<RunDoc>>;
  plans: ReturnType<typeof instrumented<PlanDoc>>;
  responses: ReturnType<typeof instrumented<ResponseDoc>>;
  erasures: ReturnType<typeof instrumented<ErasureDoc>>;
}

export function openCollections(db: Db, timer: QueryTimer): Collections {
  return {
    conversations: instrumented<ConversationDoc>(db, COLLECTIONS.conversations, timer),
    messages: instrumented<MessageDoc>(db, COLLECTIONS.messages, timer),
    runs: instrumented<RunDoc>(db, COLLECTIONS.runs, timer),
    plans: instrumented<PlanDoc>(db, COLLECTIONS.plans, timer),
    responses: instrumented<ResponseDoc>(db, COLLECTIONS.responses, timer),
    erasures: instrumented<ErasureDoc>(db, COLLECTIONS.erasures, timer),
  };
}

export function createRepos(c: Collections): Repos {
  return {
    conversations: new ConversationRepo(c.conversations),
    messages: new MessageRepo(c.messages),
    runs: new RunRepo(c.runs),
    plans: new PlanRepo(c.plans),
    responses: new ResponseRepo(c.responses),
    conversationData: new ConversationDataRepo(c),
  };
}

export * from './types';
export { ConversationDataRepo, ConversationRepo, MessageRepo, PlanRepo, ResponseRepo, RunRepo };
