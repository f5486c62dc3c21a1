// What the benchmarks compute alike: one percentile definition (they used to differ: some took
// floor(p·n), others the nearest rank), and the orchestrator's per-run timing profile.
import fs from 'node:fs';

/** Nearest-rank percentile: the smallest sample with at least p % of the samples at or below it; 0 without samples. */
export function percentile(xs: readonly number[], p: number): number {
  if (xs.length === 0) return 0;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}

/**
 * The median, per key matching `keep`, of the orchestrator's `run timings` log lines, over its
 * one-round runs only (so that the moments line up), sorted by time. A moment gives its key (ms
 * since StartRun); a wait ([start, duration]) gives `<key>.end` and `<key>.ms`.
 */
export function runTimingMedians(logFiles: string | string[], keep: RegExp): Record<string, number> {
  const byKey = new Map<string, number[]>();
  const lines = [logFiles].flat().flatMap((f) => fs.readFileSync(f, 'utf8').split('\n'));
  for (const line of lines) {
    if (!line.includes('"run timings"')) continue;
    const t = (JSON.parse(line) as { timings?: Record<string, number | [number, number]> }).timings ?? {};
    if (!('reporter.r1.done' in t)) continue;
    for (const [k, v] of Object.entries(t)) {
      const values: [string, number][] = Array.isArray(v) ? [[`${k}.end`, v[0] + v[1]], [`${k}.ms`, v[1]]] : [[k, v]];
      for (const [name, x] of values) if (keep.test(name)) byKey.set(name, [...(byKey.get(name) ?? []), x]);
    }
  }
  return Object.fromEntries([...byKey].map(([k, xs]) => [k, percentile(xs, 50)] as const).sort((a, b) => a[1] - b[1]));
}

/**
 * The body of a GET for a benchmark's final counts, tried up to `tries` times on a new connection:
 * a loaded machine may close a pooled socket under it, and the report must not be lost to that.
 */
export async function fetchText(url: string, tries = 3): Promise<string> {
  for (let i = 1; ; i++) {
    try {
      const res = await fetch(url, { headers: { connection: 'close' } });
      if (!res.ok) throw new Error(`${url}: HTTP ${res.status}`);
      return await res.text();
    } catch (err) {
      if (i >= tries) throw err;
      await new Promise((r) => setTimeout(r, 500 * i));
    }
  }
}

/**
 * Max-min fair shares of `capacity` among `demands` (water-filling): each gets min(demand, level),
 * the level chosen so that the shares add up to the capacity (or every demand is met).
 */
export function maxMinShares(demands: readonly number[], capacity: number): number[] {
  const order = demands.map((d, i) => [d, i] as const).sort((a, b) => a[0] - b[0]);
  const shares = demands.map(() => 0);
  let left = Math.max(0, capacity);
  let n = demands.length;
  for (const [d, i] of order) {
    const s = Math.min(d, left / n);
    shares[i] = s;
    left -= s;
    n -= 1;
  }
  return shares;
}

/** How close `got` comes to the max-min fair shares of what was asked: min over users of got ÷ fair share (1 = max-min fair). */
export function maxMinFairness(asked: readonly number[], got: readonly number[]): number {
  const fair = maxMinShares(asked, got.reduce((a, b) => a + b, 0));
  let worst = 1;
  fair.forEach((f, i) => {
    if (f > 0) worst = Math.min(worst, (got[i] ?? 0) / f);
  });
  return worst;
}

/**
 * A percentile of samples some of which are censored (only a lower bound is known: a call still
 * waiting when the benchmark ended). `atLeast`: a censored sample is at or below the figure, so the
 * true percentile may be higher (the figure is then a lower bound).
 */
export function censoredPercentile(samples: readonly { value: number; censored: boolean }[], p: number): { value: number; atLeast: boolean } {
  const value = percentile(samples.map((s) => s.value), p);
  return { value, atLeast: samples.some((s) => s.censored && s.value <= value) };
}

/**
 * Least-squares line through (x, y) points: `slope` is y per unit of x (e.g. heap bytes per active
 * run), `r2` how much of y's variation x explains. Undefined with fewer than 3 points or no spread in x.
 */
export function linearFit(points: readonly { x: number; y: number }[]): { slope: number; intercept: number; r2: number } | undefined {
  const n = points.length;
  if (n < 3) return undefined;
  const mx = points.reduce((s, p) => s + p.x, 0) / n;
  const my = points.reduce((s, p) => s + p.y, 0) / n;
  const sxx = points.reduce((s, p) => s + (p.x - mx) ** 2, 0);
  if (sxx === 0) return undefined;
  const sxy = points.reduce((s, p) => s + (p.x - mx) * (p.y - my), 0);
  const syy = points.reduce((s, p) => s + (p.y - my) ** 2, 0);
  const slope = sxy / sxx;
  return { slope, intercept: my - slope * mx, r2: syy === 0 ? 1 : (sxy * sxy) / (sxx * syy) };
}

/** One gauge's value from a Prometheus text page (summed over label sets). */
export function gauge(text: string, name: string): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (line.startsWith(`${name} `) || line.startsWith(`${name}{`)) sum += Number(line.slice(line.lastIndexOf(' ') + 1)) || 0;
  }
  return sum;
}

/**
 * CPU seconds (user + system) each process and all its descendants have used so far, read from
 * /proc (Linux): PostgreSQL's backends and a launcher's children count for their root.
 */
export function treeCpuSeconds(rootPids: readonly number[]): Map<number, number> {
  const ticks = 100; // USER_HZ on Linux
  const parent = new Map<number, number>();
  const own = new Map<number, number>();
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let stat: string;
    try {
      stat = fs.readFileSync(`/proc/${entry}/stat`, 'utf8');
    } catch {
      continue; // it ended meanwhile
    }
    // Fields after the command (which may hold spaces) in parentheses: state ppid … utime(14) stime(15).
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    parent.set(Number(entry), Number(f[1]));
    own.set(Number(entry), (Number(f[11]) + Number(f[12])) / ticks);
  }
  const rootOf = (pid: number): number | undefined => {
    for (let p: number | undefined = pid; p !== undefined && p > 1; p = parent.get(p)) if (rootPids.includes(p)) return p;
    return undefined;
  };
  const out = new Map<number, number>(rootPids.map((p) => [p, 0]));
  for (const [pid, secs] of own) {
    const root = rootOf(pid);
    if (root !== undefined) out.set(root, out.get(root)! + secs);
  }
  return out;
}

/**
 * The machine's CPU seconds so far, every CPU summed, from /proc/stat (Linux): `busy` (user, nice,
 * system, irq, softirq, steal) and `total` (idle and iowait besides).
 */
export function machineCpuSeconds(): { busy: number; total: number } {
  const ticks = 100; // USER_HZ on Linux
  const f = fs.readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!.trim().split(/\s+/).slice(1, 9).map(Number);
  const [user, nice, system, idle, iowait, irq, softirq, steal] = f as [number, number, number, number, number, number, number, number];
  const busy = user + nice + system + irq + softirq + steal;
  return { busy: busy / ticks, total: (busy + idle + iowait) / ticks };
}

/** One sample of the upstream's own counters (the emulator's), at `tS` seconds. */
export interface UpstreamSample { tS: number; inFlight: number; requests: number }

/**
 * Goodput in steady state, between `fromS` and `toS` (after the ramp-up, before the drain). When the
 * demand is below what the upstream's binding limit allows (at `callsPerRun`), it is the share of
 * the runs that arrived in the window that completed (completions in the window would undercount:
 * its last arrivals complete after it). Otherwise it is the upstream's use of its binding
 * limit: calls started per minute against the RPM, or the mean calls in flight against the
 * concurrency limit, whichever binds (the concurrency binds when the calls it admits a minute — its
 * size ÷ the mean call time, by Little's law — are fewer than the RPM). Completions alone would
 * flatter a saturated upstream: runs admitted during the ramp-up, while the admission queue
 * filled, complete inside the window with calls made before it.
 */
export function steadyGoodput(o: {
  arrivals: readonly { atS: number; completed: boolean }[]; fromS: number; toS: number; samples: readonly UpstreamSample[];
  rpm: number; maxConcurrent: number; callsPerRun: number; offeredPerMinute: number;
}): { fromS: number; toS: number; completedPerMinute: number; meanCallS: number; binding: 'rpm' | 'concurrency' | 'demand'; allowedPerMinute: number; pct: number } | undefined {
  const inWindow = o.samples.filter((s) => s.tS >= o.fromS && s.tS <= o.toS);
  if (o.toS <= o.fromS || inWindow.length < 2 || o.callsPerRun <= 0) return undefined;
  const spanS = inWindow.at(-1)!.tS - inWindow[0]!.tS;
  const callsPerMinute = (60 * (inWindow.at(-1)!.requests - inWindow[0]!.requests)) / spanS;
  const meanInFlight = inWindow.reduce((sum, s) => sum + s.inFlight, 0) / inWindow.length;
  if (!(callsPerMinute > 0)) return undefined;
  const meanCallS = (60 * meanInFlight) / callsPerMinute;
  const byConcurrency = o.maxConcurrent > 0 ? (60 * o.maxConcurrent) / meanCallS : Infinity;
  const byRpm = o.rpm > 0 ? o.rpm : Infinity;
  const allowedPerMinute = Math.min(byRpm, byConcurrency) / o.callsPerRun;
  const arrived = o.arrivals.filter((a) => a.atS >= o.fromS && a.atS <= o.toS);
  const completed = arrived.filter((a) => a.completed).length;
  const completedPerMinute = (60 * completed) / (o.toS - o.fromS);
  const base = { fromS: o.fromS, toS: o.toS, completedPerMinute, meanCallS, allowedPerMinute };
  if (o.offeredPerMinute < allowedPerMinute) return { ...base, binding: 'demand', pct: (100 * completed) / Math.max(1, arrived.length) };
  return byRpm <= byConcurrency
    ? { ...base, binding: 'rpm', pct: (100 * callsPerMinute) / byRpm }
    : { ...base, binding: 'concurrency', pct: (100 * meanInFlight) / o.maxConcurrent };
}

/** A seeded uniform generator on [0, 1) (mulberry32): the same draws on every run. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * A percentile bootstrap interval: `stat` computed `n` times over samples drawn again with
 * replacement from each group (as many as it has), and the `lo` and `hi` percentiles of its values.
 * How far a figure from these samples could be from another run's: a p99 of 400 calls is the
 * 4th slowest, and moved by a factor of two between runs of one build.
 */
export function bootstrapInterval(
  groups: readonly (readonly number[])[],
  stat: (resampled: number[][]) => number,
  o: { n?: number; lo?: number; hi?: number; seed?: number } = {},
): [number, number] {
  const random = seededRandom(o.seed ?? 1);
  const values: number[] = [];
  for (let i = 0; i < (o.n ?? 1000); i += 1) {
    values.push(stat(groups.map((g) => Array.from({ length: g.length }, () => g[Math.floor(random() * g.length)]!))));
  }
  const finite = values.filter(Number.isFinite);
  return [percentile(finite, o.lo ?? 5), percentile(finite, o.hi ?? 95)];
}
