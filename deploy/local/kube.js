// A real Kubernetes control plane without a cluster, for the manifest and autoscaling tests and
// `npm start -- --replicas auto`: Debian's etcd, kube-apiserver, kube-controller-manager (the HPA,
// Deployment and ReplicaSet controllers) and prometheus-adapter, built by deploy/k8s/tools/install.sh.
// No kubelet or scheduler runs: Pods stay Pending until a follower (followDeployments below) starts
// something for them and marks them Running. Plain CommonJS, like stack.js.
'use strict';
const { spawnSync } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const https = require('node:https');
const path = require('node:path');
const { parse: parseYaml, parseAllDocuments, stringify } = require('yaml');
const stack = require('./stack');

/** Path of a binary deploy/k8s/tools/install.sh builds; throws when it is missing. */
function kubeBinary(name) {
  const p = path.join(stack.BIN, name);
  if (!fs.existsSync(p)) throw new Error(`${p} is missing: run bash deploy/k8s/tools/install.sh (test/run.sh does)`);
  return p;
}

/** `kubectl kustomize <dir>`: the objects a kustomization renders to, as YAML. */
function kustomize(dir) {
  return spawnSync(kubeBinary('kubectl'), ['kustomize', dir], { encoding: 'utf8', maxBuffer: 64 << 20 });
}

/** The objects `kubectl kustomize <dir>` renders, parsed. */
function rendered(dir) {
  const out = kustomize(dir);
  if (out.status !== 0) throw new Error(`kubectl kustomize ${dir}: ${out.stderr}`);
  return parseAllDocuments(out.stdout).map((d) => d.toJS()).filter((o) => o && typeof o === 'object');
}

function run(cmd, args, input) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', input });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr || r.error}`);
  return r.stdout;
}

/**
 * A network namespace with a veth pair: `hostIp` on this side, `nsIp` inside, a /30 of their own
 * (10.201.0.0/16, picked at random and checked free). An aggregated API server's Endpoints may not
 * be loopback addresses, and nothing here may listen on the machine's external interface: the
 * adapter listens on `nsIp`, and what it calls (the API server, Prometheus) on `hostIp`.
 */
function createNetns() {
  const used = run('ip', ['-o', '-4', 'addr']);
  for (let attempt = 0; attempt < 20; attempt++) {
    const k = crypto.randomInt(0, 1 << 14);
    const base = (10 << 24) | (201 << 16) | (k << 2);
    const ip = (n) => [24, 16, 8, 0].map((s) => ((base + n) >>> s) & 255).join('.');
    const [hostIp, nsIp] = [ip(1), ip(2)];
    if (used.includes(` ${hostIp}/`) || used.includes(` ${nsIp}/`)) continue;
    const id = crypto.randomBytes(3).toString('hex');
    const name = `mesh-${id}`;
    const [hostIf, nsIf] = [`mh${id}`, `mn${id}`];
    const steps = [
      ['netns', 'add', name],
      ['link', 'add', hostIf, 'type', 'veth', 'peer', 'name', nsIf],
      ['link', 'set', nsIf, 'netns', name],
      ['addr', 'add', `${hostIp}/30`, 'dev', hostIf],
      ['link', 'set', hostIf, 'up'],
      ['-n', name, 'addr', 'add', `${nsIp}/30`, 'dev', nsIf],
      ['-n', name, 'link', 'set', nsIf, 'up'],
      ['-n', name, 'link', 'set', 'lo', 'up'],
    ];
    const remove = () => {
      // Deleting the namespace deletes its end of the pair, and with it the pair.
      spawnSync('ip', ['netns', 'del', name]);
      spawnSync('ip', ['link', 'del', hostIf], { stdio: 'ignore' });
    };
    try {
      for (const s of steps) run('ip', s);
    } catch (err) {
      remove();
      throw new Error(`creating network namespace ${name} (needs root): ${err.message}`);
    }
    return { name, hostIp, nsIp, remove };
  }
  throw new Error('no free /30 in 10.201.0.0/16 for a network namespace');
}

/** A CA and a client certificate signed by it, with openssl: the API server's front proxy. */
function frontProxyCerts(dir) {
  fs.mkdirSync(dir, { recursive: true });
  const f = (n) => path.join(dir, n);
  run('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '7', '-subj', '/CN=front-proxy-ca',
    '-keyout', f('front-proxy-ca.key'), '-out', f('front-proxy-ca.crt')]);
  run('openssl', ['req', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=front-proxy-client',
    '-keyout', f('front-proxy-client.key'), '-out', f('front-proxy-client.csr')]);
  fs.writeFileSync(f('client.ext'), 'extendedKeyUsage=clientAuth\n');
  run('openssl', ['x509', '-req', '-in', f('front-proxy-client.csr'), '-CA', f('front-proxy-ca.crt'), '-CAkey', f('front-proxy-ca.key'),
    '-CAcreateserial', '-days', '7', '-extfile', f('client.ext'), '-out', f('front-proxy-client.crt')]);
  return { ca: f('front-proxy-ca.crt'), cert: f('front-proxy-client.crt'), key: f('front-proxy-client.key') };
}

/**
 * Starts etcd and kube-apiserver with their data in `dir`, the API server on `host` (loopback by
 * default) and a free port, and writes a kubeconfig for a cluster admin (static token). With
 * `aggregation`, the API server gets the front-proxy flags an aggregated API server (the
 * prometheus-adapter) needs, and routes to such servers by their Endpoints.
 * Resolves once /readyz answers ok. Returns { url, kubeconfig, kubectl(args, input), request, stop }.
 */
async function startApiServer({ dir, logDir = dir, host = '127.0.0.1', aggregation = false }) {
  const apiserver = kubeBinary('kube-apiserver');
  const kubectl = kubeBinary('kubectl');
  fs.mkdirSync(dir, { recursive: true });
  const [clientPort, peerPort, securePort] = [await stack.freePort(), await stack.freePort(), await stack.freePort()];
  const etcdUrl = `http://127.0.0.1:${clientPort}`;
  const peerUrl = `http://127.0.0.1:${peerPort}`;
  const etcd = stack.launch(`etcd-${clientPort}`, 'etcd', [
    '--name', 'test', '--data-dir', path.join(dir, 'etcd'),
    '--listen-client-urls', etcdUrl, '--advertise-client-urls', etcdUrl,
    '--listen-peer-urls', peerUrl, '--initial-advertise-peer-urls', peerUrl, '--initial-cluster', `test=${peerUrl}`,
  ], { logDir });
  try {
    await stack.waitFor('etcd', async () => (await fetch(`${etcdUrl}/health`)).ok, { proc: etcd.proc, timeoutMs: 30_000, intervalMs: 300 });
  } catch (err) {
    await etcd.stop();
    throw new Error(`${err.message}\n${etcd.log()}`);
  }

  // Service-account token signing keys and a static admin token: no certificates to issue.
  const { publicKey, privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  fs.writeFileSync(path.join(dir, 'sa.pub'), publicKey.export({ type: 'spki', format: 'pem' }));
  fs.writeFileSync(path.join(dir, 'sa.key'), privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
  const token = crypto.randomBytes(24).toString('hex');
  fs.writeFileSync(path.join(dir, 'tokens.csv'), `${token},admin,admin,system:masters\n`, { mode: 0o600 });
  const certDir = path.join(dir, 'certs');
  const args = [
    `--etcd-servers=${etcdUrl}`,
    `--secure-port=${securePort}`, `--bind-address=${host}`, ...(host === '127.0.0.1' ? [] : [`--advertise-address=${host}`]),
    `--cert-dir=${certDir}`,
    '--service-account-issuer=https://kubernetes.default.svc',
    `--service-account-key-file=${path.join(dir, 'sa.pub')}`,
    `--service-account-signing-key-file=${path.join(dir, 'sa.key')}`,
    `--token-auth-file=${path.join(dir, 'tokens.csv')}`,
    '--authorization-mode=RBAC', '--service-cluster-ip-range=10.96.0.0/16',
    '--profiling=false',
  ];
  if (aggregation) {
    const fp = frontProxyCerts(path.join(dir, 'front-proxy'));
    args.push(
      `--requestheader-client-ca-file=${fp.ca}`, '--requestheader-allowed-names=front-proxy-client',
      '--requestheader-username-headers=X-Remote-User', '--requestheader-group-headers=X-Remote-Group',
      '--requestheader-extra-headers-prefix=X-Remote-Extra-',
      `--proxy-client-cert-file=${fp.cert}`, `--proxy-client-key-file=${fp.key}`,
      // Call aggregated API servers at their Endpoints' addresses (no kube-proxy for Service IPs).
      '--enable-aggregator-routing=true',
    );
  }
  const server = stack.launch(`kube-apiserver-${securePort}`, apiserver, args, { logDir });

  const url = `https://${host}:${securePort}`;
  const kubeconfig = path.join(dir, 'kubeconfig');
  fs.writeFileSync(kubeconfig, [
    'apiVersion: v1', 'kind: Config', 'current-context: test',
    `clusters: [{name: test, cluster: {server: "${url}", insecure-skip-tls-verify: true}}]`,
    `users: [{name: admin, user: {token: "${token}"}}]`,
    'contexts: [{name: test, context: {cluster: test, user: admin}}]', '',
  ].join('\n'), { mode: 0o600 });
  const kubectlRun = (a, input) => spawnSync(kubectl, ['--kubeconfig', kubeconfig, ...a], { encoding: 'utf8', input, maxBuffer: 64 << 20 });
  const stop = async () => {
    await server.stop();
    await etcd.stop();
  };
  try {
    await stack.waitFor('kube-apiserver', () => kubectlRun(['get', '--raw=/readyz']).stdout.trim() === 'ok',
      { proc: server.proc, timeoutMs: 90_000, intervalMs: 300 });
  } catch (err) {
    await stop();
    throw new Error(`${err.message}\n${server.log().slice(-4000)}`);
  }
  // The self-signed serving certificate the API server wrote (it names `host`).
  const ca = fs.readFileSync(path.join(certDir, 'apiserver.crt'));
  return { url, host, token, kubeconfig, kubectl: kubectlRun, request: apiRequest({ url, token, ca }), procs: [etcd, server], stop };
}

/**
 * A small client of the API server's REST interface (JSON in and out). Resolves to the parsed
 * body; rejects with the server's message on a status ≥ 400 (err.status holds it).
 */
function apiRequest({ url, token, ca }) {
  const agent = new https.Agent({ ca, keepAlive: true, maxSockets: 8 });
  return (method, p, body, contentType = 'application/json') => new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const req = https.request(`${url}${p}`, {
      method, agent, headers: { Authorization: `Bearer ${token}`, Accept: 'application/json', ...(data ? { 'Content-Type': contentType, 'Content-Length': data.length } : {}) },
    }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let parsed;
        try { parsed = text ? JSON.parse(text) : undefined; } catch { parsed = text; }
        if (res.statusCode >= 400) {
          const err = new Error(`${method} ${p}: ${res.statusCode} ${parsed && parsed.message ? parsed.message : text.slice(0, 300)}`);
          err.status = res.statusCode;
          reject(err);
        } else resolve(parsed);
      });
    });
    req.setTimeout(15_000, () => req.destroy(new Error(`${method} ${p}: timed out`)));
    req.on('error', reject);
    if (data) req.write(data);
    req.end();
  });
}

/**
 * kube-controller-manager with the controllers the HPA loop needs, and nothing that would need
 * a kubelet. `syncPeriod`: how often each HPA is evaluated (15s in a cluster). Pods count for CPU
 * from `cpuInitializationPeriod` after their start (5m in a cluster).
 */
async function startControllerManager({ api, logDir, syncPeriod = '15s', cpuInitializationPeriod = '5m', initialReadinessDelay = '30s' }) {
  const h = stack.launch(`kube-controller-manager-${path.basename(path.dirname(api.kubeconfig))}`, kubeBinary('kube-controller-manager'), [
    `--kubeconfig=${api.kubeconfig}`,
    '--controllers=horizontal-pod-autoscaler-controller,deployment-controller,replicaset-controller,serviceaccount-controller,garbage-collector-controller',
    '--leader-elect=false', '--secure-port=0', '--use-service-account-credentials=false',
    `--horizontal-pod-autoscaler-sync-period=${syncPeriod}`,
    `--horizontal-pod-autoscaler-cpu-initialization-period=${cpuInitializationPeriod}`,
    `--horizontal-pod-autoscaler-initial-readiness-delay=${initialReadinessDelay}`,
    '--profiling=false',
  ], { logDir });
  // Ready when the serviceaccount controller has given the default namespace its account.
  await stack.waitFor('kube-controller-manager', () => api.kubectl(['get', 'serviceaccount', 'default', '-o', 'name']).status === 0,
    { proc: h.proc, timeoutMs: 60_000, intervalMs: 500 });
  return h;
}

/**
 * What the local loop adds to deploy/k8s's adapter rules: the resource metrics API
 * (metrics.k8s.io), which metrics-server serves in a cluster, so that the HPAs' CPU targets work.
 * A process's CPU seconds and resident memory stand for its container's; `window` is the rate's
 * range (a few scrape intervals).
 */
function resourceRules({ window = '1m' } = {}) {
  const resources = { overrides: { namespace: { resource: 'namespace' }, pod: { resource: 'pod' }, node: { resource: 'node' } } };
  return {
    cpu: {
      containerQuery: `sum(rate(process_cpu_seconds_total{<<.LabelMatchers>>,container!=""}[${window}])) by (<<.GroupBy>>)`,
      nodeQuery: `sum(rate(process_cpu_seconds_total{<<.LabelMatchers>>,node!=""}[${window}])) by (<<.GroupBy>>)`,
      resources,
      containerLabel: 'container',
    },
    memory: {
      containerQuery: 'sum(process_resident_memory_bytes{<<.LabelMatchers>>,container!=""}) by (<<.GroupBy>>)',
      nodeQuery: 'sum(process_resident_memory_bytes{<<.LabelMatchers>>,node!=""}) by (<<.GroupBy>>)',
      resources,
      containerLabel: 'container',
    },
    window,
  };
}

/** The adapter's configuration: the rules shipped in deploy/k8s/prometheus-adapter, plus `resourceRules`. */
function adapterConfig({ rulesDir = path.join(stack.ROOT, 'deploy/k8s/prometheus-adapter'), window } = {}) {
  const cms = rendered(rulesDir).filter((o) => o.kind === 'ConfigMap' && typeof (o.data || {})['config.yaml'] === 'string');
  if (cms.length !== 1) throw new Error(`${rulesDir}: expected one ConfigMap with config.yaml, found ${cms.length}`);
  const config = parseYaml(cms[0].data['config.yaml']);
  return { ...config, resourceRules: resourceRules({ window }) };
}

/**
 * prometheus-adapter inside `netns`, registered with the API server as the aggregated API server
 * for custom.metrics.k8s.io and metrics.k8s.io (APIServices → a Service in `namespace` → manual
 * Endpoints at the namespace's address). `prometheusUrl` must be reachable from the namespace.
 * Resolves once the HPA's view works: both APIs are Available and list their resources.
 */
async function startAdapter({ api, netns, prometheusUrl, config, dir, logDir, namespace = 'monitoring', relistInterval = '30s' }) {
  fs.mkdirSync(dir, { recursive: true });
  const port = await stack.freePort();
  const configFile = path.join(dir, 'adapter-config.yaml');
  fs.writeFileSync(configFile, stringify(config));
  // The adapter's own kubeconfig: the API server at its namespace-reachable address.
  const h = stack.launch(`prometheus-adapter-${port}`, 'ip', ['netns', 'exec', netns.name, kubeBinary('prometheus-adapter'),
    `--lister-kubeconfig=${api.kubeconfig}`, `--authentication-kubeconfig=${api.kubeconfig}`, `--authorization-kubeconfig=${api.kubeconfig}`,
    `--secure-port=${port}`, `--bind-address=${netns.nsIp}`, `--cert-dir=${path.join(dir, 'certs')}`,
    `--prometheus-url=${prometheusUrl}`, `--metrics-relist-interval=${relistInterval}`, `--config=${configFile}`,
    '--v=1',
  ], { logDir });
  const objects = [
    { apiVersion: 'v1', kind: 'Namespace', metadata: { name: namespace } },
    { apiVersion: 'v1', kind: 'Service', metadata: { name: 'prometheus-adapter', namespace }, spec: { ports: [{ name: 'https', port: 443, targetPort: port }] } },
    { apiVersion: 'v1', kind: 'Endpoints', metadata: { name: 'prometheus-adapter', namespace }, subsets: [{ addresses: [{ ip: netns.nsIp }], ports: [{ name: 'https', port }] }] },
    ...[['custom.metrics.k8s.io', 'v1beta1'], ['custom.metrics.k8s.io', 'v1beta2'], ['metrics.k8s.io', 'v1beta1']].map(([group, version]) => ({
      apiVersion: 'apiregistration.k8s.io/v1', kind: 'APIService', metadata: { name: `${version}.${group}` },
      spec: { group, version, service: { namespace, name: 'prometheus-adapter', port: 443 }, insecureSkipTLSVerify: true, groupPriorityMinimum: 100, versionPriority: 100 },
    })),
  ];
  const applied = api.kubectl(['apply', '-f', '-'], objects.map((o) => JSON.stringify(o)).join('\n'));
  if (applied.status !== 0) { await h.stop(); throw new Error(`registering the adapter: ${applied.stderr}`); }
  try {
    await stack.waitFor('prometheus-adapter', () =>
      api.kubectl(['get', '--raw', '/apis/custom.metrics.k8s.io/v1beta2']).status === 0
      && api.kubectl(['get', '--raw', '/apis/metrics.k8s.io/v1beta1']).status === 0, { proc: h.proc, timeoutMs: 90_000, intervalMs: 1000 });
  } catch (err) {
    await h.stop();
    throw new Error(`${err.message}\n${h.log().slice(-4000)}`);
  }
  return { ...h, port };
}

/**
 * Keeps one local replica per live Pod of each Deployment: for a new Pod, `start(deployment, pod)`
 * (resolving to a replica handle), then its status is patched to Running and Ready (what a kubelet
 * would report); for a Pod that is gone or terminating, `stop(replica)` (a drain, as preStop and
 * SIGTERM would). Polls every `intervalMs`. Returns { replicas(deployment), stop() }; stop() leaves
 * the replicas running (their owner stops them).
 */
function followDeployments({ api, namespace, deployments, start, stop, intervalMs = 1000, onError = () => undefined }) {
  const live = new Map(deployments.map((d) => [d, new Map()])); // deployment → pod name → { replica, starting }
  let stopped = false;
  let timer;
  const podsPath = `/api/v1/namespaces/${namespace}/pods`;
  const markRunning = (pod) => {
    const now = new Date().toISOString();
    const cond = (type) => ({ type, status: 'True', lastTransitionTime: now });
    return api.request('PATCH', `${podsPath}/${pod}/status`, {
      status: { phase: 'Running', startTime: now, conditions: ['PodScheduled', 'Initialized', 'ContainersReady', 'Ready'].map(cond) },
    }, 'application/merge-patch+json');
  };
  const tick = async () => {
    for (const d of deployments) {
      const dep = await api.request('GET', `/apis/apps/v1/namespaces/${namespace}/deployments/${d}`);
      const selector = Object.entries(dep.spec.selector.matchLabels).map(([k, v]) => `${k}=${v}`).join(',');
      const pods = (await api.request('GET', `${podsPath}?labelSelector=${encodeURIComponent(selector)}`)).items
        .filter((p) => !p.metadata.deletionTimestamp);
      const names = new Set(pods.map((p) => p.metadata.name));
      const mine = live.get(d);
      for (const [name, entry] of mine) {
        if (names.has(name) || entry.starting) continue;
        mine.delete(name);
        Promise.resolve(stop(entry.replica, d, name)).catch(onError);
      }
      for (const pod of pods) {
        const name = pod.metadata.name;
        if (mine.has(name)) continue;
        const entry = { starting: true };
        mine.set(name, entry);
        (async () => {
          try {
            entry.replica = await start(d, pod);
            await markRunning(name);
          } catch (err) {
            if (entry.replica) Promise.resolve(stop(entry.replica, d, name)).catch(onError);
            mine.delete(name);
            onError(err);
            return;
          }
          entry.starting = false;
        })();
      }
    }
  };
  const loop = async () => {
    try { await tick(); } catch (err) { onError(err); }
    if (!stopped) timer = setTimeout(loop, intervalMs);
  };
  loop();
  return {
    replicas: (d) => [...live.get(d).entries()].filter(([, e]) => !e.starting).map(([pod, e]) => ({ pod, replica: e.replica })),
    stop: () => { stopped = true; clearTimeout(timer); },
  };
}

module.exports = {
  kubeBinary, kustomize, rendered, createNetns, frontProxyCerts, startApiServer, apiRequest,
  startControllerManager, resourceRules, adapterConfig, startAdapter, followDeployments,
};
