// gRPC handlers of store.v1.StoreService: validate the request, call the repositories, map the
// stored documents back to the wire. No query is built here.
import { agentRoles, annotate, ATTR, invalidArgument, messageRoles, messageStatuses, planStatuses, runStatuses, unaryHandler, type Logger } from '@agent-mesh/common';
import {
  AgentRole,
  MessageRole,
  MessageStatus,
  PlanStatus,
  RunStatus,
  type Conversation,
  type Message,
  type Plan,
  type Run,
  type StoreServiceServer,
} from '@agent-mesh/common/gen/store/v1/store';
import type { ConversationView } from './repos/conversations';
import type { NewMessage } from './repos/messages';
import type { MessageDoc, PlanDoc, Repos, RunDoc } from './repos';
import {
  count,
  enumName,
  LIMITS,
  optionalId,
  pageSize,
  requireId,
  requireResponseId,
  requireUserId,
  text,
  timestamp,
} from './validation';

// ——— domain → wire ———
// Documents store roles, agents and statuses by name; the wire carries the protos' enums (a name
// no enum knows reads as UNSPECIFIED rather than failing the read).

function toConversation(d: ConversationView): Conversation {
  return {
    id: d._id,
    userId: d.userId,
    title: d.title ?? '',
    createdAtMs: d.createdAt,
    updatedAtMs: d.updatedAt,
    lastRunId: d.lastRunId ?? '',
  };
}

function toMessage(d: MessageDoc): Message {
  return {
    id: d._id,
    conversationId: d.conversationId,
    runId: d.runId ?? '',
    role: messageRoles.parse(d.role) ?? MessageRole.MESSAGE_ROLE_UNSPECIFIED,
    agent: agentRoles.parse(d.agent) ?? AgentRole.AGENT_ROLE_UNSPECIFIED,
    round: d.round ?? 0,
    content: d.content,
    status: messageStatuses.parse(d.status) ?? MessageStatus.MESSAGE_STATUS_UNSPECIFIED,
    createdAtMs: d.createdAt,
  };
}

function toRun(d: RunDoc): Run {
  return {
    id: d._id,
    conversationId: d.conversationId,
    userId: d.userId,
    messageId: d.messageId ?? '',
    status: runStatuses.parse(d.status) ?? RunStatus.RUN_STATUS_UNSPECIFIED,
    checkpointJson: d.checkpoint ?? '',
    usage: {
      promptTokens: d.usage?.promptTokens ?? 0,
      completionTokens: d.usage?.completionTokens ?? 0,
      totalTokens: d.usage?.totalTokens ?? 0,
      ...(d.usage?.cacheReadTokens ? { cacheReadTokens: d.usage.cacheReadTokens } : {}),
      ...(d.usage?.cacheWriteTokens ? { cacheWriteTokens: d.usage.cacheWriteTokens } : {}),
      ...(d.usage?.cacheWrite1hTokens ? { cacheWrite1hTokens: d.usage.cacheWrite1hTokens } : {}),
    },
    costUsd: d.costUsd ?? 0,
    createdAtMs: d.createdAt,
    updatedAtMs: d.updatedAt,
    completedAtMs: d.completedAt ?? 0,
    error: d.error ?? '',
  };
}

function toPlan(d: PlanDoc): Plan {
  return {
    id: d._id,
    userId: d.userId,
    conversationId: d.conversationId ?? '',
    title: d.title,
    steps: d.steps ?? [],
    status: planStatuses.parse(d.status) ?? PlanStatus.PLAN_STATUS_UNSPECIFIED,
    createdAtMs: d.createdAt,
    updatedAtMs: d.updatedAt,
  };
}

// ——— wire → domain (validated) ———

function parseMessage(m: Message, i: number, conversationId: string, now: number): NewMessage {
  const f = (name: string) => `messages[${i}].${name}`;
  if (m.conversationId && m.conversationId !== conversationId) {
    throw invalidArgument('invalid_argument', `${f('conversation_id')} must be empty or equal conversation_id`);
  }
  const role = enumName(f('role'), m.role, messageRoles);
  const agent = m.agent ? enumName(f('agent'), m.agent, agentRoles) : undefined;
  if (role === 'agent' && !agent) throw invalidArgument('invalid_argument', `${f('agent')} is required for agent messages`);
  if (!Number.isInteger(m.round) || m.round < 0 || m.round > 100) throw invalidArgument('invalid_argument', `${f('round')} must be between 0 and 100`);
  const msg: NewMessage = {
    _id: requireId(f('id'), m.id),
    conversationId,
    role,
    round: m.round,
    content: text(f('content'), m.content, LIMITS.contentChars),
    status: enumName(f('status'), m.status, messageStatuses, 'complete'),
    createdAt: timestamp(f('created_at_ms'), m.createdAtMs, now),
  };
  const runId = optionalId(f('run_id'), m.runId);
  if (runId) msg.runId = runId;
  if (agent) msg.agent = agent;
  return msg;
}

export interface ServerDeps {
  repos: Repos;
  logger: Logger;
  /** Injectable clock. @default Date.now */
  now?: () => number;
}

export function createStoreServer({ repos, logger, now = Date.now }: ServerDeps): StoreServiceServer {
  const h = <Req, Res>(method: string, fn: (req: Req) => Promise<Res>) => unaryHandler<Req, Res>(logger, method, (req) => fn(req));

  return {
    createConversation: h('CreateConversation', async (req) => {
      const userId = requireUserId(req.userId);
      const id = requireId('conversation_id', req.conversationId);
      const title = text('title', req.title, LIMITS.titleChars);
      annotate({ [ATTR.conversationId]: id });
      return { conversation: toConversation(await repos.conversations.create(userId, id, title, now())) };
    }),

    listConversations: h('ListConversations', async (req) => {
      const userId = requireUserId(req.userId);
      const size = pageSize('page_size', req.pageSize, 20, 100);
      const page = await repos.conversations.list(userId, size, req.pageToken);
      return { conversations: page.items.map(toConversation), nextPageToken: page.nextPageToken ?? '' };
    }),

    getConversation: h('GetConversation', async (req) => {
      const userId = requireUserId(req.userId);
      const id = requireId('conversation_id', req.conversationId);
      const size = pageSize('message_page_size', req.messagePageSize, 50, 200);
      annotate({ [ATTR.conversationId]: id });
      const conversation = await repos.conversations.get(userId, id);
      const page = await repos.messages.page(id, size, req.messagePageToken);
      return {
        conversation: toConversation(conversation),
        messages: page.items.map(toMessage),
        nextMessagePageToken: page.nextPageToken ?? '',
      };
    }),

    appendMessages: h('AppendMessages', async (req) => {
      const userId = requireUserId(req.userId);
      const id = requireId('conversation_id', req.conversationId);
      if (req.messages.length > LIMITS.messagesPerAppend) {
        throw invalidArgument('too_many', `messages must hold at most ${LIMITS.messagesPerAppend} messages`);
      }
      const t = now();
      const messages = req.messages.map((m, i) => parseMessage(m, i, id, t));
      annotate({ [ATTR.conversationId]: id });
      // The user's message names the run it started: that run is now the conversation's last.
      const lastRunId = [...messages].reverse().find((m) => m.role === 'user' && m.runId)?.runId;
      const firstSeq = await repos.conversations.reserveMessageSeq(userId, id, messages.length, t, lastRunId);
      return { inserted: await repos.messages.append(id, messages, firstSeq) };
    }),

    listMessages: h('ListMessages', async (req) => {
      const userId = requireUserId(req.userId);
      const id = requireId('conversation_id', req.conversationId);
      const limit = pageSize('limit', req.limit, 50, 200);
      await repos.conversations.assertOwned(userId, id);
      return { messages: (await repos.messages.recent(id, limit)).map(toMessage) };
    }),

    saveRun: h('SaveRun', async (req) => {
      const userId = requireUserId(req.userId);
      const run = req.run;
      if (!run) throw invalidArgument('invalid_argument', 'run is required');
      if (run.userId && run.userId !== userId) throw invalidArgument('invalid_argument', 'run.user_id must be empty or equal user_id');
      const id = requireId('run.id', run.id);
      const conversationId = requireId('run.conversation_id', run.conversationId);
      const t = now();
      const reads = count('run.usage.cache_read_tokens', run.usage?.cacheReadTokens);
      const writes = count('run.usage.cache_write_tokens', run.usage?.cacheWriteTokens);
      const writes1h = count('run.usage.cache_write_1h_tokens', run.usage?.cacheWrite1hTokens);
      const usage = {
        promptTokens: count('run.usage.prompt_tokens', run.usage?.promptTokens),
        completionTokens: count('run.usage.completion_tokens', run.usage?.completionTokens),
        totalTokens: count('run.usage.total_tokens', run.usage?.totalTokens),
        ...(reads > 0 ? { cacheReadTokens: reads } : {}),
        ...(writes > 0 ? { cacheWriteTokens: writes } : {}),
        ...(writes1h > 0 ? { cacheWrite1hTokens: writes1h } : {}),
      };
      if (reads + writes > usage.promptTokens) throw invalidArgument('invalid_count', 'run.usage.cache_read_tokens and cache_write_tokens are parts of prompt_tokens: their sum cannot exceed it');
      if (writes1h > writes) throw invalidArgument('invalid_count', 'run.usage.cache_write_1h_tokens is a part of cache_write_tokens: it cannot exceed it');
      if (!Number.isFinite(run.costUsd) || run.costUsd < 0) throw invalidArgument('invalid_argument', 'run.cost_usd must be a non-negative number');
      const update = {
        id,
        conversationId,
        userId,
        messageId: optionalId('run.message_id', run.messageId),
        status: enumName('run.status', run.status, runStatuses),
        checkpoint: text('run.checkpoint_json', run.checkpointJson, LIMITS.checkpointChars) || undefined,
        usage,
        costUsd: run.costUsd,
        createdAt: timestamp('run.created_at_ms', run.createdAtMs, t),
        completedAt: run.completedAtMs ? timestamp('run.completed_at_ms', run.completedAtMs, t) : undefined,
        error: text('run.error', run.error, LIMITS.errorChars) || undefined,
      };
      annotate({ [ATTR.runId]: id, [ATTR.conversationId]: conversationId });
      await repos.conversations.assertOwned(userId, conversationId);
      const saved = await repos.runs.save(update, t);
      // Only a run's first save moves lastRunId, so a late save of an older run cannot move it back.
      if (saved.created) await repos.conversations.setLastRun(conversationId, id);
      return { run: toRun(saved.run) };
    }),

    getRun: h('GetRun', async (req) => {
      const userId = requireUserId(req.userId);
      const id = requireId('run_id', req.runId);
      annotate({ [ATTR.runId]: id });
      return { run: toRun(await repos.runs.get(userId, id)) };
    }),

    savePlan: h('SavePlan', async (req) => {
      const userId = requireUserId(req.userId);
      const plan = req.plan;
      if (!plan) throw invalidArgument('invalid_argument', 'plan is required');
      if (plan.userId && plan.userId !== userId) throw invalidArgument('invalid_argument', 'plan.user_id must be empty or equal user_id');
      if (plan.steps.length > LIMITS.planSteps) throw invalidArgument('too_many', `plan.steps must hold at most ${LIMITS.planSteps} steps`);
      const conversationId = optionalId('plan.conversation_id', plan.conversationId);
      // A plan may point only at one of the user's own conversations (NOT_FOUND otherwise).
      if (conversationId) await repos.conversations.assertOwned(userId, conversationId);
      const saved = await repos.plans.save(
        {
          id: requireId('plan.id', plan.id),
          userId,
          conversationId,
          title: text('plan.title', plan.title, LIMITS.titleChars),
          steps: plan.steps.map((s, i) => text(`plan.steps[${i}]`, s, LIMITS.planStepChars)),
          status: enumName('plan.status', plan.status, planStatuses, 'draft'),
        },
        now(),
      );
      return { plan: toPlan(saved) };
    }),

    getPlan: h('GetPlan', async (req) => {
      const userId = requireUserId(req.userId);
      return { plan: toPlan(await repos.plans.get(userId, requireId('plan_id', req.planId))) };
    }),

    exportConversation: h('ExportConversation', async (req) => {
      const userId = requireUserId(req.userId);
      const id = requireId('conversation_id', req.conversationId);
      annotate({ [ATTR.conversationId]: id });
      const all = await repos.conversationData.export(userId, id);
      return {
        conversation: toConversation(all.conversation),
        messages: all.messages.map(toMessage),
        runs: all.runs.map(toRun),
        plans: all.plans.map(toPlan),
      };
    }),

    eraseConversation: h('EraseConversation', async (req) => {
      const userId = requireUserId(req.userId);
      const id = requireId('conversation_id', req.conversationId);
      annotate({ [ATTR.conversationId]: id });
      const r = await repos.conversationData.erase(userId, id, now());
      return {
        alreadyErased: r.alreadyErased,
        runIds: r.runIds,
        messageIds: r.userMessageIds,
        messagesErased: r.messagesErased,
        runsErased: r.runsErased,
        plansErased: r.plansErased,
      };
    }),

    listPlans: h('ListPlans', async (req) => {
      const userId = requireUserId(req.userId);
      const size = pageSize('page_size', req.pageSize, 20, 100);
      const page = await repos.plans.list(userId, size, req.pageToken);
      return { plans: page.items.map(toPlan), nextPageToken: page.nextPageToken ?? '' };
    }),

    saveStoredResponse: h('SaveStoredResponse', async (req) => {
      const userId = requireUserId(req.userId);
      const r = req.response;
      if (!r) throw invalidArgument('invalid_argument', 'response is required');
      if (r.userId && r.userId !== userId) throw invalidArgument('invalid_argument', 'response.user_id must be empty or equal user_id');
      if (r.responseJson.length + r.itemsJson.length > LIMITS.storedResponseChars) {
        throw invalidArgument('too_long', `response.response_json and response.items_json must be at most ${LIMITS.storedResponseChars} characters together`);
      }
      await repos.responses.save({
        _id: requireResponseId('response.id', r.id),
        userId,
        createdAt: timestamp('response.created_at_ms', r.createdAtMs, now()),
        response: text('response.response_json', r.responseJson, LIMITS.storedResponseChars, { required: true }),
        items: text('response.items_json', r.itemsJson, LIMITS.storedResponseChars, { required: true }),
        pending: r.pending,
        updatedAt: now(),
      }, req.onlyIfPending);
      return {};
    }),

    getStoredResponse: h('GetStoredResponse', async (req) => {
      const userId = requireUserId(req.userId);
      const d = await repos.responses.get(userId, requireResponseId('response_id', req.responseId));
      return { response: { id: d._id, userId: d.userId, createdAtMs: d.createdAt, responseJson: d.response, itemsJson: d.items, pending: d.pending === true, updatedAtMs: d.updatedAt ?? d.createdAt } };
    }),

    deleteStoredResponse: h('DeleteStoredResponse', async (req) => {
      const userId = requireUserId(req.userId);
      await repos.responses.delete(userId, requireResponseId('response_id', req.responseId));
      return {};
    }),

    listStoredResponses: h('ListStoredResponses', async (req) => {
      const userId = requireUserId(req.userId);
      const size = pageSize('page_size', req.pageSize, 20, 100);
      const page = await repos.responses.list(userId, size, req.pageToken);
      return {
        responses: page.items.map((d) => ({ id: d._id, userId: d.userId, createdAtMs: d.createdAt, responseJson: '', itemsJson: '', pending: false, updatedAtMs: 0 })),
        nextPageToken: page.nextPageToken ?? '',
      };
    }),

    eraseStoredResponses: h('EraseStoredResponses', async (req) => {
      const userId = requireUserId(req.userId);
      return { deleted: await repos.responses.eraseAll(userId) };
    }),
  };
}
