// The operations page's fleet figures: the Grafana dashboard's panels as the edge reads them from
// Prometheus (GET /api/ops/figures, a token with the ops scope), one small chart per panel, polled
// every 10 s over the chosen window.
import { api } from './api.js';
import { LineChart, formatNumber } from './chart.js';

const POLL_MS = 10_000;
const MAX_SERIES = 8;
const COLORS = ['--planner', '--critic', '--host', '--reporter', '--ok', '--warn', '--bad', '--accent'];
const WINDOW_MS = { '5m': 300_000, '15m': 900_000, '1h': 3_600_000, '6h': 21_600_000 };

const $ = (id) => document.getElementById(id);

/** A value in the panel's unit (Grafana's names). */
function formatter(unit) {
  switch (unit) {
    case 's': return (v) => (v >= 1 ? `${formatNumber(v)} s` : `${Math.round(v * 1000)} ms`);
    case 'percentunit': return (v) => `${formatNumber(v * 100)}%`;
    case 'reqps': return (v) => `${formatNumber(v)}/s`;
    case 'ops': return (v) => `${formatNumber(v)}/s`;
    case 'currencyUSD': return (v) => (v !== 0 && Math.abs(v) < 0.01 ? `$${v.toPrecision(2)}` : `$${v.toFixed(2)}`);
    default: return (v) => formatNumber(v);
  }
}

const cards = new Map(); // figure id → {el, chart, now, error}

function card(f) {
  let c = cards.get(f.id);
  if (c) return c;
  const el = document.createElement('section');
  el.className = 'figure';
  el.dataset.figure = f.id;
  const title = document.createElement('h3');
  title.textContent = f.title;
  const canvas = document.createElement('canvas');
  canvas.setAttribute('role', 'img');
  canvas.setAttribute('aria-label', `${f.title} over the chosen window`);
  const now = document.createElement('p');
  now.className = 'current';
  const error = document.createElement('p');
  error.className = 'error-text';
  error.hidden = true;
  el.append(title, canvas, now, error);
  $('prom-figures').append(el);
  const chart = new LineChart(canvas, { series: [], format: formatter(f.unit), minMax: f.unit === 'percentunit' ? 0.01 : 1 });
  c = { el, chart, now, error };
  cards.set(f.id, c);
  return c;
}

/** Points of every series of a figure, aligned on their timestamps (one range, one step). */
function samples(series) {
  const byT = new Map();
  series.forEach((s, i) => {
    for (const [t, v] of s.points) {
      if (!byT.has(t)) byT.set(t, {});
      byT.get(t)[`s${i}`] = v;
    }
  });
  return [...byT.entries()].sort((a, b) => a[0] - b[0]).map(([t, values]) => ({ t, values }));
}

function show(body) {
  const windowMs = WINDOW_MS[body.window] ?? 900_000;
  for (const f of body.figures) {
    const c = card(f);
    const series = f.series.slice(0, MAX_SERIES);
    c.chart.series = series.map((s, i) => ({ key: `s${i}`, label: s.name, color: COLORS[i % COLORS.length] }));
    c.chart.windowMs = windowMs;
    c.chart.points = samples(series);
    c.chart.draw();
    const hasData = series.some((s) => s.points.some(([, v]) => v !== null));
    c.el.dataset.hasData = String(hasData);
    const fmt = formatter(f.unit);
    const latest = series.map((s) => {
      const last = s.points.filter(([, v]) => v !== null).at(-1);
      return last ? `${s.name} ${fmt(last[1])}` : undefined;
    }).filter(Boolean);
    c.now.textContent = hasData
      ? `${latest.join(' · ')}${f.series.length > MAX_SERIES ? ` · ${f.series.length - MAX_SERIES} more series` : ''}`
      : 'no data in this window';
    c.error.hidden = !f.error;
    c.error.textContent = f.error ? `Prometheus refused a query: ${f.error}` : '';
  }
}

async function poll() {
  const notice = $('prom-notice');
  try {
    const body = await api(`/api/ops/figures?window=${encodeURIComponent($('prom-window').value)}`);
    notice.hidden = true;
    show(body);
    $('prom-state').textContent = `Updated ${new Date().toLocaleTimeString()}`;
  } catch (err) {
    $('prom-state').textContent = '';
    notice.textContent = err.status === 403
      ? 'Your token lacks the ops scope: the fleet figures are for operators (a token whose scope includes "ops"; npm start prints one).'
      : err.status === 503 ? `Prometheus cannot be read: ${err.message}` : `Could not load the figures: ${err.message}`;
    notice.hidden = err.status === 401; // the page's sign-in notice says it
  }
}

export function startFigures() {
  $('prom-window').addEventListener('change', () => poll());
  const tick = async () => {
    if (document.visibilityState !== 'hidden') await poll();
    setTimeout(tick, POLL_MS);
  };
  tick();
}
