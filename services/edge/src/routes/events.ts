// The run streams: POST a message (starts a run, answers with its SSE stream) and GET the
// conversation's events (join or resume with Last-Event-ID).
import type { FastifyInstance } from 'fastify';
import { annotate, ATTR, isId, newId, RUN_EVENTS } from '@agent-mesh/common';
import type { EdgeContext } from '../context';
import { badRequest } from '../errors';
import { parseLastEventId } from '../sse/frame';
import { relayRun, type RelayOptions } from '../sse/relay';
import { BACKED, conversationIdOf, errorBody, errorResponses, ID_PATTERN, idParams, NOT_BLANK } from './schemas';

/** `<runId>:<seq>` as the stream's event ids (empty: from the start). */
const LAST_EVENT_ID = '^\\s*([0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}:[0-9]{1,15})?\\s*$';



/** The run event catalogue (services/common/src/events) as the streams' OpenAPI description lists it. */
const EVENT_LIST = Object.entries(RUN_EVENTS).map(([type, e]) => `${type}${e.terminal ? ' (terminal)' : ''}: ${e.doc}`).join('; ');

const sseResponse = (...codes: number[]) => ({
  ...errorResponses(...codes, ...BACKED),
  200: { description: `text/event-stream of the run events (id: <runId>:<seq>). Events (data: JSON): ${EVENT_LIST}`, type: 'string' },
  503: {
    description: 'SSE limiter full: retry after Retry-After with header X-Queue-Token to keep your place',
    type: 'object',
    properties: {
      error: errorBody.properties.error,
      queueToken: { type: 'string' },
      position: { type: 'integer' },
      estimatedWaitMs: { type: 'integer' },
    },
  },
});

export function eventRoutes(app: FastifyInstance, ctx: EdgeContext): void {
  app.post(
    '/api/conversations/:id/messages',
    {
      config: { auth: 'bearer', stream: true, spends: true },
      // Its security headers come from STREAM_SECURITY_HEADERS (app.ts), see there.
      schema: {
        tags: ['runs'],
        summary: 'Send a message: starts a run and answers with its SSE stream',
        params: idParams,
        body: {
          type: 'object',
          required: ['content'],
          additionalProperties: false,
          properties: {
            content: { type: 'string', minLength: 1, maxLength: ctx.cfg.maxMessageChars, pattern: NOT_BLANK, description: 'the message: not only whitespace, no NUL' },
            messageId: { type: 'string', pattern: ID_PATTERN, description: 'client-generated UUID (idempotency key)' },
          },
        },
        response: sseResponse(400, 404, 409, 413, 415),
      },
    },
    async (req, reply) => {
      const conversationId = conversationIdOf(req.params);
      const body = req.body as { content: string; messageId?: string };
      const content = body.content.trim();
      if (content.length === 0) throw badRequest('body/content must not be empty');
      if (content.includes('\u0000')) throw badRequest('body/content must not contain NUL characters');
      if (body.messageId !== undefined && !isId(body.messageId)) throw badRequest('body/messageId must be a UUID');
      const messageId = body.messageId ?? newId();
      const userId = req.userId;
      annotate({ [ATTR.userId]: userId, [ATTR.conversationId]: conversationId });
      await relayRun(ctx, req, reply, {
        open: (signal) => ctx.gw.orchestrator.startRun({ userId, conversationId, messageId, content }, signal),
        reopen: reopener(ctx, userId, conversationId),
        onTerminal: runObserver(ctx),
        // Refusals (404, 409) come before run.started: wait for them so they stay HTTP statuses.
        firstEventWaitMs: 15_000,
      });
    },
  );

  app.get(
    '/api/conversations/:id/events',
    {
      config: { auth: 'sse', stream: true },
      // Its security headers come from STREAM_SECURITY_HEADERS (app.ts), see there.
      schema: {
        tags: ['runs'],
        summary: "Join or resume the conversation's current or last run (Last-Event-ID: <runId>:<seq>)",
        params: idParams,
        querystring: {
          type: 'object',
          properties: {
            lastEventId: { type: 'string', pattern: LAST_EVENT_ID, description: 'like the Last-Event-ID header: <runId>:<seq>' },
            access_token: { type: 'string', maxLength: 4096, description: 'the bearer token, for EventSource' },
          },
        },
        response: sseResponse(400, 404),
      },
    },
    async (req, reply) => {
      const conversationId = conversationIdOf(req.params);
      const header = req.headers['last-event-id'];
      // The header wins: EventSource sends it on reconnect, newer than the URL's parameter.
      const rawId = (Array.isArray(header) ? header[0] : header) || (req.query as { lastEventId?: string }).lastEventId;
      const from = parseLastEventId(rawId);
      if (from === null) throw badRequest('invalid Last-Event-ID: expected <runId>:<seq>');
      const userId = req.userId;
      annotate({ [ATTR.userId]: userId, [ATTR.conversationId]: conversationId, ...(from ? { [ATTR.runId]: from.runId } : {}) });
      await relayRun(ctx, req, reply, {
        open: (signal) =>
          ctx.gw.orchestrator.watchRun({ userId, conversationId, runId: from?.runId ?? '', afterSeq: from?.seq ?? 0 }, signal),
        reopen: reopener(ctx, userId, conversationId),
        ...(from ? { from } : {}),
      });
    },
  );
}

/**
 * A relay's `reopen`, made outside the route handler: the relay keeps it for the stream's life,
 * and a closure made inside would keep the handler's whole scope (a message's content with it).
 */
function reopener(ctx: EdgeContext, userId: string, conversationId: string): RelayOptions['reopen'] {
  return (runId, afterSeq, signal) => ctx.gw.orchestrator.watchRun({ userId, conversationId, runId, afterSeq }, signal);
}

/** A relay's `onTerminal` (made outside the handler, as `reopener` is). */
function runObserver(ctx: EdgeContext): RelayOptions['onTerminal'] {
  return (type, ms) => ctx.stats.observeRun(type, ms);
}
