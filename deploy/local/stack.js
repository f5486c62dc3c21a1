// The local stack as child processes: infrastructure (Redis, FerretDB, Jaeger), the upstream
// emulator and the five services. Used by `npm start` and by the integration and end-to-end
// tests, so both run the system the same way. Plain CommonJS: it runs before anything is built.
'use strict';
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');

const ROOT = path.resolve(__dirname, '../..');
const CACHE = process.env.MESH_CACHE || path.join(os.homedir(), '.cache', 'agent-mesh');
const BIN = path.join(CACHE, 'bin');

const handedOut = new Set();

/**
 * Resolves to a TCP port nobody listens on right now, and never the same port twice in this
 * process (the kernel may hand a just-closed port out again before its first taker binds it).
 */
async function freePort() {
  for (;;) {
    const port = await new Promise((resolve, reject) => {
      const srv = net.createServer();
      srv.unref();
      srv.on('error', reject);
      srv.listen(0, '127.0.0.1', () => {
        const { port: p } = srv.address();
        srv.close(() => resolve(p));
      });
    });
    if (!handedOut.has(port)) {
      handedOut.add(port);
      return port;
    }
  }
}

function portOpen(port, host = '127.0.0.1') {
  return new Promise((resolve) => {
    const sock = net.connect({ port, host });
    sock.once('connect', () => { sock.destroy(); resolve(true); });
    sock.once('error', () => resolve(false));
  });
}

async function waitFor(what, check, { timeoutMs = 30_000, intervalMs = 100, proc } = {}) {
  const start = Date.now();
  for (;;) {
    if (proc && proc.exitCode !== null) throw new Error(`${what} exited with code ${proc.exitCode} before it was ready`);
    try { if (await check()) return; } catch { /* not yet */ }
    if (Date.now() - start > timeoutMs) throw new Error(`${what} not ready after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/**
 * Spawns a long-lived child whose output goes to `<logDir>/<name>.log`.
 * Returns a handle with stop() (SIGTERM, then SIGKILL after graceMs) and kill() (SIGKILL).
 */
function launch(name, cmd, args, { env = {}, logDir, cwd = ROOT } = {}) {
  fs.mkdirSync(logDir, { recursive: true });
  const logFile = path.join(logDir, `${name}.log`);
  const out = fs.openSync(logFile, 'a');
  const proc = spawn(cmd, args, { cwd, env: { ...process.env, ...env }, stdio: ['ignore', out, out] });
  fs.closeSync(out);
  const exited = new Promise((resolve) => proc.once('exit', (code, signal) => resolve({ code, signal })));
  return {
    name,
    proc,
    logFile,
    exited,
    log: () => fs.readFileSync(logFile, 'utf8'),
    kill: async () => { if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL'); await exited; },
    stop: async (graceMs = 10_000) => {
      if (proc.exitCode !== null || proc.signalCode !== null) return exited;
      proc.kill('SIGTERM');
      const t = setTimeout(() => proc.kill('SIGKILL'), graceMs);
      const r = await exited;
      clearTimeout(t);
      return r;
    },
  };
}

function binary(name) {
  const p = path.join(BIN, name);
  if (!fs.existsSync(p)) throw new Error(`${p} is missing: run deploy/local/install.sh`);
  return p;
}

async function startRedis({ port, logDir, appendOnly = false, dataDir }) {
  port = port || (await freePort());
  const dir = dataDir || fs.mkdtempSync(path.join(os.tmpdir(), 'mesh-redis-'));
  const args = ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--appendonly', appendOnly ? 'yes' : 'no'];
  const h = launch(`redis-${port}`, 'redis-server', args, { logDir });
  await waitFor('redis', () => portOpen(port), { proc: h.proc });
  return { ...h, port, url: `redis://127.0.0.1:${port}` };
}

async function startFerret({ port, logDir, dataDir }) {
  port = port || (await freePort());
  const dir = dataDir || fs.mkdtempSync(path.join(os.tmpdir(), 'mesh-ferret-'));
  fs.mkdirSync(dir, { recursive: true });
  // synchronous(normal) with FerretDB's WAL: no fsync per commit (a process crash loses nothing,
  // a power cut may lose the last commits: fine for the development database). Measured with 50
  // concurrent upserts: 515 → 737 writes/s. FerretDB keeps its own defaults (WAL, busy_timeout).
  const args = ['--handler=sqlite', `--sqlite-url=file:${dir}/?_pragma=synchronous(normal)`, `--listen-addr=127.0.0.1:${port}`,
    '--state-dir=-', '--telemetry=disable', '--debug-addr=-', '--log-level=warn'];
  const h = launch(`ferretdb-${port}`, binary('ferretdb'), args, { logDir });
  await waitFor('ferretdb', () => portOpen(port), { proc: h.proc });
  return { ...h, port, uri: `mongodb://127.0.0.1:${port}/agentmesh` };
}

async function startJaeger({ otlpHttpPort, otlpGrpcPort, queryPort, logDir }) {
  otlpHttpPort = otlpHttpPort || (await freePort());
  otlpGrpcPort = otlpGrpcPort || (await freePort());
  queryPort = queryPort || (await freePort());
  const queryGrpcPort = await freePort();
  const healthPort = await freePort();
  const config = `
service:
  extensions: [jaeger_storage, jaeger_query, healthcheckv2]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
extensions:
  healthcheckv2:
    use_v2: true
    http:
      endpoint: 127.0.0.1:${healthPort}
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 100000
  jaeger_query:
    storage:
      traces: memstore
    grpc:
      endpoint: 127.0.0.1:${queryGrpcPort}
    http:
      endpoint: 127.0.0.1:${queryPort}
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:${otlpGrpcPort}
      http:
        endpoint: 127.0.0.1:${otlpHttpPort}
processors:
  batch:
    timeout: 200ms
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
`;
  fs.mkdirSync(logDir, { recursive: true });
  const cfgFile = path.join(logDir, `jaeger-${queryPort}.yaml`);
  fs.writeFileSync(cfgFile, config);
  const h = launch(`jaeger-${queryPort}`, binary('jaeger'), ['--config', cfgFile], { logDir });
  await waitFor('jaeger', async () => (await fetch(`http://127.0.0.1:${queryPort}/api/services`)).ok, { proc: h.proc, timeoutMs: 60_000 });
  return { ...h, otlpEndpoint: `http://127.0.0.1:${otlpHttpPort}`, queryUrl: `http://127.0.0.1:${queryPort}` };
}

async function startEmulator({ port, logDir, env = {} }) {
  port = port || (await freePort());
  const h = launch(`emulator-${port}`, process.execPath, [path.join(ROOT, 'test/emulator/dist/main.js')], {
    logDir, env: { EMULATOR_PORT: String(port), EMULATOR_HOST: '127.0.0.1', ...env },
  });
  await waitFor('emulator', async () => (await fetch(`http://127.0.0.1:${port}/health`)).ok, { proc: h.proc });
  return { ...h, port, url: `http://127.0.0.1:${port}` };
}

/** Asks a gRPC server's standard health service whether it is SERVING. */
function grpcServing(addr) {
  // Loaded lazily: @grpc/grpc-js is a dependency of the built services, not of this script.
  const grpc = require('@grpc/grpc-js');
  const { loadSync } = require('@grpc/proto-loader');
  const { protoPath } = require('grpc-health-check');
  const def = grpc.loadPackageDefinition(loadSync(protoPath, { keepCase: true, enums: String }));
  const client = new def.grpc.health.v1.Health(addr, grpc.credentials.createInsecure());
  return new Promise((resolve) => {
    client.Check({ service: '' }, { deadline: Date.now() + 1000 }, (err, res) => {
      client.close();
      resolve(!err && res && res.status === 'SERVING');
    });
  });
}

const SERVICES = {
  store: { portVar: 'STORE_PORT', addrVar: 'STORE_ADDR' },
  'llm-broker': { portVar: 'LLM_BROKER_PORT', addrVar: 'LLM_BROKER_ADDR' },
  'tool-service': { portVar: 'TOOL_SERVICE_PORT', addrVar: 'TOOL_SERVICE_ADDR' },
  orchestrator: { portVar: 'ORCHESTRATOR_PORT', addrVar: 'ORCHESTRATOR_ADDR' },
  edge: { portVar: 'EDGE_PORT' },
};

/**
 * Starts one service from its build (`services/<name>/dist/main.js`) with telemetry preloaded,
 * and waits until it is ready (gRPC health SERVING, or the edge answering HTTP).
 */
async function startService(name, { port, env = {}, logDir, instance = '', readyTimeoutMs = 30_000 }) {
  const spec = SERVICES[name];
  if (!spec) throw new Error(`unknown service ${name}`);
  // A port picked as free can be taken by another process before the service binds it (other
  // test runs on the machine): with ports of our choosing, try again on fresh ones.
  for (let attempt = 1; ; attempt++) {
    const grpcPort = port || (await freePort());
    const metricsPort = await freePort();
    const args = ['--require', path.join(ROOT, 'services/common/dist/telemetry/register.js'),
      path.join(ROOT, `services/${name}/dist/main.js`)];
    const h = launch(`${name}${instance}-${grpcPort}`, process.execPath, args, {
      logDir,
      env: { OTEL_SERVICE_NAME: name, [spec.portVar]: String(grpcPort), METRICS_PORT: String(metricsPort), ...env },
    });
    const addr = `127.0.0.1:${grpcPort}`;
    try {
      if (name === 'edge') {
        await waitFor(name, async () => (await fetch(`http://${addr}/api/health`)).status > 0, { proc: h.proc, timeoutMs: readyTimeoutMs });
      } else {
        await waitFor(name, () => grpcServing(addr), { proc: h.proc, intervalMs: 200, timeoutMs: readyTimeoutMs });
      }
      return { ...h, port: grpcPort, addr, metricsPort, url: name === 'edge' ? `http://${addr}` : undefined };
    } catch (err) {
      await h.kill();
      if (port || attempt >= 3 || !/EADDRINUSE/.test(h.log())) throw err;
    }
  }
}

module.exports = {
  ROOT, CACHE, BIN, SERVICES,
  freePort, portOpen, waitFor, launch, grpcServing,
  startRedis, startFerret, startJaeger, startEmulator, startService,
};

/**
 * Starts the five services wired to each other and to the given infrastructure.
 * `env` goes to every service; `perService[name]` to one.
 */
async function startMesh({ logDir, redisUrl, mongoUri, otlpEndpoint, llmBaseUrl, llmApiKey = 'local-dev-key', jwtSecret, env = {}, perService = {}, ports = {} }) {
  const common = {
    REDIS_URL: redisUrl,
    MONGODB_URI: mongoUri,
    OTEL_EXPORTER_OTLP_ENDPOINT: otlpEndpoint || 'http://127.0.0.1:4318',
    ...(otlpEndpoint ? {} : { OTEL_SDK_DISABLED: 'true' }),
    ...env,
  };
  const start = (name, extra) => startService(name, { logDir, port: ports[name], env: { ...common, ...extra, ...(perService[name] || {}) } });
  const started = [];
  try {
    const [store, broker] = await Promise.all([
      start('store', {}),
      start('llm-broker', { LLM_BASE_URL: llmBaseUrl, LLM_API_KEY: llmApiKey }),
    ]);
    started.push(store, broker);
    const tools = await start('tool-service', { STORE_ADDR: store.addr });
    started.push(tools);
    const peers = { STORE_ADDR: store.addr, LLM_BROKER_ADDR: broker.addr, TOOL_SERVICE_ADDR: tools.addr };
    const orchestrator = await start('orchestrator', peers);
    started.push(orchestrator);
    const metricsAddrs = {
      STORE_METRICS_ADDR: `127.0.0.1:${store.metricsPort}`,
      LLM_BROKER_METRICS_ADDR: `127.0.0.1:${broker.metricsPort}`,
      TOOL_SERVICE_METRICS_ADDR: `127.0.0.1:${tools.metricsPort}`,
      ORCHESTRATOR_METRICS_ADDR: `127.0.0.1:${orchestrator.metricsPort}`,
    };
    const edgeEnv = { ...peers, ORCHESTRATOR_ADDR: orchestrator.addr, AUTH_JWT_SECRET: jwtSecret, ...metricsAddrs };
    const edge = await start('edge', edgeEnv);
    started.push(edge);
    let replicas = 1;
    return {
      store, broker, tools, orchestrator, edge, peers, common,
      all: started,
      /** Another edge replica wired like the first (`env` on top of its settings); stopped with the mesh. */
      addEdge: async (env = {}) => {
        replicas += 1;
        const e = await startService('edge', {
          logDir, instance: `-${replicas}`, env: { ...common, ...edgeEnv, ...(perService.edge || {}), ...env },
        });
        started.push(e);
        return e;
      },
      stop: async () => { for (const s of [...started].reverse()) await s.stop(); },
    };
  } catch (err) {
    for (const s of started.reverse()) await s.kill();
    throw err;
  }
}

/** Mints an HS256 JWT for `sub` (the dev token of `npm start`, and the tests' tokens). */
function mintToken(secret, sub, { expiresInS = 12 * 3600 } = {}) {
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString('base64url');
  const now = Math.floor(Date.now() / 1000);
  const body = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ sub, iat: now, exp: now + expiresInS })}`;
  const sig = require('node:crypto').createHmac('sha256', secret).update(body).digest('base64url');
  return Promise.resolve(`${body}.${sig}`);
}

module.exports.startMesh = startMesh;
module.exports.mintToken = mintToken;
