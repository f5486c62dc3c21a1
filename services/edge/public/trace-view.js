// A finished run's trace as a waterfall: read through the edge (GET /api/runs/:runId/trace, which
// reads Jaeger's query API for the run's owner), one row per span across the five services, each
// bar placed on the run's timeline. The rows come from waterfall.js (pure, unit-tested).
import { api } from './api.js';
import { formatDuration, serviceSummary, waterfallRows } from './waterfall.js';

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'text') el.textContent = v;
    else if (k === 'style') for (const [prop, val] of Object.entries(v)) el.style.setProperty(prop, val); // CSSOM: not an inline style attribute
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children) if (c !== undefined && c !== null) el.append(c);
  return el;
}

/** Reads the run's trace; `traceId` (from run.started) when known, else the edge finds it by the run's id. */
export function fetchTrace(runId, traceId) {
  const q = traceId ? `?traceId=${encodeURIComponent(traceId)}` : '';
  return api(`/api/runs/${encodeURIComponent(runId)}/trace${q}`);
}

/** The waterfall of `trace` as an element. */
export function renderWaterfall(trace) {
  const rows = waterfallRows(trace);
  const summary = serviceSummary(trace);
  const legend = h('ul', { class: 'trace-services', 'aria-label': 'Services in this trace' },
    ...summary.map((s) => h('li', { 'data-service': s.service },
      h('span', { class: 'swatch', 'data-service': s.service }),
      `${s.service}: ${s.spans} span${s.spans === 1 ? '' : 's'}, ${formatDuration(s.busyMs)}`)));
  const list = h('ol', { class: 'span-rows' });
  for (const r of rows) {
    const label = h('span', { class: 'span-label', style: { 'padding-left': `${Math.min(r.depth, 24) * 12}px` }, title: `${r.service} · ${r.name}` },
      h('span', { class: 'span-service', text: r.service }), ' ', h('span', { class: 'span-name', text: r.name }));
    const bar = h('span', {
      class: `span-bar${r.error ? ' error' : ''}`, 'data-service': r.service,
      style: { left: `${r.leftPct.toFixed(3)}%`, width: `${r.widthPct.toFixed(3)}%` },
      title: `${r.name}: starts at ${formatDuration(r.startMs)}, lasts ${formatDuration(r.durationMs)}${r.error ? ' (error)' : ''}`,
    });
    const track = h('span', { class: 'span-track' }, bar);
    const time = h('span', { class: 'span-time', text: formatDuration(r.durationMs) });
    list.append(h('li', { class: 'span-row', 'data-service': r.service, 'data-depth': r.depth, ...(r.error ? { 'data-error': 'true' } : {}) }, label, track, time));
  }
  const head = h('p', { class: 'trace-head' },
    `Trace ${trace.traceId} · ${rows.length} spans · ${formatDuration(trace.durationMs)}`,
    ...(trace.truncated ? [' · ', h('strong', { text: 'truncated' })] : []));
  return h('section', { class: 'waterfall', 'data-trace-id': trace.traceId, 'aria-label': 'Trace of this run' }, head, legend, list);
}

/**
 * A "Trace" toggle for a run: loads and shows its waterfall under the run on the first click,
 * hides and shows it on the next ones. `ids()` gives {runId, traceId} when clicked.
 */
export function traceToggle(ids, container) {
  const button = h('button', { type: 'button', class: 'trace-toggle', 'aria-expanded': 'false', text: 'Trace' });
  const panel = h('div', { class: 'trace', hidden: true });
  container.append(panel);
  let loaded = false;
  button.addEventListener('click', async () => {
    const open = button.getAttribute('aria-expanded') === 'true';
    button.setAttribute('aria-expanded', String(!open));
    panel.hidden = open;
    if (open || loaded) return;
    const { runId, traceId } = ids();
    panel.replaceChildren(h('p', { class: 'hint', text: 'Loading the trace…' }));
    try {
      panel.replaceChildren(renderWaterfall(await fetchTrace(runId, traceId)));
      loaded = true;
    } catch (err) {
      const why = err.status === 404
        ? 'No trace of this run yet (spans reach the tracing backend a few seconds after they end): try again shortly.'
        : err.status === 503 ? `The tracing backend cannot be read: ${err.message}` : `Could not load the trace: ${err.message}`;
      panel.replaceChildren(h('p', { class: 'notice warn', role: 'alert', text: why }));
      button.setAttribute('aria-expanded', 'false');
      panel.hidden = false;
    }
  });
  return button;
}
