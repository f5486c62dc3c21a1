// A local Redis Cluster (deploy/local/redis-ha.js) forms whatever ports its nodes get. A node's bus
// port is its port + 10000 by default; when that is another node's port (free until that node
// starts), the bus takes it first and the other node exits ("Address already in use"), and
// `redis-cli --cluster create` fails. It happened in CI with free ports 34101 and 44101.
import { execFileSync } from 'node:child_process';
import { testDir } from '../support';

// eslint-disable-next-line @typescript-eslint/no-require-imports
const ha = require('../../deploy/local/redis-ha.js') as {
  startCluster(o: { logDir: string; ports?: number[] }): Promise<{ nodes: { port: number }[]; stop(): Promise<void> }>;
};
// eslint-disable-next-line @typescript-eslint/no-require-imports
const stack = require('../../deploy/local/stack.js') as { freePort(): Promise<number>; portOpen(port: number): Promise<boolean> };

jest.setTimeout(120_000);

/** Three free ports whose port + 10000 is free too: the six nodes' ports. */
async function pairedPorts(): Promise<number[]> {
  const ports: number[] = [];
  while (ports.length < 6) {
    const p = await stack.freePort();
    if (p + 10_000 <= 65_535 && !(await stack.portOpen(p + 10_000))) ports.push(p, p + 10_000);
  }
  return ports;
}

test("a cluster forms when a node's port is another node's port + 10000", async () => {
  const ports = await pairedPorts();
  const cluster = await ha.startCluster({ logDir: testDir('redis-cluster-ports'), ports });
  try {
    expect(cluster.nodes.map((n) => n.port)).toEqual(ports);
    for (const port of ports) {
      const info = execFileSync('redis-cli', ['-p', String(port), 'cluster', 'info'], { encoding: 'utf8' });
      expect(info).toMatch(/cluster_state:ok/);
      expect(info).toMatch(/cluster_known_nodes:6/);
    }
  } finally {
    await cluster.stop();
  }
});
