// What the gRPC calls made for one HTTP request inherit from it: they end when its client leaves
// before the answer, and no later than the request's own budget counted from its arrival (time
// spent before the call — auth, rate limit, budget checks — is spent from the same budget).
import type { FastifyReply } from 'fastify';
import { DEFAULT_UNARY_DEADLINE_MS, type CallScope } from '@agent-mesh/common';

export function requestScope(reply: FastifyReply, budgetMs = DEFAULT_UNARY_DEADLINE_MS): Required<CallScope> {
  const abort = new AbortController();
  const raw = reply.raw;
  // The response's close (not the request's, which fires once the body is read) before it was all
  // sent means the client left.
  raw.once('close', () => {
    if (!raw.writableFinished) abort.abort();
  });
  // elapsedTime: since fastify began the reply, before the onRequest hooks (timed because the edge
  // has an onResponse hook; without one fastify does not time replies and it reads 0).
  return { signal: abort.signal, deadline: Date.now() - reply.elapsedTime + budgetMs };
}
