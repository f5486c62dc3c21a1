// Conversations: create, list, read with messages, cancel the active run, export all of one, erase one.
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { agentRoles, annotate, ATTR, messageRoles, messageStatuses, newId, planStatuses, runStatuses } from '@agent-mesh/common';
import type { RunLog } from '@agent-mesh/common/gen/orchestrator/v1/orchestrator';
import type { Conversation, Message, Plan, Run } from '@agent-mesh/common/gen/store/v1/store';
import type { EdgeContext } from '../context';
import { badRequest, HttpError } from '../errors';
import { ERASE_TIMEOUT_MS, EXPORT_TIMEOUT_MS } from '../gateways/orchestrator';
import { requestScope } from '../scope';
import { BACKED, conversationBody, conversationIdOf, errorResponses, idParams, iso, messagePageQuery, NO_NUL, pageOf, pageQuery, pageSizeOf } from './schemas';

export function conversationView(c: Conversation) {
  return {
    id: c.id,
    title: c.title,
    createdAt: iso(c.createdAtMs),
    updatedAt: iso(c.updatedAtMs || c.createdAtMs),
    lastRunId: c.lastRunId || null,
  };
}

// The public API names roles, agents and statuses in lower case (`user`, `planner`, `completed`),
// as the documents store them; the wire carries the store's enums.
function messageView(m: Message) {
  return {
    id: m.id,
    runId: m.runId || null,
    role: messageRoles.fromWire(m.role) ?? '',
    agent: agentRoles.fromWire(m.agent) ?? null,
    round: m.round || null,
    content: m.content,
    status: messageStatuses.fromWire(m.status) ?? 'complete',
    createdAt: iso(m.createdAtMs),
  };
}

function runView(r: Run) {
  return {
    id: r.id,
    messageId: r.messageId || null,
    status: runStatuses.fromWire(r.status) ?? '',
    usage: r.usage ?? { promptTokens: 0, completionTokens: 0, totalTokens: 0 },
    costUsd: r.costUsd,
    createdAt: iso(r.createdAtMs),
    completedAt: r.completedAtMs ? iso(r.completedAtMs) : null,
    error: r.error || null,
    checkpoint: r.checkpointJson ? parseJson(r.checkpointJson) : null,
  };
}

function planView(p: Plan) {
  return { id: p.id, title: p.title, steps: p.steps, status: planStatuses.fromWire(p.status) ?? 'draft', createdAt: iso(p.createdAtMs), updatedAt: iso(p.updatedAtMs) };
}

function runLogView(l: RunLog) {
  return { runId: l.runId, events: l.events.map((e) => ({ seq: e.seq, type: e.type, data: parseJson(e.dataJson) })) };
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

export function conversationRoutes(app: FastifyInstance, ctx: EdgeContext): void {
  const titleBody = {
    type: ['object', 'null'],
    additionalProperties: false,
    properties: { title: { type: 'string', maxLength: 200, pattern: NO_NUL } },
  } as const;
  /** Creates the caller's conversation `id`, or answers it as it is when it exists already (the store's create is idempotent; another user's id: 409). */
  const create = async (req: FastifyRequest, reply: FastifyReply, id: string) => {
    const title = ((req.body as { title?: string } | null | undefined)?.title ?? '').trim() || 'New conversation';
    if (title.includes('\u0000')) throw badRequest('body/title must not contain NUL characters');
    annotate({ [ATTR.userId]: req.userId, [ATTR.conversationId]: id });
    const res = await ctx.gw.store.createConversation({ userId: req.userId, conversationId: id, title }, requestScope(reply));
    const c = res.conversation;
    return reply.code(201).send(c ? conversationView(c) : { id, title, createdAt: iso(Date.now()), updatedAt: iso(Date.now()), lastRunId: null });
  };

  app.post(
    '/api/conversations',
    {
      config: { auth: 'bearer' },
      schema: {
        tags: ['conversations'],
        summary: 'Create a conversation',
        body: titleBody,
        response: { 201: conversationBody, ...errorResponses(400, 413, 415, ...BACKED) },
      },
    },
    async (req, reply) => create(req, reply, newId()),
  );

  // The same with an id the client chose: idempotent, so a client (or nginx, when the edge that
  // took it died) can send it again and gets the one conversation.
  app.put(
    '/api/conversations/:id',
    {
      config: { auth: 'bearer' },
      schema: {
        tags: ['conversations'],
        summary: 'Create a conversation with a client-chosen id (idempotent: a repeat answers the existing one)',
        params: idParams,
        body: titleBody,
        response: { 201: conversationBody, ...errorResponses(400, 409, 413, 415, ...BACKED) },
      },
    },
    async (req, reply) => create(req, reply, conversationIdOf(req.params)),
  );

  app.get(
    '/api/conversations',
    {
      config: { auth: 'bearer' },
      schema: {
        tags: ['conversations'],
        summary: "The caller's conversations, newest first",
        querystring: pageQuery,
        response: {
          200: { type: 'object', properties: { conversations: { type: 'array', items: conversationBody }, nextPageToken: { type: ['string', 'null'] } } },
          ...errorResponses(400, ...BACKED),
        },
      },
    },
    async (req, reply) => {
      const res = await ctx.gw.store.listConversations({ userId: req.userId, ...pageOf(req.query, 100) }, requestScope(reply));
      return { conversations: res.conversations.map(conversationView), nextPageToken: res.nextPageToken || null };
    },
  );

  app.get(
    '/api/conversations/:id',
    {
      config: { auth: 'bearer' },
      schema: {
        tags: ['conversations'],
        summary: 'One conversation with a page of its messages (oldest first)',
        params: idParams,
        querystring: messagePageQuery,
        response: {
          200: {
            type: 'object',
            properties: {
              ...conversationBody.properties,
              messages: {
                type: 'array',
                items: {
                  type: 'object',
                  properties: {
                    id: { type: 'string' },
                    runId: { type: ['string', 'null'] },
                    role: { type: 'string' },
                    agent: { type: ['string', 'null'] },
                    round: { type: ['integer', 'null'] },
                    content: { type: 'string' },
                    status: { type: 'string' },
                    createdAt: { type: 'string' },
                  },
                },
              },
              nextPageToken: { type: ['string', 'null'] },
            },
          },
          ...errorResponses(400, 404, ...BACKED),
        },
      },
    },
    async (req, reply) => {
      const id = conversationIdOf(req.params);
      annotate({ [ATTR.userId]: req.userId, [ATTR.conversationId]: id });
      const res = await ctx.gw.store.getConversation({
        userId: req.userId,
        conversationId: id,
        messagePageSize: pageSizeOf(req.query, 200),
        messagePageToken: (req.query as { pageToken?: string }).pageToken ?? '',
      }, requestScope(reply));
      if (!res.conversation) throw new HttpError(404, 'not_found', 'conversation not found');
      return {
        ...conversationView(res.conversation),
        messages: res.messages.map(messageView),
        nextPageToken: res.nextMessagePageToken || null,
      };
    },
  );

  app.post(
    '/api/conversations/:id/cancel',
    {
      config: { auth: 'bearer' },
      schema: {
        tags: ['runs'],
        summary: "Cancel the conversation's active run (the cancel reaches the upstream LLM call)",
        params: idParams,
        response: { 202: { type: 'object', properties: { runId: { type: ['string', 'null'] }, cancelled: { type: 'boolean' } } }, ...errorResponses(400, 404, ...BACKED) },
      },
    },
    async (req, reply) => {
      const id = conversationIdOf(req.params);
      annotate({ [ATTR.userId]: req.userId, [ATTR.conversationId]: id });
      const res = await ctx.gw.orchestrator.cancelRun({ userId: req.userId, conversationId: id }, requestScope(reply));
      if (res.runId) annotate({ [ATTR.runId]: res.runId });
      return reply.code(202).send({ runId: res.runId || null, cancelled: res.cancelled });
    },
  );

  app.get(
    '/api/conversations/:id/export',
    {
      config: { auth: 'bearer' },
      schema: {
        tags: ['conversations'],
        summary: 'Everything kept about the conversation, as one JSON document: messages, runs (usage, checkpoints), plans and retained run event logs',
        params: idParams,
        response: {
          200: {
            type: 'object',
            properties: {
              exportedAt: { type: 'string', format: 'date-time' },
              conversation: conversationBody,
              messages: { type: 'array', items: { type: 'object', additionalProperties: true } },
              runs: { type: 'array', items: { type: 'object', additionalProperties: true } },
              plans: { type: 'array', items: { type: 'object', additionalProperties: true } },
              runLogs: { type: 'array', items: { type: 'object', additionalProperties: true } },
            },
          },
          ...errorResponses(400, 404, ...BACKED),
        },
      },
    },
    async (req, reply) => {
      const id = conversationIdOf(req.params);
      annotate({ [ATTR.userId]: req.userId, [ATTR.conversationId]: id });
      const res = await ctx.gw.orchestrator.exportConversation({ userId: req.userId, conversationId: id }, requestScope(reply, EXPORT_TIMEOUT_MS));
      const stored = res.stored;
      if (!stored?.conversation) throw new HttpError(404, 'not_found', 'conversation not found');
      void reply.header('content-disposition', `attachment; filename="conversation-${id}.json"`);
      return {
        exportedAt: iso(Date.now()),
        conversation: conversationView(stored.conversation),
        messages: stored.messages.map(messageView),
        runs: stored.runs.map(runView),
        plans: stored.plans.map(planView),
        runLogs: res.runLogs.map(runLogView),
      };
    },
  );

  app.delete(
    '/api/conversations/:id',
    {
      config: { auth: 'bearer' },
      schema: {
        tags: ['conversations'],
        summary: 'Erase the conversation everywhere: its active run is cancelled first, then its messages, runs, plans, run logs and checkpoints are deleted. Idempotent: erasing it again answers 204 too',
        params: idParams,
        response: { 204: { type: 'null', description: 'erased' }, ...errorResponses(400, 404, ...BACKED) },
      },
    },
    async (req, reply) => {
      const id = conversationIdOf(req.params);
      annotate({ [ATTR.userId]: req.userId, [ATTR.conversationId]: id });
      const res = await ctx.gw.orchestrator.eraseConversation({ userId: req.userId, conversationId: id }, requestScope(reply, ERASE_TIMEOUT_MS));
      if (res.cancelledRunId) annotate({ [ATTR.runId]: res.cancelledRunId });
      return reply.code(204).send();
    },
  );
}
