// One SSE response: frames events, sends heartbeats, and keeps memory bounded. While the socket
// accepts writes, events go straight through; once it pushes back, events wait in a bounded
// buffer (events + bytes, counting what the socket itself still holds). A client that falls
// further behind is sent `stream.overflow` and disconnected: it resumes with Last-Event-ID.
import type { Writable } from 'node:stream';
import { eventFrame, frame, HEARTBEAT, retryHint, type SseMessage } from './frame';
import type { Beating } from './heartbeat';

export interface SseStreamOptions {
  maxBufferedEvents: number;
  maxBufferedBytes: number;
  /** How long an overflowed or drained stream may take to flush before its socket is destroyed. */
  closeTimeoutMs?: number;
}

export type CloseReason = 'completed' | 'client_closed' | 'overflow' | 'draining' | 'error';

/** An object told of the close by a method call (no closure per stream, unlike a listener function). */
export interface CloseObserver {
  onStreamClose(reason: CloseReason): void;
}

type CloseListener = ((reason: CloseReason) => void) | CloseObserver;

function tell(l: CloseListener, reason: CloseReason): void {
  if (typeof l === 'function') l(reason);
  else l.onStreamClose(reason);
}

export class SseStream implements Beating {
  private readonly queue: string[] = [];
  /**
   * Position of the newest event in `queue` (handed to the socket on the next flush): a run
   * event's run id and seq, or (seq undefined) a control event's whole id. Positions are kept as
   * fields, not an object per event: a stream's last position lives until its next event (~10 s
   * at 20,000 streams), long enough to be promoted and die in the old generation.
   */
  private queuedRunId?: string;
  private queuedSeq?: number;
  private queuedBytes = 0;
  private blocked = false;
  private ended = false;
  private closeReason?: CloseReason;
  /** One listener (the relay) in a field; an array only when there are several. */
  private closeListeners?: CloseListener | CloseListener[];
  /**
   * Position of the last event handed to the socket (never one still waiting in the buffer: a
   * client told to resume from here must not skip what was dropped from the buffer on overflow).
   * Kept as run id + seq and only turned into an id string when asked (rarely: drain, overflow).
   */
  private lastRunId?: string;
  private lastSeq?: number;

  constructor(
    private readonly sink: Writable,
    private readonly opts: SseStreamOptions,
  ) {
    sink.on('drain', () => this.flush());
    // One listener for both, and `on` rather than `once` (finish runs once anyway): no once-wrapper
    // per stream.
    const gone = () => this.finish('client_closed');
    sink.on('close', gone);
    sink.on('error', gone);
  }

  /** Writes the `retry:` hint (the first thing on every stream). */
  begin(retryMs: number): void {
    this.write(retryHint(retryMs));
  }

  /** Id (`<runId>:<seq>` or a control event's id) of the last event handed to the socket. */
  get lastId(): string | undefined {
    const runId = this.lastRunId;
    if (runId === undefined) return undefined;
    return this.lastSeq === undefined ? runId : `${runId}:${this.lastSeq}`;
  }

  get closed(): boolean {
    return this.ended;
  }

  get reason(): CloseReason | undefined {
    return this.closeReason;
  }

  /** Bytes this stream holds in memory (its buffer and the socket's). */
  get bufferedBytes(): number {
    return this.queuedBytes + this.sink.writableLength;
  }

  get bufferedEvents(): number {
    return this.queue.length;
  }

  onClose(fn: CloseListener): void {
    if (this.closeReason) tell(fn, this.closeReason);
    else {
      const l = this.closeListeners;
      this.closeListeners = l === undefined ? fn : Array.isArray(l) ? [...l, fn] : [l, fn];
    }
  }

  /** Sends one event; false when the stream is closed (or just overflowed and was closed). */
  send(msg: SseMessage): boolean {
    return this.push(frame(msg), msg.id, undefined);
  }

  /** Sends one run event (`id: <runId>:<seq>`), framed in one string. */
  sendEvent(runId: string, seq: number, event: string, data: string): boolean {
    return this.push(eventFrame(runId, seq, event, data), runId, seq);
  }

  /** `runId` undefined: an event without id (position unchanged). */
  private push(text: string, runId: string | undefined, seq: number | undefined): boolean {
    if (this.ended) return false;
    if (!this.blocked) {
      if (runId !== undefined) this.setLast(runId, seq);
      this.write(text);
      return true;
    }
    if (runId !== undefined) {
      this.queuedRunId = runId;
      this.queuedSeq = seq;
    }
    this.queue.push(text);
    this.queuedBytes += Buffer.byteLength(text);
    if (this.queue.length > this.opts.maxBufferedEvents || this.bufferedBytes > this.opts.maxBufferedBytes) {
      this.overflow();
      return false;
    }
    return true;
  }

  heartbeat(): void {
    // A blocked socket is not idle: no heartbeat needed, and none should add to the backlog.
    if (!this.ended && !this.blocked) this.write(HEARTBEAT);
  }

  /** Ends the stream after what is buffered (a terminal event was sent). */
  end(reason: CloseReason = 'completed'): void {
    if (this.ended) return;
    this.flush();
    this.ended = true;
    this.sink.end();
    this.destroyLater();
    this.finish(reason);
  }

  /** Sends a last control event and ends (used for overflow and drain). */
  endWith(msg: SseMessage, reason: CloseReason): void {
    if (this.ended) return;
    // Control events jump the backlog: the client must learn why, and will resume from its own
    // Last-Event-ID anyway.
    this.queue.length = 0;
    this.queuedBytes = 0;
    this.queuedRunId = this.queuedSeq = undefined;
    this.sink.write(frame(msg));
    this.ended = true;
    this.sink.end();
    this.destroyLater();
    this.finish(reason);
  }

  /** The client fell too far behind: tell it (`stream.overflow`, with where to resume) and close. */
  overflow(): void {
    this.endWith(
      {
        event: 'stream.overflow',
        data: JSON.stringify({
          reason: 'slow_consumer',
          message: 'the client fell too far behind; reconnect with Last-Event-ID to resume',
          lastEventId: this.lastId ?? null,
        }),
      },
      'overflow',
    );
  }

  private write(text: string): void {
    if (!this.sink.write(text)) this.blocked = true;
  }

  private flush(): void {
    if (this.ended) return;
    this.blocked = false;
    if (this.queue.length === 0) return;
    const text = this.queue.join('');
    this.queue.length = 0;
    this.queuedBytes = 0;
    if (this.queuedRunId !== undefined) this.setLast(this.queuedRunId, this.queuedSeq);
    this.queuedRunId = this.queuedSeq = undefined;
    this.write(text);
  }

  private setLast(runId: string, seq: number | undefined): void {
    // Equal ids: keep the string held already (each event brings its own copy of the run id).
    if (this.lastRunId !== runId) this.lastRunId = runId;
    this.lastSeq = seq;
  }

  private destroyLater(): void {
    const t = setTimeout(() => {
      if (!this.sink.destroyed) this.sink.destroy();
    }, this.opts.closeTimeoutMs ?? 2_000);
    t.unref();
    this.sink.once('finish', () => clearTimeout(t));
  }

  private finish(reason: CloseReason): void {
    if (this.closeReason) return;
    this.ended = true;
    this.closeReason = reason;
    this.queue.length = 0;
    this.queuedBytes = 0;
    const l = this.closeListeners;
    this.closeListeners = undefined;
    if (Array.isArray(l)) for (const fn of l) tell(fn, reason);
    else if (l) tell(l, reason);
  }
}
