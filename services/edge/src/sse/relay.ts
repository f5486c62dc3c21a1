// Relays a run's events from the orchestrator to one SSE client. The event log lives in the
// orchestrator, so the edge keeps no copy: a lost orchestrator stream is re-opened with WatchRun
// after the last relayed seq, and a client that reconnects does the same with Last-Event-ID.
import type { Writable } from 'node:stream';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { annotate, ATTR, codeOf, reasonOf, status } from '@agent-mesh/common';
import type { EdgeContext } from '../context';
import { fromGrpc, HttpError, isRetryable } from '../errors';
import { SLOW_CONSUMER, type RunEvent } from '../gateways/types';
import { SSE_HEADERS } from './frame';
import { SseStream } from './stream';

export const TERMINAL_EVENTS = new Set(['run.completed', 'run.failed', 'run.cancelled', 'degraded']);

/**
 * How long to wait for the first event before committing to a 200 stream (after which errors are
 * told as events). A new run's first event comes as soon as the run exists; a resume at the tail
 * of a live run may have nothing to say for a while, and its client should see the stream open.
 */
const FIRST_EVENT_WAIT_MS = 3_000;
/** Attempts to re-open a lost orchestrator stream before telling the client to reconnect. */
const RESUME_ATTEMPTS = 3;

export interface RelayOptions {
  /** Opens the event source (StartRun or WatchRun). */
  open(signal: AbortSignal): AsyncIterable<RunEvent>;
  /** Re-opens after `afterSeq` of `runId` (WatchRun) when the orchestrator stream is lost. */
  reopen(runId: string, afterSeq: number, signal: AbortSignal): AsyncIterable<RunEvent>;
  /** Overrides FIRST_EVENT_WAIT_MS (StartRun answers with run.started once the run exists). */
  firstEventWaitMs?: number;
  /** Called with the run's duration when a terminal event is relayed (POST message only). */
  onTerminal?(type: string, ms: number): void;
}

/** The event source in use (re-opened after a lost orchestrator stream). */
interface Source {
  iterator: AsyncIterator<RunEvent>;
}

type Next = { ok: true; r: IteratorResult<RunEvent> } | { ok: false; e: unknown };

/**
 * Admits the stream (SSE limiter), opens the source, and — once the first event arrives, or after
 * a short wait — answers 200 with the event stream. Errors before that become HTTP statuses.
 */
export async function relayRun(ctx: EdgeContext, req: FastifyRequest, reply: FastifyReply, opts: RelayOptions): Promise<void> {
  const started = Date.now();
  const token = headerOf(req, 'x-queue-token');
  const admission = ctx.sseLimiter.acquire(token);
  ctx.stats.sseQueue.set(ctx.sseLimiter.queued);
  if (!admission.ok) {
    ctx.stats.sseRefused.inc({ reason: admission.draining ? 'draining' : 'full' });
    if (admission.draining) throw new HttpError(503, 'draining', 'this instance is shutting down: retry', 1);
    throw new HttpError(
      503,
      'streams_full',
      `too many open streams: you are number ${admission.position} in the queue; retry with header X-Queue-Token`,
      Math.max(1, Math.ceil(admission.estimatedWaitMs / 1000)),
      { queueToken: admission.queueToken, position: admission.position, estimatedWaitMs: admission.estimatedWaitMs },
    );
  }
  const slot = admission.slot;
  const abort = new AbortController();
  const onClientGone = () => abort.abort();
  const raw = reply.raw;
  raw.once('close', onClientGone);

  let source: Source;
  try {
    source = { iterator: opts.open(abort.signal)[Symbol.asyncIterator]() };
  } catch (err) {
    raw.off('close', onClientGone);
    slot.release();
    throw err;
  }
  const pending = pull(source.iterator);
  const first = await Promise.race([pending, delay(opts.firstEventWaitMs ?? FIRST_EVENT_WAIT_MS).then(() => undefined)]);
  if (first && !first.ok) {
    raw.off('close', onClientGone);
    abort.abort();
    slot.release();
    throw first.e;
  }
  if (abort.signal.aborted) {
    slot.release();
    return;
  }

  // Committed: from here on, problems are told in the stream.
  void reply.hijack();
  releaseFastifyListeners(raw);
  raw.off('close', onClientGone); // the stream's own close handling aborts from now on
  const headers = streamHeaders(reply.getHeaders());
  // helmet sets its headers on the raw response, which writeHead would merge back in.
  for (const name of raw.getHeaderNames()) if (DOCUMENT_ONLY_HEADERS.has(name)) raw.removeHeader(name);
  raw.writeHead(200, { ...headers, ...SSE_HEADERS });
  raw.flushHeaders();
  const stream = new SseStream(raw, {
    maxBufferedEvents: ctx.cfg.sse.bufferMaxEvents,
    maxBufferedBytes: ctx.cfg.sse.bufferMaxBytes,
  });
  stream.begin(ctx.cfg.sse.retryMs);
  ctx.streams.add(stream);
  ctx.hub.add(stream);
  ctx.stats.openStreams.inc();
  // Plain values only: the detached relay must not keep the request or reply alive.
  const method = req.method;
  const route = req.routeOptions.url ?? 'unmatched';
  stream.onClose((reason) => {
    // Disconnect is not cancel: only the watch stops, the run goes on.
    abort.abort();
    void source.iterator.return?.().catch(() => undefined);
    ctx.streams.delete(stream);
    ctx.hub.delete(stream);
    slot.release();
    ctx.stats.openStreams.dec();
    ctx.stats.sseQueue.set(ctx.sseLimiter.queued);
    if (reason === 'overflow') ctx.stats.sseOverflows.inc();
    ctx.stats.active.dec();
    ctx.stats.observe(method, route, 200, (Date.now() - started) / 1000, true);
  });
  // The handler returns now; the relay goes on detached, holding only the socket's response, the
  // SSE stream and the event source (fastify's request, reply and request logger become garbage).
  void relayEvents(ctx, stream, abort.signal, source, pending, started, opts);
}

/** Pulls events from the source into the stream until a terminal event, an error or a close. */
async function relayEvents(
  ctx: EdgeContext,
  stream: SseStream,
  signal: AbortSignal,
  source: Source,
  pending: Promise<Next>,
  started: number,
  opts: Pick<RelayOptions, 'reopen' | 'onTerminal'>,
): Promise<void> {
  let runId: string | undefined;
  let lastSeq = 0;
  let attempts = 0;
  try {
    for (;;) {
      const n = await pending;
      if (stream.closed) return;
      if (n.ok && !n.r.done) {
        const ev = n.r.value;
        if (runId === undefined) annotate({ [ATTR.runId]: ev.runId });
        runId = ev.runId;
        // events.lost carries seq = firstAvailableSeq − 1 and is not part of the log: pass it on.
        if (ev.seq > lastSeq || ev.type === 'events.lost') {
          lastSeq = Math.max(lastSeq, ev.seq);
          stream.sendEvent(ev.runId, ev.seq, ev.type, ev.dataJson);
        }
        attempts = 0;
        if (TERMINAL_EVENTS.has(ev.type)) {
          opts.onTerminal?.(ev.type, Date.now() - started);
          stream.end('completed');
          return;
        }
        pending = pull(source.iterator);
        continue;
      }
      // Events piled up upstream of the stream's own buffer: the same slow-consumer ending.
      if (!n.ok && reasonOf(n.e) === SLOW_CONSUMER) {
        stream.overflow();
        return;
      }
      // The source ended without a terminal event, or failed: re-open from the log when we can.
      const lost = n.ok || codeOf(n.e) === status.UNAVAILABLE || codeOf(n.e) === status.CANCELLED || codeOf(n.e) === status.INTERNAL;
      if (lost && runId !== undefined && attempts < RESUME_ATTEMPTS && !signal.aborted) {
        attempts += 1;
        await delay(200 * 2 ** (attempts - 1));
        if (stream.closed) return;
        ctx.logger.info({ runId, afterSeq: lastSeq, attempt: attempts }, 'orchestrator stream lost: resuming from the run log');
        try {
          source.iterator = opts.reopen(runId, lastSeq, signal)[Symbol.asyncIterator]();
          pending = pull(source.iterator);
        } catch (e) {
          pending = Promise.resolve({ ok: false, e });
        }
        continue;
      }
      if (n.ok || lost) {
        const retryMs = 1_000 + Math.floor(Math.random() * 2_000);
        stream.endWith(
          { event: 'reconnect', retryMs, data: JSON.stringify({ reason: 'upstream_lost', retryMs, lastEventId: stream.lastId ?? null }) },
          'error',
        );
        return;
      }
      const e = fromGrpc(n.e);
      stream.endWith(
        { event: 'run.failed', data: JSON.stringify({ code: e.code, message: e.message, retryable: isRetryable(e.statusCode) }) },
        'error',
      );
      return;
    }
  } catch (err) {
    // Nothing awaits this loop: an unexpected error ends the stream instead of going unhandled.
    ctx.logger.error({ err }, 'SSE relay failed');
    stream.endWith({ event: 'run.failed', data: JSON.stringify({ code: 'internal', message: 'internal error', retryable: true }) }, 'error');
  }
}

function pull(iterator: AsyncIterator<RunEvent>): Promise<Next> {
  return iterator.next().then(
    (r) => ({ ok: true as const, r }),
    (e: unknown) => ({ ok: false as const, e }),
  );
}

/**
 * fastify watches every response's 'finish'/'error' to run onResponse hooks and log completion;
 * those listeners hold the reply, the request and its child logger for the life of the socket.
 * A hijacked event stream needs neither (the edge's onResponse hook skips streams, and stream
 * measurements are taken when the stream closes), so they are dropped to free ~2 KB per stream.
 * Matched by name: if fastify renames it, the streams just keep those objects (no behaviour change).
 */
function releaseFastifyListeners(raw: Writable): void {
  for (const event of ['finish', 'error'] as const) {
    for (const l of raw.listeners(event)) if ((l as { name?: string }).name === 'onResFinished') raw.off(event, l as () => void);
  }
}

function headerOf(req: FastifyRequest, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

/**
 * Headers that only mean something on a document a browser renders (helmet sets them on every
 * response). Left off event streams: Node keeps each response's header text for the life of the
 * connection, and at 20,000 streams the CSP alone cost ~1 KB per stream.
 */
const DOCUMENT_ONLY_HEADERS = new Set([
  'content-security-policy',
  'cross-origin-opener-policy',
  'origin-agent-cluster',
  'referrer-policy',
  'x-dns-prefetch-control',
  'x-download-options',
  'x-frame-options',
  'x-permitted-cross-domain-policies',
  'x-xss-protection',
]);

/** The reply's headers (CORS, nosniff, HSTS, …) that apply to an event stream. */
function streamHeaders(h: Record<string, unknown>): Record<string, string | string[] | number> {
  const out: Record<string, string | string[] | number> = {};
  for (const [k, v] of Object.entries(h)) {
    if (DOCUMENT_ONLY_HEADERS.has(k)) continue;
    if (typeof v === 'string' || typeof v === 'number' || Array.isArray(v)) out[k] = v as string | string[] | number;
  }
  return out;
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}
