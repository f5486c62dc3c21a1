// The HPAs of deploy/k8s in the real control loop: etcd, kube-apiserver (with the front proxy),
// kube-controller-manager (HPA, Deployment and ReplicaSet controllers), prometheus-adapter serving
// custom.metrics.k8s.io and metrics.k8s.io from a network namespace, and a real Prometheus. The
// production overlay is applied as rendered; no kubelet runs, so a follower (deploy/local/kube.js,
// the one `npm start -- --replicas auto` uses) gives each Pod a simulated replica whose metrics this
// test controls, and marks the Pod Running. Each HPA must scale its Deployment up under its own
// metric to exactly what the load asks for, and back down to its floor once the load is gone.
//
// One change to the rendered HPAs: every time in their `behavior` (stabilization windows, policy
// periods) is divided by TIME_SCALE, so that the 10 minutes an edge waits before scaling down take
// one minute here. Metrics, targets, floors, ceilings and policy sizes are the manifests' own.
import http from 'node:http';
import path from 'node:path';
import { testDir } from '../support';
import {
  adapterConfig, createNetns, followDeployments, hpaMetrics, rendered, startAdapter, startApiServer, startControllerManager,
  type ApiServer, type Follower, type KubeProc, type Netns,
} from '../support/kube';
// eslint-disable-next-line @typescript-eslint/no-require-imports
const fleet = require('../../deploy/local/fleet.js');

jest.setTimeout(8 * 60_000);

const K8S = path.resolve(__dirname, '../../deploy/k8s');
const TIME_SCALE = 10;
const SCRAPE_S = 1;
type Obj = Record<string, any>;

/** Kubernetes quantities as numbers: "250m" → 0.25, "1" → 1, "1500m" → 1.5, "2k" → 2000. */
function quantity(q: string | number): number {
  const m = /^([0-9.]+)(m|k|M|Ki|Mi|Gi)?$/.exec(String(q));
  if (!m) throw new Error(`quantity ${q}`);
  const f = { m: 1e-3, k: 1e3, M: 1e6, Ki: 1024, Mi: 1024 ** 2, Gi: 1024 ** 3 }[m[2] ?? ''] ?? 1;
  return Number(m[1]) * f;
}

/**
 * Simulated replicas: each Deployment has a total CPU use (cores), spread evenly over its running
 * replicas as a load balancer spreads requests, and a load per metric (open streams, active runs,
 * calls in flight) that stays with the replica holding it, as a stream or a run stays where it
 * began: a load set is dealt out evenly over the replicas running then, a new replica starts
 * empty, and a removed replica's load moves to the others (its clients reconnect there). Each
 * replica serves its figures at /pods/<pod>/metrics.
 *
 * (Spreading the metrics evenly at every change, as before, made the HPA count load twice: right
 * after a scale-up Prometheus could hold an old replica's last sample, from before the load moved,
 * beside a new replica's first, and the edge once went to 6 replicas for 4.6 replicas' worth.)
 */
class Fleet {
  private cpu = new Map<string, number>();
  /** Each Deployment's metric names (a new replica reports each, at 0). */
  private names = new Map<string, string[]>();
  private pods = new Map<string, { deployment: string; cpuSeconds: number; at: number; metrics: Record<string, number> }>();

  set(deployment: string, metrics: Record<string, number>, cpuCores: number): void {
    this.advance();
    this.cpu.set(deployment, cpuCores);
    const peers = this.peers(deployment);
    for (const [i, pod] of peers.entries()) {
      // Whole units (streams, runs, calls), the remainder on the first replicas.
      this.pods.get(pod)!.metrics = Object.fromEntries(Object.entries(metrics).map(([name, total]) => [name, share(total, peers.length, i)]));
    }
    this.names.set(deployment, Object.keys(metrics));
  }

  add(deployment: string, pod: string): void {
    this.advance();
    this.pods.set(pod, { deployment, cpuSeconds: 0, at: Date.now(), metrics: Object.fromEntries((this.names.get(deployment) ?? []).map((n) => [n, 0])) });
  }

  remove(pod: string): void {
    this.advance();
    const gone = this.pods.get(pod);
    this.pods.delete(pod);
    if (!gone) return;
    const peers = this.peers(gone.deployment);
    for (const [name, moved] of Object.entries(gone.metrics)) {
      peers.forEach((p, i) => (this.pods.get(p)!.metrics[name]! += share(moved, peers.length, i)));
    }
  }

  private peers(deployment: string): string[] {
    return [...this.pods].filter(([, p]) => p.deployment === deployment).map(([n]) => n).sort();
  }

  /** Every replica's CPU counter moves on at its current share of the Deployment's CPU use. */
  private advance(): void {
    const now = Date.now();
    for (const p of this.pods.values()) {
      const n = this.peers(p.deployment).length;
      p.cpuSeconds += ((this.cpu.get(p.deployment) ?? 0) / n) * ((now - p.at) / 1000);
      p.at = now;
    }
  }

  exposition(pod: string): string | undefined {
    this.advance();
    const p = this.pods.get(pod);
    if (!p) return undefined;
    const lines = [`process_cpu_seconds_total ${p.cpuSeconds}`, 'process_resident_memory_bytes 104857600'];
    for (const [name, value] of Object.entries(p.metrics)) lines.push(`${name} ${value}`);
    return `${lines.join('\n')}\n`;
  }
}

/** Replica i's whole-unit share of `total` over n replicas (the remainder on the first). */
const share = (total: number, n: number, i: number) => Math.floor(total / n) + (i < total % n ? 1 : 0);

/** The production overlay as rendered, the HPAs' behavior times divided by TIME_SCALE. */
function productionObjects(): Obj[] {
  const objects = rendered(path.join(K8S, 'overlays/production'));
  for (const h of objects.filter((o) => o.kind === 'HorizontalPodAutoscaler')) {
    for (const dir of ['scaleUp', 'scaleDown']) {
      const b = h.spec.behavior?.[dir];
      if (!b) continue;
      if (b.stabilizationWindowSeconds !== undefined) b.stabilizationWindowSeconds = Math.round(b.stabilizationWindowSeconds / TIME_SCALE);
      for (const p of b.policies ?? []) p.periodSeconds = Math.max(1, Math.round(p.periodSeconds / TIME_SCALE));
    }
  }
  return objects;
}

const objects = productionObjects();
const NAMESPACE = String(objects.find((o) => o.kind === 'Deployment')!.metadata.namespace);
const hpas = objects.filter((o) => o.kind === 'HorizontalPodAutoscaler');
const deploymentOf = (h: Obj) => objects.find((o) => o.kind === 'Deployment' && o.metadata.name === h.spec.scaleTargetRef.name)!;

/**
 * What each HPA is driven by here: its custom metric (the first Pods metric) if it has one, else
 * CPU. `unit`: the load one replica should carry at the target (a metric value, or cores).
 */
interface Plan { hpa: string; deployment: string; metric: string; unit: number; min: number; max: number; downWindowS: number; downPeriodS: number }
const plans: Plan[] = hpas.map((h) => {
  const deployment = deploymentOf(h);
  const custom = hpaMetrics([h])[0];
  const cpu = h.spec.metrics.find((m: Obj) => m.type === 'Resource' && m.resource.name === 'cpu');
  const requestCores = quantity(deployment.spec.template.spec.containers[0].resources.requests.cpu);
  const policy = h.spec.behavior.scaleDown.policies[0];
  return {
    hpa: h.metadata.name, deployment: deployment.metadata.name,
    metric: custom ? custom.name : 'cpu',
    unit: custom
      ? quantity(h.spec.metrics.find((m: Obj) => m.type === 'Pods' && m.pods.metric.name === custom.name).pods.target.averageValue)
      : (requestCores * cpu.resource.target.averageUtilization) / 100,
    min: h.spec.minReplicas, max: h.spec.maxReplicas,
    downWindowS: h.spec.behavior.scaleDown.stabilizationWindowSeconds, downPeriodS: policy.periodSeconds,
  };
});
/** The CPU a replica of a custom-metric HPA's Deployment uses at rest: a tenth of its target. */
const idleCores = (p: Plan) => {
  const h = hpas.find((x) => x.metadata.name === p.hpa)!;
  const d = deploymentOf(h);
  return (quantity(d.spec.template.spec.containers[0].resources.requests.cpu) * h.spec.metrics.find((m: Obj) => m.type === 'Resource').resource.target.averageUtilization) / 1000;
};

let dir: string;
let netns: Netns | undefined;
let api: ApiServer;
let procs: KubeProc[] = [];
let follower: Follower;
let metricsServer: http.Server;
const sim = new Fleet();

/** Each Deployment's spec.replicas and running replicas, sampled every second by the test. */
const history = new Map<string, { t: number; spec: number; running: number }[]>();
let sampler: NodeJS.Timeout;

beforeAll(async () => {
  dir = testDir('k8s-autoscaling');
  netns = createNetns();
  api = await startApiServer(path.join(dir, 'api'), { host: netns.hostIp, aggregation: true });
  procs.push(await startControllerManager({ api, logDir: dir, syncPeriod: '1s', cpuInitializationPeriod: '5s', initialReadinessDelay: '1s' }));

  // The replicas' metrics, and Prometheus scraping each replica as a pod (namespace, pod, container).
  metricsServer = http.createServer((req, res) => {
    const m = /^\/pods\/([^/]+)\/metrics$/.exec(req.url ?? '');
    const body = m ? sim.exposition(m[1]!) : undefined;
    res.writeHead(body ? 200 : 404, { 'Content-Type': 'text/plain; version=0.0.4' }).end(body ?? '');
  });
  await new Promise<void>((r) => metricsServer.listen(0, '127.0.0.1', r));
  const metricsAddr = `127.0.0.1:${(metricsServer.address() as { port: number }).port}`;
  const prometheus = await fleet.startPrometheus({
    targets: [], logDir: dir, dataDir: path.join(dir, 'prometheus'), host: netns.hostIp,
    scrapeInterval: `${SCRAPE_S}s`, evaluationInterval: '15s',
  });
  procs.push(prometheus);
  const container = (d: string) => objects.find((o) => o.kind === 'Deployment' && o.metadata.name === d)!.spec.template.spec.containers[0].name;
  const registered = new Map<string, string>();
  const writeTargets = () => prometheus.writeTargets([...registered].map(([pod, d]) => ({
    job: d, addr: metricsAddr, labels: { __metrics_path__: `/pods/${pod}/metrics`, namespace: NAMESPACE, pod, container: container(d) },
  })));

  procs.push(await startAdapter({
    api, netns, prometheusUrl: `${prometheus.url}/`, config: adapterConfig({ window: `${10 * SCRAPE_S}s` }),
    dir: path.join(dir, 'adapter'), logDir: dir, relistInterval: '2s',
  }));

  for (const p of plans) sim.set(p.deployment, p.metric === 'cpu' ? {} : { [p.metric]: 0 }, p.metric === 'cpu' ? 0 : idleCores(p));
  const ns = api.kubectl(['create', 'namespace', NAMESPACE]);
  expect({ status: ns.status, stderr: ns.stderr }).toEqual({ status: 0, stderr: '' });
  const applied = api.kubectl(['apply', '-f', '-'], objects.map((o) => JSON.stringify(o)).join('\n'));
  expect({ status: applied.status, stderr: applied.stderr }).toEqual({ status: 0, stderr: '' });

  follower = followDeployments({
    api, namespace: NAMESPACE, deployments: plans.map((p) => p.deployment),
    start: (d, pod) => {
      const name = pod.metadata.name as string;
      sim.add(d, name);
      registered.set(name, d);
      writeTargets();
      return name;
    },
    stop: (name: string) => {
      sim.remove(name);
      registered.delete(name);
      writeTargets();
    },
    onError: (err) => console.warn(`follower: ${(err as Error).message}`),
  });
  sampler = setInterval(() => {
    void Promise.all(plans.map(async (p) => {
      const d = await api.request('GET', `/apis/apps/v1/namespaces/${NAMESPACE}/deployments/${p.deployment}`);
      const list = history.get(p.deployment) ?? [];
      list.push({ t: Date.now(), spec: d.spec.replicas, running: follower.replicas(p.deployment).length });
      history.set(p.deployment, list);
    })).catch(() => undefined);
  }, 1000);
});

afterAll(async () => {
  clearInterval(sampler);
  follower?.stop();
  for (const p of procs.reverse()) await p.stop();
  // Prometheus' keep-alive connections would hold close() open.
  metricsServer?.closeAllConnections();
  await new Promise((r) => (metricsServer ? metricsServer.close(r) : r(undefined)));
  await api?.stop();
  netns?.remove();
});

const hpaStatus = async (name: string): Promise<Obj> =>
  (await api.request('GET', `/apis/autoscaling/v2/namespaces/${NAMESPACE}/horizontalpodautoscalers/${name}`)).status;
const specReplicas = async (d: string): Promise<number> =>
  (await api.request('GET', `/apis/apps/v1/namespaces/${NAMESPACE}/deployments/${d}`)).spec.replicas;

/** The HPA controller's SuccessfulRescale events for `hpa`: when, and to what size. */
async function rescales(hpa: string): Promise<{ t: number; size: number }[]> {
  const selector = encodeURIComponent(`involvedObject.kind=HorizontalPodAutoscaler,involvedObject.name=${hpa}`);
  const events = (await api.request('GET', `/api/v1/namespaces/${NAMESPACE}/events?fieldSelector=${selector}`)).items as Obj[];
  return events.filter((e) => e.reason === 'SuccessfulRescale').map((e) => ({
    t: Date.parse(e.lastTimestamp ?? e.eventTime ?? e.firstTimestamp), size: Number(/New size: (\d+)/.exec(e.message)?.[1]),
  })).sort((a, b) => a.t - b.t);
}

/** Polls until `check` is true; resolves to the seconds it took, or to null after `timeoutS`. */
async function within(timeoutS: number, check: () => Promise<boolean>): Promise<number | null> {
  const start = Date.now();
  while (Date.now() - start < timeoutS * 1000) {
    if (await check().catch(() => false)) return (Date.now() - start) / 1000;
    await new Promise((r) => setTimeout(r, 500));
  }
  return null;
}

/** The value an HPA read for `metric` through the adapter (per-pod average; CPU in cores). */
function current(status: Obj, p: Plan): number | undefined {
  const m = (status.currentMetrics ?? []).find((c: Obj) => (p.metric === 'cpu' ? c.type === 'Resource' && c.resource.name === 'cpu' : c.type === 'Pods' && c.pods.metric.name === p.metric));
  if (!m) return undefined;
  return p.metric === 'cpu' ? quantity(m.resource.current.averageValue) : quantity(m.pods.current.averageValue);
}

test('every HPA has its floor of running replicas and reads each of its metrics through the adapter', async () => {
  const results = await Promise.all(plans.map(async (p) => {
    const took = await within(120, async () => {
      const s = await hpaStatus(p.hpa);
      const active = (s.conditions ?? []).find((c: Obj) => c.type === 'ScalingActive')?.status === 'True';
      const hpa = hpas.find((h) => h.metadata.name === p.hpa)!;
      return active && s.currentReplicas === p.min && follower.replicas(p.deployment).length === p.min
        && (s.currentMetrics ?? []).length === hpa.spec.metrics.length && current(s, p) !== undefined;
    });
    return { hpa: p.hpa, ready: took !== null };
  }));
  expect(results).toEqual(plans.map((p) => ({ hpa: p.hpa, ready: true })));
});

// Load for `up` replicas minus a little: at the floor the metric is well above target, and at
// `up` replicas it sits within the HPA's 10 % tolerance below target, so `up` is where it settles.
const upOf = (p: Plan) => p.min + 2;
const loadFor = (p: Plan, replicas: number) => (replicas - 0.4) * p.unit;

describe('under load each HPA scales its Deployment up, and back down once the load is gone', () => {
  let loadOffAt: number | undefined;
  /**
   * Per HPA: the last time its status said its own recommendation was the `up` replicas it had:
   * condition AbleToScale with reason ReadyForNewScale ("recommended size matches current size");
   * a lower recommendation held up by the scale-down window shows as ScaleDownStabilized. The
   * window runs from its last recommendation of `up`, and a reading may dip while the load is on (a
   * new pod's CPU rate window not yet full, a pod without metrics yet, a scrape late on a busy
   * machine), so it is not always when the load went.
   */
  const lastUpAt = new Map<string, number>();
  const recommendsCurrent = (s: Obj): boolean =>
    (s.conditions ?? []).some((c: Obj) => c.type === 'AbleToScale' && c.status === 'True' && c.reason === 'ReadyForNewScale');
  /** Follows each HPA's status until the load goes, noting when it last recommended `up`. */
  const watchUp = async (p: Plan) => {
    while (watching) {
      const s = await hpaStatus(p.hpa).catch(() => undefined);
      if (s && s.currentReplicas === upOf(p) && recommendsCurrent(s)) lastUpAt.set(p.hpa, Date.now());
      await new Promise((r) => setTimeout(r, 500));
    }
  };
  const watchers: Promise<void>[] = [];
  let watching = true;
  afterAll(() => { watching = false; });

  test('up: to the replicas the load needs, within a minute, and no further', async () => {
    for (const p of plans) expect({ hpa: p.hpa, roomToScale: p.max >= upOf(p) }).toEqual({ hpa: p.hpa, roomToScale: true });
    const startedAt = Date.now();
    for (const p of plans) {
      const total = loadFor(p, upOf(p));
      if (p.metric === 'cpu') sim.set(p.deployment, {}, total);
      else sim.set(p.deployment, { [p.metric]: Math.round(total) }, idleCores(p));
    }
    const results = await Promise.all(plans.map(async (p) => {
      const took = await within(60, async () => (await specReplicas(p.deployment)) === upOf(p) && follower.replicas(p.deployment).length === upOf(p));
      watchers.push(watchUp(p));
      // Settled: a few HPA periods later it still asks for exactly that many.
      await new Promise((r) => setTimeout(r, 8000));
      // What the HPA reads through Prometheus and the adapter comes to each replica's share of the
      // load (a CPU rate over the new pods' first samples takes a few scrapes more to get there).
      const perReplica = loadFor(p, upOf(p)) / upOf(p);
      const readShare = await within(30, async () => Math.abs((current(await hpaStatus(p.hpa), p) ?? Infinity) - perReplica) <= 0.15 * perReplica);
      const s = await hpaStatus(p.hpa);
      const seen = (history.get(p.deployment) ?? []).filter((h) => h.t >= startedAt).map((h) => h.spec);
      return {
        hpa: p.hpa, metric: p.metric, reached: took !== null, replicas: s.desiredReplicas, highest: Math.max(...seen),
        readShare: readShare !== null,
        tookS: took,
      };
    }));
    console.log(`scale-up: ${JSON.stringify(results.map(({ hpa, tookS }) => ({ hpa, tookS })))}`);
    expect(results.map(({ tookS: _t, ...r }) => r)).toEqual(plans.map((p) => ({
      hpa: p.hpa, metric: p.metric, reached: true, replicas: upOf(p), highest: upOf(p), readShare: true,
    })));
    loadOffAt = Date.now();
    watching = false;
    await Promise.all(watchers);
  });

  test('down: to the floor after the scale-down stabilization window, one replica per policy period', async () => {
    expect(loadOffAt).toBeDefined();
    for (const p of plans) sim.set(p.deployment, p.metric === 'cpu' ? {} : { [p.metric]: 0 }, p.metric === 'cpu' ? 0.05 * p.unit : idleCores(p));
    const results = await Promise.all(plans.map(async (p) => {
      const limitS = p.downWindowS + (upOf(p) - p.min) * p.downPeriodS + 30;
      const took = await within(limitS, async () => (await specReplicas(p.deployment)) === p.min && follower.replicas(p.deployment).length === p.min);
      // When the controller scaled, from its own events (whole seconds), not from this test's
      // samples (late on a busy machine).
      const all = await rescales(p.hpa);
      const steps = all.filter((e) => e.t >= loadOffAt! - 1000);
      const firstDown = steps.find((e) => e.size === upOf(p) - 1);
      const secondDown = steps.find((e) => e.size === upOf(p) - 2);
      // The window runs from the HPA's last recommendation of `up` replicas (see lastUpAt), at its
      // last sync before the status showed it: up to a sync period and the status write earlier.
      const windowFrom = (lastUpAt.get(p.hpa) ?? Infinity) - 2000;
      return {
        hpa: p.hpa, reachedFloor: took !== null,
        // Not before the window (less a second of the events' rounding).
        waitedWindow: firstDown !== undefined && windowFrom !== undefined && (firstDown.t - windowFrom) / 1000 >= p.downWindowS - 1,
        // One replica at a time: the second step at least a policy period after the first.
        onePerPeriod: firstDown !== undefined && secondDown !== undefined && (secondDown.t - firstDown.t) / 1000 >= p.downPeriodS - 1,
        tookS: took,
      };
    }));
    console.log(`scale-down: ${JSON.stringify(results.map(({ hpa, tookS }) => ({ hpa, tookS })))}`);
    expect(results.map(({ tookS: _t, ...r }) => r)).toEqual(plans.map((p) => ({ hpa: p.hpa, reachedFloor: true, waitedWindow: true, onePerPeriod: true })));
  });
});
