// The fleet's nginx (deploy/local/fleet.js) in front of two stand-in edges: one dies holding every
// request it takes (its socket reset, as a `kill -9` leaves it), the other answers. A message POST
// (idempotent on its messageId: StartRun answers the run the first attempt started) is retried on
// the other edge, and so is a conversation created by PUT with the client's id (idempotent, as PUT
// is for nginx); any other POST is not (it might have done its work before dying), and its client
// gets nginx's 502.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { testDir, type Proc } from '../support';
// eslint-disable-next-line @typescript-eslint/no-require-imports
const { startNginx } = require('../../deploy/local/fleet.js') as {
  startNginx(o: { edges: string[]; logDir: string }): Promise<Proc & { url: string }>;
};

interface Edge { server: http.Server; addr: string; requests: string[] }

async function edge(dies: boolean): Promise<Edge> {
  const requests: string[] = [];
  const server = http.createServer((req, res) => {
    requests.push(`${req.method} ${req.url}`);
    req.resume();
    req.on('end', () => {
      if (dies) req.socket.resetAndDestroy();
      else res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ servedBy: 'survivor' }));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, addr: `127.0.0.1:${(server.address() as AddressInfo).port}`, requests };
}

let dir: string;
const open: Array<{ stop(): Promise<unknown> }> = [];

beforeAll(() => { dir = testDir('nginx-retry'); });
afterEach(async () => { while (open.length) await open.pop()!.stop(); });

/** nginx in front of a dying edge and a surviving one; requests go until the dying one took one. */
async function throughNginx(path: string, method = 'POST'): Promise<{ statuses: number[]; dying: Edge; survivor: Edge }> {
  const [dying, survivor] = await Promise.all([edge(true), edge(false)]);
  open.push({ stop: () => new Promise((r) => { dying.server.close(r); survivor.server.close(r); dying.server.closeAllConnections(); survivor.server.closeAllConnections(); }) });
  const nginx = await startNginx({ edges: [dying.addr, survivor.addr], logDir: dir });
  open.push(nginx);
  const statuses: number[] = [];
  // least_conn with both idle takes them in turn: the dying edge gets one of the first two.
  for (let i = 0; i < 4 && dying.requests.length === 0; i += 1) {
    const res = await fetch(`${nginx.url}${path}`, { method, headers: { 'content-type': 'application/json' }, body: JSON.stringify({ content: 'hi' }) });
    await res.text();
    statuses.push(res.status);
  }
  return { statuses, dying, survivor };
}

test('a message POST that an edge took and died with is retried on the other edge', async () => {
  const { statuses, dying, survivor } = await throughNginx('/api/conversations/c1/messages');
  expect(dying.requests).toEqual(['POST /api/conversations/c1/messages']);
  expect(statuses.every((s) => s === 200)).toBe(true);
  expect(survivor.requests).toHaveLength(statuses.length);
});

test('a conversation created by PUT (idempotent on its id) that an edge took and died with is retried on the other edge', async () => {
  const { statuses, dying, survivor } = await throughNginx('/api/conversations/c1', 'PUT');
  expect(dying.requests).toEqual(['PUT /api/conversations/c1']);
  expect(statuses.every((s) => s === 200)).toBe(true);
  expect(survivor.requests).toHaveLength(statuses.length);
});

test('any other POST is not retried: its client gets 502', async () => {
  const { statuses, dying, survivor } = await throughNginx('/api/conversations');
  expect(dying.requests).toEqual(['POST /api/conversations']);
  expect(statuses.at(-1)).toBe(502);
  expect(survivor.requests).toHaveLength(statuses.length - 1);
});
