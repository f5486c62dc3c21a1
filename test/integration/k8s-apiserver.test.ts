// The manifests against a real Kubernetes API server (etcd + kube-apiserver, test/support/kube.ts):
// every overlay renders with kubectl's kustomize, passes a server-side dry run (schemas, unknown
// fields, admission), is applied for real, and reads back with everything it declared.
import fs from 'node:fs';
import path from 'node:path';
import { parseAllDocuments } from 'yaml';
import { testDir } from '../support';
import { kustomize, startApiServer, type ApiServer } from '../support/kube';

jest.setTimeout(180_000);

const K8S = path.resolve(__dirname, '../../deploy/k8s');
type Obj = Record<string, unknown>;

/** The kustomizations a user applies: each overlay, and the prometheus-adapter rules. */
const TARGETS = [
  ...fs.readdirSync(path.join(K8S, 'overlays')).sort().map((o) => `overlays/${o}`),
  'prometheus-adapter',
];

let dir: string;
let api: ApiServer;

beforeAll(async () => {
  dir = testDir('k8s-apiserver');
  api = await startApiServer(dir);
});

afterAll(async () => {
  await api?.stop();
});

const parse = (text: string): Obj[] =>
  parseAllDocuments(text).map((d) => d.toJS() as Obj).filter((o) => o && typeof o === 'object');
const meta = (o: Obj) => (o.metadata ?? {}) as Obj;
const id = (o: Obj) => `${String(o.kind)}/${String(meta(o).name)}`;

/**
 * Where `actual` (the stored object) lacks or changes something `expected` (the rendered one)
 * declares. The server may add defaults, but never drop or alter a declared field.
 */
function differences(expected: unknown, actual: unknown, at = ''): string[] {
  if (Array.isArray(expected)) {
    if (!Array.isArray(actual) || actual.length !== expected.length) return [`${at}: ${JSON.stringify(expected)} stored as ${JSON.stringify(actual)}`];
    return expected.flatMap((e, i) => differences(e, actual[i], `${at}/${i}`));
  }
  if (expected && typeof expected === 'object') {
    if (!actual || typeof actual !== 'object' || Array.isArray(actual)) return [`${at}: stored as ${JSON.stringify(actual)}`];
    return Object.entries(expected).flatMap(([k, v]) => differences(v, (actual as Obj)[k], `${at}/${k}`));
  }
  return expected === actual ? [] : [`${at}: ${JSON.stringify(expected)} stored as ${JSON.stringify(actual)}`];
}

const succeeded = (r: { status: number | null; stderr: string; stdout: string }) => ({ status: r.status, stderr: r.stderr });

describe.each(TARGETS)('%s in a real API server', (target) => {
  let yaml: string;
  let rendered: Obj[];
  let namespace: string;

  beforeAll(() => {
    const out = kustomize(path.join(K8S, target));
    expect(succeeded(out)).toEqual({ status: 0, stderr: '' });
    yaml = out.stdout;
    rendered = parse(yaml);
    const namespaces = new Set(rendered.map((o) => meta(o).namespace));
    expect(namespaces.size).toBe(1);
    namespace = String([...namespaces][0]);
    // As deploy/k8s/README.md says: the namespace is created first, then the kustomization applied.
    expect(succeeded(api.kubectl(['create', 'namespace', namespace]))).toEqual({ status: 0, stderr: '' });
  });

  test('passes a server-side dry run (strict schema validation and admission) and stores nothing', () => {
    const dry = api.kubectl(['apply', '--dry-run=server', '--validate=strict', '-f', '-'], yaml);
    expect(succeeded(dry)).toEqual({ status: 0, stderr: '' });
    expect(dry.stdout.trim().split('\n')).toHaveLength(rendered.length);
    const stored = api.kubectl(['get', '--ignore-not-found', '-o', 'name', '-f', '-'], yaml);
    expect({ status: stored.status, stdout: stored.stdout }).toEqual({ status: 0, stdout: '' });
  });

  test('applies, and every object reads back with all it declared', () => {
    const applied = api.kubectl(['apply', '--validate=strict', '-f', '-'], yaml);
    expect(succeeded(applied)).toEqual({ status: 0, stderr: '' });
    const got = api.kubectl(['get', '-f', '-', '-o', 'json'], yaml);
    expect(succeeded(got)).toEqual({ status: 0, stderr: '' });
    const stored = (JSON.parse(got.stdout) as { items?: Obj[] }).items ?? [JSON.parse(got.stdout) as Obj];
    expect(stored.map(id).sort()).toEqual(rendered.map(id).sort());
    const problems = rendered.flatMap((r) => differences(r, stored.find((s) => id(s) === id(r)), id(r)));
    expect(problems).toEqual([]);
  });

  test('a second apply writes nothing (no field is rewritten by the server or fought over)', () => {
    const versions = () => {
      const got = api.kubectl(['get', '-f', '-', '-o', 'json'], yaml);
      return Object.fromEntries(((JSON.parse(got.stdout) as { items: Obj[] }).items).map((o) => [id(o), meta(o).resourceVersion]));
    };
    const before = versions();
    const again = api.kubectl(['apply', '-f', '-'], yaml);
    expect(succeeded(again)).toEqual({ status: 0, stderr: '' });
    expect(versions()).toEqual(before);
  });
});

describe('what the overlays hold', () => {
  const kinds = (target: string) => new Set(parse(kustomize(path.join(K8S, target)).stdout).map((o) => String(o.kind)));

  test.each(TARGETS.filter((t) => t.startsWith('overlays/')))('%s has Deployments, Services, HPAs, PDBs, NetworkPolicies and the Ingress', (target) => {
    const found = kinds(target);
    for (const k of ['ConfigMap', 'ServiceAccount', 'Deployment', 'Service', 'HorizontalPodAutoscaler', 'PodDisruptionBudget', 'NetworkPolicy', 'Ingress']) {
      expect({ k, found: found.has(k) }).toEqual({ k, found: true });
    }
  });

  test('the HPAs with custom metrics are stored with them', () => {
    const got = api.kubectl(['get', 'hpa', '-n', 'agent-mesh', '-o', 'json']);
    const hpas = (JSON.parse(got.stdout) as { items: Obj[] }).items;
    const podsMetrics = hpas.flatMap((h) =>
      ((h.spec as Obj).metrics as Obj[]).filter((m) => m.type === 'Pods').map((m) => `${String(meta(h).name)}:${String(((m.pods as Obj).metric as Obj).name)}`),
    );
    const declared = parse(kustomize(path.join(K8S, 'overlays/production')).stdout)
      .filter((o) => o.kind === 'HorizontalPodAutoscaler')
      .flatMap((h) => ((h.spec as Obj).metrics as Obj[]).filter((m) => m.type === 'Pods').map((m) => `${String(meta(h).name)}:${String(((m.pods as Obj).metric as Obj).name)}`));
    expect(declared.length).toBeGreaterThan(0);
    expect(podsMetrics.sort()).toEqual(declared.sort());
  });
});

describe('the API server rejects what a cluster would reject', () => {
  const deployment = () => parse(kustomize(path.join(K8S, 'overlays/dev')).stdout).find((o) => o.kind === 'Deployment' && meta(o).name === 'edge')!;
  const dryRun = (o: Obj) => api.kubectl(['apply', '--dry-run=server', '--validate=strict', '-f', '-'], JSON.stringify(o));

  test('an unknown field', () => {
    const bad = deployment();
    (bad.spec as Obj).replica = 3;
    const r = dryRun(bad);
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/unknown field "spec.replica"/);
  });

  test('an invalid value', () => {
    const bad = deployment();
    const pod = ((bad.spec as Obj).template as Obj).spec as Obj;
    pod.terminationGracePeriodSeconds = -1;
    const r = dryRun(bad);
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/terminationGracePeriodSeconds/);
  });
});
