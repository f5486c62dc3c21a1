// The Prometheus rules (deploy/prometheus/rules.yml): valid for promtool, every alert unit-tested
// both ways (rules.test.yml), written on metrics the services really export, each alert with a
// runbook section, and the Kubernetes PrometheusRule generated from the same file.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { parse } from 'yaml';

const ROOT = path.resolve(__dirname, '../..');
const DIR = path.join(ROOT, 'deploy/prometheus');
const RULES = path.join(DIR, 'rules.yml');

interface Rule { alert?: string; record?: string; expr: string; annotations?: Record<string, string> }
const groups = (parse(fs.readFileSync(RULES, 'utf8')) as { groups: { rules: Rule[] }[] }).groups;
const rules = groups.flatMap((g) => g.rules);
const alerts = rules.filter((r) => r.alert);

function run(cmd: string, args: string[], cwd = DIR) {
  const r = spawnSync(cmd, args, { cwd, encoding: 'utf8' });
  if (r.error) throw r.error;
  return { code: r.status, out: `${r.stdout}${r.stderr}` };
}

/** GitHub's heading anchors: lower case, punctuation dropped, spaces to dashes. */
const anchor = (heading: string) => heading.trim().toLowerCase().replace(/[^\w\- ]/g, '').replace(/ /g, '-');

/** Metric names an expression reads (label matchers, grouping clauses, strings and functions removed). */
function metricsIn(expr: string): string[] {
  const bare = expr
    .replace(/"[^"]*"/g, '')
    .replace(/\{[^}]*\}/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ')
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ');
  const names = [...bare.matchAll(/\b([a-zA-Z_:][\w:]*)\b(?!\s*\()/g)].map((m) => m[1]!);
  const keywords = new Set(['and', 'or', 'unless', 'bool', 'offset', 'by', 'without', 'on', 'ignoring', 'group_left', 'group_right']);
  return names.filter((n) => !keywords.has(n) && !/^\d/.test(n));
}

/** Metric names defined in the services' sources, plus prom-client's default metrics and Prometheus' `up`. */
function exportedMetrics(): Set<string> {
  const names = new Set(['up']);
  const walk = (dir: string): string[] => fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) return e.name === 'node_modules' || e.name === 'dist' || e.name === 'gen' ? [] : walk(p);
    return /\.ts$/.test(e.name) && !/\.test\.ts$/.test(e.name) ? [p] : [];
  });
  for (const file of walk(path.join(ROOT, 'services'))) {
    for (const m of fs.readFileSync(file, 'utf8').matchAll(/(?:name: |gauge\()'([a-z_]+)'/g)) names.add(m[1]!);
  }
  // prom-client's collectDefaultMetrics (services/common/src/metrics): the ones the rules use.
  for (const n of ['process_cpu_seconds_total', 'nodejs_heap_size_used_bytes', 'process_resident_memory_bytes', 'nodejs_eventloop_lag_p99_seconds']) names.add(n);
  return names;
}

describe('deploy/prometheus rules', () => {
  test('promtool check rules accepts them', () => {
    const r = run('promtool', ['check', 'rules', RULES]);
    expect(r.out).toContain('SUCCESS');
    expect(r.code).toBe(0);
  });

  test('promtool test rules: every unit test passes', () => {
    const r = run('promtool', ['test', 'rules', 'rules.test.yml']);
    expect(r.out).toContain('SUCCESS');
    expect(r.code).toBe(0);
  });

  test('every alert is tested firing and silent', () => {
    interface AlertTest { alertname: string; exp_alerts?: unknown[] }
    const cases = (parse(fs.readFileSync(path.join(DIR, 'rules.test.yml'), 'utf8')) as { tests: { alert_rule_test?: AlertTest[] }[] })
      .tests.flatMap((t) => t.alert_rule_test ?? []);
    const missing = alerts.flatMap((a) => {
      const mine = cases.filter((c) => c.alertname === a.alert);
      return [
        ...(mine.some((c) => (c.exp_alerts ?? []).length > 0) ? [] : [`${a.alert}: no case where it fires`]),
        ...(mine.some((c) => (c.exp_alerts ?? []).length === 0) ? [] : [`${a.alert}: no case where it stays silent`]),
      ];
    });
    expect(missing).toEqual([]);
    expect(alerts.length).toBeGreaterThanOrEqual(18);
  });

  test('the rules read only metrics the services export (or other rules record)', () => {
    const exported = exportedMetrics();
    const recorded = new Set(rules.flatMap((r) => (r.record ? [r.record] : [])));
    const known = (n: string) => exported.has(n) || exported.has(n.replace(/_(bucket|sum|count)$/, '')) || recorded.has(n);
    const unknown = rules.flatMap((r) => metricsIn(r.expr)
      .filter((n) => !known(n))
      .map((n) => `${r.alert ?? r.record}: ${n}`));
    expect(unknown).toEqual([]);
  });

  test("every alert's runbook_url names a section of docs/runbooks.md", () => {
    const doc = fs.readFileSync(path.join(ROOT, 'docs/runbooks.md'), 'utf8');
    const anchors = new Set([...doc.matchAll(/^#{2,4} (.+)$/gm)].map((m) => anchor(m[1]!)));
    const problems = alerts.flatMap((a) => {
      const url = a.annotations?.runbook_url ?? '';
      const m = /^docs\/runbooks\.md#(.+)$/.exec(url);
      if (!m) return [`${a.alert}: runbook_url "${url}" is not docs/runbooks.md#<section>`];
      return anchors.has(m[1]!) ? [] : [`${a.alert}: no section #${m[1]} in docs/runbooks.md`];
    });
    expect(problems).toEqual([]);
  });

  test('the Kubernetes PrometheusRule is generated from rules.yml and current', () => {
    const r = run(process.execPath, [path.join(DIR, 'to-k8s.js'), '--check'], ROOT);
    expect(r.out).toBe('');
    expect(r.code).toBe(0);
    const generated = parse(fs.readFileSync(path.join(ROOT, 'deploy/k8s/components/monitoring/prometheus-rule.yaml'), 'utf8')) as { spec: { groups: unknown } };
    expect(generated.spec.groups).toEqual(groups);
  });
});
