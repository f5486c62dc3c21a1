import { owedBy, WaitEstimator } from './estimate';
import { FairQueue } from './fair-queue';

interface Call { userId: string; priority: number; started: boolean; run: number; left: number; enqueuedAt: number; estimate?: number }

/** A run's first call joining the queue hears its estimated wait (what the broker sends in `queued`). */
function tellIfFirst(est: WaitEstimator, q: FairQueue<Call>, c: Call): void {
  if (!c.started) c.estimate = est.waitFor(q.positions().get(c)!, 0, { startedAhead: q.started, waiting: true });
}

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
    tellIfFirst(est, q, c);
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

/**
 * A burst from idle on `slots` concurrent calls of `callMs` each: `runs` runs arrive over the first
 * `burstMs`, each a first call, then two calls at once (Critic and Host), then one (Reporter). Returns
 * what the estimator told each first call that had to wait, and how long it waited.
 */
function burstFromIdle(o: { slots: number; callMs: number; runs: number; burstMs: number }) {
  let now = 0;
  const est = new WaitEstimator(() => 100, () => now);
  const q = new FairQueue<Call>();
  const ending: { at: number; call: Call }[] = [];
  const firsts: { estimate: number; waited: number }[] = [];
  let busy = 0;
  const enqueue = (c: Call) => {
    q.push(c);
    if (busy < o.slots) return;
    est.onBlocked();
    tellIfFirst(est, q, c);
  };
  const every = o.burstMs / o.runs;
  for (now = 0; now < 60 * o.callMs; now += 1) {
    for (let r = Math.ceil(now / every); r < o.runs && r * every < now + 1; r++) enqueue({ userId: `u${r}`, priority: 2, started: false, run: r, left: 3, enqueuedAt: now });
    for (const e of ending.filter((x) => x.at === now)) {
      busy -= 1;
      est.onCallEnded(o.callMs);
      const { call } = e;
      // The first call's end brings Critic and Host (left 3 → 2, 1); the Host's (left 1) the Reporter.
      if (call.left === 3) for (const left of [2, 1]) enqueue({ ...call, started: true, priority: 3, left, enqueuedAt: now });
      else if (call.left === 1) enqueue({ ...call, started: true, priority: 3, left: 0, enqueuedAt: now });
    }
    while (busy < o.slots && q.size > 0) {
      const c = q.shift()!;
      busy += 1;
      est.onAdmitted(q.size > 0, c.started, q.size > q.started, c.started ? undefined : 'run');
      if (!c.started && c.estimate !== undefined) firsts.push({ estimate: c.estimate, waited: now - c.enqueuedAt });
      ending.push({ at: now + o.callMs, call: c });
    }
  }
  return firsts;
}

it("tells the first calls queued after a burst from idle of the wave of later calls that the runs let in will make", () => {
  // 50 slots, calls of 3 s: 200 runs in the first 4 s. The first 50 are admitted at once; the rest
  // wait behind the Critic, Host and Reporter calls those 50 make 3 and 6 s later.
  const firsts = burstFromIdle({ slots: 50, callMs: 3_000, runs: 200, burstMs: 4_000 });
  expect(firsts.length).toBeGreaterThan(100);
  const ratios = firsts.map((f) => f.waited / f.estimate);
  // Counting only the share of admissions started runs took so far (none), they waited ~3× as long as told.
  expect(median(ratios)).toBeGreaterThan(0.8);
  expect(median(ratios)).toBeLessThan(1.25);
});

describe('the later calls that the runs begun here owe', () => {
  /**
   * 20 runs begun (first calls admitted back to back, 100 ms apart, the last leaving none waiting):
   * 60 later calls owed; then a call that lasted `callMs` ends.
   */
  function afterTwentyRuns(callMs?: number) {
    let now = 0;
    const est = new WaitEstimator(() => 100, () => now);
    for (let i = 0; i < 20; i++) {
      now += 100;
      est.onAdmitted(i < 19, false, true, 'run');
    }
    if (callMs !== undefined) est.onCallEnded(callMs);
    return { est, advance: (ms: number) => (now += ms) };
  }

  it('come ahead of a first call: all of them when it would wait longer than a call lasts', () => {
    const { est } = afterTwentyRuns(1_000);
    // Behind 2 first calls: 60 owed + 3 admissions at 100 ms is longer than a call (1 s).
    expect(est.waitFor(3, 0, { startedAhead: 0, waiting: true })).toBeCloseTo((60 + 3) * 100);
    // Five of them waiting already are among the 60.
    expect(est.waitFor(8, 0, { startedAhead: 5, waiting: true })).toBeCloseTo((60 + 3) * 100);
  });

  it('only those that come before it is served when calls last long: they come over a call\'s length', () => {
    const { est } = afterTwentyRuns(10_000);
    // 60 calls over 10 s take six admissions in ten: 3 first-call admissions take 300 / 0.4 ms.
    expect(est.waitFor(3, 0, { startedAhead: 0, waiting: true })).toBeCloseTo(300 / 0.4);
  });

  it('before any call has ended, are taken to come at once', () => {
    const { est } = afterTwentyRuns();
    expect(est.waitFor(3, 0, { startedAhead: 0, waiting: true })).toBeCloseTo((60 + 3) * 100);
  });

  it('do not delay a first call with nothing ahead of it that has not been refused a slot: it may be admitted at once', () => {
    for (const callMs of [undefined, 1_000, 10_000]) expect(afterTwentyRuns(callMs).est.waitFor(1, 0, { startedAhead: 0 })).toBe(0);
  });

  it('are paid by the calls of started runs admitted, are not owed by direct calls, and are forgotten in time', () => {
    const { est, advance } = afterTwentyRuns(1_000);
    const byShare = est.waitFor(3, 0, { startedAhead: 0, waiting: true });
    for (let i = 0; i < 40; i++) est.onAdmitted(false, true);
    for (let i = 0; i < 10; i++) est.onAdmitted(false, false, true); // direct calls
    expect(est.waitFor(3, 0, { startedAhead: 0, waiting: true })).toBeCloseTo((20 + 3) * 100);
    advance(100_000); // ten calls' lengths
    expect(est.waitFor(3, 0, { startedAhead: 0, waiting: true })).toBeLessThan(byShare);
  });

  it('are owed by a revision too: the Critic\'s and the Host\'s calls again; its Planner call pays nothing', () => {
    const { est } = afterTwentyRuns(1_000);
    est.onAdmitted(false, true, true, owedBy('planner', true));
    expect(est.waitFor(3, 0, { startedAhead: 0, waiting: true })).toBeCloseTo((62 + 3) * 100);
    est.onAdmitted(false, true, true, owedBy('critic', true)); // a call of a started run pays
    expect(est.waitFor(3, 0, { startedAhead: 0, waiting: true })).toBeCloseTo((61 + 3) * 100);
  });

  it('are told by the call: a run begun by its first call, a revision by a started run\'s Planner, none by a direct call', () => {
    expect(owedBy('planner', false)).toBe('run');
    expect(owedBy('critic', false)).toBe('run'); // a run whose Planner was answered from the cache
    expect(owedBy('planner', true)).toBe('revision');
    for (const role of ['critic', 'host', 'reporter'] as const) expect(owedBy(role, true)).toBeUndefined();
    expect(owedBy('direct', false)).toBeUndefined();
  });

  it('do not lengthen the estimates of started runs\' calls', () => {
    const { est } = afterTwentyRuns(1_000);
    expect(est.waitFor(3, 0, { waiting: true })).toBe(300);
  });
});
