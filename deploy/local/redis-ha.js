// Redis that survives losing a node, as child processes of Debian's redis-server and
// redis-sentinel: a Sentinel-managed primary (a primary, a replica and three sentinels, quorum 2)
// or a Cluster (three primaries, each with a replica). Used by `npm start -- --redis
// sentinel|cluster` and by test/e2e/redis-ha.test.ts. Failure detection is quick here (1 s for
// the sentinels, a 2 s cluster-node-timeout) so a failover takes seconds; production settings are
// the operator's (see docs/running.md).
'use strict';
const { execFile } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { promisify } = require('node:util');
const stack = require('./stack');

const run = promisify(execFile);
/** The name the sentinels monitor the primary by (REDIS_SENTINEL_NAME's default). */
const SENTINEL_NAME = 'mymaster';

const cli = async (port, ...args) => (await run('redis-cli', ['-h', '127.0.0.1', '-p', String(port), ...args], { timeout: 5_000 })).stdout.trim();

function nodeDir(dataDir, name) {
  const d = dataDir ? path.join(dataDir, name) : fs.mkdtempSync(path.join(os.tmpdir(), `mesh-${name}-`));
  fs.mkdirSync(d, { recursive: true });
  return d;
}

/** Whether a server could listen on 127.0.0.1:`port` now. */
const canListen = (port) =>
  new Promise((resolve) => {
    const srv = net.createServer();
    srv.once('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
  });

/** One redis-server; `extra` are more command-line settings. */
async function startNode({ port, logDir, dir, appendOnly, extra = [] }) {
  const args = ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--appendonly', appendOnly ? 'yes' : 'no', ...extra];
  const h = stack.launch(`redis-${port}`, 'redis-server', args, { logDir });
  await stack.waitFor(`redis on ${port}`, () => stack.portOpen(port), { proc: h.proc });
  return { ...h, port };
}

/**
 * A primary, a replica and three sentinels (quorum 2). `ports`: { primary, replica, sentinels: [3] }
 * (default: free ones). Returns the processes, `env` (REDIS_SENTINELS, REDIS_SENTINEL_NAME) for the
 * services, and `primary()`: the node the sentinels name as primary now.
 */
async function startSentinel({ logDir, dataDir, ports = {}, appendOnly = false }) {
  const primaryPort = ports.primary || (await stack.freePort());
  const replicaPort = ports.replica || (await stack.freePort());
  const sentinelPorts = ports.sentinels || [await stack.freePort(), await stack.freePort(), await stack.freePort()];
  const started = [];
  try {
    const primary = await startNode({ port: primaryPort, logDir, dir: nodeDir(dataDir, 'primary'), appendOnly });
    started.push(primary);
    const replica = await startNode({ port: replicaPort, logDir, dir: nodeDir(dataDir, 'replica'), appendOnly, extra: ['--replicaof', '127.0.0.1', String(primaryPort)] });
    started.push(replica);
    await stack.waitFor('replica in sync', async () => /master_link_status:up/.test(await cli(replicaPort, 'info', 'replication')));
    const sentinels = [];
    for (const [i, port] of sentinelPorts.entries()) {
      // A sentinel rewrites its configuration file (what it learnt): a new one on each start.
      const dir = nodeDir(dataDir, `sentinel-${i + 1}`);
      const conf = path.join(dir, 'sentinel.conf');
      fs.writeFileSync(conf, [
        `port ${port}`, 'bind 127.0.0.1', `dir ${dir}`,
        `sentinel monitor ${SENTINEL_NAME} 127.0.0.1 ${primaryPort} 2`,
        `sentinel down-after-milliseconds ${SENTINEL_NAME} 1000`,
        `sentinel failover-timeout ${SENTINEL_NAME} 5000`,
        `sentinel parallel-syncs ${SENTINEL_NAME} 1`,
        '',
      ].join('\n'));
      const h = stack.launch(`redis-sentinel-${port}`, 'redis-sentinel', [conf], { logDir });
      started.push(h);
      await stack.waitFor(`sentinel on ${port}`, () => stack.portOpen(port), { proc: h.proc });
      sentinels.push({ ...h, port });
    }
    // Ready once every sentinel knows the replica and the others (a failover needs them).
    await stack.waitFor('sentinels ready', async () => {
      for (const s of sentinels) {
        if (!/^OK/.test(await cli(s.port, 'sentinel', 'ckquorum', SENTINEL_NAME))) return false;
        const replicas = await cli(s.port, 'sentinel', 'replicas', SENTINEL_NAME);
        if (!replicas.includes(String(replicaPort))) return false;
        const peers = await cli(s.port, 'sentinel', 'sentinels', SENTINEL_NAME);
        if (sentinelPorts.filter((p) => p !== s.port).some((p) => !peers.includes(String(p)))) return false;
      }
      return true;
    }, { timeoutMs: 30_000, intervalMs: 200 });
    const nodes = [primary, replica];
    return {
      mode: 'sentinel',
      nodes,
      sentinels,
      all: started,
      url: `redis://127.0.0.1:${primaryPort}`,
      env: { REDIS_SENTINELS: sentinels.map((s) => `127.0.0.1:${s.port}`).join(','), REDIS_SENTINEL_NAME: SENTINEL_NAME },
      /** The node the (first live) sentinel names as primary. */
      primary: async () => {
        for (const s of sentinels) {
          if (s.proc.exitCode !== null || s.proc.signalCode !== null) continue;
          const [, port] = (await cli(s.port, 'sentinel', 'get-master-addr-by-name', SENTINEL_NAME)).split('\n');
          return nodes.find((n) => n.port === Number(port));
        }
        return undefined;
      },
      stop: async () => { for (const s of [...started].reverse()) await s.stop(); },
    };
  } catch (err) {
    for (const s of started.reverse()) await s.kill();
    throw err;
  }
}

/**
 * Six nodes made into a cluster of three primaries with a replica each (`redis-cli --cluster
 * create`). `ports`: six ports (default: free ones; each node's bus port is free too). With a
 * `dataDir` that already holds the nodes' cluster state (nodes.conf), the nodes form the same
 * cluster again and nothing is created. Returns `env` (REDIS_CLUSTER_NODES) and `primaryOf(slot)`.
 */
async function startCluster({ logDir, dataDir, ports, appendOnly = false }) {
  const nodePorts = ports || (await Promise.all(Array.from({ length: 6 }, () => stack.freePort())));
  const started = [];
  try {
    const nodes = [];
    let existing = 0;
    // Ports taken or promised: a bus port must not be another node's port, which is free until
    // that node starts (a node whose port is someone's bus exits at once: "Address already in use").
    const taken = new Set(nodePorts);
    const busPortFor = async (port) => {
      let p = port + 10_000;
      // port + 10000 unless that would leave the port range, is promised, or is in use (a node
      // whose bus port is in use exits at once: "Failed listening on port … (cluster)").
      while (p > 65_535 || taken.has(p) || !(await canListen(p))) p = await stack.freePort();
      taken.add(p);
      return p;
    };
    for (const port of nodePorts) {
      const dir = nodeDir(dataDir, `node-${port}`);
      if (fs.existsSync(path.join(dir, 'nodes.conf'))) existing += 1;
      const busPort = await busPortFor(port);
      const n = await startNode({
        port, logDir, dir, appendOnly,
        extra: ['--cluster-enabled', 'yes', '--cluster-config-file', 'nodes.conf', '--cluster-node-timeout', '2000', '--cluster-port', String(busPort)],
      });
      started.push(n);
      nodes.push(n);
    }
    if (existing === 0) {
      await run('redis-cli', ['--cluster', 'create', ...nodePorts.map((p) => `127.0.0.1:${p}`), '--cluster-replicas', '1', '--cluster-yes'], { timeout: 60_000 })
        .catch((err) => { throw new Error(`${err.message}\n${err.stdout ?? ''}${err.stderr ?? ''}`.trim()); });
    }
    await stack.waitFor('cluster ok on every node', async () => {
      for (const n of nodes) if (!/cluster_state:ok/.test(await cli(n.port, 'cluster', 'info'))) return false;
      return true;
    }, { timeoutMs: 60_000, intervalMs: 250 });
    // The replicas must have synced before a primary may be lost.
    await stack.waitFor('replicas in sync', async () => {
      let synced = 0;
      for (const n of nodes) {
        const info = await cli(n.port, 'info', 'replication');
        if (/role:slave/.test(info) && /master_link_status:up/.test(info)) synced += 1;
      }
      return synced === 3;
    }, { timeoutMs: 30_000, intervalMs: 250 });
    return {
      mode: 'cluster',
      nodes,
      all: started,
      url: `redis://127.0.0.1:${nodePorts[0]}`,
      env: { REDIS_CLUSTER_NODES: nodePorts.map((p) => `127.0.0.1:${p}`).join(',') },
      /** The node serving `slot` as a primary now, as the first live node's CLUSTER NODES says. */
      primaryOf: async (slot) => {
        const live = nodes.find((n) => n.proc.exitCode === null && n.proc.signalCode === null);
        // <id> <ip:port@bus> <flags> <primary> <ping> <pong> <epoch> <link> <slot ranges…>
        for (const line of (await cli(live.port, 'cluster', 'nodes')).split('\n')) {
          const f = line.split(' ');
          if (!f[2] || !f[2].split(',').includes('master') || f[2].includes('fail')) continue;
          const owns = f.slice(8).some((r) => {
            const [a, b = a] = r.split('-').map(Number);
            return a <= slot && slot <= b;
          });
          if (owns) return nodes.find((n) => n.port === Number(f[1].split('@')[0].split(':').pop()));
        }
        return undefined;
      },
      stop: async () => { for (const s of [...started].reverse()) await s.stop(); },
    };
  } catch (err) {
    for (const s of started.reverse()) await s.kill();
    throw err;
  }
}

module.exports = { startSentinel, startCluster, SENTINEL_NAME };
