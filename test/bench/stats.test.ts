import os from 'node:os';
import { bootstrapInterval, censoredPercentile, linearFit, machineCpuSeconds, maxMinFairness, maxMinShares, percentile, seededRandom, steadyGoodput, treeCpuSeconds } from './stats';

describe('max-min fair shares', () => {
  it('meets small demands in full and splits the rest equally', () => {
    expect(maxMinShares([2, 10, 10], 12)).toEqual([2, 5, 5]);
    expect(maxMinShares([1, 1, 1], 12)).toEqual([1, 1, 1]);
    expect(maxMinShares([8, 8], 6)).toEqual([3, 3]);
  });

  it('fairness is the worst user\'s share of its fair share', () => {
    expect(maxMinFairness([2, 10, 10], [2, 5, 5])).toBe(1);
    expect(maxMinFairness([2, 10, 10], [1, 6, 5])).toBe(0.5); // the light user got half its share
    expect(maxMinFairness([10, 10], [4, 6])).toBe(0.8);
  });
});

describe('percentiles with censored samples', () => {
  it('is exact when every censored sample lies above it, a lower bound otherwise', () => {
    const s = (value: number, censored = false) => ({ value, censored });
    const samples = [s(1), s(2), s(3), s(4), s(50, true)];
    expect(censoredPercentile(samples, 50)).toEqual({ value: 3, atLeast: false });
    expect(censoredPercentile(samples, 99)).toEqual({ value: 50, atLeast: true });
    expect(percentile([3, 1, 2], 50)).toBe(2);
  });
});

describe('linear fit', () => {
  it('finds bytes per run through noisy samples, and says how well the line fits', () => {
    const pts = [0, 10, 20, 30, 40].map((x, i) => ({ x, y: 1_000_000 + 50_000 * x + (i % 2 ? 20_000 : -20_000) }));
    const f = linearFit(pts)!;
    expect(f.slope).toBeCloseTo(50_000, -3);
    expect(f.intercept).toBeGreaterThan(900_000);
    expect(f.r2).toBeGreaterThan(0.99);
    expect(linearFit([{ x: 1, y: 1 }, { x: 2, y: 2 }])).toBeUndefined();
    expect(linearFit([{ x: 5, y: 1 }, { x: 5, y: 2 }, { x: 5, y: 3 }])).toBeUndefined();
  });
});

describe('treeCpuSeconds', () => {
  test("a process's CPU time counts its grandchildren's, and another root's does not", async () => {
    const { spawn } = await import('node:child_process');
    // A shell whose child burns 0.6 s of CPU (CPU time, not wall time: the machine may be busy),
    // says so, then both sleep so that they are still there to read.
    const burn = 'const t = process.cpuUsage(); const used = () => { const u = process.cpuUsage(t); return u.user + u.system; }; '
      + "while (used() < 600000); console.log('burnt'); setTimeout(() => {}, 30000)";
    const busy = spawn('sh', ['-c', `node -e "${burn}"`], { stdio: ['ignore', 'pipe', 'ignore'], detached: true });
    const idle = spawn('sleep', ['30'], { stdio: 'ignore' });
    try {
      await new Promise((r) => busy.stdout!.once('data', r));
      const cpu = treeCpuSeconds([busy.pid!, idle.pid!]);
      expect(cpu.get(busy.pid!)).toBeGreaterThanOrEqual(0.5);
      expect(cpu.get(idle.pid!)).toBeLessThan(0.1);
    } finally {
      process.kill(-busy.pid!, 'SIGKILL'); // the shell and its child
      idle.kill('SIGKILL');
    }
  }, 30_000);
});

describe('machineCpuSeconds', () => {
  test("the machine's busy time grows by at least what this process burns, and its total by the wall time on every CPU", () => {
    const before = machineCpuSeconds();
    const wallStart = performance.now();
    const t = process.cpuUsage();
    while (process.cpuUsage(t).user + process.cpuUsage(t).system < 300_000); // 0.3 s of CPU
    const after = machineCpuSeconds();
    const wall = (performance.now() - wallStart) / 1000;
    expect(after.busy - before.busy).toBeGreaterThanOrEqual(0.25); // USER_HZ ticks: 10 ms granularity
    expect(after.busy).toBeLessThanOrEqual(after.total);
    // Every CPU counts its wall time, busy or idle (±2 ticks a CPU).
    const cpus = os.cpus().length;
    expect(after.total - before.total).toBeGreaterThan(wall * cpus - 0.02 * cpus - 0.05);
  });
});

describe('steadyGoodput', () => {
  // 9 calls in flight for the whole minute, 90 calls started per minute: calls last 6 s.
  const samples = Array.from({ length: 61 }, (_, i) => ({ tS: 60 + i, inFlight: 9, requests: 100 + (90 * i) / 60 }));
  test('a saturated upstream: its use of the binding limit — the concurrency when calls are long, the RPM when they are short', () => {
    // Completions do not count here: 40 of them (runs admitted during the ramp-up) would say 200 %.
    const g = steadyGoodput({ arrivals: Array.from({ length: 40 }, (_, i) => ({ atS: 61 + i, completed: true })), fromS: 60, toS: 120, samples, rpm: 500, maxConcurrent: 10, callsPerRun: 5, offeredPerMinute: 1000 })!;
    expect(g.meanCallS).toBeCloseTo(6);
    expect(g.binding).toBe('concurrency');
    expect(g.allowedPerMinute).toBeCloseTo(20); // 10 slots × 10 calls a minute each ÷ 5 calls per run
    expect(g.pct).toBeCloseTo(90); // 9 of 10 slots busy
    const rpmBound = steadyGoodput({ arrivals: [], fromS: 60, toS: 120, samples, rpm: 100, maxConcurrent: 10, callsPerRun: 5, offeredPerMinute: 1000 })!;
    expect(rpmBound.binding).toBe('rpm');
    expect(rpmBound.pct).toBeCloseTo(90); // 90 calls a minute of 100 RPM
  });
  test('a demand below what the quota allows: the share of the runs that arrived in the window that completed; nothing to say without a window', () => {
    const arrivals = [{ atS: 50, completed: false }, { atS: 70, completed: true }, { atS: 80, completed: false }, { atS: 90, completed: true }, { atS: 115, completed: true }, { atS: 130, completed: false }];
    const g = steadyGoodput({ arrivals, fromS: 60, toS: 120, samples, rpm: 500, maxConcurrent: 10, callsPerRun: 5, offeredPerMinute: 4 })!;
    expect(g.binding).toBe('demand');
    expect(g.pct).toBeCloseTo(75); // 3 of the 4 that arrived in the window completed (the one at 115 s after it: still counted)
    expect(steadyGoodput({ arrivals: [], fromS: 120, toS: 60, samples, rpm: 500, maxConcurrent: 10, callsPerRun: 5, offeredPerMinute: 4 })).toBeUndefined();
  });
});

describe('bootstrap intervals', () => {
  const uniform = (n: number, seed: number) => { const r = seededRandom(seed); return Array.from({ length: n }, () => r()); };

  test('a seeded generator: uniform on [0, 1), the same draws for the same seed, others for another', () => {
    const xs = uniform(10_000, 7);
    expect(Math.min(...xs)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...xs)).toBeLessThan(1);
    expect(xs.reduce((a, b) => a + b, 0) / xs.length).toBeCloseTo(0.5, 1);
    expect(xs.filter((x) => x < 0.1).length / xs.length).toBeCloseTo(0.1, 1);
    expect(uniform(5, 7)).toEqual(xs.slice(0, 5));
    expect(uniform(5, 8)).not.toEqual(xs.slice(0, 5));
  });

  test("constant samples: no spread; a p99 of 400 draws is wide, of 4,000 narrower, both around the distribution's", () => {
    expect(bootstrapInterval([[3, 3, 3, 3]], ([g]) => percentile(g!, 99))).toEqual([3, 3]);
    const of = (n: number) => bootstrapInterval([uniform(n, 3)], ([g]) => percentile(g!, 99), { n: 200 });
    const [lo400, hi400] = of(400);
    const [lo4k, hi4k] = of(4_000);
    for (const [lo, hi] of [[lo400, hi400], [lo4k, hi4k]]) {
      expect(lo).toBeLessThan(0.99);
      expect(hi).toBeGreaterThan(0.985);
    }
    expect(hi4k - lo4k).toBeLessThan(hi400 - lo400);
  });

  test('several groups are drawn from each on its own (a ratio of two medians), the same seed giving the same interval', () => {
    const a = uniform(500, 11).map((x) => 2 + x); // median ~2.5
    const b = uniform(500, 12).map((x) => 4 + x); // median ~4.5
    const ratio = ([x, y]: number[][]) => percentile(x!, 50) / percentile(y!, 50);
    const [lo, hi] = bootstrapInterval([a, b], ratio, { n: 300 });
    expect(lo).toBeLessThan(2.5 / 4.5);
    expect(hi).toBeGreaterThan(2.5 / 4.5);
    expect(hi - lo).toBeLessThan(0.05);
    expect(bootstrapInterval([a, b], ratio, { n: 300 })).toEqual([lo, hi]);
  });
});
