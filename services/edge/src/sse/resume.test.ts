// The relay's resume state machine on its own (no stream, no source): which events pass, and what
// a lost or failed source leads to.
import { Metadata, type ServiceError } from '@grpc/grpc-js';
import { MeshError, REASON_KEY, status, TERMINAL_EVENTS } from '@agent-mesh/common';
import { SLOW_CONSUMER } from '../gateways/types';
import { RESUME_ATTEMPTS, resumeDelayMs, sourceEnded, takeEvent, type ResumePosition } from './resume';

const RUN = '0b6f4a52-3c39-4f5e-9d61-7c1f1c0e2a11';
const ev = (seq: number, type = 'token') => ({ runId: RUN, seq, type });
const start = (): ResumePosition => ({ lastSeq: 0, attempts: 0 });

/** A grpc-js client error as a peer's failure arrives (code, and the mesh's reason in metadata). */
function grpcError(code: status, reason?: string): ServiceError {
  const metadata = new Metadata();
  if (reason) metadata.set(REASON_KEY, reason);
  return Object.assign(new Error(`${code} ${reason ?? ''}`), { code, details: reason ?? '', metadata });
}

describe('takeEvent', () => {
  test('events pass in order once each; a replayed seq is skipped', () => {
    const p = start();
    expect([1, 2, 3].map((s) => takeEvent(p, ev(s)))).toEqual(['relay', 'relay', 'relay']);
    expect(p).toEqual({ runId: RUN, lastSeq: 3, attempts: 0 });
    // A re-opened source that repeats what was relayed already.
    expect([2, 3, 4].map((s) => takeEvent(p, ev(s)))).toEqual(['skip', 'skip', 'relay']);
    expect(p.lastSeq).toBe(4);
  });

  test('events.lost passes although its seq (firstAvailableSeq − 1) is not after the last', () => {
    const p: ResumePosition = { runId: RUN, lastSeq: 10, attempts: 0 };
    expect(takeEvent(p, ev(4, 'events.lost'))).toBe('relay');
    expect(p.lastSeq).toBe(10);
    const q = start();
    expect(takeEvent(q, ev(4, 'events.lost'))).toBe('relay');
    expect(q.lastSeq).toBe(4);
    expect(takeEvent(q, ev(5))).toBe('relay');
  });

  test('every terminal event of the catalogue ends the stream, after it when new, without it when a duplicate', () => {
    expect(TERMINAL_EVENTS.size).toBeGreaterThan(0);
    for (const type of TERMINAL_EVENTS) {
      const p: ResumePosition = { runId: RUN, lastSeq: 5, attempts: 0 };
      expect([type, takeEvent(p, ev(6, type))]).toEqual([type, 'relay_and_end']);
      const q: ResumePosition = { runId: RUN, lastSeq: 6, attempts: 0 };
      expect([type, takeEvent(q, ev(6, type))]).toEqual([type, 'end']);
    }
    for (const type of ['run.started', 'token', 'agent.completed', 'round.completed', 'reconnect']) {
      expect(takeEvent(start(), ev(1, type))).toBe('relay');
    }
  });

  test('an event, even a duplicate, resets the re-open attempts (the source is alive)', () => {
    const p: ResumePosition = { runId: RUN, lastSeq: 7, attempts: 2 };
    expect(takeEvent(p, ev(7))).toBe('skip');
    expect(p.attempts).toBe(0);
  });
});

describe('sourceEnded', () => {
  const known = (attempts = 0): ResumePosition => ({ runId: RUN, lastSeq: 3, attempts });

  test('a source lost (ended, UNAVAILABLE, CANCELLED, INTERNAL) is re-opened, counting attempts', () => {
    for (const [ok, e] of [[true, undefined], [false, grpcError(status.UNAVAILABLE)], [false, grpcError(status.CANCELLED)], [false, grpcError(status.INTERNAL)]] as const) {
      const p = known();
      expect(sourceEnded(p, ok, e, false)).toBe('resume');
      expect(p.attempts).toBe(1);
      expect(p.lastSeq).toBe(3);
    }
  });

  test(`after ${RESUME_ATTEMPTS} attempts without an event in between, the client is told to reconnect`, () => {
    const p = known();
    const steps = Array.from({ length: RESUME_ATTEMPTS + 1 }, () => sourceEnded(p, false, grpcError(status.UNAVAILABLE), false));
    expect(steps).toEqual([...Array(RESUME_ATTEMPTS).fill('resume'), 'reconnect']);
    expect(p.attempts).toBe(RESUME_ATTEMPTS);
    // An event in between starts the count again.
    takeEvent(p, ev(4));
    expect(sourceEnded(p, true, undefined, false)).toBe('resume');
  });

  test('lost before the run is known, or after the relay was aborted: reconnect, no re-open', () => {
    expect(sourceEnded(start(), false, grpcError(status.UNAVAILABLE), false)).toBe('reconnect');
    expect(sourceEnded(known(), true, undefined, true)).toBe('reconnect');
  });

  test('a slow consumer upstream overflows the stream, whatever else holds', () => {
    expect(sourceEnded(known(), false, new MeshError(SLOW_CONSUMER, 'behind'), false)).toBe('overflow');
    expect(sourceEnded(known(), false, grpcError(status.RESOURCE_EXHAUSTED, SLOW_CONSUMER), false)).toBe('overflow');
  });

  test('other failures are told as run.failed (no re-open, the attempts untouched)', () => {
    for (const e of [grpcError(status.NOT_FOUND, 'not_found'), grpcError(status.PERMISSION_DENIED), grpcError(status.RESOURCE_EXHAUSTED, 'budget_exceeded'), new Error('not a gRPC error')]) {
      const p = known(1);
      expect(sourceEnded(p, false, e, false)).toBe('fail');
      expect(p.attempts).toBe(1);
    }
  });

  test('re-opens back off: 200 ms, doubling, at most 2 s; all of them outlast a Redis failover (~8 s)', () => {
    const delays = Array.from({ length: RESUME_ATTEMPTS }, (_, i) => resumeDelayMs(i + 1));
    expect(delays).toEqual([200, 400, 800, 1600, 2000, 2000, 2000]);
    expect(delays.reduce((a, b) => a + b)).toBeGreaterThan(8_000);
  });
});
