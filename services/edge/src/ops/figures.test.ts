// The edge's figures are the Grafana dashboard's panels, query for query: the ops page and the
// dashboard show the same numbers, and nothing else is ever asked of Prometheus.
import fs from 'node:fs';
import path from 'node:path';
import { FIGURES, seriesName } from './figures';

interface Panel { title: string; fieldConfig?: { defaults?: { unit?: string } }; targets: { expr: string; legendFormat?: string }[] }
const dashboard = JSON.parse(fs.readFileSync(path.resolve(__dirname, '../../../../deploy/grafana/agent-mesh.json'), 'utf8')) as { panels: Panel[] };

test('every panel of the dashboard, in its order, with the same queries, legends and unit', () => {
  const fromDashboard = dashboard.panels.map((p) => ({
    title: p.title,
    unit: p.fieldConfig?.defaults?.unit ?? 'short',
    queries: p.targets.map((t) => ({ expr: t.expr, legend: t.legendFormat ?? '' })),
  }));
  expect(FIGURES.map(({ title, unit, queries }) => ({ title, unit, queries }))).toEqual(fromDashboard);
});

test('figure ids are unique and stable (snake case of the title)', () => {
  const ids = FIGURES.map((f) => f.id);
  expect(new Set(ids).size).toBe(ids.length);
  for (const f of FIGURES) expect(f.id).toBe(f.title.toLowerCase().replace(/[^a-z0-9]+/g, '_').replace(/^_|_$/g, ''));
});

test("the brief's figures are all there", () => {
  const titles = FIGURES.map((f) => f.title);
  for (const t of ['Run time', 'Requests per second', 'Errors and timeouts', 'LLM queue vs quota', 'Tokens per minute', 'Open SSE streams', 'Store query time', 'DB pool usage', 'Breakers', 'Cost per run']) {
    expect(titles).toContain(t);
  }
});

test('series names follow the legend format', () => {
  expect(seriesName('p95 {{instance}}', { instance: '127.0.0.1:9000', job: 'edge' })).toBe('p95 127.0.0.1:9000');
  expect(seriesName('{{ outcome }}', { outcome: 'completed' })).toBe('completed');
  expect(seriesName('', { limit: 'rpm' })).toBe('limit="rpm"');
  expect(seriesName('', {})).toBe('value');
});
