// A real Kubernetes control plane without a cluster, for the manifest and autoscaling tests
// (deploy/local/kube.js, which `npm start -- --replicas auto` uses too): Debian's etcd, a
// kube-apiserver, kube-controller-manager and prometheus-adapter built by
// deploy/k8s/tools/install.sh (no kubelet, so no pod runs unless a follower marks it Running; every
// object is validated, admitted and stored as in a cluster), and the kubectl of the same version,
// whose built-in kustomize renders the overlays.
import type { ChildProcess, SpawnSyncReturns } from 'node:child_process';
import { parse as parseYaml } from 'yaml';
// eslint-disable-next-line @typescript-eslint/no-require-imports
const kube = require('../../deploy/local/kube.js');

/** Path of a binary deploy/k8s/tools/install.sh builds; throws (never skips) when it is missing. */
export const kubeBinary: (name: 'kubectl' | 'kube-apiserver' | 'kube-controller-manager' | 'prometheus-adapter') => string = kube.kubeBinary;

/** `kubectl kustomize <dir>`: the objects an overlay renders to, as YAML. */
export const kustomize: (dir: string) => SpawnSyncReturns<string> = kube.kustomize;

export interface KubeProc { name: string; proc: ChildProcess; logFile: string; log(): string; stop(graceMs?: number): Promise<unknown> }

export interface ApiServer {
  url: string;
  host: string;
  kubeconfig: string;
  /** Runs kubectl against this API server. */
  kubectl(args: string[], input?: string): SpawnSyncReturns<string>;
  /** The REST interface, JSON in and out; rejects on a status >= 400. */
  request(method: string, path: string, body?: unknown, contentType?: string): Promise<any>;
  stop(): Promise<void>;
}

/**
 * Starts etcd and kube-apiserver on free ports (the API server on `host`, loopback by default)
 * with their data in `dir`, and writes a kubeconfig for a cluster admin (static token). With
 * `aggregation`, the front-proxy flags an aggregated API server needs. Resolves once /readyz is ok.
 */
export function startApiServer(dir: string, opts: { host?: string; aggregation?: boolean } = {}): Promise<ApiServer> {
  return kube.startApiServer({ dir, ...opts });
}

export interface Netns { name: string; hostIp: string; nsIp: string; remove(): void }
/** A network namespace joined to this one by a veth pair of private addresses (root only). */
export const createNetns: () => Netns = kube.createNetns;

export const startControllerManager: (o: {
  api: ApiServer; logDir: string; syncPeriod?: string; cpuInitializationPeriod?: string; initialReadinessDelay?: string;
}) => Promise<KubeProc> = kube.startControllerManager;

/** deploy/k8s/prometheus-adapter's rules plus the resource-metrics rules of the local loop. */
export const adapterConfig: (o?: { rulesDir?: string; window?: string }) => Record<string, any> = kube.adapterConfig;

export const startAdapter: (o: {
  api: ApiServer; netns: Netns; prometheusUrl: string; config: Record<string, any>; dir: string; logDir: string; namespace?: string; relistInterval?: string;
}) => Promise<KubeProc & { port: number }> = kube.startAdapter;

export interface Follower { replicas(deployment: string): { pod: string; replica: any }[]; stop(): void }
/** One local replica per live Pod of each Deployment (see deploy/local/kube.js). */
export const followDeployments: <R>(o: {
  api: ApiServer; namespace: string; deployments: string[]; intervalMs?: number;
  start(deployment: string, pod: Record<string, any>): Promise<R> | R;
  stop(replica: R, deployment: string, pod: string): Promise<unknown> | unknown;
  onError?(err: unknown): void;
}) => Follower = kube.followDeployments;

// ---------------------------------------------------------------------------------------------
// The metrics the autoscaling manifests refer to: HPA metrics and prometheus-adapter rules.

type Obj = Record<string, any>;

/** The objects `kubectl kustomize <dir>` renders, parsed. */
export const rendered: (dir: string) => Obj[] = kube.rendered;

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
