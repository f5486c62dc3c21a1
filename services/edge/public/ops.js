// The operations page: the fleet's figures from Prometheus (ops-figures.js), and polls GET /api/metrics every 2 s into four live charts (LLM queue depth,
// quota use, response time, open streams) and GET /api/health into a per-dependency list.
// Fields are read defensively: a service that is down or a metric not reported shows as a gap.
import { auth, api, UNAUTHORIZED_EVENT } from './api.js';
import { LineChart, formatNumber } from './chart.js';
import { startFigures } from './ops-figures.js';

const POLL_MS = 2_000;
const $ = (id) => document.getElementById(id);

const num = (v) => (typeof v === 'number' && Number.isFinite(v) ? v : null);
const ms = (v) => (v >= 1000 ? `${(v / 1000).toFixed(v >= 10_000 ? 0 : 1)} s` : `${Math.round(v)} ms`);
const pct = (v) => `${formatNumber(v)}%`;

const charts = {
  queue: new LineChart($('chart-queue'), {
    series: [
      { key: 'queue', label: 'queued', color: '--warn' },
      { key: 'inFlight', label: 'in flight', color: '--planner' },
    ],
  }),
  quota: new LineChart($('chart-quota'), {
    series: [
      { key: 'concurrency', label: 'concurrency', color: '--critic' },
      { key: 'rpm', label: 'requests/min', color: '--host' },
    ],
    format: pct,
    minMax: 100,
  }),
  latency: new LineChart($('chart-latency'), {
    series: [
      { key: 'p95', label: 'p95', color: '--reporter' },
      { key: 'p99', label: 'p99', color: '--bad' },
    ],
    format: ms,
  }),
  streams: new LineChart($('chart-streams'), {
    series: [
      { key: 'open', label: 'open', color: '--ok' },
      { key: 'queued', label: 'waiting for a slot', color: '--warn' },
    ],
  }),
};

/** The first limit whose name matches (the broker names its own gauges). */
function limitOf(limits, pattern) {
  if (!limits || typeof limits !== 'object') return null;
  for (const [k, v] of Object.entries(limits)) if (pattern.test(k) && num(v) && v > 0) return v;
  return null;
}

let previous; // {t, admissions} for the admission rate

function sample(m, t) {
  const llm = m.llm?.available === false ? {} : m.llm ?? {};
  const queue = num(llm.queueLength);
  const inFlight = num(llm.inFlight);
  charts.queue.push(t, { queue, inFlight });
  $('chart-queue-now').textContent = m.llm?.available === false
    ? `LLM broker metrics unavailable: ${m.llm.error ?? 'no answer'}`
    : `LLM queue ${queue ?? '–'} (target < 50) · ${inFlight ?? '–'} calls in flight`;

  // Quota use: calls in flight against the concurrency limit; admissions per minute against RPM.
  const limits = llm.effectiveLimits;
  const concLimit = limitOf(limits, /concurren|in_?flight/i);
  const rpmLimit = limitOf(limits, /rpm|per_?min|requests?_per/i);
  const admissions = num(llm.admissions);
  let perMinute = null;
  if (admissions !== null && previous && t > previous.t && admissions >= previous.admissions) {
    perMinute = ((admissions - previous.admissions) / (t - previous.t)) * 60_000;
  }
  if (admissions !== null) previous = { t, admissions };
  const concurrency = concLimit && inFlight !== null ? (inFlight / concLimit) * 100 : null;
  const rpm = rpmLimit && perMinute !== null ? (perMinute / rpmLimit) * 100 : null;
  charts.quota.push(t, { concurrency, rpm });
  const parts = [];
  parts.push(concLimit ? `concurrency ${inFlight ?? '–'}/${concLimit}` : 'no concurrency limit reported');
  parts.push(`admissions ${perMinute !== null ? formatNumber(perMinute) : '–'}/min${rpmLimit ? ` of ${rpmLimit} RPM` : ''}`);
  if (num(llm.refusals) !== null) parts.push(`${llm.refusals} refused`);
  if (num(llm.upstream429) !== null) parts.push(`${llm.upstream429} upstream 429s`);
  $('chart-quota-now').textContent = parts.join(' · ');

  const rt = m.responseTimeMs ?? {};
  charts.latency.push(t, { p95: num(rt.p95), p99: num(rt.p99) });
  $('chart-latency-now').textContent = `p95 ${num(rt.p95) !== null ? ms(rt.p95) : '–'} (target < 60 s) · p99 ${num(rt.p99) !== null ? ms(rt.p99) : '–'} · avg ${num(rt.avg) !== null ? ms(rt.avg) : '–'}${rt.source ? ` · of ${rt.source}` : ''}`;

  const c = m.connections ?? {};
  const open = num(c.sseStreams) ?? num(c.open);
  const waiting = num(c.sseQueued) ?? num(m.requests?.queued);
  charts.streams.push(t, { open, queued: waiting });
  $('chart-streams-now').textContent = `${open ?? '–'} open${num(c.sseMax) ? ` of ${c.sseMax}` : ''} · ${waiting ?? 0} waiting · ${num(c.open) ?? '–'} connections · heartbeat ${num(c.heartbeatMs) !== null ? `${c.heartbeatMs / 1000} s` : '–'}`;

  renderFigures(m);
}

function flatten(obj, prefix = '', out = []) {
  if (obj === null || obj === undefined) return out;
  if (typeof obj !== 'object') { out.push([prefix, obj]); return out; }
  for (const [k, v] of Object.entries(obj)) flatten(v, prefix ? `${prefix}.${k}` : k, out);
  return out;
}

function renderFigures(m) {
  const rows = flatten(m).filter(([, v]) => typeof v === 'number' || typeof v === 'boolean' || typeof v === 'string');
  $('figures').replaceChildren(...rows.map(([k, v]) => {
    const tr = document.createElement('tr');
    const name = document.createElement('td');
    name.textContent = k;
    const value = document.createElement('td');
    value.className = typeof v === 'number' ? 'num' : '';
    value.textContent = typeof v === 'number' ? String(Math.round(v * 1000) / 1000) : String(v);
    tr.append(name, value);
    return tr;
  }));
}

async function pollMetrics() {
  try {
    const m = await api('/api/metrics');
    $('signin-needed').hidden = true;
    sample(m ?? {}, Date.now());
    $('poll-state').textContent = `Updated ${new Date().toLocaleTimeString()}`;
  } catch (err) {
    if (err.status === 401) $('signin-needed').hidden = false;
    $('poll-state').textContent = `Metrics unavailable: ${err.message}`;
  }
}

async function pollHealth() {
  let body;
  let status = 0;
  try {
    const res = await fetch('/api/health', { headers: { Accept: 'application/json' } });
    status = res.status;
    body = await res.json().catch(() => ({}));
  } catch (err) {
    body = { status: 'unreachable', checks: {} };
  }
  const healthy = status === 200;
  $('health-dot').className = `status-dot ${healthy ? 'ok' : 'bad'}`;
  const edge = body.edge ?? {};
  $('health-summary').textContent = `${body.status ?? (healthy ? 'healthy' : 'unhealthy')} (HTTP ${status || '–'})${edge.draining ? ' · draining' : ''}`;
  const checks = body.checks && typeof body.checks === 'object' ? Object.entries(body.checks) : [];
  $('health-list').replaceChildren(...checks.map(([name, c]) => {
    const li = document.createElement('li');
    const up = c?.status === 'up' || c?.status === 'ok' || c?.status === 'healthy';
    const degraded = c?.status === 'degraded';
    const dot = document.createElement('span');
    dot.className = `status-dot ${up ? 'ok' : degraded ? 'warn' : 'bad'}`;
    const label = document.createElement('strong');
    label.textContent = name;
    const state = document.createElement('span');
    state.textContent = String(c?.status ?? 'unknown');
    const detail = document.createElement('span');
    detail.className = 'detail';
    detail.textContent = [num(c?.latencyMs) !== null ? `${c.latencyMs} ms` : '', c?.detail ?? ''].filter(Boolean).join(' · ');
    li.append(dot, label, state, detail);
    li.setAttribute('aria-label', `${name}: ${state.textContent}`);
    return li;
  }));
}

window.addEventListener(UNAUTHORIZED_EVENT, () => { $('signin-needed').hidden = false; });

function loop(fn, every) {
  const tick = async () => {
    // Hidden tabs poll nothing; the chart resumes when the page is shown again.
    if (document.visibilityState !== 'hidden') await fn();
    setTimeout(tick, every);
  };
  tick();
}

if (!auth.token) $('signin-needed').hidden = false;
loop(pollMetrics, POLL_MS);
loop(pollHealth, POLL_MS);
startFigures();
