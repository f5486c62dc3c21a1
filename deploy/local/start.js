// Runs the local system: infrastructure (reusing what already listens on the default ports),
// the upstream emulator (unless LLM_BASE_URL or LLM_UPSTREAMS is set), and the five services on
// their default ports; prints the web address and a dev token; Ctrl-C stops everything it started.
'use strict';
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const stack = require('./stack');
const fleetLib = require('./fleet');
const autoscale = require('./autoscale');
const redisHa = require('./redis-ha');

const env = process.env;
const dataDir = path.join(stack.ROOT, '.mesh');
const logDir = path.join(dataDir, 'logs');
fs.mkdirSync(logDir, { recursive: true });

function devSecret() {
  if (env.AUTH_JWT_SECRET) return env.AUTH_JWT_SECRET;
  const file = path.join(dataDir, 'dev-jwt-secret');
  if (!fs.existsSync(file)) fs.writeFileSync(file, crypto.randomBytes(32).toString('hex'), { mode: 0o600 });
  return fs.readFileSync(file, 'utf8').trim();
}

const port = (name, dflt) => Number(env[name] || dflt);

/**
 * `--replicas N` (or MESH_REPLICAS=N): N of every service, the edges behind nginx. Default 1.
 * `--replicas auto`: as many as the HPAs of deploy/k8s ask for (deploy/local/autoscale.js).
 */
function replicasWanted() {
  const i = process.argv.indexOf('--replicas');
  const raw = i >= 0 ? process.argv[i + 1] : env.MESH_REPLICAS || '1';
  if (raw === 'auto') return raw;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1 || n > 16) {
    console.error(`[start] --replicas / MESH_REPLICAS must be "auto" or an integer from 1 to 16, got "${raw}"`);
    process.exit(2);
  }
  return n;
}
const replicas = replicasWanted();
/**
 * `--redis single|sentinel|cluster` (or MESH_REDIS): one redis-server (default); a primary, a
 * replica and three sentinels; or a cluster of three primaries with a replica each.
 */
function redisWanted() {
  const i = process.argv.indexOf('--redis');
  const raw = i >= 0 ? process.argv[i + 1] : env.MESH_REDIS || 'single';
  if (!['single', 'sentinel', 'cluster'].includes(raw)) {
    console.error(`[start] --redis / MESH_REDIS must be single, sentinel or cluster, got "${raw}"`);
    process.exit(2);
  }
  return raw;
}
const redisMode = redisWanted();
/** `--mtls` (or MESH_MTLS=1): every gRPC call mutual TLS, with a throwaway CA made in .mesh/tls. */
const mtls = process.argv.includes('--mtls') || env.MESH_MTLS === '1';

async function main() {
  const started = [];
  const stopAll = async () => {
    for (const p of started.reverse()) await p.stop().catch(() => undefined);
  };
  let stopping = false;
  const onSignal = () => {
    if (stopping) return;
    stopping = true;
    console.log('\nstopping…');
    stopAll().then(() => process.exit(0));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  try {
    const use = async (what, p, startIt) => {
      if (await stack.portOpen(p)) {
        console.log(`[start] ${what}: already running on ${p}, using it`);
        return undefined;
      }
      const h = await startIt();
      started.push(h);
      console.log(`[start] ${what}: started on ${p}`);
      return h;
    };
    const redisPort = port('REDIS_PORT', 6379);
    const mongoPort = port('MONGO_PORT', 27017);
    const redisEnv = await startRedisTopology(use, redisPort, logDir);
    // PostgreSQL (data in .mesh/postgres) under FerretDB; MESH_FERRET_BACKEND=sqlite: the old
    // SQLite backend (data in .mesh/ferretdb), one writer at a time.
    if ((env.MESH_FERRET_BACKEND || 'postgresql') === 'sqlite') {
      await use('ferretdb (sqlite)', mongoPort, () => stack.startFerret({ port: mongoPort, logDir, backend: 'sqlite', dataDir: path.join(dataDir, 'ferretdb') }));
    } else {
      const pgPort = port('PG_PORT', 55432);
      await use('postgres', pgPort, () => stack.startPostgres({ port: pgPort, logDir, dataDir: path.join(dataDir, 'postgres') }));
      await use('ferretdb', mongoPort, () => stack.startFerret({ port: mongoPort, logDir, postgresUrl: `postgres://postgres@127.0.0.1:${pgPort}/ferretdb` }));
    }
    await use('jaeger', 16686, () => stack.startJaeger({ otlpHttpPort: 4318, otlpGrpcPort: 4317, queryPort: 16686, logDir }));

    let llmBaseUrl = env.LLM_BASE_URL;
    if (env.LLM_UPSTREAMS) {
      // The broker reads its upstreams (and their keys' variables) from this environment.
      console.log('[start] upstreams: LLM_UPSTREAMS (no emulator)');
    } else if (!llmBaseUrl) {
      const emuPort = port('EMULATOR_PORT', 8090);
      await use('emulator', emuPort, () => stack.startEmulator({ port: emuPort, logDir }));
      llmBaseUrl = `http://127.0.0.1:${emuPort}/v1`;
    } else {
      console.log(`[start] upstream: ${llmBaseUrl} (no emulator)`);
    }

    const secret = devSecret();
    const wiring = {
      logDir,
      redisUrl: redisEnv.REDIS_URL,
      env: redisEnv,
      mongoUri: env.MONGODB_URI || `mongodb://127.0.0.1:${mongoPort}/agentmesh`,
      otlpEndpoint: env.OTEL_EXPORTER_OTLP_ENDPOINT || 'http://127.0.0.1:4318',
      llmBaseUrl,
      llmApiKey: env.LLM_API_KEY || 'local-dev-key',
      jwtSecret: secret,
      // The edge reads runs' traces here, for the web UI's waterfall.
      jaegerQueryUrl: env.JAEGER_QUERY_URL || 'http://127.0.0.1:16686',
    };
    if (mtls) {
      const tls = stack.makeMeshTls(path.join(dataDir, 'tls'));
      wiring.perService = tls.perService;
      const rel = (f) => path.relative(process.cwd(), f) || f;
      const edgeTls = tls.perService.edge;
      console.log(`[start] mTLS: a new CA and a certificate per service in ${rel(tls.dir)}; every gRPC server requires a client certificate of that CA, and serves only the services that call it (GRPC_ALLOWED_CALLERS)
[start]   probe by hand: curl localhost:<metrics port>/readyz (printed below), or ${stack.BIN}/grpc-health-probe -addr=127.0.0.1:<gRPC port> -tls -tls-ca-cert=${rel(tls.ca)} -tls-client-cert=${rel(edgeTls.GRPC_TLS_CERT)} -tls-client-key=${rel(edgeTls.GRPC_TLS_KEY)}`);
    }
    if (replicas === 'auto') {
      await startAutoscaled(wiring, started, () => stopping);
      return;
    }
    if (replicas > 1) {
      await startFleet(wiring, started, () => stopping);
      return;
    }
    // Prometheus too (on PROMETHEUS_PORT, or a free port when that one is taken): the ops page
    // reads its figures from it. Its targets are written once the services run.
    const promPort = port('PROMETHEUS_PORT', 9090);
    const prom = await fleetLib.startPrometheus({
      port: (await stack.portOpen(promPort)) ? undefined : promPort, targets: [], logDir, dataDir: path.join(dataDir, 'prometheus'),
    });
    started.push(prom);
    const mesh = await stack.startMesh({
      ...wiring,
      prometheusUrl: prom.url,
      ports: {
        edge: port('EDGE_PORT', 8080),
        orchestrator: port('ORCHESTRATOR_PORT', 50051),
        'llm-broker': port('LLM_BROKER_PORT', 50052),
        'tool-service': port('TOOL_SERVICE_PORT', 50053),
        store: port('STORE_PORT', 50054),
      },
    });
    started.push(...mesh.all);
    prom.writeTargets(fleetLib.scrapeTargets(['store', 'broker', 'tools', 'orchestrator', 'edge'].map((k) => {
      const service = k === 'broker' ? 'llm-broker' : k === 'tools' ? 'tool-service' : k;
      return { ...mesh[k], service, replica: `${service}-1` };
    })));
    const rows = mesh.all.map((s) => `    ${s.name.replace(/-\d+$/, '').padEnd(14)} ${s.addr}${s.url ? '' : `  (metrics and /readyz :${s.metricsPort})`}`);
    const token = await stack.mintToken(secret, env.DEV_USER || 'dev-user', { expiresInS: 7 * 86400, scope: 'ops' });
    const url = mesh.edge.url.replace('127.0.0.1', 'localhost');
    console.log(`
agent mesh is running.
  web UI:      ${url}/   operations: ${url}/ops.html   (a finished run's "Trace" button: its waterfall)
  API docs:    ${url}/docs
  Prometheus:  ${prom.url.replace('127.0.0.1', 'localhost')}/   alerts: ${prom.url.replace('127.0.0.1', 'localhost')}/classic/alerts
  traces:      http://localhost:16686/api/traces?service=edge (Jaeger query API)
  redis:       ${redisMode}
  logs:        ${logDir}
  services:
${rows.join('\n')}
  dev token (user "${env.DEV_USER || 'dev-user'}", scope "ops", valid 7 days):

${token}

  try it:
    export TOKEN=${token}
    curl -s -X POST -H "Authorization: Bearer $TOKEN" ${url}/api/conversations
    curl -N -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \\
         -d '{"content":"Plan a weekend trip to Lisbon"}' ${url}/api/conversations/<id>/messages

Ctrl-C stops everything started here.`);
    // Stay up; report a crashed service.
    for (const s of mesh.all) {
      s.proc.once('exit', (code, signal) => {
        if (!stopping) console.error(`[start] ${s.name} exited (${code ?? signal}); see ${s.logFile}`);
      });
    }
  } catch (err) {
    console.error(`[start] failed: ${err.message}`);
    await stopAll();
    process.exit(1);
  }
}

/**
 * Redis as `--redis` says, data under .mesh/ (append-only files; a cluster's nodes.conf, so that a
 * second start forms the same cluster again). Ports: REDIS_PORT (6379) for one server; 6390 and
 * 6391 for the primary and replica and 26390–26392 for the sentinels (not 26379: a sentinel
 * Debian's package may run as a system service); 7000–7005 for a cluster. What already listens on
 * the first of them is used as it is. Returns the services' Redis variables.
 */
async function startRedisTopology(use, redisPort, logDir) {
  if (redisMode === 'single') {
    fs.mkdirSync(path.join(dataDir, 'redis'), { recursive: true });
    await use('redis', redisPort, () => stack.startRedis({ port: redisPort, logDir, appendOnly: true, dataDir: path.join(dataDir, 'redis') }));
    return { REDIS_URL: env.REDIS_URL || `redis://127.0.0.1:${redisPort}` };
  }
  if (redisMode === 'sentinel') {
    const ports = { primary: 6390, replica: 6391, sentinels: [26390, 26391, 26392] };
    const h = await use('redis sentinel (primary, replica, 3 sentinels)', ports.sentinels[0], () =>
      redisHa.startSentinel({ logDir, dataDir: path.join(dataDir, 'redis-sentinel'), ports, appendOnly: true }));
    return {
      REDIS_URL: `redis://127.0.0.1:${ports.primary}`,
      REDIS_SENTINELS: ports.sentinels.map((p) => `127.0.0.1:${p}`).join(','),
      REDIS_SENTINEL_NAME: h ? h.env.REDIS_SENTINEL_NAME : redisHa.SENTINEL_NAME,
    };
  }
  const ports = [7000, 7001, 7002, 7003, 7004, 7005];
  await use('redis cluster (3 primaries, 3 replicas)', ports[0], () =>
    redisHa.startCluster({ logDir, dataDir: path.join(dataDir, 'redis-cluster'), ports, appendOnly: true }));
  return { REDIS_URL: `redis://127.0.0.1:${ports[0]}`, REDIS_CLUSTER_NODES: ports.map((p) => `127.0.0.1:${p}`).join(',') };
}

/** `--replicas N`: nginx on EDGE_PORT in front of N edges; N of every other service on free ports. */
async function startFleet(wiring, started, isStopping) {
  const promPort = port('PROMETHEUS_PORT', 9090);
  const fleet = await fleetLib.startFleet({
    ...wiring,
    replicas,
    dataDir,
    ports: { nginx: port('EDGE_PORT', 8080), prometheus: (await stack.portOpen(promPort)) ? undefined : promPort },
    prometheus: { scrapeInterval: '5s', evaluationInterval: '5s' },
  });
  started.push(...fleet.all);
  const token = await stack.mintToken(wiring.jwtSecret, env.DEV_USER || 'dev-user', { expiresInS: 7 * 86400, scope: 'ops' });
  const url = fleet.url.replace('127.0.0.1', 'localhost');
  const prom = fleet.prometheus.url.replace('127.0.0.1', 'localhost');
  const rows = fleet.services.map((s) => `    ${s.replica.padEnd(16)} ${s.addr}${s.service === 'edge' ? '' : `  (metrics :${s.metricsPort})`}`);
  console.log(`
agent mesh is running: ${replicas} replicas of every service.
  web UI:      ${url}/   (nginx, least_conn over ${replicas} edges)   operations: ${url}/ops.html
  API docs:    ${url}/docs
  Prometheus:  ${prom}/   alerts: ${prom}/classic/alerts   targets: ${prom}/classic/targets
  traces:      http://localhost:16686/api/traces?service=edge (Jaeger query API)
  redis:       ${redisMode}
  logs:        ${logDir}
  replicas:
${rows.join('\n')}
  dev token (user "${env.DEV_USER || 'dev-user'}", scope "ops", valid 7 days):

${token}

Ctrl-C stops everything started here.`);
  for (const s of fleet.all) {
    s.proc.once('exit', (code, signal) => {
      if (!isStopping()) console.error(`[start] ${s.name} exited (${code ?? signal}); see ${s.logFile}`);
    });
  }
}

/**
 * `--replicas auto`: the HPA control loop (API server, controller manager, prometheus-adapter, the
 * fleet's Prometheus) and a follower that runs one process per Pod of each Deployment.
 */
async function startAutoscaled(wiring, started, isStopping) {
  const promPort = port('PROMETHEUS_PORT', 9090);
  console.log('[start] autoscaled: starting the control plane, then the Deployments\' floors (minReplicas) of replicas');
  const fleet = await autoscale.startAutoscaledFleet({
    ...wiring,
    dataDir: path.join(dataDir, 'autoscale'),
    ports: { nginx: port('EDGE_PORT', 8080), prometheus: promPort },
    onEvent: (e) => {
      if (isStopping()) return;
      if (e.type === 'error') console.error(`[autoscale] ${e.message}`);
      else console.log(`[autoscale] ${e.service} ${e.type} ${e.pod}${e.exit ? ` (exit ${e.exit.code ?? e.exit.signal})` : ''}`);
    },
  });
  started.push(fleet);
  const token = await stack.mintToken(wiring.jwtSecret, env.DEV_USER || 'dev-user', { expiresInS: 7 * 86400, scope: 'ops' });
  const url = fleet.url.replace('127.0.0.1', 'localhost');
  console.log(`
agent mesh is running, autoscaled by the HPAs of deploy/k8s/overlays/production.
  web UI:      ${url}/   (nginx, least_conn over the edges)
  Prometheus:  ${fleet.prometheus.url}/
  HPAs:        ${stack.BIN}/kubectl --kubeconfig ${fleet.api.kubeconfig} -n ${fleet.namespace} get hpa,deployments
  logs:        ${logDir}
  dev token (user "${env.DEV_USER || 'dev-user'}", scope "ops", valid 7 days):

${token}

Ctrl-C stops everything started here.`);
}

main();
