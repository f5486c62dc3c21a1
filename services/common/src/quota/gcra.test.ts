import { burstOf, pace, settle, type PacingRate } from './gcra';
import { LocalAdmission, shareOf, NOTHING, TokenWindow } from './local';

const rate: PacingRate = { limit: 100, windowMs: 60_000, burstFraction: 0.02 };

/** Admits greedily, one attempt per ms, and returns the admission times. */
function simulate(r: PacingRate, durationMs: number, cost = 1): number[] {
  let tat = 0;
  const admitted: number[] = [];
  for (let now = 1; now <= durationMs; now += 1) {
    for (let d = pace(tat, now, cost, r); d.ok; d = pace(tat, now, cost, r)) {
      if (r.limit <= 0 && admitted.at(-1) === now) break;
      tat = d.tat;
      admitted.push(now);
    }
  }
  return admitted;
}

describe('GCRA pacing', () => {
  it('admits the burst at once, then paces smoothly', () => {
    const times = simulate(rate, 5_000);
    expect(burstOf(rate)).toBe(2);
    expect(times.filter((t) => t <= 1)).toHaveLength(2);
    expect(times.length).toBeLessThan(2 + 5_000 / (60_000 / 98) + 1);
  });

  it('never admits more than the limit in any sliding window', () => {
    const times = simulate(rate, 180_000);
    let worst = 0;
    for (let i = 0, j = 0; i < times.length; i += 1) {
      while ((times[j] ?? 0) <= (times[i] ?? 0) - 60_000) j += 1;
      worst = Math.max(worst, i - j + 1);
    }
    expect(worst).toBeLessThanOrEqual(100);
    expect(times.length).toBeGreaterThanOrEqual(0.97 * 300);
  });

  it('reports how long to wait', () => {
    let tat = 0;
    for (let i = 0; i < 2; i += 1) {
      const d = pace(tat, 1000, 1, rate);
      if (!d.ok) throw new Error('burst refused');
      tat = d.tat;
    }
    const refused = pace(tat, 1000, 1, rate);
    expect(refused.ok).toBe(false);
    if (!refused.ok) expect(refused.retryAfterMs).toBeCloseTo(60_000 / 98, 0);
  });

  it('admits a request larger than the burst only on a full bucket', () => {
    const tokens: PacingRate = { limit: 10_000, windowMs: 60_000, burstFraction: 0.02 };
    const first = pace(0, 1000, 1_000, tokens);
    expect(first.ok).toBe(true);
    if (first.ok) expect(pace(first.tat, 1000, 1_000, tokens).ok).toBe(false);
  });

  it('refunds give units back but never beyond a full bucket, and overuse charges more', () => {
    const d = pace(0, 1000, 100, { ...rate, limit: 10_000 });
    if (!d.ok) throw new Error('refused');
    const r = { ...rate, limit: 10_000 };
    expect(settle(d.tat, 1000, -100, r)).toBe(1000);
    expect(settle(d.tat, 1000, -1_000, r)).toBe(1000);
    expect(settle(d.tat, 1000, 50, r)).toBeGreaterThan(d.tat);
  });

  it('treats a limit of 0 as unlimited', () => {
    expect(simulate({ ...rate, limit: 0 }, 100)).toHaveLength(100);
  });
});

describe('GCRA pacing against a provider that counts on its own clock', () => {
  // The provider: exactly L per sliding window W, (t − W, t] on the arrival clock, as the emulator
  // counts. Returns how many calls it would refuse.
  function refusedByProvider(arrivals: number[], limit: number, windowMs: number): number {
    const sorted = [...arrivals].sort((a, b) => a - b);
    const inWindow: number[] = [];
    let refused = 0;
    for (const t of sorted) {
      while ((inWindow[0] ?? Infinity) <= t - windowMs) inWindow.shift();
      if (inWindow.length >= limit) refused += 1;
      else inWindow.push(t);
    }
    return refused;
  }

  // The bench's provider: 120 per 6 s (a minute at scale 0.1).
  const W = 6_000;
  const L = 120;
  /**
   * Admitted back to back, L + 1 calls span L pacing intervals of the counted window W + margin:
   * W + margin + two intervals (one when the first was admitted late and the burst absorbed it).
   */
  const tolerance = (marginMs: number) => (L * (W + marginMs)) / (L - 2) - W;
  /**
   * Admissions as early as pacing allows; every other run of L calls reaches the provider
   * `spreadMs` later than the rest (a stalled replica, a slow connection): where a late run meets
   * the next, L + 1 calls arrive closer together than they were admitted.
   */
  function arrivals(marginMs: number, spreadMs: number): number[] {
    return simulate({ limit: L, windowMs: W + marginMs, burstFraction: 0.02 }, 5 * W).map((t, i) => t + (Math.floor(i / L) % 2 === 0 ? spreadMs : 0));
  }

  it('without a margin, a spread of delays longer than two pacing intervals (102 ms) makes the provider refuse a call', () => {
    expect(refusedByProvider(arrivals(0, 0), L, W)).toBe(0);
    expect(refusedByProvider(arrivals(0, tolerance(0) - 5), L, W)).toBe(0);
    expect(refusedByProvider(arrivals(0, tolerance(0) + 5), L, W)).toBeGreaterThan(0);
    expect(refusedByProvider(arrivals(0, 150), L, W)).toBeGreaterThan(0);
  });

  it('a window counted a margin longer tolerates a spread up to the margin plus two intervals, at the cost of margin ÷ (W + margin)', () => {
    const margin = 75; // the broker's default (LLM_QUOTA_WINDOW_MARGIN_MS)
    expect(refusedByProvider(arrivals(margin, 150), L, W)).toBe(0);
    expect(refusedByProvider(arrivals(margin, tolerance(margin) - 5), L, W)).toBe(0);
    expect(refusedByProvider(arrivals(margin, tolerance(margin) + 5), L, W)).toBeGreaterThan(0);
    // ≥ 97 % of L per W (the bench's goal) with a 75 ms margin at a 6 s window: 118 per 6.075 s.
    const admitted = simulate({ limit: L, windowMs: W + margin, burstFraction: 0.02 }, 10 * W).length;
    expect(admitted).toBeGreaterThanOrEqual(0.97 * 10 * L);
    expect(admitted).toBeLessThan(0.98 * 10 * L);
  });
});

describe('local fallback', () => {
  it('divides the quota between live replicas and never rounds up', () => {
    expect(shareOf(50, 3)).toBe(16);
    expect(shareOf(0, 3)).toBe(0);
    expect(shareOf(2, 3)).toBe(NOTHING);
  });

  it('enforces concurrency, pause and refunds in process', () => {
    let now = 1_000;
    const local = new LocalAdmission({ maxConcurrent: 2, requestsPerMinute: 0, tokensPerMinute: 0 }, 60_000, 0.02, () => now);
    expect(local.tryAcquire('a', 1).ok).toBe(true);
    expect(local.tryAcquire('b', 1).ok).toBe(true);
    expect(local.tryAcquire('c', 1)).toMatchObject({ ok: false, reason: 'concurrency' });
    local.release('a', 0);
    expect(local.tryAcquire('c', 1).ok).toBe(true);
    local.pause(500);
    local.release('b', 0);
    expect(local.tryAcquire('d', 1)).toMatchObject({ ok: false, reason: 'paused' });
    now += 501;
    expect(local.tryAcquire('d', 1).ok).toBe(true);
  });

  it('counts a lease\'s extra requests (retries) in the RPM pace, refused while paused, and gives one back', () => {
    let now = 1_000;
    // 2 per minute with a burst of 1: one admission fills the bucket for 60 s.
    const local = new LocalAdmission({ maxConcurrent: 0, requestsPerMinute: 2, tokensPerMinute: 0 }, 60_000, 0.02, () => now);
    expect(local.tryAcquire('a', 1).ok).toBe(true);
    expect(local.chargeRequest()).toMatchObject({ ok: false, reason: 'rpm' });
    now += 60_000;
    expect(local.chargeRequest()).toEqual({ ok: true });
    expect(local.tryAcquire('b', 1)).toMatchObject({ ok: false, reason: 'rpm' });
    local.refundRequest();
    expect(local.tryAcquire('b', 1).ok).toBe(true);
    local.refundRequest();
    local.refundRequest(); // never beyond a full bucket
    expect(local.tryAcquire('c', 1).ok).toBe(true);
    expect(local.tryAcquire('d', 1).ok).toBe(false);
    now += 120_000;
    local.pause(500);
    expect(local.chargeRequest()).toMatchObject({ ok: false, reason: 'paused', retryAfterMs: 500 });
  });

  it('counts TPM exactly over a sliding window too: calls larger than the burst never put more than the limit into one', () => {
    let now = 1_000;
    // 5,000-token calls against 48,000 TPM (a burst of 960): the pacing alone admits one every
    // 6.38 s, ten of them (50,000 tokens) within 60 s.
    const local = new LocalAdmission({ maxConcurrent: 0, requestsPerMinute: 0, tokensPerMinute: 48_000 }, 60_000, 0.02, () => now);
    const at: number[] = [];
    for (let n = 0; now < 301_000; n += 1) {
      const d = local.tryAcquire(`c${n}`, 5_000);
      if (d.ok) at.push(now);
      else now += d.retryAfterMs;
    }
    const mostInAWindow = Math.max(...at.map((t0) => at.filter((t) => t >= t0 && t < t0 + 60_000).length));
    expect(mostInAWindow * 5_000).toBeLessThanOrEqual(48_000);
    expect(mostInAWindow).toBe(9); // as many as fit
  });

  it('with tokenPacing off, counts TPM over the window alone: reservations larger than the burst go together up to the limit', () => {
    const now = 1_000;
    const unpaced = new LocalAdmission({ maxConcurrent: 0, requestsPerMinute: 0, tokensPerMinute: 48_000 }, 60_000, 0.02, () => now, false);
    const admitted = Array.from({ length: 10 }, (_, n) => unpaced.tryAcquire(`c${n}`, 5_000).ok).filter(Boolean).length;
    expect(admitted).toBe(9); // 45,000 of 48,000 at once
    unpaced.release('c0', -4_000); // billed 1,000 of 5,000: 4,000 free again
    expect(unpaced.tryAcquire('again', 7_000).ok).toBe(true);
    // Paced, one such call at a time (a burst of 960 tokens).
    const paced = new LocalAdmission({ maxConcurrent: 0, requestsPerMinute: 0, tokensPerMinute: 48_000 }, 60_000, 0.02, () => now);
    expect(Array.from({ length: 10 }, (_, n) => paced.tryAcquire(`c${n}`, 5_000).ok).filter(Boolean).length).toBe(1);
  });

  it("settles an admission's tokens in the window once, and lets them go when it leaves", () => {
    const w = new TokenWindow(60_000);
    w.add('a', 6_000, 0);
    expect(w.waitFor(4_500, 10_000, 1_000)).toBe(59_000); // until 'a' leaves
    w.settle('a', -5_000, 1_000); // billed 1,000 of the 6,000 reserved
    w.settle('a', -5_000, 1_000); // a release tried again
    expect(w.waitFor(9_000, 10_000, 1_000)).toBe(0);
    expect(w.waitFor(9_001, 10_000, 1_000)).toBe(59_000);
    expect(w.waitFor(10_000, 10_000, 60_000)).toBe(0);
  });

  it('counts a charge beyond the reservation from when it was settled, not from the admission', () => {
    const w = new TokenWindow(60_000);
    w.add('a', 1_000, 0);
    w.settle('a', 8_000, 50_000); // the provider billed 9,000: a retried attempt, charged after the admission
    expect(w.waitFor(2_000, 10_000, 50_000)).toBe(10_000); // until 'a' leaves (9,000 + 2,000 > 10,000)
    // 'a' has left; the 8,000 charged at 50 s stay until 110 s (dated at the admission, they left with it).
    expect(w.waitFor(2_000, 10_000, 60_000)).toBe(0);
    expect(w.waitFor(2_001, 10_000, 60_000)).toBe(50_000);
    expect(w.held(60_000).tokens).toBe(8_000);
  });

  it('admits nothing when the share rounds down to nothing', () => {
    const local = new LocalAdmission({ maxConcurrent: NOTHING, requestsPerMinute: 0, tokensPerMinute: 0 }, 60_000, 0.02);
    expect(local.tryAcquire('a', 1).ok).toBe(false);
  });
});

describe('GCRA pacing at epoch-sized clocks', () => {
  it('admits a limit whose interval is not a round number (12 per 3 s) at today\'s Date.now()', () => {
    const r: PacingRate = { limit: 12, windowMs: 3_000, burstFraction: 0.02 };
    let tat = 0;
    let admitted = 0;
    // Without a tolerance, (now + 272.72…) − now − 272.72… is a few 1e-5 above zero: refused forever.
    for (let now = 1_796_054_415_897.123; now < 1_796_054_415_897.123 + 6_000; now += 1.5) {
      const d = pace(tat, now, 1, r);
      if (d.ok) {
        tat = d.tat;
        admitted += 1;
      }
    }
    expect(admitted).toBeGreaterThanOrEqual(21);
    expect(admitted).toBeLessThanOrEqual(24);
  });
});
