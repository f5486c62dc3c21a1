// The autoscaled fleet (`npm start -- --replicas auto`): the real HPA control loop drives the local
// processes. etcd, kube-apiserver, kube-controller-manager and prometheus-adapter (deploy/local/
// kube.js) run with the fleet's Prometheus; deploy/k8s's production overlay is applied as rendered
// (its Deployments and HPAs; the adapter serves deploy/k8s/prometheus-adapter's rules), and a
// follower keeps one local process per live Pod of each Deployment, so the number of processes of
// a service is its Deployment's spec.replicas, as the HPA sets it.
//
// What stands in for the cluster: nginx is each Service (a fixed port per service balancing over
// its replicas: gRPC per call, the edge and the metrics ports over HTTP) and is reloaded as
// replicas come and go; a replica leaves the upstream first, then, after the Deployment's preStop
// sleep, gets SIGTERM and its terminationGracePeriodSeconds to drain; Prometheus scrapes every
// replica with the `namespace`, `pod` and `container` labels the adapter maps to Pods. The CPU
// targets read the processes' own CPU seconds through the adapter's resource metrics API (what
// metrics-server does in a cluster).
'use strict';
const path = require('node:path');
const stack = require('./stack');
const fleetLib = require('./fleet');
const kube = require('./kube');

const OVERLAY = path.join(stack.ROOT, 'deploy/k8s/overlays/production');
const SERVICES = ['store', 'llm-broker', 'tool-service', 'orchestrator', 'edge'];

/** What a Deployment's pod template says about one replica: env values, preStop sleep, grace period. */
function podSpecOf(deployment) {
  const spec = deployment.spec.template.spec;
  const c = spec.containers[0];
  // Literal values only (secrets come from the launcher); ports and names are the launcher's, and
  // so is mutual TLS (GRPC_TLS_*: paths in the pod's Secret volume, and GRPC_ALLOWED_CALLERS, which
  // needs them; `--mtls` makes local ones of both).
  const own = (name) => ['METRICS_PORT', 'OTEL_SERVICE_NAME', 'GRPC_ALLOWED_CALLERS'].includes(name) || name.startsWith('GRPC_TLS_');
  const env = Object.fromEntries((c.env || []).filter((e) => e.value !== undefined && !own(e.name)).map((e) => [e.name, e.value]));
  return {
    container: c.name,
    env,
    preStopMs: ((c.lifecycle && c.lifecycle.preStop && c.lifecycle.preStop.sleep && c.lifecycle.preStop.sleep.seconds) || 0) * 1000,
    graceMs: (spec.terminationGracePeriodSeconds ?? 30) * 1000,
  };
}

/** Runs at most `n` of the given async jobs at once (replicas starting together starve 2 cores). */
function limiter(n) {
  let running = 0;
  const queue = [];
  const next = () => {
    if (running >= n || !queue.length) return;
    running += 1;
    const { job, resolve, reject } = queue.shift();
    job().then(resolve, reject).finally(() => { running -= 1; next(); });
  };
  return (job) => new Promise((resolve, reject) => { queue.push({ job, resolve, reject }); next(); });
}

/**
 * Starts the loop and the fleet it drives. `ports.nginx`: the edges' port; `ports.prometheus`.
 * `env` goes to every replica, `perService[name]` to a service's (on top of the Deployment's values).
 * `syncPeriod`: the HPA controller's (15s in a cluster). Resolves once every Deployment has its
 * floor of running replicas. Returns { url, prometheus, api, replicas(service), stop() }.
 */
async function startAutoscaledFleet({
  logDir, dataDir, redisUrl, mongoUri, otlpEndpoint, llmBaseUrl, llmApiKey = 'local-dev-key', jwtSecret,
  env = {}, perService = {}, ports = {}, overlay = OVERLAY, syncPeriod = '5s', scrapeInterval = '5s', startConcurrency = 2, jaegerQueryUrl,
  readyTimeoutMs = 180_000, onEvent = () => undefined,
}) {
  const objects = kube.rendered(overlay);
  const namespace = objects.find((o) => o.kind === 'Deployment').metadata.namespace;
  const deployments = Object.fromEntries(SERVICES.map((s) => [s, objects.find((o) => o.kind === 'Deployment' && o.metadata.name === s)]));
  for (const [s, d] of Object.entries(deployments)) if (!d) throw new Error(`${overlay} has no Deployment ${s}`);
  const started = [];
  const cleanups = [];
  const stopAll = async () => {
    for (const s of [...started].reverse()) await s.stop().catch(() => undefined);
    for (const c of cleanups.reverse()) c();
  };
  try {
    const netns = kube.createNetns();
    cleanups.push(netns.remove);
    const kubeDir = path.join(dataDir, 'kube');
    const api = await kube.startApiServer({ dir: kubeDir, logDir, host: netns.hostIp, aggregation: true });
    started.push({ stop: api.stop });
    started.push(await kube.startControllerManager({ api, logDir, syncPeriod }));

    // The Services: a fixed port per service (and per metrics port), before any replica exists.
    const fronts = {};
    for (const s of SERVICES.filter((x) => x !== 'edge')) {
      fronts[s] = { name: s.replace('-', '_'), port: await stack.freePort(), replicas: [], grpc: true };
      fronts[`${s}-metrics`] = { name: `${s.replace('-', '_')}_metrics`, port: await stack.freePort(), replicas: [], grpc: false };
    }
    const edges = [];
    const nginx = await fleetLib.startNginx({ port: ports.nginx, edges, logDir, dataDir: path.join(dataDir, 'nginx'), fronts: Object.values(fronts) });
    started.push(nginx);
    const reloadNginx = () => nginx.reload({ edges, fronts: Object.values(fronts) });

    const prometheus = await fleetLib.startPrometheus({
      port: ports.prometheus, targets: [], logDir, dataDir: path.join(dataDir, 'prometheus'), host: netns.hostIp,
      scrapeInterval, evaluationInterval: scrapeInterval,
    });
    started.push(prometheus);
    const targets = new Map(); // pod → target
    const writeTargets = () => prometheus.writeTargets([...targets.values()]);

    started.push(await kube.startAdapter({
      api, netns, prometheusUrl: `${prometheus.url}/`, config: kube.adapterConfig({ window: '1m' }),
      dir: path.join(kubeDir, 'adapter'), logDir,
    }));

    const addr = (s) => `127.0.0.1:${fronts[s].port}`;
    const metricsAddr = (s) => `127.0.0.1:${fronts[`${s}-metrics`].port}`;
    // The ConfigMap's LLM_ and TOOL_FALLBACK_REPLICAS (the HPAs' ceilings), for the replicas sharing limits.
    const config = objects.find((o) => o.kind === 'ConfigMap' && o.metadata.name === 'agent-mesh-config');
    const fallbacks = Object.fromEntries(Object.entries((config && config.data) || {}).filter(([k]) => /^(LLM|TOOL)_FALLBACK_REPLICAS$/.test(k)));
    const common = stack.meshEnv({ redisUrl, mongoUri, otlpEndpoint, env: { ...fallbacks, ...env } });
    const peers = { STORE_ADDR: addr('store'), LLM_BROKER_ADDR: addr('llm-broker'), TOOL_SERVICE_ADDR: addr('tool-service') };
    const wiring = {
      store: {},
      'llm-broker': { LLM_BASE_URL: llmBaseUrl, LLM_API_KEY: llmApiKey },
      'tool-service': { STORE_ADDR: addr('store') },
      orchestrator: peers,
      edge: {
        ...peers, ORCHESTRATOR_ADDR: addr('orchestrator'), AUTH_JWT_SECRET: jwtSecret, EDGE_HOST: '127.0.0.1',
        STORE_METRICS_ADDR: metricsAddr('store'), LLM_BROKER_METRICS_ADDR: metricsAddr('llm-broker'),
        TOOL_SERVICE_METRICS_ADDR: metricsAddr('tool-service'), ORCHESTRATOR_METRICS_ADDR: metricsAddr('orchestrator'),
        ...stack.opsEnv({ prometheusUrl: prometheus.url, jaegerQueryUrl }),
      },
    };
    const pods = Object.fromEntries(SERVICES.map((s) => [s, podSpecOf(deployments[s])]));
    const queue = limiter(startConcurrency);
    const upstreamOf = (s, replica) => (s === 'edge' ? edges : fronts[s].replicas);
    const metricsUpstreamOf = (s) => (s === 'edge' ? undefined : fronts[`${s}-metrics`].replicas);

    const ns = api.kubectl(['create', 'namespace', namespace]);
    if (ns.status !== 0 && !/AlreadyExists/.test(ns.stderr)) throw new Error(`creating namespace ${namespace}: ${ns.stderr}`);
    const applied = api.kubectl(['apply', '-f', '-'], objects.map((o) => JSON.stringify(o)).join('\n'));
    if (applied.status !== 0) throw new Error(`applying ${overlay}: ${applied.stderr}`);

    const live = [];
    const follower = kube.followDeployments({
      api, namespace, deployments: SERVICES,
      start: (s, pod) => queue(async () => {
        const name = pod.metadata.name;
        const h = await stack.startService(s, {
          logDir, instance: `-${name.split('-').pop()}`, readyTimeoutMs,
          env: { ...common, ...pods[s].env, ...wiring[s], ...(perService[s] || {}) },
        });
        const replica = { ...h, service: s, pod: name, upstream: h.addr, metrics: `127.0.0.1:${h.metricsPort}` };
        live.push(replica);
        upstreamOf(s).push(replica.upstream);
        if (s !== 'edge') metricsUpstreamOf(s).push(replica.metrics);
        reloadNginx();
        targets.set(name, {
          job: s, addr: s === 'edge' ? h.addr : replica.metrics, replica: name,
          labels: { namespace, pod: name, container: pods[s].container },
        });
        writeTargets();
        onEvent({ type: 'started', service: s, pod: name, addr: h.addr });
        return replica;
      }),
      // As a kubelet stops a Pod: out of the Service's endpoints, the preStop sleep, then SIGTERM
      // and the grace period before SIGKILL.
      stop: async (replica) => {
        const s = replica.service;
        const drop = (list, x) => { const i = list.indexOf(x); if (i >= 0) list.splice(i, 1); };
        drop(upstreamOf(s), replica.upstream);
        if (s !== 'edge') drop(metricsUpstreamOf(s), replica.metrics);
        reloadNginx();
        onEvent({ type: 'stopping', service: s, pod: replica.pod, addr: replica.addr });
        await new Promise((r) => setTimeout(r, pods[s].preStopMs));
        const exit = await replica.stop(pods[s].graceMs - pods[s].preStopMs);
        targets.delete(replica.pod);
        writeTargets();
        drop(live, replica);
        onEvent({ type: 'stopped', service: s, pod: replica.pod, exit });
      },
      onError: (err) => onEvent({ type: 'error', message: err.message }),
    });
    started.push({ stop: async () => { follower.stop(); await Promise.all([...live].map((r) => r.stop(pods[r.service].graceMs))); } });

    // Ready when each Deployment has its floor (the HPA's minReplicas) running.
    const floors = Object.fromEntries(objects.filter((o) => o.kind === 'HorizontalPodAutoscaler').map((h) => [h.spec.scaleTargetRef.name, h.spec.minReplicas]));
    await stack.waitFor('the autoscaled fleet', () => SERVICES.every((s) => follower.replicas(s).length >= (floors[s] || 1)),
      { timeoutMs: readyTimeoutMs * 3, intervalMs: 1000 });
    return {
      url: nginx.url, nginx, prometheus, api, namespace, netns,
      /** The running replicas of a service: [{ pod, replica }]. */
      replicas: (s) => follower.replicas(s),
      stop: stopAll,
    };
  } catch (err) {
    await stopAll();
    throw err;
  }
}

module.exports = { startAutoscaledFleet, podSpecOf, SERVICES };
