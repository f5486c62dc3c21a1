import { EventEmitter } from 'node:events';
import { status } from '@grpc/grpc-js';
import { codeOf, reasonOf } from '@agent-mesh/common';
import type { RunEvent, WatchRunsRequest, WatchRunsResponse } from '@agent-mesh/common/gen/orchestrator/v1/orchestrator';
import { fromGrpc } from '../errors';
import { Cancel } from './cancel';
import { isPushSource, SLOW_CONSUMER, type RunEventSink } from './types';
import { WatchMux, type WatchRunsCall } from './watch-mux';

/** A WatchRuns call stand-in: records what the mux writes, and lets the test answer. */
class FakeCall extends EventEmitter {
  written: WatchRunsRequest[] = [];
  ended = false;
  cancelled = false;
  write(msg: WatchRunsRequest): boolean {
    this.written.push(msg);
    return true;
  }
  end(): void {
    this.ended = true;
  }
  cancel(): void {
    this.cancelled = true;
  }
  event(subscriptionId: number, seq: number, type = 'token'): void {
    const msg: WatchRunsResponse = { subscriptionId, item: { $case: 'event', event: { runId: 'r', seq, type, dataJson: '{}' } } };
    this.emit('data', msg);
  }
  end_(subscriptionId: number, code = 0, reason = '', message = ''): void {
    const msg: WatchRunsResponse = { subscriptionId, item: { $case: 'end', end: { code, message, reason, retryAfterMs: 0 } } };
    this.emit('data', msg);
  }
  subscribed(): number[] {
    return this.written.filter((w) => w.action?.$case === 'subscribe').map((w) => w.subscriptionId);
  }
}

function setup(opts: { rotateAfterMs?: number; maxQueuedEvents?: number; now?: () => number } = {}) {
  const calls: FakeCall[] = [];
  const mux = new WatchMux(() => {
    const c = new FakeCall();
    calls.push(c);
    return c as unknown as WatchRunsCall;
  }, opts);
  return { mux, calls };
}

async function collect(it: AsyncIterable<RunEvent>): Promise<{ seqs: number[]; error?: unknown }> {
  const seqs: number[] = [];
  try {
    for await (const ev of it) seqs.push(ev.seq);
    return { seqs };
  } catch (error) {
    return { seqs, error };
  }
}

const req = (runId = '') => ({ userId: 'u', conversationId: 'c', runId, afterSeq: 0 });

describe('WatchMux: many run watches over one WatchRuns call', () => {
  test('watches share one call; each gets its own events in order, then ends', async () => {
    const { mux, calls } = setup();
    const a = collect(mux.watch(req(), new AbortController().signal));
    const b = collect(mux.watch(req(), new AbortController().signal));
    expect(calls).toHaveLength(1);
    const call = calls[0]!;
    const [ida, idb] = call.subscribed();
    expect(ida).not.toBe(idb);
    expect(call.written[0]!.action).toEqual({ $case: 'subscribe', subscribe: req() });
    call.event(ida!, 1);
    call.event(idb!, 1);
    call.event(ida!, 2);
    call.end_(ida!);
    call.event(idb!, 2);
    call.event(idb!, 3);
    call.end_(idb!);
    expect(await a).toEqual({ seqs: [1, 2] });
    expect(await b).toEqual({ seqs: [1, 2, 3] });
  });

  test('an end with a status fails the watch as WatchRun would (code, reason, HTTP mapping)', async () => {
    const { mux, calls } = setup();
    const w = collect(mux.watch(req(), new AbortController().signal));
    calls[0]!.end_(calls[0]!.subscribed()[0]!, status.NOT_FOUND, 'not_found', 'conversation not found');
    const { seqs, error } = await w;
    expect(seqs).toEqual([]);
    expect(codeOf(error)).toBe(status.NOT_FOUND);
    expect(reasonOf(error)).toBe('not_found');
    expect(fromGrpc(error).statusCode).toBe(404);
  });

  test('aborting the signal unsubscribes; later events for it are dropped, others unaffected', async () => {
    const { mux, calls } = setup();
    const abort = new AbortController();
    const it = mux.watch(req(), abort.signal)[Symbol.asyncIterator]();
    const other = collect(mux.watch(req(), new AbortController().signal));
    const call = calls[0]!;
    const [id, otherId] = call.subscribed();
    call.event(id!, 1);
    expect((await it.next()).value.seq).toBe(1);
    abort.abort();
    expect(call.written.at(-1)).toEqual({ subscriptionId: id, action: { $case: 'unsubscribe', unsubscribe: {} } });
    await expect(it.next()).rejects.toMatchObject({ code: status.CANCELLED });
    call.event(id!, 2);
    call.event(otherId!, 1);
    call.end_(otherId!);
    expect(await other).toEqual({ seqs: [1] });
  });

  test('returning early (the relay stopped) unsubscribes', async () => {
    const { mux, calls } = setup();
    const it = mux.watch(req(), new AbortController().signal)[Symbol.asyncIterator]();
    const id = calls[0]!.subscribed()[0]!;
    await it.return!();
    expect(calls[0]!.written.at(-1)).toEqual({ subscriptionId: id, action: { $case: 'unsubscribe', unsubscribe: {} } });
  });

  test('a lost call fails every watch on it with UNAVAILABLE (the relay resumes), and the next watch opens a new call', async () => {
    const { mux, calls } = setup();
    const a = collect(mux.watch(req(), new AbortController().signal));
    const b = collect(mux.watch(req(), new AbortController().signal));
    const call = calls[0]!;
    call.event(call.subscribed()[0]!, 1);
    call.emit('error', Object.assign(new Error('14 UNAVAILABLE: gone'), { code: status.UNAVAILABLE, details: 'gone' }));
    for (const r of [await a, await b]) expect(codeOf(r.error)).toBe(status.UNAVAILABLE);
    expect((await a).seqs).toEqual([1]);
    expect(call.cancelled).toBe(true);
    void collect(mux.watch(req(), new AbortController().signal));
    expect(calls).toHaveLength(2);
  });

  test('a watch its replica ends UNAVAILABLE moves the next watches to a new call (another replica); not twice within a second', async () => {
    let t = 0;
    const { mux, calls } = setup({ now: () => t });
    const a = collect(mux.watch(req(), new AbortController().signal));
    const b = collect(mux.watch(req(), new AbortController().signal));
    const [ida, idb] = calls[0]!.subscribed();
    t = 1_000;
    calls[0]!.end_(ida!, status.UNAVAILABLE, '', 'redis unavailable');
    expect(codeOf((await a).error)).toBe(status.UNAVAILABLE);
    const c = collect(mux.watch(req(), new AbortController().signal));
    expect(calls).toHaveLength(2);
    // The old call keeps its other watch, and is half-closed after it.
    expect(calls[0]!.ended).toBe(false);
    calls[0]!.end_(idb!);
    expect(await b).toEqual({ seqs: [] });
    expect(calls[0]!.ended).toBe(true);
    // A new call's watch ended UNAVAILABLE before it is a second old: the next watch stays on it.
    t = 1_500;
    calls[1]!.end_(calls[1]!.subscribed()[0]!, status.UNAVAILABLE);
    expect(codeOf((await c).error)).toBe(status.UNAVAILABLE);
    void collect(mux.watch(req(), new AbortController().signal));
    expect(calls).toHaveLength(2);
    // Other refusals (not found …) are the run's, not the replica's: no move.
    t = 3_000;
    const d = collect(mux.watch(req(), new AbortController().signal));
    calls[1]!.end_(calls[1]!.subscribed()[2]!, status.NOT_FOUND);
    expect(codeOf((await d).error)).toBe(status.NOT_FOUND);
    void collect(mux.watch(req(), new AbortController().signal));
    expect(calls).toHaveLength(2);
  });

  test('a server end without status is a lost stream too', async () => {
    const { mux, calls } = setup();
    const a = collect(mux.watch(req(), new AbortController().signal));
    calls[0]!.emit('end');
    expect(codeOf((await a).error)).toBe(status.UNAVAILABLE);
  });

  test('rotation: new watches go to a fresh call; the old one is half-closed after its last watch', async () => {
    let t = 0;
    const { mux, calls } = setup({ rotateAfterMs: 1_000, now: () => t });
    const old = collect(mux.watch(req(), new AbortController().signal));
    t = 1_500;
    const fresh = collect(mux.watch(req(), new AbortController().signal));
    expect(calls).toHaveLength(2);
    expect(calls[0]!.ended).toBe(false);
    calls[0]!.end_(calls[0]!.subscribed()[0]!);
    expect(await old).toEqual({ seqs: [] });
    expect(calls[0]!.ended).toBe(true);
    expect(calls[1]!.ended).toBe(false);
    calls[1]!.end_(calls[1]!.subscribed()[0]!);
    expect(await fresh).toEqual({ seqs: [] });
  });

  test('a watch whose consumer stalls is bounded: past the cap it fails as a slow consumer and unsubscribes', async () => {
    const { mux, calls } = setup({ maxQueuedEvents: 3 });
    const it = mux.watch(req(), new AbortController().signal)[Symbol.asyncIterator]();
    const other = collect(mux.watch(req(), new AbortController().signal));
    const call = calls[0]!;
    const [id, otherId] = call.subscribed();
    for (let seq = 1; seq <= 3; seq++) call.event(id!, seq);
    expect(call.written.filter((w) => w.action?.$case === 'unsubscribe')).toHaveLength(0);
    call.event(id!, 4); // one more than the cap
    expect(call.written.at(-1)).toEqual({ subscriptionId: id, action: { $case: 'unsubscribe', unsubscribe: {} } });
    // The queued events were dropped (the client resumes from its last delivered event).
    const err = await it.next().then(() => undefined, (e: unknown) => e);
    expect(codeOf(err)).toBe(status.RESOURCE_EXHAUSTED);
    expect(reasonOf(err)).toBe(SLOW_CONSUMER);
    call.event(otherId!, 1);
    call.end_(otherId!);
    expect(await other).toEqual({ seqs: [1] });
  });

  test('close() cancels the call and fails open watches', async () => {
    const { mux, calls } = setup();
    const a = collect(mux.watch(req(), new AbortController().signal));
    mux.close();
    expect(codeOf((await a).error)).toBe(status.CANCELLED);
    expect(calls[0]!.cancelled).toBe(true);
  });

  describe('piped (push mode, what the relay uses: no promise per event)', () => {
    /** A sink recording what it is handed; `onSeq` may act on an event (e.g. stop the watch). */
    function sink(onSeq?: (seq: number) => void): RunEventSink & { seqs: number[]; ends: (Error | undefined)[] } {
      const seqs: number[] = [];
      const ends: (Error | undefined)[] = [];
      return { seqs, ends, onEvent: (ev) => (seqs.push(ev.seq), onSeq?.(ev.seq)), onEnd: (err) => void ends.push(err) };
    }

    test('hands over what was queued, then each event as it arrives, then the end', async () => {
      const { mux, calls } = setup();
      const it = mux.watch(req(), new Cancel())[Symbol.asyncIterator]();
      const call = calls[0]!;
      const id = call.subscribed()[0]!;
      call.event(id, 1);
      expect((await it.next()).value.seq).toBe(1); // the first event is pulled (the relay's first-event wait)
      call.event(id, 2); // queued: nobody pulls
      expect(isPushSource(it)).toBe(true);
      const s = sink();
      if (isPushSource(it)) it.pipe(s);
      expect(s.seqs).toEqual([2]);
      call.event(id, 3);
      expect(s.seqs).toEqual([2, 3]);
      call.end_(id);
      expect(s.ends).toEqual([undefined]);
    });

    test('a failure or a lost call is handed to the sink as the error WatchRun would raise', () => {
      const { mux, calls } = setup();
      const a = mux.watch(req(), new Cancel())[Symbol.asyncIterator]();
      const b = mux.watch(req(), new Cancel())[Symbol.asyncIterator]();
      const sa = sink();
      const sb = sink();
      if (isPushSource(a) && isPushSource(b)) {
        a.pipe(sa);
        b.pipe(sb);
      }
      const call = calls[0]!;
      call.end_(call.subscribed()[0]!, status.NOT_FOUND, 'not_found', 'conversation not found');
      expect(codeOf(sa.ends[0])).toBe(status.NOT_FOUND);
      call.emit('error', Object.assign(new Error('14 UNAVAILABLE: gone'), { code: status.UNAVAILABLE, details: 'gone' }));
      expect(codeOf(sb.ends[0])).toBe(status.UNAVAILABLE);
      expect(sa.ends).toHaveLength(1);
    });

    test('the sink aborting its signal on an event unsubscribes; nothing more is handed to it', () => {
      const { mux, calls } = setup();
      const signal = new Cancel();
      const it = mux.watch(req(), signal)[Symbol.asyncIterator]();
      const call = calls[0]!;
      const id = call.subscribed()[0]!;
      const s = sink((seq) => seq === 2 && signal.abort());
      if (isPushSource(it)) it.pipe(s);
      call.event(id, 1);
      call.event(id, 2);
      expect(call.written.at(-1)).toEqual({ subscriptionId: id, action: { $case: 'unsubscribe', unsubscribe: {} } });
      call.event(id, 3);
      expect(s.seqs).toEqual([1, 2]);
      expect(codeOf(s.ends[0])).toBe(status.CANCELLED);
    });
  });
});
