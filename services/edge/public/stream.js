// A run's event stream that survives broken connections and page reloads: it remembers the last
// event id per conversation, reconnects with `Last-Event-ID` (backoff honouring `retry:` and the
// edge's `reconnect` advice), waits in the SSE limiter's queue with its token, and hands each
// event to the page exactly once, in order.
import { auth, streamError, retryAfterMs } from './api.js';
import { readSse, parseEventId } from './sse.js';
// The run event catalogue, served by the edge from services/common/src/events.
import { TERMINAL } from './run-events.js';

export { TERMINAL };

const JOURNAL_PREFIX = 'agent-mesh.run.';
// Beyond this the journal keeps only the last id and a reload replays the run from the start.
const JOURNAL_MAX_CHARS = 1_500_000;
const MAX_BACKOFF_MS = 30_000;
const MAX_ATTEMPTS = 30;
// The edge's heartbeat is at most 30 s under load; silence much longer than that is a dead link.
const STALL_MS = 75_000;

/**
 * What the page has shown of a conversation's latest run, kept in sessionStorage so that a reload
 * can redraw it and resume after exactly the last event shown. Consecutive tokens of one agent
 * are merged, so the journal grows with the text, not with the number of events.
 */
export class RunJournal {
  static load(conversationId) {
    try {
      const raw = sessionStorage.getItem(JOURNAL_PREFIX + conversationId);
      if (!raw) return undefined;
      const r = JSON.parse(raw);
      if (!r || typeof r !== 'object' || !Array.isArray(r.events)) return undefined;
      return new RunJournal(conversationId, r);
    } catch {
      return undefined;
    }
  }

  constructor(conversationId, record = {}) {
    this.conversationId = conversationId;
    this.runId = record.runId ?? '';
    this.lastSeq = record.lastSeq ?? 0;
    this.lastEventId = record.lastEventId ?? '';
    this.events = record.events ?? [];
    this.terminal = record.terminal ?? false;
    // false when events were dropped for size: the journal can resume but not redraw.
    this.complete = record.complete ?? true;
    this.timer = undefined;
    this.flush = () => this.saveNow();
  }

  /** Starts a new run's record (the previous run of the conversation is forgotten). */
  reset() {
    this.runId = '';
    this.lastSeq = 0;
    this.lastEventId = '';
    this.events = [];
    this.terminal = false;
    this.complete = true;
  }

  record(id, pos, type, data) {
    if (pos) {
      this.runId = pos.runId;
      this.lastSeq = Math.max(this.lastSeq, pos.seq);
      this.lastEventId = id;
    }
    if (TERMINAL.has(type)) this.terminal = true;
    const last = this.events[this.events.length - 1];
    if (type === 'token' && last?.t === 'token' && last.d.agent === data.agent && last.d.round === data.round) {
      last.d = { ...last.d, text: `${last.d.text ?? ''}${data.text ?? ''}` };
    } else {
      this.events.push({ t: type, d: data });
    }
    this.save();
  }

  save() {
    if (this.timer) return;
    this.timer = setTimeout(this.flush, 300);
  }

  saveNow() {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (!this.runId) return;
    const record = {
      runId: this.runId, lastSeq: this.lastSeq, lastEventId: this.lastEventId,
      terminal: this.terminal, complete: this.complete, events: this.events,
    };
    let text = JSON.stringify(record);
    if (text.length > JOURNAL_MAX_CHARS) {
      this.complete = false;
      text = JSON.stringify({ ...record, complete: false, events: [] });
    }
    try {
      sessionStorage.setItem(JOURNAL_PREFIX + this.conversationId, text);
    } catch {
      /* storage full or disabled: resume still works within this page */
    }
  }

  /** Flushes on page hide, so a reload resumes from the last event shown. */
  attach() {
    window.addEventListener('pagehide', this.flush);
    return this;
  }

  detach() {
    this.saveNow();
    window.removeEventListener('pagehide', this.flush);
  }

  static clearAll() {
    for (let i = sessionStorage.length - 1; i >= 0; i--) {
      const k = sessionStorage.key(i);
      if (k?.startsWith(JOURNAL_PREFIX)) sessionStorage.removeItem(k);
    }
  }
}

function newMessageId() {
  if (crypto.randomUUID) return crypto.randomUUID();
  // randomUUID needs a secure context; plain-http deployments get the same v4 layout by hand.
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const hex = [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const t = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => { clearTimeout(t); resolve(); }, { once: true });
  });
}

function isEventStream(res) {
  return (res.headers.get('content-type') ?? '').includes('text/event-stream');
}

/**
 * Follows one run of a conversation. `onEvent(type, data, pos)` gets every run event once, in
 * order; `onState({state, …})` tells the page how the connection is doing:
 *   connecting | live | reconnecting {attempt, delayMs, why} | waiting {position, estimatedWaitMs}
 *   | conflict {message} | done {terminal} | idle (no run) | error {message, status}
 */
export class RunStream {
  constructor({ conversationId, journal, onEvent, onState }) {
    this.conversationId = conversationId;
    this.journal = journal;
    this.onEvent = onEvent;
    this.onState = onState;
    this.runId = journal.runId;
    this.lastSeq = journal.lastSeq;
    this.lastEventId = journal.lastEventId;
    this.retryMs = 1000;
    this.stopper = new AbortController();
    this.finished = false;
  }

  get path() {
    return `/api/conversations/${encodeURIComponent(this.conversationId)}`;
  }

  /** Sends a message: the answer is the new run's stream. */
  send(content) {
    // The message id makes a retried POST idempotent: the orchestrator starts one run per id.
    const body = JSON.stringify({ content, messageId: newMessageId() });
    return this.follow((headers, signal) =>
      fetch(`${this.path}/messages`, { method: 'POST', headers: { ...headers, 'Content-Type': 'application/json' }, body, signal }), true);
  }

  /** Joins (or resumes, after the last id seen) the conversation's current or last run. */
  join() {
    return this.follow(this.watch, false);
  }

  /** Stops following (leaving the page or the conversation); the run itself goes on. */
  stop() {
    this.finished = true;
    this.stopper.abort();
  }

  watch = (headers, signal) => fetch(`${this.path}/events`, { headers, signal });

  async follow(request, isSend) {
    let attempt = 0;
    let queueToken;
    const stop = this.stopper.signal;
    while (!this.finished && !stop.aborted) {
      const headers = { Accept: 'text/event-stream', ...auth.headers() };
      if (this.lastEventId) headers['Last-Event-ID'] = this.lastEventId;
      if (queueToken) headers['X-Queue-Token'] = queueToken;
      const conn = new AbortController();
      const onStop = () => conn.abort();
      stop.addEventListener('abort', onStop, { once: true });
      if (attempt === 0) this.onState({ state: 'connecting' });
      let outcome;
      try {
        const res = await request(headers, conn.signal);
        if (res.ok && res.status !== 204 && isEventStream(res) && res.body) {
          queueToken = undefined;
          outcome = await this.consume(res, conn);
        } else {
          outcome = await this.refusal(res, isSend);
          if (outcome.queueToken) queueToken = outcome.queueToken;
        }
      } catch (err) {
        outcome = { kind: 'broken', why: err?.name === 'AbortError' ? 'stalled' : 'network error' };
      } finally {
        stop.removeEventListener('abort', onStop);
        conn.abort();
      }
      if (this.finished || stop.aborted) return;
      switch (outcome.kind) {
        case 'terminal':
          this.finished = true;
          this.onState({ state: 'done', terminal: outcome.type });
          return;
        case 'final':
          this.finished = true;
          this.onState(outcome.state);
          return;
        case 'queued':
          // The SSE limiter is full: our token keeps our place; retry when it says.
          this.onState({ state: 'waiting', position: outcome.position, estimatedWaitMs: outcome.estimatedWaitMs, retryInMs: outcome.delayMs });
          await sleep(outcome.delayMs, stop);
          continue;
        case 'join':
          // POST refused because a run is active: watch that run instead (from its start).
          this.onState({ state: 'conflict', message: outcome.message });
          request = this.watch;
          isSend = false;
          attempt = 0;
          continue;
        default: {
          // Anything after a POST's stream began is a resume of its run: a GET with Last-Event-ID.
          // Until the POST has produced an event (refused as busy, draining, or the link broke),
          // it is sent again with the same message id, so it cannot start a second run.
          if (!isSend || this.lastEventId) {
            request = this.watch;
            isSend = false;
          }
          if (outcome.progressed) attempt = 0;
          attempt += 1;
          if (attempt > MAX_ATTEMPTS) {
            this.finished = true;
            this.onState({ state: 'error', message: `Could not reconnect after ${MAX_ATTEMPTS} attempts.`, retryable: true });
            return;
          }
          const delayMs = outcome.delayMs ?? this.backoff(attempt);
          this.onState({ state: 'reconnecting', attempt, delayMs, why: outcome.why });
          await sleep(delayMs, stop);
        }
      }
    }
  }

  /** Exponential backoff from the server's `retry:` hint, with jitter so clients spread out. */
  backoff(attempt) {
    const base = Math.max(250, this.retryMs);
    const ms = Math.min(MAX_BACKOFF_MS, base * 2 ** (attempt - 1));
    return Math.round(Math.max(base, ms * (0.75 + Math.random() * 0.5)));
  }

  /** A non-stream answer: queue, conflict, or an error that ends or pauses the stream. */
  async refusal(res, isSend) {
    if (res.status === 204) return { kind: 'final', state: { state: 'idle' } };
    const err = await streamError(res);
    const body = err.body && typeof err.body === 'object' ? err.body : {};
    if (res.status === 503 && body.queueToken) {
      const wait = retryAfterMs(res.headers) ?? Number(body.estimatedWaitMs) ?? 1000;
      return {
        kind: 'queued', queueToken: String(body.queueToken), position: body.position,
        estimatedWaitMs: body.estimatedWaitMs, delayMs: Math.max(250, Number.isFinite(wait) ? wait : 1000),
      };
    }
    if (res.status === 409 && isSend) return { kind: 'join', message: err.message };
    // Busy or restarting: retry (a POST keeps its message id, so it cannot start a second run).
    const transient = res.status === 429 || res.status === 502 || res.status === 503 || res.status === 504;
    if (transient) return { kind: 'broken', why: err.message, delayMs: retryAfterMs(res.headers) };
    if (res.status === 404 && !isSend && !this.lastEventId) return { kind: 'final', state: { state: 'idle' } };
    return { kind: 'final', state: { state: 'error', status: res.status, message: err.message, retryable: transient } };
  }

  /** Reads one SSE response until a terminal event, the end, or a break. */
  async consume(res, conn) {
    let progressed = false;
    let sawEvent = false;
    let stall = setTimeout(() => conn.abort(), STALL_MS);
    const alive = () => { clearTimeout(stall); stall = setTimeout(() => conn.abort(), STALL_MS); };
    this.onState({ state: 'live' });
    try {
      for await (const item of readSse(res.body)) {
        alive();
        if (item.kind === 'retry') { this.retryMs = item.ms; continue; }
        if (item.kind !== 'event') continue;
        sawEvent = true;
        let data;
        try { data = JSON.parse(item.data); } catch { data = { text: item.data }; }
        if (item.event === 'reconnect') {
          // The edge is draining: go elsewhere after its (jittered) advice.
          const advice = Number(data?.retryMs ?? data?.retry_ms ?? data?.retryAfterMs);
          return { kind: 'broken', progressed, why: 'server restarting', delayMs: Number.isFinite(advice) ? advice : this.retryMs };
        }
        if (item.event === 'stream.overflow') {
          return { kind: 'broken', progressed, why: 'fell behind', delayMs: 0 };
        }
        const pos = parseEventId(item.id);
        if (pos) {
          if (this.runId && pos.runId !== this.runId) {
            if (this.lastSeq > 0) continue; // another run: not the one we follow
          }
          // Strictly after the last one shown: a resume never repeats text.
          if (pos.runId === this.runId && pos.seq <= this.lastSeq) continue;
          this.runId = pos.runId;
          this.lastSeq = pos.seq;
          this.lastEventId = item.id;
          progressed = true;
        }
        this.journal.record(item.id, pos, item.event, data);
        this.onEvent(item.event, data, pos);
        if (TERMINAL.has(item.event)) {
          this.journal.saveNow();
          return { kind: 'terminal', type: item.event };
        }
      }
      // A clean end with nothing in it: the conversation has no run to join.
      if (!sawEvent && !this.lastEventId) return { kind: 'final', state: { state: 'idle' } };
      return { kind: 'broken', progressed, why: 'stream ended' };
    } catch (err) {
      return { kind: 'broken', progressed, why: conn.signal.aborted ? 'no heartbeat' : 'connection lost' };
    } finally {
      clearTimeout(stall);
    }
  }
}
