// A real Kubernetes control plane without a cluster, for the manifest tests: Debian's etcd and a
// kube-apiserver built by deploy/k8s/tools/install.sh (no kubelet, so no pod ever runs; every
// object is validated, admitted and stored as in a cluster). Also the kubectl of the same version,
// whose built-in kustomize renders the overlays.
import { spawn, spawnSync, type ChildProcess, type SpawnSyncReturns } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parse as parseYaml, parseAllDocuments } from 'yaml';
import { freePort, waitFor } from './index';

const BIN = path.join(process.env.MESH_CACHE ?? path.join(os.homedir(), '.cache/agent-mesh'), 'bin');

/** Path of a binary deploy/k8s/tools/install.sh builds; throws (never skips) when it is missing. */
export function kubeBinary(name: 'kubectl' | 'kube-apiserver' | 'kube-controller-manager'): string {
  const p = path.join(BIN, name);
  if (!fs.existsSync(p)) throw new Error(`${p} is missing: run bash deploy/k8s/tools/install.sh (test/run.sh does)`);
  return p;
}

/** `kubectl kustomize <dir>`: the objects an overlay renders to, as YAML. */
export function kustomize(dir: string): SpawnSyncReturns<string> {
  return spawnSync(kubeBinary('kubectl'), ['kustomize', dir], { encoding: 'utf8', maxBuffer: 64 << 20 });
}

export interface ApiServer {
  kubeconfig: string;
  /** Runs kubectl against this API server. */
  kubectl(args: string[], input?: string): SpawnSyncReturns<string>;
  stop(): Promise<void>;
}

function launch(name: string, cmd: string, args: string[], logDir: string): { proc: ChildProcess; log: () => string; stop: () => Promise<void> } {
  const logFile = path.join(logDir, `${name}.log`);
  const out = fs.openSync(logFile, 'a');
  const proc = spawn(cmd, args, { stdio: ['ignore', out, out] });
  fs.closeSync(out);
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  return {
    proc,
    log: () => fs.readFileSync(logFile, 'utf8'),
    stop: async () => {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      proc.kill('SIGTERM');
      const t = setTimeout(() => proc.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(t);
    },
  };
}

/** waitFor options that also give up as soon as `proc` exits (deploy/local/stack.js supports it). */
const waitOpts = (proc: ChildProcess, timeoutMs: number) => ({ timeoutMs, intervalMs: 300, proc }) as Parameters<typeof waitFor>[2];

/**
 * Starts etcd and kube-apiserver on free loopback ports with their data in `dir`, and writes a
 * kubeconfig for a cluster admin (static token). Resolves once /readyz answers ok.
 */
export async function startApiServer(dir: string): Promise<ApiServer> {
  const apiserver = kubeBinary('kube-apiserver');
  const kubectl = kubeBinary('kubectl');
  const [clientPort, peerPort, securePort] = [await freePort(), await freePort(), await freePort()];
  const etcdUrl = `http://127.0.0.1:${clientPort}`;
  const peerUrl = `http://127.0.0.1:${peerPort}`;
  const etcd = launch('etcd', 'etcd', [
    '--name', 'test', '--data-dir', path.join(dir, 'etcd'),
    '--listen-client-urls', etcdUrl, '--advertise-client-urls', etcdUrl,
    '--listen-peer-urls', peerUrl, '--initial-advertise-peer-urls', peerUrl, '--initial-cluster', `test=${peerUrl}`,
  ], dir);
  try {
    await waitFor('etcd', async () => (await fetch(`${etcdUrl}/health`)).ok, waitOpts(etcd.proc, 30_000));
  } catch (err) {
    await etcd.stop();
    throw new Error(`${(err as Error).message}\n${etcd.log()}`);
  }

  // Service-account token signing keys and a static admin token: no certificates to issue.
  const { publicKey, privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  fs.writeFileSync(path.join(dir, 'sa.pub'), publicKey.export({ type: 'spki', format: 'pem' }));
  fs.writeFileSync(path.join(dir, 'sa.key'), privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
  const token = crypto.randomBytes(24).toString('hex');
  fs.writeFileSync(path.join(dir, 'tokens.csv'), `${token},admin,admin,system:masters\n`, { mode: 0o600 });
  const server = launch('kube-apiserver', apiserver, [
    `--etcd-servers=${etcdUrl}`,
    `--secure-port=${securePort}`, '--bind-address=127.0.0.1', `--cert-dir=${path.join(dir, 'certs')}`,
    '--service-account-issuer=https://kubernetes.default.svc',
    `--service-account-key-file=${path.join(dir, 'sa.pub')}`,
    `--service-account-signing-key-file=${path.join(dir, 'sa.key')}`,
    `--token-auth-file=${path.join(dir, 'tokens.csv')}`,
    '--authorization-mode=RBAC', '--service-cluster-ip-range=10.96.0.0/16',
    '--profiling=false',
  ], dir);

  const kubeconfig = path.join(dir, 'kubeconfig');
  fs.writeFileSync(kubeconfig, [
    'apiVersion: v1', 'kind: Config', 'current-context: test',
    `clusters: [{name: test, cluster: {server: "https://127.0.0.1:${securePort}", insecure-skip-tls-verify: true}}]`,
    `users: [{name: admin, user: {token: "${token}"}}]`,
    'contexts: [{name: test, context: {cluster: test, user: admin}}]', '',
  ].join('\n'), { mode: 0o600 });
  const run = (args: string[], input?: string) =>
    spawnSync(kubectl, ['--kubeconfig', kubeconfig, ...args], { encoding: 'utf8', input, maxBuffer: 64 << 20 });
  const stop = async () => {
    await server.stop();
    await etcd.stop();
  };
  try {
    await waitFor('kube-apiserver', () => run(['get', '--raw=/readyz']).stdout.trim() === 'ok', waitOpts(server.proc, 90_000));
  } catch (err) {
    await stop();
    throw new Error(`${(err as Error).message}\n${server.log().slice(-4000)}`);
  }
  return { kubeconfig, kubectl: run, stop };
}

// ---------------------------------------------------------------------------------------------
// The metrics the autoscaling manifests refer to: HPA metrics and prometheus-adapter rules.

type Obj = Record<string, any>;

/** The objects `kubectl kustomize <dir>` renders, parsed. */
export function rendered(dir: string): Obj[] {
  const out = kustomize(dir);
  if (out.status !== 0) throw new Error(`kubectl kustomize ${dir}: ${out.stderr}`);
  return parseAllDocuments(out.stdout).map((d) => d.toJS() as Obj).filter((o) => o && typeof o === 'object');
}

/** A custom metric an HPA scales on: the Deployment it scales, the metric name and its label selector. */
export interface HpaMetric { hpa: string; deployment: string; name: string; matchLabels: Record<string, string> }

export function hpaMetrics(objects: Obj[]): HpaMetric[] {
  return objects.filter((o) => o.kind === 'HorizontalPodAutoscaler').flatMap((h) =>
    ((h.spec.metrics ?? []) as Obj[]).flatMap((m): HpaMetric[] => {
      if (m.type === 'Resource' || m.type === 'ContainerResource') return []; // metrics-server's CPU/memory
      const source = m.type === 'Pods' ? m.pods : m.type === 'Object' ? m.object : undefined;
      if (!source) throw new Error(`HPA ${String(h.metadata.name)}: metric type ${String(m.type)} is not checked yet`);
      if (source.metric.selector?.matchExpressions) throw new Error(`HPA ${String(h.metadata.name)}: matchExpressions are not checked yet`);
      return [{ hpa: h.metadata.name, deployment: h.spec.scaleTargetRef.name, name: source.metric.name, matchLabels: source.metric.selector?.matchLabels ?? {} }];
    }),
  );
}

/** One label matcher of a PromQL series selector. */
export interface Matcher { label: string; op: '=' | '!=' | '=~' | '!~'; value: string }

/** Parses a series selector such as `name{a="x",b!=""}` or `{__name__=~"a|b",c="y"}`. */
export function parseSeriesSelector(selector: string): Matcher[] {
  const m = /^\s*([a-zA-Z_:][\w:]*)?\s*(?:\{(.*)\})?\s*$/s.exec(selector);
  if (!m || (!m[1] && m[2] === undefined)) throw new Error(`not a series selector: ${selector}`);
  const matchers: Matcher[] = m[1] ? [{ label: '__name__', op: '=', value: m[1] }] : [];
  const body = (m[2] ?? '').trim();
  const re = /\s*([a-zA-Z_]\w*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*(?:,|$)/y;
  for (let pos = 0; pos < body.length; pos = re.lastIndex) {
    re.lastIndex = pos;
    const x = re.exec(body);
    if (!x) throw new Error(`cannot parse the matchers of ${selector} at "${body.slice(pos)}"`);
    matchers.push({ label: x[1]!, op: x[2] as Matcher['op'], value: JSON.parse(`"${x[3]!}"`) as string });
  }
  return matchers;
}

export function matches(matchers: Matcher[], labels: Record<string, string>): boolean {
  return matchers.every(({ label, op, value }) => {
    const v = labels[label] ?? '';
    const full = new RegExp(`^(?:${value})$`);
    return op === '=' ? v === value : op === '!=' ? v !== value : op === '=~' ? full.test(v) : !full.test(v);
  });
}

/** A prometheus-adapter rule: what it selects in Prometheus, and the metric names it serves. */
export interface AdapterRule {
  seriesQuery: string;
  matchers: Matcher[];
  /** Labels Prometheus adds while scraping (`namespace`, `pod`), mapped to Kubernetes resources. */
  resourceLabels: string[];
  /** The custom-metrics name a series name is served under (prometheus-adapter's `name` rule). */
  servedAs(series: string): string | undefined;
}

/** The rules of every prometheus-adapter config (a ConfigMap with `config.yaml`) among `objects`. */
export function adapterRules(objects: Obj[]): AdapterRule[] {
  return objects
    .filter((o) => o.kind === 'ConfigMap' && typeof o.data?.['config.yaml'] === 'string')
    .flatMap((cm) => ((parseYaml(cm.data['config.yaml']) as Obj).rules ?? []) as Obj[])
    .map((r) => {
      if (r.resources?.template) throw new Error(`rule ${String(r.seriesQuery)}: resource templates are not checked yet`);
      const pattern = new RegExp(r.name?.matches ?? '^(.*)$');
      const as: string = r.name?.as || '$1';
      return {
        seriesQuery: r.seriesQuery,
        matchers: parseSeriesSelector(r.seriesQuery),
        resourceLabels: Object.keys(r.resources?.overrides ?? {}),
        servedAs: (series: string) => (pattern.test(series) ? series.replace(pattern, as) : undefined),
      };
    });
}

/** A sample of the Prometheus text format: its name and labels. */
export interface Sample { name: string; labels: Record<string, string> }

export function parseExposition(text: string): Sample[] {
  return text.split('\n').filter((l) => l && !l.startsWith('#')).map((line) => {
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+\S+/.exec(line);
    if (!m) throw new Error(`not a sample line: ${line}`);
    const labels: Record<string, string> = { __name__: m[1]! };
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_]\w*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = JSON.parse(`"${l[2]!}"`) as string;
    return { name: m[1]!, labels };
  });
}
