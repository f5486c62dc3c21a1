// The Prometheus rules (deploy/prometheus/rules.yml): valid for promtool, every alert unit-tested
// both ways (rules.test.yml), written on metrics the services really export, each alert with a
// runbook section, and the Kubernetes PrometheusRule generated from the same file.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { parse } from 'yaml';
import { exportedMetricNames, metricsIn } from '../support';

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
    const exported = exportedMetricNames();
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
