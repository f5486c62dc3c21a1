// The seed benchmark's report for people: one self-contained HTML page (inline SVG charts, no
// scripts, no network) and a PNG of it rendered by headless Chromium. Time runs along every chart
// in brief seconds; faults (the chaos scenario) are vertical markers on each.
import fs from 'node:fs';
import path from 'node:path';

export interface ReportSample {
  tBriefS: number;
  llmQueue: number;
  llmInFlight: number;
  inFlightRuns: number;
  /** The emulator's request count so far (quota use is its rate). */
  upstreamRequests?: number;
  /** Calls the emulator was serving at that moment (its own count). */
  upstreamInFlight?: number;
  /** Running replicas per service (`seed --autoscale`: as the HPAs decide). */
  replicas?: Record<string, number>;
}

export interface ReportArrival {
  /** When the message was due, brief-s since the load started. */
  tBriefS: number;
  outcome: string;
  /** Brief-s from due to the run's end (completed runs). */
  runS?: number;
}

export interface ReportFault {
  tBriefS: number;
  label: string;
}

export interface SeedReport {
  title: string;
  /** Parameter lines shown under the title. */
  facts: string[];
  limits: { rpm: number; maxConcurrent: number };
  timeline: ReportSample[];
  arrivals: ReportArrival[];
  faults: ReportFault[];
  /** Outcome table: label → count. */
  outcomes: [string, number][];
  /** Goal table: goal → [measured, met]. */
  goals: [string, string, boolean][];
}

const W = 860;
const H = 200;
const PAD = { l: 48, r: 12, t: 12, b: 26 };
const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd'];

interface Series {
  name: string;
  points: [number, number][];
  dashed?: boolean;
}

const esc = (s: string) => s.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]!);
const nice = (x: number) => (x >= 100 ? Math.round(x).toString() : x >= 10 ? x.toFixed(0) : x.toFixed(1));

/** One line chart: the series share both axes; x from 0 to `xMax`. */
export function lineChart(title: string, series: Series[], xMax: number, faults: ReportFault[]): string {
  const yMax = Math.max(1, ...series.flatMap((s) => s.points.map((p) => p[1]))) * 1.1;
  const x = (v: number) => PAD.l + (v / Math.max(1, xMax)) * (W - PAD.l - PAD.r);
  const y = (v: number) => H - PAD.b - (v / yMax) * (H - PAD.t - PAD.b);
  const grid = [0, 0.25, 0.5, 0.75, 1].map((f) => {
    const v = yMax * f;
    return `<line x1="${PAD.l}" x2="${W - PAD.r}" y1="${y(v)}" y2="${y(v)}" stroke="#eee"/><text x="${PAD.l - 4}" y="${y(v) + 4}" text-anchor="end">${nice(v)}</text>`;
  }).join('');
  const ticks = Array.from({ length: 6 }, (_, i) => (xMax * i) / 5)
    .map((v) => `<text x="${x(v)}" y="${H - 8}" text-anchor="middle">${Math.round(v)} s</text>`).join('');
  const marks = faults.map((f) =>
    `<line x1="${x(f.tBriefS)}" x2="${x(f.tBriefS)}" y1="${PAD.t}" y2="${H - PAD.b}" stroke="#999" stroke-dasharray="3 3"/>` +
    `<text x="${x(f.tBriefS) + 3}" y="${PAD.t + 10}" fill="#666">${esc(f.label)}</text>`).join('');
  const lines = series.map((s, i) => s.points.length === 0 ? '' :
    `<polyline fill="none" stroke="${COLORS[i % COLORS.length]}" stroke-width="1.6"${s.dashed ? ' stroke-dasharray="6 4"' : ''} points="${s.points.map(([a, b]) => `${x(a).toFixed(1)},${y(b).toFixed(1)}`).join(' ')}"/>`).join('');
  const legend = series.map((s, i) => `<span style="color:${COLORS[i % COLORS.length]}">■</span> ${esc(s.name)}`).join(' &nbsp; ');
  return `<figure><figcaption>${esc(title)} <small>${legend}</small></figcaption>` +
    `<svg viewBox="0 0 ${W} ${H}" width="${W}" height="${H}" font-size="10" font-family="sans-serif">${grid}${ticks}${marks}${lines}</svg></figure>`;
}

/** Counts per bucket of `bucketS` brief-s, as points at each bucket's middle. */
export function perBucket(ts: number[], bucketS: number, xMax: number, scale = 1): [number, number][] {
  const n = Math.max(1, Math.ceil(xMax / bucketS));
  const counts = new Array<number>(n).fill(0);
  for (const t of ts) counts[Math.min(n - 1, Math.max(0, Math.floor(t / bucketS)))]!++;
  return counts.map((c, i) => [(i + 0.5) * bucketS, c * scale]);
}

/** A percentile of the values per bucket (buckets without values are left out). */
export function percentilePerBucket(items: { t: number; v: number }[], bucketS: number, p: number): [number, number][] {
  const buckets = new Map<number, number[]>();
  for (const { t, v } of items) {
    const b = Math.floor(t / bucketS);
    buckets.set(b, [...(buckets.get(b) ?? []), v]);
  }
  return [...buckets.entries()].sort((a, b) => a[0] - b[0]).map(([b, vs]) => {
    const sorted = vs.sort((a, c) => a - c);
    return [(b + 0.5) * bucketS, sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!];
  });
}

/** Upstream requests per brief-minute between consecutive samples. */
export function ratePerMinute(samples: ReportSample[]): [number, number][] {
  const out: [number, number][] = [];
  for (let i = 1; i < samples.length; i++) {
    const a = samples[i - 1]!;
    const b = samples[i]!;
    if (a.upstreamRequests === undefined || b.upstreamRequests === undefined || b.tBriefS <= a.tBriefS) continue;
    out.push([b.tBriefS, ((b.upstreamRequests - a.upstreamRequests) / (b.tBriefS - a.tBriefS)) * 60]);
  }
  return out;
}

/** Replicas per service over time, when the run was autoscaled. */
function replicaChart(r: SeedReport): string[] {
  const withReplicas = r.timeline.filter((s) => s.replicas);
  if (!withReplicas.length) return [];
  const xMax = Math.max(1, ...r.timeline.map((s) => s.tBriefS), ...r.arrivals.map((a) => a.tBriefS + (a.runS ?? 0)));
  const services = Object.keys(withReplicas[0]!.replicas!);
  return [lineChart('Replicas per service (the HPAs of deploy/k8s deciding)',
    services.map((name) => ({ name, points: withReplicas.map((s) => [s.tBriefS, s.replicas![name] ?? 0] as [number, number]) })), xMax, r.faults)];
}

export function renderSeedReport(r: SeedReport): string {
  const xMax = Math.max(1, ...r.timeline.map((s) => s.tBriefS), ...r.arrivals.map((a) => a.tBriefS + (a.runS ?? 0)));
  const bucket = Math.max(5, Math.round(xMax / 40));
  const done = r.arrivals.filter((a) => a.outcome === 'completed' && a.runS !== undefined);
  const charts = [
    lineChart(`Arrivals and outcomes per ${bucket} brief-s (by when the message was due)`, [
      { name: 'arrivals', points: perBucket(r.arrivals.map((a) => a.tBriefS), bucket, xMax) },
      { name: 'shed (503 + Retry-After)', points: perBucket(r.arrivals.filter((a) => a.outcome === 'shed').map((a) => a.tBriefS), bucket, xMax) },
      { name: 'completed', points: perBucket(done.map((a) => a.tBriefS), bucket, xMax) },
      { name: 'errors', points: perBucket(r.arrivals.filter((a) => ['failed', 'http_error', 'stream_error'].includes(a.outcome)).map((a) => a.tBriefS), bucket, xMax) },
    ], xMax, r.faults),
    lineChart('Runs in flight (sent, not yet ended)', [{ name: 'runs in flight', points: r.timeline.map((s) => [s.tBriefS, s.inFlightRuns]) }], xMax, r.faults),
    lineChart('LLM queue and calls in flight', [
      { name: 'queue depth', points: r.timeline.map((s) => [s.tBriefS, s.llmQueue]) },
      { name: 'in flight', points: r.timeline.map((s) => [s.tBriefS, s.llmInFlight]) },
      { name: `concurrency limit (${r.limits.maxConcurrent})`, points: [[0, r.limits.maxConcurrent], [xMax, r.limits.maxConcurrent]], dashed: true },
    ], xMax, r.faults),
    lineChart('Upstream requests per brief-minute (counted by the emulator)', [
      { name: 'requests/min', points: ratePerMinute(r.timeline) },
      { name: `RPM limit (${r.limits.rpm})`, points: [[0, r.limits.rpm], [xMax, r.limits.rpm]], dashed: true },
    ], xMax, r.faults),
    ...replicaChart(r),
    lineChart(`Completed runs' time, by when the message was due (brief-s, per ${bucket} s)`, [
      { name: 'p50', points: percentilePerBucket(done.map((a) => ({ t: a.tBriefS, v: a.runS! })), bucket, 50) },
      { name: 'p95', points: percentilePerBucket(done.map((a) => ({ t: a.tBriefS, v: a.runS! })), bucket, 95) },
    ], xMax, r.faults),
  ];
  const total = r.outcomes.reduce((s, [, n]) => s + n, 0);
  const outcomeRows = r.outcomes.map(([k, n]) => `<tr><td>${esc(k)}</td><td>${n}</td><td>${total ? ((100 * n) / total).toFixed(1) : '0'} %</td></tr>`).join('');
  const goalRows = r.goals.map(([g, v, met]) => `<tr><td>${esc(g)}</td><td>${esc(v)}</td><td class="${met ? 'met' : 'missed'}">${met ? 'met' : 'MISSED'}</td></tr>`).join('');
  const faultRows = r.faults.map((f) => `<tr><td>${f.tBriefS.toFixed(0)} s</td><td>${esc(f.label)}</td></tr>`).join('');
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>${esc(r.title)}</title><style>
body{font:14px/1.4 sans-serif;margin:24px;max-width:${W + 40}px;color:#222}h1{font-size:20px}figure{margin:18px 0}
figcaption{font-weight:600;margin-bottom:4px}figcaption small{font-weight:400;margin-left:8px}
table{border-collapse:collapse;margin:8px 0 16px}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}
.met{color:#2ca02c}.missed{color:#d62728;font-weight:600}ul{padding-left:18px}</style></head><body>
<h1>${esc(r.title)}</h1><ul>${r.facts.map((f) => `<li>${esc(f)}</li>`).join('')}</ul>
<h2>Outcomes (every offered message)</h2><table><tr><th>outcome</th><th>arrivals</th><th>share</th></tr>${outcomeRows}<tr><th>total</th><th>${total}</th><th></th></tr></table>
<h2>Goals</h2><table><tr><th>goal</th><th>measured</th><th></th></tr>${goalRows}</table>
${r.faults.length ? `<h2>Faults</h2><table><tr><th>at</th><th>fault</th></tr>${faultRows}</table>` : ''}
${charts.join('\n')}
</body></html>`;
}

/**
 * Writes `seed-report.html` in `dir` and, when Chromium is installed, `seed-report.png` beside
 * it. Returns the paths written (the PNG's is absent when it could not be rendered, with why).
 */
export async function writeSeedReport(r: SeedReport, dir: string, chromiumPath = '/usr/bin/chromium'): Promise<{ html: string; png?: string; pngError?: string }> {
  fs.mkdirSync(dir, { recursive: true });
  const html = path.join(dir, 'seed-report.html');
  fs.writeFileSync(html, renderSeedReport(r));
  if (!fs.existsSync(chromiumPath)) return { html, pngError: `${chromiumPath} not installed` };
  const png = path.join(dir, 'seed-report.png');
  try {
    const { chromium } = await import('playwright-core');
    const browser = await chromium.launch({ executablePath: chromiumPath, args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'] });
    try {
      const page = await browser.newPage({ viewport: { width: W + 80, height: 800 } });
      await page.goto(`file://${html}`);
      await page.screenshot({ path: png, fullPage: true });
    } finally {
      await browser.close();
    }
    return { html, png };
  } catch (err) {
    return { html, pngError: (err as Error).message.split('\n')[0] };
  }
}
