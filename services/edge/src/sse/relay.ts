// Relays a run's events from the orchestrator to one SSE client. The event log lives in the
// orchestrator, so the edge keeps no copy: a lost orchestrator stream is re-opened with WatchRun
// after the last relayed seq, and a client that reconnects does the same with Last-Event-ID.
// This module is the HTTP admission handshake and the relay loop; which events pass and what a
// lost source leads to are decided in resume.ts (pure), and what a committed stream lets go of to
// stay small is in memory.ts (where it reaches into fastify's and Node's internals).
import type { FastifyReply, FastifyRequest } from 'fastify';
import { annotate, ATTR } from '@agent-mesh/common';
import type { EdgeContext } from '../context';
import { fromGrpc, HttpError, isRetryable } from '../errors';
import { Cancel } from '../gateways/cancel';
import { isPushSource, type CancelSignal, type RunEvent, type RunEventSink } from '../gateways/types';
import { SSE_HEADERS } from './frame';
import type { Slot } from './limiter';
import { canReleaseParser, dropDocumentHeaders, forgetRequest, releaseFastifyListeners, releaseParser, streamHeaders } from './memory';
import { isLost, resumeDelayMs, sourceEnded, takeEvent, type ResumePosition } from './resume';
import { SseStream, type CloseObserver, type CloseReason, type SseStreamOptions } from './stream';

/**
 * How long to wait for the first event before committing to a 200 stream (after which errors are
 * told as events). A new run's first event comes as soon as the run exists; a resume at the tail
 * of a live run may have nothing to say for a while, and its client should see the stream open.
 */
const FIRST_EVENT_WAIT_MS = 3_000;

export interface RelayOptions {
  /** Opens the event source (StartRun or WatchRun). */
  open(signal: CancelSignal): AsyncIterable<RunEvent>;
  /** Re-opens after `afterSeq` of `runId` (WatchRun) when the orchestrator stream is lost. */
  reopen(runId: string, afterSeq: number, signal: CancelSignal): AsyncIterable<RunEvent>;
  /** Overrides FIRST_EVENT_WAIT_MS (StartRun answers with run.started once the run exists). */
  firstEventWaitMs?: number;
  /**
   * Where the client stands (its Last-Event-ID), for a resume: events up to it are not sent again,
   * and a source lost before its first event is re-opened inside the stream, as after any later
   * loss, instead of being answered with an HTTP error (a browser's EventSource gives up on one).
   */
  from?: { runId: string; seq: number };
  /** Called with the run's duration when a terminal event is relayed (POST message only). */
  onTerminal?(type: string, ms: number): void;
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
  const relay = new Relay(ctx, admission.slot, opts, started);
  if (opts.from) {
    relay.runId = opts.from.runId;
    relay.lastSeq = opts.from.seq;
  }
  const onClientGone = () => relay.abort();
  const raw = reply.raw;
  raw.once('close', onClientGone);

  try {
    relay.iterator = opts.open(relay)[Symbol.asyncIterator]();
  } catch (err) {
    raw.off('close', onClientGone);
    relay.slot.release();
    throw err;
  }
  const pending = pull(relay.iterator);
  let timer: NodeJS.Timeout | undefined;
  const waited = new Promise<undefined>((resolve) => {
    timer = setTimeout(resolve, opts.firstEventWaitMs ?? FIRST_EVENT_WAIT_MS, undefined);
    timer.unref();
  });
  const first = await Promise.race([pending, waited]);
  clearTimeout(timer);
  // A refusal (not found, busy …) is an HTTP status; so is a lost source while the run is unknown.
  if (first && !first.ok && !(relay.runId !== undefined && isLost(first.e))) {
    raw.off('close', onClientGone);
    relay.abort();
    relay.slot.release();
    throw first.e;
  }
  if (relay.aborted) {
    relay.slot.release();
    return;
  }

  // Committed: from here on, problems are told in the stream.
  void reply.hijack();
  req.streaming = true;
  releaseFastifyListeners(raw);
  raw.off('close', onClientGone); // the stream's own close handling aborts from now on
  const headers = streamHeaders(reply.getHeaders());
  dropDocumentHeaders(raw);
  // The stream is its connection's last request: its HTTP parser is given back once the head is out.
  const release = canReleaseParser(raw);
  raw.writeHead(200, { ...headers, ...SSE_HEADERS, ...(release ? { connection: 'close' } : {}) });
  raw.flushHeaders();
  if (release) releaseParser(raw);
  const stream = new SseStream(raw, streamOptionsOf(ctx));
  stream.begin(ctx.cfg.sse.retryMs);
  ctx.streams.add(stream);
  ctx.hub.add(stream);
  ctx.stats.openStreams.inc();
  // Plain values only: the detached relay must not keep the request or reply alive.
  relay.method = req.method;
  relay.route = req.routeOptions.url ?? 'unmatched';
  forgetRequest(raw);
  relay.stream = stream;
  stream.onClose(relay);
  // The handler returns now; the relay goes on detached, holding only the socket's response, the
  // SSE stream and the event source (fastify's request, reply and request logger become garbage).
  void pending.then((n) => relay.step(n));
}

/** The streams' buffer bounds: one object per app, shared by its streams. */
const streamOptions = new WeakMap<EdgeContext, SseStreamOptions>();
function streamOptionsOf(ctx: EdgeContext): SseStreamOptions {
  let o = streamOptions.get(ctx);
  if (!o) {
    o = { maxBufferedEvents: ctx.cfg.sse.bufferMaxEvents, maxBufferedBytes: ctx.cfg.sse.bufferMaxBytes };
    streamOptions.set(ctx, o);
  }
  return o;
}

/**
 * One stream's relay, as one object: its own cancel signal (a `Cancel`), the event source, the
 * limiter slot, what the close measurement needs, and the loop's state. Driven by callbacks —
 * pushed events from a source that can push (the watch mux), else promise callbacks — rather than
 * an async function: a suspended async function, its closures and an AbortController cost a
 * stream several times this object's size. It is itself what it hands out — the cancel signal,
 * the event sink and the close observer — with methods, not a closure per stream for each role.
 */
class Relay extends Cancel implements RunEventSink, CloseObserver, ResumePosition {
  iterator!: AsyncIterator<RunEvent>;
  stream!: SseStream;
  method = '';
  route = '';
  runId?: string;
  lastSeq = 0;
  attempts = 0;
  private readonly reopen: RelayOptions['reopen'];
  private readonly onTerminal: RelayOptions['onTerminal'];

  constructor(
    private readonly ctx: EdgeContext,
    readonly slot: Slot,
    opts: RelayOptions,
    private readonly started: number,
  ) {
    super();
    // Not `opts`: its `open` closure may hold the request's values (a message's content).
    this.reopen = opts.reopen;
    this.onTerminal = opts.onTerminal;
  }

  /** Handles one pull's outcome (the pull loop's body). */
  step(n: Next): void {
    if (!n.ok) this.onEnd(n.e, false);
    else if (n.r.done) this.onEnd(undefined, true);
    else if (this.relayEvent(n.r.value)) this.next();
  }

  /** Asks the source for what comes next: pipes it when it can push (no promise per event), else pulls. */
  private next(): void {
    try {
      const it = this.iterator;
      if (isPushSource(it)) it.pipe(this);
      else void pull(it).then((n) => this.step(n));
    } catch (err) {
      this.failed(err);
    }
  }

  /** A piped source's event (RunEventSink). */
  onEvent(ev: RunEvent): void {
    this.relayEvent(ev);
  }

  /**
   * The source ended (`ok`: without error, as a finished iteration) or failed with `e`: resumes
   * from the run log, or ends the stream. (RunEventSink, for a piped source.)
   */
  onEnd(e?: unknown, ok = e === undefined): void {
    const stream = this.stream;
    try {
      if (stream.closed) return;
      switch (sourceEnded(this, ok, e, this.aborted)) {
        case 'overflow':
          // Events piled up upstream of the stream's own buffer: the same slow-consumer ending.
          stream.overflow();
          return;
        case 'resume':
          void delay(resumeDelayMs(this.attempts)).then(() => this.resume());
          return;
        case 'reconnect': {
          const retryMs = 1_000 + Math.floor(Math.random() * 2_000);
          stream.endWith(
            { event: 'reconnect', retryMs, data: JSON.stringify({ reason: 'upstream_lost', retryMs, lastEventId: stream.lastId ?? null }) },
            'error',
          );
          return;
        }
        case 'fail': {
          const err = fromGrpc(e);
          stream.endWith(
            { event: 'run.failed', data: JSON.stringify({ code: err.code, message: err.message, retryable: isRetryable(err.statusCode) }) },
            'error',
          );
        }
      }
    } catch (err) {
      this.failed(err);
    }
  }

  /** Relays one event; true while more are wanted (the stream is open and the run not over). */
  private relayEvent(ev: RunEvent): boolean {
    const stream = this.stream;
    try {
      if (stream.closed) return false;
      if (this.runId === undefined) annotate({ [ATTR.runId]: ev.runId });
      const step = takeEvent(this, ev);
      if (step === 'relay' || step === 'relay_and_end') stream.sendEvent(ev.runId, ev.seq, ev.type, ev.dataJson);
      if (step === 'skip' || step === 'relay') return true;
      this.onTerminal?.(ev.type, Date.now() - this.started);
      stream.end('completed');
      return false;
    } catch (err) {
      this.failed(err);
      return false;
    }
  }

  /** Re-opens the lost source after the last relayed seq. */
  private resume(): void {
    try {
      if (this.stream.closed) return;
      const runId = this.runId!;
      this.ctx.logger.info({ runId, afterSeq: this.lastSeq, attempt: this.attempts }, 'orchestrator stream lost: resuming from the run log');
      let pending: Promise<Next>;
      try {
        this.iterator = this.reopen(runId, this.lastSeq, this)[Symbol.asyncIterator]();
        pending = pull(this.iterator);
      } catch (e) {
        pending = Promise.resolve({ ok: false, e });
      }
      void pending.then((n) => this.step(n));
    } catch (err) {
      this.failed(err);
    }
  }

  /** Nothing awaits the relay: an unexpected error ends the stream instead of going unhandled. */
  private failed(err: unknown): void {
    this.ctx.logger.error({ err }, 'SSE relay failed');
    this.stream.endWith({ event: 'run.failed', data: JSON.stringify({ code: 'internal', message: 'internal error', retryable: true }) }, 'error');
  }

  /** The stream closed, for whatever reason (CloseObserver). */
  onStreamClose(reason: CloseReason): void {
    const ctx = this.ctx;
    // Disconnect is not cancel: only the watch stops, the run goes on.
    this.abort();
    void this.iterator.return?.().catch(() => undefined);
    ctx.streams.delete(this.stream);
    ctx.hub.delete(this.stream);
    this.slot.release();
    ctx.stats.openStreams.dec();
    ctx.stats.sseQueue.set(ctx.sseLimiter.queued);
    if (reason === 'overflow') ctx.stats.sseOverflows.inc();
    ctx.stats.active.dec();
    ctx.stats.observe(this.method, this.route, 200, (Date.now() - this.started) / 1000, true);
  }
}

// Module-level handlers: a pull allocates no closures of its own.
const pulled = (r: IteratorResult<RunEvent>): Next => ({ ok: true, r });
const pullFailed = (e: unknown): Next => ({ ok: false, e });

function pull(iterator: AsyncIterator<RunEvent>): Promise<Next> {
  return iterator.next().then(pulled, pullFailed);
}

function headerOf(req: FastifyRequest, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}
