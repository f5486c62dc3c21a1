import { StreamLimiter } from './limiter';

describe('StreamLimiter', () => {
  test('admits up to the limit, then hands out FIFO queue tokens', () => {
    let now = 0;
    const l = new StreamLimiter({ maxStreams: 2, now: () => now });
    const a = l.acquire();
    const b = l.acquire();
    expect(a.ok && b.ok).toBe(true);
    const c = l.acquire();
    const d = l.acquire();
    if (c.ok || d.ok || c.draining || d.draining) throw new Error('expected queue tokens');
    expect([c.position, d.position]).toEqual([1, 2]);
    if (a.ok) a.slot.release();
    now += 100;
    // A newcomer without a token cannot jump the queue, nor can the second in line.
    expect(l.acquire().ok).toBe(false);
    const dEarly = l.acquire(d.queueToken);
    expect(dEarly.ok).toBe(false);
    expect(!dEarly.ok && !dEarly.draining && dEarly.position).toBe(2);
    expect(l.acquire(c.queueToken).ok).toBe(true);
    if (b.ok) b.slot.release();
    expect(l.acquire(d.queueToken).ok).toBe(true);
    expect(l.open).toBe(2);
  });

  test('release is idempotent; an unclaimed token expires and frees its place', () => {
    let now = 0;
    const l = new StreamLimiter({ maxStreams: 1, initialIntervalMs: 1_000, tokenGraceMs: 1_000, now: () => now });
    const a = l.acquire();
    const q = l.acquire();
    if (!a.ok || q.ok) throw new Error('setup');
    a.slot.release();
    a.slot.release();
    expect(l.open).toBe(0);
    expect(l.queued).toBe(1);
    now += 60_000; // the queued client never came back
    expect(l.queued).toBe(0);
    expect(l.acquire().ok).toBe(true);
  });

  test('the estimate matches the waits that actually happen (streams of ~2 s, 3 slots)', () => {
    let now = 0;
    const l = new StreamLimiter({ maxStreams: 3, now: () => now });
    const open: { end: number; release: () => void }[] = [];
    const waiting: { token: string; estimate: number; since: number }[] = [];
    const errors: number[] = [];
    const actuals: number[] = [];
    let rnd = 42;
    const random = () => ((rnd = (rnd * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    for (let t = 0; t < 120_000; t += 50) {
      now = t;
      for (const s of open.filter((s) => s.end <= t)) {
        s.release();
        open.splice(open.indexOf(s), 1);
      }
      // Clients retry every 50 ms with their token, in order.
      for (const w of [...waiting]) {
        const r = l.acquire(w.token);
        if (r.ok) {
          errors.push(Math.abs(t - w.since - w.estimate));
          actuals.push(t - w.since);
          waiting.splice(waiting.indexOf(w), 1);
          open.push({ end: t + 1_500 + random() * 1_000, release: r.slot.release });
        }
      }
      // A new client arrives every 700 ms on average, close to the capacity (3 slots / 2 s).
      if (random() < 50 / 700) {
        const r = l.acquire();
        if (r.ok) open.push({ end: t + 1_500 + random() * 1_000, release: r.slot.release });
        else if (!r.draining) waiting.push({ token: r.queueToken, estimate: r.estimatedWaitMs, since: t });
      }
    }
    const measured = errors.slice(20); // after the averages warmed up
    const waits = actuals.slice(20);
    const meanError = measured.reduce((a, b) => a + b, 0) / measured.length;
    const meanWait = waits.reduce((a, b) => a + b, 0) / waits.length;
    expect(measured.length).toBeGreaterThan(30);
    // Honest: the mean absolute error is well under the mean wait itself (a cruder estimate,
    // e.g. "position × stream duration", is off by a multiple of the wait).
    expect(meanError / meanWait).toBeLessThan(0.5);
  });

  test('drain refuses everything without a token', () => {
    const l = new StreamLimiter({ maxStreams: 5 });
    l.drain();
    const r = l.acquire();
    expect(r).toEqual({ ok: false, draining: true });
  });
});
