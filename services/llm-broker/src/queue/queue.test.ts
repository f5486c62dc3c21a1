import type { AcquireResult, Lease } from '@agent-mesh/common';
import { AdaptiveLimits, limitKindOf, MIN_BURST_FRACTION, refusedBurst } from './adaptive';
import { AdmissionQueue, QueueRefusal, type Admitter } from './admission';
import { FairQueue } from './fair-queue';

const e = (userId: string, priority = 2, started = false, tag = '') => ({ userId, priority, started, tag });

describe('FairQueue', () => {
  it('serves higher priority first, and a started run before a new one', () => {
    const q = new FairQueue<ReturnType<typeof e>>();
    q.push(e('u1', 2, false, 'planner'));
    q.push(e('u2', 4, false, 'host'));
    q.push(e('u3', 2, true, 'critic-started'));
    q.push(e('u4', 3, false, 'reporter'));
    expect(q.order().map((x) => x.tag)).toEqual(['critic-started', 'host', 'reporter', 'planner']);
    expect(q.shift()?.tag).toBe('critic-started');
    expect(q.size).toBe(3);
  });

  it('does not let a heavy user starve a light one', () => {
    const q = new FairQueue<ReturnType<typeof e>>();
    for (let i = 0; i < 100; i += 1) q.push(e('heavy'));
    q.push(e('light'));
    expect(q.positions().get(q.order().find((x) => x.userId === 'light')!)).toBe(2);
    const served = [q.shift()!, q.shift()!].map((x) => x.userId);
    expect(served).toEqual(['heavy', 'light']);
  });

  it('keeps positions consistent with the order in which calls are taken, after removals', () => {
    const q = new FairQueue<ReturnType<typeof e>>();
    const items = ['a', 'a', 'b', 'c', 'a', 'b'].map((u, i) => e(u, 2, false, String(i)));
    items.forEach((x) => q.push(x));
    q.remove(items[2]!);
    const predicted = q.order();
    const taken = [];
    for (let x = q.shift(); x; x = q.shift()) taken.push(x);
    expect(taken).toEqual(predicted);
    expect(taken.map((x) => x.tag)).toEqual(['0', '5', '3', '1', '4']);
  });

  it("gives each call's position without visiting the queue (positionOf) as positions() does, through pushes, shifts and removals", () => {
    const q = new FairQueue<ReturnType<typeof e>>();
    let seed = 7;
    const rand = (n: number) => ((seed = (seed * 1103515245 + 12345) % 2147483648) % n);
    const queued: ReturnType<typeof e>[] = [];
    let checked = 0;
    for (let step = 0; step < 600; step += 1) {
      const op = rand(10);
      if (op < 6 || queued.length === 0) {
        const x = e(`u${rand(8)}`, 1 + rand(3), rand(4) === 0, String(step));
        q.push(x);
        queued.push(x);
      } else if (op < 8) {
        const x = q.shift()!;
        queued.splice(queued.indexOf(x), 1);
      } else {
        const [x] = queued.splice(rand(queued.length), 1);
        expect(q.remove(x!)).toBe(true);
      }
      const positions = q.positions();
      for (const x of queued) expect(q.positionOf(x)).toBe(positions.get(x));
      checked += queued.length;
    }
    expect(checked).toBeGreaterThan(1000);
    expect(q.positionOf(e('nobody'))).toBeUndefined();
  });
});

function lease(tokens = 1): Lease & { released: boolean; refunded: boolean } {
  const l = {
    id: Math.random().toString(),
    holder: 'h',
    tokens,
    mode: 'shared' as const,
    released: false,
    refunded: false,
    renew: async () => true,
    keepAlive: () => () => undefined,
    release: async () => void (l.released = true),
    refund: async () => void (l.refunded = true),
    chargeRequest: async () => ({ ok: true as const }),
    refundRequest: async () => undefined,
  };
  return l;
}

/** Grants `slots` leases; more only after `free()`. */
function fakeAdmitter(slots: number): Admitter & { free(): void; held: number } {
  const a = {
    held: 0,
    free: () => void (a.held -= 1),
    tryAcquire: async (): Promise<AcquireResult> => {
      if (a.held >= slots) return { ok: false, reason: 'concurrency', retryAfterMs: 20 };
      a.held += 1;
      return { ok: true, lease: lease() };
    },
  };
  return a;
}

describe('AdmissionQueue', () => {
  it('admits at once when there is room: a started run\'s call hears nothing, a first call position 0 and its marginal wait', async () => {
    const q = new AdmissionQueue(fakeAdmitter(2), { maxLength: 10, nominalIntervalMs: () => 100 });
    const updates: number[][] = [];
    const first = await q.admit({ ...e('v'), holder: 'y', tokens: 1, signal: new AbortController().signal, onQueued: (...u) => updates.push(u) });
    expect(first.lease).toBeDefined();
    // Before any measure: the nominal 100 ms, four times (started runs take 3/4 of the admissions).
    expect(updates).toEqual([[0, 0, 400]]);
    const going = await q.admit({ ...e('u', 2, true), holder: 'x', tokens: 1, signal: new AbortController().signal, onQueued: (...u) => updates.push(u) });
    expect(going.lease).toBeDefined();
    expect(updates).toHaveLength(1);
  });

  it('queues in fair order, streams positions, and admits as slots free', async () => {
    const admitter = fakeAdmitter(1);
    const q = new AdmissionQueue(admitter, { maxLength: 10, nominalIntervalMs: () => 100, updateIntervalMs: 50 });
    const order: string[] = [];
    const updates: Record<string, number[]> = {};
    const admit = (user: string, priority = 2) =>
      q
        .admit({ ...e(user, priority), holder: user, tokens: 1, signal: new AbortController().signal, onQueued: (p) => (updates[user] ??= []).push(p) })
        .then(() => order.push(user));
    const all = [admit('first'), admit('heavy'), admit('heavy'), admit('light'), admit('host', 4)];
    await new Promise((r) => setTimeout(r, 60));
    expect(updates.host?.[0]).toBe(1);
    expect(updates.light?.[0]).toBeGreaterThan(1);
    for (let i = 0; i < 4; i += 1) {
      await new Promise((r) => setTimeout(r, 30));
      admitter.free();
      q.kick();
    }
    await Promise.all(all);
    expect(order).toEqual(['first', 'host', 'heavy', 'light', 'heavy']);
  });

  it('tells a run\'s first call the marginal wait of one more first call, and a started run\'s call none', async () => {
    // A clock that stands still: the head's remaining wait is the quota's 20 ms whenever each
    // estimate is made (with the real clock a later one could see 19).
    const q = new AdmissionQueue(fakeAdmitter(0), { maxLength: 10, nominalIntervalMs: () => 100, now: () => 1_000_000 });
    const c = new AbortController();
    const heard: Record<string, [number, number, number]> = {};
    const admit = (user: string, started: boolean) =>
      q.admit({ ...e(user, 2, started), holder: user, tokens: 1, signal: c.signal, onQueued: (...u) => (heard[user] ??= u) }).catch(() => undefined);
    const all = [admit('first', false), admit('going', true), admit('second', false)];
    await new Promise((r) => setTimeout(r, 30));
    c.abort(new Error('done'));
    await Promise.all(all);
    q.close();
    // The head waits out the quota's 20 ms; no admission seen yet: the nominal 100 ms interval,
    // four times for a first call (started runs take 3/4 of the admissions until measured).
    expect(heard.going).toEqual([1, 20, 0]);
    expect(heard.first).toEqual([2, 120, 400]);
    expect(heard.second).toEqual([3, 520, 400]);
  });

  it('divides the marginal wait by the brokers sharing the quota: a run begun lands here one time in so many', async () => {
    const q = new AdmissionQueue(fakeAdmitter(0), { maxLength: 10, nominalIntervalMs: () => 100, replicas: () => 4, now: () => 1_000_000 });
    const c = new AbortController();
    let heard: number[] = [];
    const p = q.admit({ ...e('u'), holder: 'u', tokens: 1, signal: c.signal, onQueued: (...u) => void (heard = u) }).catch(() => undefined);
    await new Promise((r) => setTimeout(r, 30));
    c.abort(new Error('done'));
    await p;
    q.close();
    expect(heard).toEqual([1, 20, 100]);
  });

  it('refuses a full queue and a call that cannot make its deadline', async () => {
    const q = new AdmissionQueue(fakeAdmitter(0), { maxLength: 2, nominalIntervalMs: () => 1_000 });
    const c = new AbortController();
    const p1 = q.admit({ ...e('a'), holder: 'a', tokens: 1, signal: c.signal });
    const p2 = q.admit({ ...e('b'), holder: 'b', tokens: 1, signal: c.signal, deadline: Date.now() + 60_000 });
    await expect(q.admit({ ...e('c'), holder: 'c', tokens: 1, signal: c.signal })).rejects.toMatchObject({ reason: 'queue_full' });
    c.abort(new Error('cancelled'));
    await expect(p1).rejects.toThrow('cancelled');
    await expect(p2).rejects.toThrow('cancelled');
    const blocker = new AbortController();
    const p3 = q.admit({ ...e('a'), holder: 'a', tokens: 1, signal: blocker.signal });
    const late = q.admit({ ...e('b'), holder: 'b', tokens: 1, signal: new AbortController().signal, deadline: Date.now() + 200 });
    await expect(late).rejects.toBeInstanceOf(QueueRefusal);
    await expect(late).rejects.toMatchObject({ reason: 'deadline_unreachable' });
    blocker.abort(new Error('done'));
    await expect(p3).rejects.toThrow('done');
    q.close();
  });

  it('refuses the head early when the quota says it fits only after its deadline', async () => {
    const admitter: Admitter = { tryAcquire: async () => ({ ok: false, reason: 'rpm', retryAfterMs: 30_000 }) };
    const q = new AdmissionQueue(admitter, { maxLength: 10, nominalIntervalMs: () => 100 });
    const started = Date.now();
    const late = q.admit({ ...e('a'), holder: 'a', tokens: 1, signal: new AbortController().signal, deadline: Date.now() + 2_000 });
    await expect(late).rejects.toMatchObject({ reason: 'deadline_unreachable' });
    expect(Date.now() - started).toBeLessThan(1_500);
    await expect(late).rejects.toHaveProperty('retryAfterMs', expect.any(Number));
    const err = (await late.catch((x: QueueRefusal) => x)) as QueueRefusal;
    expect(err.retryAfterMs).toBeGreaterThan(2_000);
    // Without a deadline it waits (and leaves when cancelled).
    const c = new AbortController();
    const patient = q.admit({ ...e('b'), holder: 'b', tokens: 1, signal: c.signal });
    await new Promise((r) => setTimeout(r, 50));
    c.abort(new Error('bye'));
    await expect(patient).rejects.toThrow('bye');
    q.close();
  });

  it.each([
    ['rpm', true],
    ['paused', true],
    ['tpm', false],
  ] as const)('after a refusal for %s, a call\'s end (kick) keeps the estimated wait: %s', async (reason, kept) => {
    const admitter: Admitter = { tryAcquire: async () => ({ ok: false, reason, retryAfterMs: 30_000 }) };
    const q = new AdmissionQueue(admitter, { maxLength: 10, nominalIntervalMs: () => 100 });
    // Refused at once as too late for its deadline, after the refusal set the queue's wait.
    const late = q.admit({ ...e('a'), holder: 'a', tokens: 1, signal: new AbortController().signal, deadline: Date.now() + 2_000 });
    await expect(late).rejects.toMatchObject({ reason: 'deadline_unreachable' });
    const blocked = q.estimateWaitMs(1);
    expect(blocked).toBeGreaterThan(2_000);
    // Another call's settlement lands: a slot and tokens come back, not a place in the RPM window or the end of a pause.
    q.kick();
    expect(q.estimateWaitMs(1) > 2_000).toBe(kept);
    q.close();
  });

  it('held back by the token limit, estimates a call\'s turn by the tokens waiting, not by the interval a large call\'s pace left', async () => {
    /** Twenty calls of 10 tokens, with 2 s to be admitted, behind one of 1,000 at 0.5 ms a token (a pace of 500 ms): how many are admitted. */
    const behindALargeCall = async (tokenIntervalMs?: () => number) => {
      let tat = 0;
      const admitter: Admitter = {
        tryAcquire: async (r) => {
          const now = Date.now();
          if (tat > now) return { ok: false, reason: 'tpm', retryAfterMs: tat - now };
          tat = now + r.tokens * 0.5;
          return { ok: true, lease: lease() };
        },
      };
      const q = new AdmissionQueue(admitter, { maxLength: 50, nominalIntervalMs: () => 1, maxPollMs: 20, ...(tokenIntervalMs ? { tokenIntervalMs } : {}) });
      const signal = new AbortController().signal;
      await q.admit({ ...e('big'), holder: 'big', tokens: 1_000, signal });
      const small = await Promise.allSettled(Array.from({ length: 20 }, (_, i) => q.admit({ ...e(`u${i}`), holder: `s${i}`, tokens: 10, signal, deadline: Date.now() + 2_000 })));
      q.close();
      return small.filter((r) => r.status === 'fulfilled').length;
    };
    expect(await behindALargeCall(() => 0.5)).toBe(20);
    // Measured per call, the first admission after the pace set the interval to ~500 ms a call.
    expect(await behindALargeCall()).toBeLessThan(20);
  });

  it('asks a queued call what it needs of the token limit again at each attempt (reforecast): admitted on the last answer, counted in the waiting tokens', async () => {
    const asked: number[] = [];
    let free = false;
    const admitter: Admitter = {
      tryAcquire: async (r) => {
        asked.push(r.tokens);
        return free ? { ok: true, lease: lease(r.tokens) } : { ok: false, reason: 'tpm', retryAfterMs: 10 };
      },
    };
    // At 1 ms a token, the next call's turn comes as fast as the tokens waiting allow (the measured interval is longer).
    const q = new AdmissionQueue(admitter, { maxLength: 5, nominalIntervalMs: () => 10_000, maxPollMs: 10, tokenIntervalMs: () => 1 });
    try {
      let forecast = 1_000;
      const admitted = q.admit({ ...e('u'), holder: 'u', tokens: 1_000, signal: new AbortController().signal, reforecast: () => forecast });
      admitted.catch(() => undefined); // awaited below
      await new Promise((r) => setTimeout(r, 30));
      expect(q.estimateWaitMs(2)).toBeGreaterThanOrEqual(1_000);
      // The prompt was cached meanwhile: the call asks for its uncached rest.
      forecast = 30;
      await new Promise((r) => setTimeout(r, 30));
      expect(q.estimateWaitMs(2)).toBeLessThan(100);
      free = true;
      await admitted;
      expect(asked[0]).toBe(1_000);
      expect(asked.at(-1)).toBe(30);
    } finally {
      q.close();
    }
  });

  it('counts the later calls that the runs it let begin owe, ahead of a new first call; direct calls owe none', async () => {
    /** A queue that admitted ten first calls, one every 100 ms, then saw one end after a second. */
    const afterTen = async (owes?: 'run') => {
      let now = 0;
      const admitter: Admitter = {
        tryAcquire: async () => {
          now += 100;
          return { ok: true, lease: lease() };
        },
      };
      const q = new AdmissionQueue(admitter, { maxLength: 20, nominalIntervalMs: () => 100, now: () => now });
      const signal = new AbortController().signal;
      await Promise.all(Array.from({ length: 10 }, (_, i) => q.admit({ ...e(`u${i}`), holder: `r${i}`, tokens: 1, signal, owes })));
      q.kick(1_000);
      const estimate = q.estimateWaitMs(1, false, true);
      q.close();
      return estimate;
    };
    // Behind the 30 owed calls at 100 ms each (longer than a call lasts: all of them come in time).
    expect(await afterTen('run')).toBeCloseTo(31 * 100);
    expect(await afterTen()).toBeLessThan(5 * 100);
  });

  it('does not take a concurrency refusal\'s lease expiry as the wait', async () => {
    const admitter: Admitter = { tryAcquire: async () => ({ ok: false, reason: 'concurrency', retryAfterMs: 15_000 }) };
    const q = new AdmissionQueue(admitter, { maxLength: 10, nominalIntervalMs: () => 100 });
    const c = new AbortController();
    const p = q.admit({ ...e('a'), holder: 'a', tokens: 1, signal: c.signal, deadline: Date.now() + 5_000 });
    await new Promise((r) => setTimeout(r, 100));
    expect(q.estimateWaitMs(1)).toBeLessThan(1_000);
    c.abort(new Error('bye'));
    await expect(p).rejects.toThrow('bye');
    q.close();
  });

  it('with an admitter that decides several at once, admits the waiting calls in fair order in one decision, and none past a refusal', async () => {
    let slots = 0;
    const decisions: string[][] = [];
    const admitter: Admitter = {
      tryAcquire: async () => { throw new Error('asked one by one'); },
      tryAcquireMany: async (reqs) => {
        decisions.push(reqs.map((r) => r.holder));
        const out: AcquireResult[] = [];
        for (const r of reqs) {
          if (slots <= 0) return [...out, { ok: false, reason: 'concurrency', retryAfterMs: 20 }];
          slots -= 1;
          out.push({ ok: true, lease: lease(r.tokens) });
        }
        return out;
      },
    };
    const q = new AdmissionQueue(admitter, { maxLength: 10, nominalIntervalMs: () => 100 });
    const order: string[] = [];
    const admit = (holder: string, user: string, priority = 2) =>
      q.admit({ ...e(user, priority), holder, tokens: 1, signal: new AbortController().signal }).then(() => order.push(holder));
    const all = [admit('h1', 'heavy'), admit('h2', 'heavy'), admit('h3', 'heavy'), admit('l1', 'light'), admit('host', 'host', 4)];
    await new Promise((r) => setTimeout(r, 30));
    expect(order).toEqual([]);
    slots = 3;
    q.kick();
    await new Promise((r) => setTimeout(r, 10));
    // The calls queued while the head was refused, all asked for at once in admission order.
    expect(decisions.at(-1)).toEqual(['host', 'h1', 'l1', 'h2', 'h3']);
    expect(order).toEqual(['host', 'h1', 'l1']);
    slots = 5;
    q.kick();
    await Promise.all(all);
    expect(decisions.at(-1)).toEqual(['h2', 'h3']);
    expect(order).toEqual(['host', 'h1', 'l1', 'h2', 'h3']);
    q.close();
  });

  it('gives back the lease of a call cancelled while several were being decided, and grants the others', async () => {
    const leases = [lease(), lease()];
    let decide: (() => void) | undefined;
    const asked: string[][] = [];
    const admitter: Admitter = {
      tryAcquire: async () => { throw new Error('asked one by one'); },
      tryAcquireMany: (reqs) => {
        asked.push(reqs.map((r) => r.holder));
        // The first decision refuses (so both calls wait); the second is held until decide().
        if (asked.length === 1) return Promise.resolve([{ ok: false, reason: 'concurrency', retryAfterMs: 10_000 }]);
        return new Promise((resolve) => (decide = () => resolve(reqs.map((_, i) => ({ ok: true, lease: leases[i]! })))));
      },
    };
    const q = new AdmissionQueue(admitter, { maxLength: 10, nominalIntervalMs: () => 100, maxPollMs: 10_000 });
    const c = new AbortController();
    const a = q.admit({ ...e('a'), holder: 'a', tokens: 1, signal: c.signal });
    const b = q.admit({ ...e('b'), holder: 'b', tokens: 1, signal: new AbortController().signal });
    await new Promise((r) => setTimeout(r, 10));
    q.kick();
    await new Promise((r) => setTimeout(r, 10));
    expect(asked).toEqual([['a'], ['a', 'b']]);
    c.abort(new Error('gone'));
    decide!();
    await expect(a).rejects.toThrow('gone');
    await expect(b).resolves.toMatchObject({ lease: leases[1] });
    await new Promise((r) => setTimeout(r, 10));
    expect(leases.map((l) => l.refunded)).toEqual([true, false]);
    q.close();
  });

  it('gives the lease back when the head is cancelled during the admission attempt', async () => {
    const l = lease();
    let release!: () => void;
    const admitter: Admitter = {
      tryAcquire: () => new Promise((resolve) => (release = () => resolve({ ok: true, lease: l }))),
    };
    const q = new AdmissionQueue(admitter, { maxLength: 2, nominalIntervalMs: () => 100 });
    const c = new AbortController();
    const p = q.admit({ ...e('a'), holder: 'a', tokens: 1, signal: c.signal });
    c.abort(new Error('gone'));
    release();
    await expect(p).rejects.toThrow('gone');
    await new Promise((r) => setTimeout(r, 10));
    expect(l.refunded).toBe(true);
  });
});

describe('AdaptiveLimits', () => {
  it('cuts on a 429, creeps back to the configured value, and respects the provider ceiling', () => {
    let now = 0;
    const a = new AdaptiveLimits({ maxConcurrent: 50, requestsPerMinute: 100, tokensPerMinute: 0 }, { holdMs: 1_000 }, () => now);
    expect(a.onRateLimited('requests')).toBe(true);
    expect(a.limits.requestsPerMinute).toBe(70);
    now += 500;
    expect(a.tick()).toBe(false); // holding after a cut
    now += 20_000;
    a.tick();
    expect(a.limits.requestsPerMinute).toBe(100);
    a.onHeaders({ limitRequests: 80, limitTokens: 5_000 });
    expect(a.limits).toEqual({ maxConcurrent: 50, requestsPerMinute: 80, tokensPerMinute: 5_000 });
    now += 10_000;
    a.tick();
    expect(a.limits.requestsPerMinute).toBe(80);
  });

  it('tells which limit a 429 was about', () => {
    expect(limitKindOf({ remainingRequests: 0, remainingTokens: 10 })).toBe('requests');
    expect(limitKindOf({}, 'Rate limit reached on tokens per min (TPM)')).toBe('tokens');
    expect(limitKindOf({}, 'Too many concurrent requests')).toBe('concurrency');
  });

  it('tells a refused burst (the minute had room for the call) from a full minute', () => {
    expect(refusedBurst('requests', { remainingRequests: 588 }, 100)).toBe(true);
    expect(refusedBurst('requests', { remainingRequests: 0 }, 100)).toBe(false);
    expect(refusedBurst('requests', {}, 100)).toBe(false); // no headers: nothing says the minute had room
    expect(refusedBurst('tokens', { remainingTokens: 5_000 }, 900)).toBe(true);
    expect(refusedBurst('tokens', { remainingTokens: 500 }, 900)).toBe(false);
    expect(refusedBurst('concurrency', { remainingRequests: 588, remainingTokens: 5_000 }, 900)).toBe(false);
  });

  it('halves the burst fraction on a refused burst, once per quarter hold, down to the minimum', () => {
    let now = 0;
    const a = new AdaptiveLimits({ maxConcurrent: 0, requestsPerMinute: 600, tokensPerMinute: 0 }, { holdMs: 1_000 }, () => now);
    expect(a.halveBurst(0.02)).toBe(0.01);
    expect(a.halveBurst(0.01)).toBeUndefined(); // the same burst's other refusals
    expect(a.limits.requestsPerMinute).toBe(600); // the limits are not cut
    let f = 0.01;
    for (let i = 0; i < 10; i += 1) {
      now += 250;
      f = a.halveBurst(f) ?? f;
    }
    expect(f).toBe(MIN_BURST_FRACTION);
    now += 250;
    expect(a.halveBurst(f)).toBeUndefined();
  });
});
