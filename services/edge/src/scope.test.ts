// requestScope on a real fastify server: the signal aborts when the client leaves before the
// answer (not after a full answer), and the deadline counts from the request's arrival.
import http from 'node:http';
import Fastify from 'fastify';
import { requestScope } from './scope';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('the signal aborts when the client leaves before the answer, not after it; the deadline counts from arrival', async () => {
  const app = Fastify();
  // As on the edge (its request metrics): with an onResponse hook fastify times every reply from its start.
  app.addHook('onResponse', async () => undefined);
  const seen: { path: string; arrivedAt: number; deadline: number; aborted: () => boolean }[] = [];
  app.addHook('onRequest', async (req) => {
    (req as unknown as { arrivedAt: number }).arrivedAt = Date.now();
    await sleep(300); // time spent before the handler (auth, limits) comes out of the budget
  });
  app.get('/:mode', async (req, reply) => {
    const scope = requestScope(reply, 2_000);
    const path = (req.params as { mode: string }).mode;
    seen.push({ path, arrivedAt: (req as unknown as { arrivedAt: number }).arrivedAt, deadline: scope.deadline, aborted: () => scope.signal.aborted });
    if (path === 'slow') await sleep(1_000);
    return 'ok';
  });
  await app.listen({ port: 0, host: '127.0.0.1' });
  try {
    const { port } = app.server.address() as { port: number };
    expect(await (await fetch(`http://127.0.0.1:${port}/fast`)).text()).toBe('ok');
    // A client that gives up while the handler works.
    await new Promise<void>((resolve) => {
      const r = http.get(`http://127.0.0.1:${port}/slow`);
      r.on('error', () => resolve());
      setTimeout(() => r.destroy(), 500);
    });
    await sleep(100);
    const [fast, slow] = seen;
    expect(fast!.aborted()).toBe(false);
    expect(slow!.aborted()).toBe(true);
    for (const s of seen) {
      expect(s.deadline).toBeGreaterThanOrEqual(s.arrivedAt + 2_000 - 50);
      expect(s.deadline).toBeLessThanOrEqual(s.arrivedAt + 2_000 + 50);
    }
  } finally {
    await app.close();
  }
});
