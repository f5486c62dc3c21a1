// The local stack as child processes: infrastructure (Redis, FerretDB, Jaeger), the upstream
// emulator and the five services. Used by `npm start` and by the integration and end-to-end
// tests, so both run the system the same way. Plain CommonJS: it runs before anything is built.
'use strict';
const { execFileSync, spawn } = require('node:child_process');
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
  return launchAs(name, cmd, args, { logDir, cwd, user: { env: { ...process.env, ...env } } });
}

/** launch() with spawn's `uid`/`gid`/`env` in `user`; stop(graceMs, signal) sends `signal` first. */
function launchAs(name, cmd, args, { logDir, cwd = ROOT, user }) {
  fs.mkdirSync(logDir, { recursive: true });
  const logFile = path.join(logDir, `${name}.log`);
  const out = fs.openSync(logFile, 'a');
  const proc = spawn(cmd, args, { cwd: user.uid === undefined ? cwd : '/', ...user, stdio: ['ignore', out, out] });
  fs.closeSync(out);
  const exited = new Promise((resolve) => proc.once('exit', (code, signal) => resolve({ code, signal })));
  return {
    name,
    proc,
    logFile,
    exited,
    log: () => fs.readFileSync(logFile, 'utf8'),
    kill: async () => { if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL'); await exited; },
    stop: async (graceMs = 10_000, signal = 'SIGTERM') => {
      if (proc.exitCode !== null || proc.signalCode !== null) return exited;
      proc.kill(signal);
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

// ---- PostgreSQL (FerretDB's backend) ---------------------------------------------------------

/**
 * FerretDB 1.24 runs an update (findAndModify, update) on two PostgreSQL connections at once (its
 * query's cursor on one, the write on another): when as many run at once as FerretDB's pool has
 * connections (its `pool_max_conns`, 50 by default), every one waits for a second connection that
 * never frees, until the callers' deadlines (seen in `bench store` at 200 callers: every call failed
 * from then on). Each store therefore runs at most STORE_MAX_UPDATES updates at once
 * (STORE_MAX_CONCURRENT_UPDATES, services/store/src/db/update-limit.ts), and the stores together stay
 * below FerretDB's pool. That, not the size of the MongoDB pools, is what keeps FerretDB from
 * deadlocking, so every store gets the whole STORE_MONGO_POOL rather than a share: a store left
 * alone after its peers died can take all of their work (other commands beyond FerretDB's
 * connections wait in FerretDB for one). FERRET_PG_POOL stays below `max_connections` (200).
 */
const FERRET_PG_POOL = 180;
const STORE_MONGO_POOL = 160;
const STORE_MAX_UPDATES = 16;
/** A store replica's environment, when `replicas` stores share one FerretDB. */
function storeEnv(replicas = 1) {
  if (replicas * STORE_MAX_UPDATES >= FERRET_PG_POOL) {
    throw new Error(`${replicas} stores × ${STORE_MAX_UPDATES} updates at once would reach FerretDB's ${FERRET_PG_POOL} connections`);
  }
  return { MONGO_MAX_POOL_SIZE: String(STORE_MONGO_POOL), STORE_MAX_CONCURRENT_UPDATES: String(STORE_MAX_UPDATES) };
}

/** The newest PostgreSQL server binaries Debian installed (`/usr/lib/postgresql/<major>/bin`). */
function postgresBin(name) {
  const base = '/usr/lib/postgresql';
  const majors = fs.existsSync(base) ? fs.readdirSync(base).filter((d) => /^\d+$/.test(d)).sort((a, b) => b - a) : [];
  for (const m of majors) {
    const p = path.join(base, m, 'bin', name);
    if (fs.existsSync(p)) return p;
  }
  throw new Error(`PostgreSQL's ${name} is missing: run deploy/local/install.sh`);
}

/**
 * initdb and postgres refuse to run as root: as root, they run as the `postgres` system user
 * (which owns the data directory); as anyone else, as that user.
 */
function postgresUser() {
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) return {};
  const line = fs.readFileSync('/etc/passwd', 'utf8').split('\n').find((l) => l.startsWith('postgres:'));
  if (!line) throw new Error('running as root needs the postgres system user (installed with the postgresql package)');
  const [, , uid, gid] = line.split(':');
  return { uid: Number(uid), gid: Number(gid) };
}

/** Lets `user` reach `dir`: creates it owned by them, and adds o+x to ancestors we own that lack it. */
function prepareDirFor(dir, user) {
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  if (user.uid === undefined) return;
  fs.chownSync(dir, user.uid, user.gid);
  for (let d = path.dirname(dir); d !== path.dirname(d); d = path.dirname(d)) {
    const st = fs.statSync(d);
    if ((st.mode & 0o001) === 0 && st.uid === process.getuid()) fs.chmodSync(d, st.mode | 0o001);
  }
}

// FerretDB 1.24 filters documents with `_jsonb->'field' @> value`, which its own btree indexes
// on `(_jsonb->'field')` cannot serve (btree has no `@>`), so every find scanned its table. This
// event trigger gives each index FerretDB creates a GIN twin on the index's first field, which
// `@>` can use; with custom plans (plan_cache_mode below) the planner sees the field name and
// picks it. Sort and limit are still done by FerretDB, on the rows the filter returns.
const GIN_TWIN_TRIGGER = `
CREATE OR REPLACE FUNCTION mesh_gin_twin() RETURNS event_trigger LANGUAGE plpgsql AS $$
DECLARE r record; expr text; tbl text;
BEGIN
  FOR r IN SELECT objid FROM pg_event_trigger_ddl_commands() WHERE command_tag = 'CREATE INDEX' LOOP
    SELECT pg_get_indexdef(i.indexrelid, 1, true), i.indrelid::regclass::text INTO expr, tbl
      FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am a ON a.oid = c.relam
      WHERE i.indexrelid = r.objid AND a.amname = 'btree';
    IF expr IS NOT NULL AND expr LIKE '(_jsonb -> %' AND tbl NOT LIKE '%_ferretdb_%' THEN
      EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON %s USING gin (%s jsonb_path_ops) WITH (fastupdate = off)',
        left((SELECT relname FROM pg_class WHERE oid = r.objid), 55) || '_gin', tbl, expr);
    END IF;
  END LOOP;
END $$;
DROP EVENT TRIGGER IF EXISTS mesh_gin_twin;
CREATE EVENT TRIGGER mesh_gin_twin ON ddl_command_end WHEN TAG IN ('CREATE INDEX') EXECUTE FUNCTION mesh_gin_twin();
`;

/**
 * A private PostgreSQL cluster in `dataDir` (created with initdb on first use), listening on
 * 127.0.0.1:`port` only (no Unix socket), with a `ferretdb` database. `durable: false` (tests'
 * throwaway clusters) turns fsync off: a crash of PostgreSQL still loses nothing, one of the
 * machine may. Returns a handle whose `url` FerretDB connects to.
 */
async function startPostgres({ port, logDir, dataDir, durable = true }) {
  port = port || (await freePort());
  const dir = dataDir || path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'mesh-pg-')), 'data');
  const user = postgresUser();
  const asUser = { ...user, env: { ...process.env, LC_ALL: 'C.UTF-8', TZ: 'UTC' } };
  if (!fs.existsSync(path.join(dir, 'PG_VERSION'))) {
    prepareDirFor(dir, user);
    const r = require('node:child_process').spawnSync(postgresBin('initdb'),
      ['-D', dir, '-U', 'postgres', '--auth=trust', '-E', 'UTF8', '--locale=C.UTF-8', ...(durable ? [] : ['--no-sync'])],
      { ...asUser, encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`initdb ${dir} failed: ${r.stderr || r.error}`);
  }
  const settings = {
    listen_addresses: '127.0.0.1', port: String(port), unix_socket_directories: '',
    max_connections: '200', shared_buffers: '256MB',
    // FerretDB sends its queries as prepared statements with the field name as a parameter:
    // only a custom plan lets the planner match them to the GIN twins (see GIN_TWIN_TRIGGER).
    plan_cache_mode: 'force_custom_plan',
    // Commits reach the WAL file before they are acknowledged, so a crash of the server process
    // loses nothing; the throwaway clusters of tests skip the fsync to the disk.
    ...(durable ? {} : { fsync: 'off', full_page_writes: 'off' }),
  };
  const args = ['-D', dir, ...Object.entries(settings).flatMap(([k, v]) => ['-c', `${k}=${v}`])];
  fs.mkdirSync(logDir, { recursive: true });
  const h = launchAs(`postgres-${port}`, postgresBin('postgres'), args, { logDir, user: asUser });
  const url = `postgres://postgres@127.0.0.1:${port}`;
  await waitFor('postgres', () => pgReady(port), { proc: h.proc, timeoutMs: 60_000, intervalMs: 200 });
  // The database and the trigger, idempotently.
  const psql = (db, sql) => require('node:child_process').spawnSync(postgresBin('psql'),
    ['-h', '127.0.0.1', '-p', String(port), '-U', 'postgres', '-d', db, '-v', 'ON_ERROR_STOP=1', '-qAt', '-c', sql], { encoding: 'utf8' });
  if (psql('postgres', "SELECT 1 FROM pg_database WHERE datname = 'ferretdb'").stdout.trim() !== '1') {
    const r = psql('postgres', 'CREATE DATABASE ferretdb');
    if (r.status !== 0) { await h.stop(); throw new Error(`creating the ferretdb database: ${r.stderr}`); }
  }
  const t = psql('ferretdb', GIN_TWIN_TRIGGER);
  if (t.status !== 0) { await h.stop(); throw new Error(`creating the index trigger: ${t.stderr}`); }
  // SIGINT: PostgreSQL's "fast" shutdown; kill(): SIGQUIT, its "immediate" shutdown (recovers on start).
  return {
    ...h, port, dataDir: dir, url, ferretUrl: `${url}/ferretdb?pool_max_conns=${FERRET_PG_POOL}`,
    stop: async (graceMs = 30_000) => h.stop(graceMs, 'SIGINT'),
    kill: async () => h.stop(10_000, 'SIGQUIT'),
  };
}

/** PostgreSQL accepts connections (pg_isready's exit code 0). */
function pgReady(port) {
  return new Promise((resolve) => {
    const c = spawn(postgresBin('pg_isready'), ['-q', '-h', '127.0.0.1', '-p', String(port), '-U', 'postgres'], { stdio: 'ignore' });
    c.on('exit', (code) => resolve(code === 0));
    c.on('error', () => resolve(false));
  });
}

/**
 * FerretDB on PostgreSQL (default) or SQLite (`backend: 'sqlite'`, or MESH_FERRET_BACKEND=sqlite).
 * With PostgreSQL and neither a `postgres` handle nor a `postgresUrl`, it starts its own cluster
 * in `<dataDir>/postgres` (a temporary one without dataDir) and stops or kills it with itself.
 */
async function startFerret({ port, logDir, dataDir, backend = process.env.MESH_FERRET_BACKEND || 'postgresql', postgres, postgresUrl, durable }) {
  if (backend === 'sqlite') return startFerretSqlite({ port, logDir, dataDir });
  if (backend !== 'postgresql') throw new Error(`unknown FerretDB backend ${backend} (postgresql or sqlite)`);
  port = port || (await freePort());
  const own = !postgres && !postgresUrl;
  if (own) {
    const pgDir = dataDir ? path.join(dataDir, 'postgres') : undefined;
    postgres = await startPostgres({ logDir, dataDir: pgDir, durable: durable ?? Boolean(dataDir && !dataDir.startsWith(os.tmpdir())) });
  }
  const args = ['--handler=postgresql', `--postgresql-url=${postgresUrl || postgres.ferretUrl}`, `--listen-addr=127.0.0.1:${port}`,
    '--state-dir=-', '--telemetry=disable', '--debug-addr=-', '--log-level=warn'];
  const h = launch(`ferretdb-${port}`, binary('ferretdb'), args, { logDir });
  try {
    await waitFor('ferretdb', () => portOpen(port), { proc: h.proc });
  } catch (err) {
    if (own) await postgres.stop();
    throw err;
  }
  const both = (fn) => async (...a) => { const r = await h[fn](...a); if (own) await postgres[fn](); return r; };
  return { ...h, port, uri: `mongodb://127.0.0.1:${port}/agentmesh`, backend, postgres, stop: both('stop'), kill: both('kill') };
}

async function startFerretSqlite({ port, logDir, dataDir }) {
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
  return { ...h, port, uri: `mongodb://127.0.0.1:${port}/agentmesh`, backend: 'sqlite' };
}

/** Jaeger v2 all-in-one's configuration: OTLP in, in-memory storage, the query API, a health endpoint. */
function jaegerConfig({ host = '127.0.0.1', otlpHttpPort, otlpGrpcPort, queryPort, queryGrpcPort, healthPort }) {
  return `
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
      endpoint: ${host}:${healthPort}
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 100000
  jaeger_query:
    storage:
      traces: memstore
    grpc:
      endpoint: ${host}:${queryGrpcPort}
    http:
      endpoint: ${host}:${queryPort}
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: ${host}:${otlpGrpcPort}
      http:
        endpoint: ${host}:${otlpHttpPort}
processors:
  batch:
    timeout: 200ms
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
`;
}

async function startJaeger({ otlpHttpPort, otlpGrpcPort, queryPort, logDir }) {
  otlpHttpPort = otlpHttpPort || (await freePort());
  otlpGrpcPort = otlpGrpcPort || (await freePort());
  queryPort = queryPort || (await freePort());
  const queryGrpcPort = await freePort();
  const healthPort = await freePort();
  const config = jaegerConfig({ otlpHttpPort, otlpGrpcPort, queryPort, queryGrpcPort, healthPort });
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
let healthClient;
function grpcServing(addr) {
  // Loaded lazily, once (probes every 20 ms must not take the CPU from the start they time):
  // @grpc/grpc-js is a dependency of the built services, not of this script.
  const grpc = require('@grpc/grpc-js');
  if (!healthClient) {
    const { loadSync } = require('@grpc/proto-loader');
    const { protoPath } = require('grpc-health-check');
    healthClient = grpc.loadPackageDefinition(loadSync(protoPath, { keepCase: true, enums: String })).grpc.health.v1.Health;
  }
  const client = new healthClient(addr, grpc.credentials.createInsecure());
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

/** A plain-HTTP readiness probe (`/readyz`) answers 200. */
async function httpReady(url) {
  const res = await fetch(url, { signal: AbortSignal.timeout(1000) });
  await res.arrayBuffer();
  return res.status === 200;
}

/**
 * Who calls whom inside the mesh, by certificate name: each gRPC service's GRPC_ALLOWED_CALLERS
 * under mutual TLS. The tool-service, which fetches the web, reaches the store for its plans only.
 */
const CALLERS = {
  orchestrator: 'edge',
  'llm-broker': 'edge,orchestrator',
  'tool-service': 'edge,orchestrator',
  store: 'edge,orchestrator,tool-service:SavePlan+GetPlan+ListPlans',
};

/**
 * A throwaway CA and one certificate per service, made by openssl in `dir` (replacing what is
 * there): EC P-256, valid 30 days for 127.0.0.1 and localhost, for server and client use, its
 * common name the service's. Returns the CA's file and `perService`, each service's GRPC_TLS_*
 * and GRPC_ALLOWED_CALLERS (the `perService` of startMesh and startFleet), so that every gRPC
 * call of the mesh is mutual TLS, and each service serves only the callers it has.
 */
function makeMeshTls(dir, names = Object.keys(SERVICES)) {
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const ssl = (...args) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
  const key = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  ssl('req', '-x509', ...key, '-days', '30', '-subj', '/CN=agent-mesh local CA', '-keyout', 'ca.key', '-out', 'ca.pem');
  fs.writeFileSync(path.join(dir, 'service.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n');
  const perService = {};
  for (const name of names) {
    ssl('req', ...key, '-subj', `/CN=${name}`, '-keyout', `${name}.key`, '-out', `${name}.csr`);
    ssl('x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '30', '-extfile', 'service.ext', '-out', `${name}.pem`);
    fs.rmSync(path.join(dir, `${name}.csr`));
    fs.chmodSync(path.join(dir, `${name}.key`), 0o600);
    perService[name] = {
      GRPC_TLS_CA: path.join(dir, 'ca.pem'), GRPC_TLS_CERT: path.join(dir, `${name}.pem`), GRPC_TLS_KEY: path.join(dir, `${name}.key`),
      ...(CALLERS[name] ? { GRPC_ALLOWED_CALLERS: CALLERS[name] } : {}),
    };
  }
  fs.chmodSync(path.join(dir, 'ca.key'), 0o600);
  return { dir, ca: path.join(dir, 'ca.pem'), perService };
}

/**
 * Starts one service from its build (`services/<name>/dist/main.js`) with telemetry preloaded,
 * and waits until it is ready: `/readyz` answers 200 (on the metrics port of a gRPC service: its
 * gRPC health is SERVING; a plain-HTTP probe, so it works with mutual TLS too).
 */
async function startService(name, { port, env = {}, logDir, instance = '', readyTimeoutMs = 60_000 }) {
  const spec = SERVICES[name];
  if (!spec) throw new Error(`unknown service ${name}`);
  // A port picked as free can be taken by another process before the service binds it (other
  // test runs on the machine): with ports of our choosing, try again on fresh ones.
  for (let attempt = 1; ; attempt++) {
    const grpcPort = port || (await freePort());
    const metricsPort = env.METRICS_PORT ? Number(env.METRICS_PORT) : await freePort();
    // CPU_PROFILE_DIR: a V8 CPU profile of the service, written there when it stops (node does not take --cpu-prof from NODE_OPTIONS).
    const profileDir = process.env.CPU_PROFILE_DIR;
    const args = [...(profileDir ? ['--cpu-prof', `--cpu-prof-dir=${path.resolve(profileDir)}`] : []),
      '--require', path.join(ROOT, 'services/common/dist/telemetry/register.js'), path.join(ROOT, `services/${name}/dist/main.js`)];
    const h = launch(`${name}${instance}-${grpcPort}`, process.execPath, args, {
      logDir,
      env: { OTEL_SERVICE_NAME: name, [spec.portVar]: String(grpcPort), METRICS_PORT: String(metricsPort), ...env },
    });
    const addr = `127.0.0.1:${grpcPort}`;
    try {
      const probe = name === 'edge' ? `http://${addr}/readyz` : `http://127.0.0.1:${metricsPort}/readyz`;
      await waitFor(name, () => httpReady(probe), { proc: h.proc, intervalMs: 200, timeoutMs: readyTimeoutMs });
      return { ...h, port: grpcPort, addr, metricsPort, url: name === 'edge' ? `http://${addr}` : undefined };
    } catch (err) {
      await h.kill();
      if (port || attempt >= 3 || !/EADDRINUSE/.test(h.log())) throw err;
    }
  }
}

module.exports = {
  ROOT, CACHE, BIN, SERVICES, CALLERS,
  freePort, portOpen, waitFor, launch, grpcServing, makeMeshTls,
  startRedis, startPostgres, startFerret, storeEnv, startJaeger, jaegerConfig, startEmulator, startService,
};

/**
 * The environment every service of a mesh (or fleet) shares: its infrastructure, tracing (off
 * unless an OTLP endpoint is given), then `env`.
 */
function meshEnv({ redisUrl, mongoUri, otlpEndpoint, env = {} }) {
  return {
    REDIS_URL: redisUrl,
    MONGODB_URI: mongoUri,
    OTEL_EXPORTER_OTLP_ENDPOINT: otlpEndpoint || 'http://127.0.0.1:4318',
    ...(otlpEndpoint ? {} : { OTEL_SDK_DISABLED: 'true' }),
    ...env,
  };
}

/** The edge's sources of the ops page's figures (Prometheus) and of runs' traces (Jaeger's query API), when there are. */
function opsEnv({ prometheusUrl, jaegerQueryUrl }) {
  return { ...(prometheusUrl ? { PROMETHEUS_URL: prometheusUrl } : {}), ...(jaegerQueryUrl ? { JAEGER_QUERY_URL: jaegerQueryUrl } : {}) };
}

/**
 * Starts the five services wired to each other and to the given infrastructure.
 * `prometheusUrl` / `jaegerQueryUrl`: where the edge reads the ops figures and runs' traces.
 * `env` goes to every service; `perService[name]` to one.
 */
async function startMesh({
  logDir, redisUrl, mongoUri, otlpEndpoint, llmBaseUrl, llmApiKey = 'local-dev-key', jwtSecret, env = {}, perService = {}, ports = {},
  prometheusUrl, jaegerQueryUrl,
}) {
  const common = meshEnv({ redisUrl, mongoUri, otlpEndpoint, env });
  const start = (name, extra) => startService(name, { logDir, port: ports[name], env: { ...common, ...extra, ...(perService[name] || {}) } });
  const started = [];
  try {
    // Both are waited for, so that when one fails the other is not left running.
    const first = await Promise.allSettled([
      start('store', storeEnv()),
      start('llm-broker', { LLM_BASE_URL: llmBaseUrl, LLM_API_KEY: llmApiKey }),
    ]);
    for (const r of first) if (r.status === 'fulfilled') started.push(r.value);
    const failed = first.find((r) => r.status === 'rejected');
    if (failed) throw failed.reason;
    const [store, broker] = first.map((r) => r.value);
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
    const edgeEnv = { ...peers, ORCHESTRATOR_ADDR: orchestrator.addr, AUTH_JWT_SECRET: jwtSecret, ...metricsAddrs, ...opsEnv({ prometheusUrl, jaegerQueryUrl }) };
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

/**
 * Mints an HS256 JWT for `sub` (the dev token of `npm start`, and the tests' tokens); `scope`: the
 * token's `scope` claim (space-separated; `ops` lets it read the operations figures).
 */
function mintToken(secret, sub, { expiresInS = 12 * 3600, scope } = {}) {
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString('base64url');
  const now = Math.floor(Date.now() / 1000);
  const body = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ sub, iat: now, exp: now + expiresInS, ...(scope ? { scope } : {}) })}`;
  const sig = require('node:crypto').createHmac('sha256', secret).update(body).digest('base64url');
  return Promise.resolve(`${body}.${sig}`);
}

module.exports.startMesh = startMesh;
module.exports.meshEnv = meshEnv;
module.exports.opsEnv = opsEnv;
module.exports.mintToken = mintToken;
