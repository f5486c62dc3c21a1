import { PassThrough, Writable } from 'node:stream';
import { eventFrame, frame, parseLastEventId } from './frame';
import { heartbeatInterval } from './heartbeat';
import { SseStream } from './stream';

describe('SSE framing', () => {
  test('id, event and data lines; multi-line data split; retry hint', () => {
    expect(frame({ id: 'r:1', event: 'token', data: '{"a":1}' })).toBe('id: r:1\nevent: token\ndata: {"a":1}\n\n');
    expect(frame({ event: 'x', data: 'a\nb' })).toBe('event: x\ndata: a\ndata: b\n\n');
    expect(frame({ event: 'reconnect', data: '{}', retryMs: 1234.4 })).toBe('retry: 1234\nevent: reconnect\ndata: {}\n\n');
    expect(frame({ event: 'evil\nevent: other', data: '{}' })).toBe('event: evil event: other\ndata: {}\n\n');
  });

  test('a run event framed in one step is the same block as frame() builds', () => {
    for (const [runId, seq, event, data] of [
      ['r', 7, 'token', '{"text":" hi"}'],
      ['r', 8, 'token', 'a\nb\r\nc'],
      ['r', 9, 'evil\nevent: other', '{}'],
    ] as const) {
      expect(eventFrame(runId, seq, event, data)).toBe(frame({ id: `${runId}:${seq}`, event, data }));
    }
  });

  test('Last-Event-ID parsing', () => {
    const id = '0b7e6a6e-7c1d-4f57-9d0e-6f0b9f1d2c3a';
    expect(parseLastEventId(`${id}:17`)).toEqual({ runId: id, seq: 17 });
    expect(parseLastEventId(undefined)).toBeUndefined();
    expect(parseLastEventId('  ')).toBeUndefined();
    for (const bad of ['17', `${id}`, `${id}:`, `${id}:-1`, `${id}:1.5`, `x:1`, `${id}:1e3`, '{"$gt":1}:1']) expect(parseLastEventId(bad)).toBeNull();
  });

  test('heartbeat lengthens under load', () => {
    expect(heartbeatInterval(15_000, 1)).toBe(15_000);
    expect(heartbeatInterval(15_000, 4.5)).toBe(20_000);
    expect(heartbeatInterval(15_000, 9)).toBe(30_000);
    expect(heartbeatInterval(40_000, 9)).toBe(40_000);
  });
});

/** A socket stand-in that accepts `capacity` bytes and then stops draining until told to. */
class SlowSink extends Writable {
  written = '';
  private held: (() => void)[] = [];
  flowing = false;
  constructor() {
    super({ highWaterMark: 256, decodeStrings: false });
  }
  override _write(chunk: Buffer | string, _enc: BufferEncoding, cb: () => void): void {
    this.written += chunk.toString();
    if (this.flowing) cb();
    else this.held.push(cb);
  }
  flow(): void {
    this.flowing = true;
    for (const cb of this.held.splice(0)) cb();
  }
}

describe('SseStream', () => {
  test('passes events straight through a fast socket, with heartbeats as comments', async () => {
    const sink = new PassThrough();
    let out = '';
    sink.on('data', (d: Buffer) => (out += d.toString()));
    const s = new SseStream(sink, { maxBufferedEvents: 10, maxBufferedBytes: 10_000 });
    s.begin(2000);
    s.send({ id: 'r:1', event: 'token', data: '{}' });
    s.heartbeat();
    s.end();
    await new Promise((r) => setImmediate(r));
    expect(out).toBe('retry: 2000\n\nid: r:1\nevent: token\ndata: {}\n\n: hb\n\n');
    expect(s.reason).toBe('completed');
  });

  test('buffers while the socket pushes back, then flushes in order', () => {
    const sink = new SlowSink();
    const s = new SseStream(sink, { maxBufferedEvents: 100, maxBufferedBytes: 100_000 });
    for (let i = 1; i <= 20; i++) s.send({ id: `r:${i}`, event: 'token', data: 'x'.repeat(50) });
    expect(s.bufferedEvents).toBeGreaterThan(0);
    sink.flow();
    const ids = [...sink.written.matchAll(/id: r:(\d+)/g)].map((m) => Number(m[1]));
    expect(ids).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
    expect(s.bufferedEvents).toBe(0);
  });

  test('a consumer that falls behind gets stream.overflow and is closed; memory is released', async () => {
    const sink = new SlowSink();
    const s = new SseStream(sink, { maxBufferedEvents: 5, maxBufferedBytes: 100_000, closeTimeoutMs: 10 });
    const reasons: string[] = [];
    s.onClose((r) => reasons.push(r));
    let accepted = 0;
    for (let i = 1; i <= 50; i++) if (s.send({ id: `r:${i}`, event: 'token', data: '{}' })) accepted++;
    expect(accepted).toBeLessThan(50);
    expect(reasons).toEqual(['overflow']);
    expect(s.bufferedEvents).toBe(0);
    sink.flow();
    await new Promise((r) => setImmediate(r));
    expect(sink.written).toContain('event: stream.overflow');
    expect(s.send({ event: 'token', data: '{}' })).toBe(false);
    // The resume point it announces is the last event the socket got, never one dropped from the buffer.
    const written = [...sink.written.matchAll(/id: r:(\d+)/g)].map((m) => Number(m[1]));
    const overflow = JSON.parse(sink.written.split('event: stream.overflow\ndata: ')[1]!.split('\n')[0]!);
    expect(overflow.lastEventId).toBe(`r:${written.at(-1)}`);
    expect(s.lastId).toBe(`r:${written.at(-1)}`);
  });

  test('the byte bound counts what the socket still holds', () => {
    const sink = new SlowSink();
    const s = new SseStream(sink, { maxBufferedEvents: 1_000, maxBufferedBytes: 2_000 });
    for (let i = 0; i < 100 && !s.closed; i++) s.send({ event: 'token', data: 'y'.repeat(100) });
    expect(s.reason).toBe('overflow');
  });
});
