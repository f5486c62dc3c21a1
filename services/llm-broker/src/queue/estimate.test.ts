import { WaitEstimator } from './estimate';
import { FairQueue } from './fair-queue';

interface Call { userId: string; priority: number; started: boolean; run: number; left: number; enqueuedAt: number; estimate?: number }

/**
 * A saturated upstream admitting one call every `intervalMs`; new runs arriving faster than it
 * can finish them, each making a first call and then `followUps` more, one after the other
 * (`callMs` each). Returns, for every first call admitted after the warm-up, what the estimator
 * told it when it was queued and how long it really waited.
 */
function simulate(o: { intervalMs: number; arrivalEveryMs: number; followUps: number; callMs: number; durationMs: number; warmupMs: number }) {
  let now = 0;
  const est = new WaitEstimator(() => o.intervalMs, () => now);
  const q = new FairQueue<Call>();
  const later: { at: number; call: Call }[] = [];
  const firsts: { estimate: number; waited: number }[] = [];
  let runs = 0;
  const enqueue = (c: Call) => {
    q.push(c);
    if (!c.started) c.estimate = est.waitFor(q.positions().get(c)!, 0, { startedAhead: q.started, waiting: true });
  };
  for (now = 0; now < o.durationMs; now += 1) {
    if (now % o.arrivalEveryMs === 0) enqueue({ userId: `u${runs}`, priority: 2, started: false, run: runs++, left: o.followUps, enqueuedAt: now });
    for (const l of later.filter((x) => x.at === now)) enqueue({ ...l.call, enqueuedAt: now });
    if (now % o.intervalMs !== 0 || q.size === 0) continue;
    const c = q.shift()!;
    est.onAdmitted(q.size > 0, c.started);
    if (!c.started && now >= o.warmupMs) firsts.push({ estimate: c.estimate!, waited: now - c.enqueuedAt });
    if (c.left > 0) later.push({ at: now + o.callMs, call: { ...c, started: true, priority: 3, left: c.left - 1 } });
  }
  return firsts;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** An estimator that measured 200 admissions 100 ms apart, three of four to calls of started runs. */
function measured(): WaitEstimator {
  let now = 0;
  const est = new WaitEstimator(() => 100, () => now);
  for (let i = 0; i < 200; i += 1) {
    now += 100;
    est.onAdmitted(true, i % 4 !== 0);
  }
  return est;
}

describe('WaitEstimator', () => {
  it("tells a run's first call how long it will really wait, though the calls of started runs keep overtaking it", () => {
    // 10 calls/s admitted, 4 calls per run: 2.5 runs/s served, 4 runs/s arriving.
    const firsts = simulate({ intervalMs: 100, arrivalEveryMs: 250, followUps: 3, callMs: 300, durationMs: 90_000, warmupMs: 20_000 });
    expect(firsts.length).toBeGreaterThan(50);
    const ratios = firsts.map((f) => f.waited / f.estimate);
    // Counting only the calls ahead of it now, the wait would be ~4× the estimate.
    expect(median(ratios)).toBeGreaterThan(0.8);
    expect(median(ratios)).toBeLessThan(1.25);
  });

  it('estimates a call of a started run by the calls ahead of it', () => {
    const est = measured();
    expect(est.waitFor(5, 50)).toBe(50 + 4 * 100);
    // Three of four admissions go to started runs: a first call behind 2 started and 2 other first calls.
    const first = est.waitFor(5, 0, { startedAhead: 2 });
    expect(first).toBeGreaterThan(2 * 100 + 2 * 100 * 2);
    expect(first).toBeLessThan(2 * 100 + 2 * 100 * 10);
  });

  it("counts a waiting call's own admission, one interval away, unless the head's block says when", () => {
    const est = measured();
    expect(est.waitFor(1, 0)).toBe(0); // not refused a slot yet: it may be admitted at once
    expect(est.waitFor(1, 0, { waiting: true })).toBe(100);
    expect(est.waitFor(3, 0, { waiting: true })).toBe(300);
    expect(est.waitFor(1, 250, { waiting: true })).toBe(250); // the block's end is its admission
    // A first call's own admission waits for the share of admissions the started runs leave.
    expect(est.waitFor(1, 0, { startedAhead: 0, waiting: true })).toBeCloseTo(est.firstCallIntervalMs);
    expect(est.waitFor(3, 0, { startedAhead: 1, waiting: true })).toBeCloseTo(100 + 2 * est.firstCallIntervalMs);
  });
});

it('prices one more run at no less than four calls, also while nearly every admission so far was a first call', () => {
  let now = 0;
  const est = new WaitEstimator(() => 100, () => now);
  expect(est.runIntervalMs).toBe(400);
  // The queue fills with new runs: 60 first calls admitted in a row, 100 ms apart.
  for (let i = 0; i < 60; i++) {
    now += 100;
    est.onAdmitted(true, false);
  }
  expect(est.firstCallIntervalMs).toBeLessThan(150); // what started runs took so far: next to nothing
  expect(est.runIntervalMs).toBe(400);
  // Then runs' later calls take most admissions: a run costs what their share says.
  for (let i = 0; i < 200; i++) {
    now += 100;
    est.onAdmitted(true, i % 5 !== 0);
  }
  expect(est.runIntervalMs).toBeGreaterThan(450);
  expect(est.runIntervalMs).toBeCloseTo(est.firstCallIntervalMs);
});

it('does not count the admissions no first call waited for: keeping new runs out does not make them look slower', () => {
  let now = 0;
  const est = new WaitEstimator(() => 100, () => now);
  for (let i = 0; i < 200; i++) {
    now += 100;
    est.onAdmitted(true, i % 5 !== 0); // a first call in five admissions
  }
  const before = est.firstCallIntervalMs;
  // Admission control keeps new runs out: only started runs' calls wait and are admitted.
  for (let i = 0; i < 200; i++) {
    now += 100;
    est.onAdmitted(true, true, false);
  }
  expect(est.firstCallIntervalMs).toBeCloseTo(before);
});

it('does not count an idle spell as an admission interval', () => {
  let now = 0;
  const est = new WaitEstimator(() => 100, () => now);
  for (let i = 0; i < 50; i++) {
    est.onBlocked();
    now += 60;
    est.onAdmitted(i < 49, true); // the last one leaves the queue empty
  }
  expect(est.admissionIntervalMs).toBeCloseTo(60);
  now += 5_000; // idle
  est.onBlocked(); // a call waits for a slot…
  now += 50;
  est.onAdmitted(false, true); // …and is admitted 50 ms later
  expect(est.admissionIntervalMs).toBeLessThan(70);
});
