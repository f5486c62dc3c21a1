// memory.ts reaches into fastify's and Node's internals by name. These tests run them on a real
// fastify server and real sockets, so that an upgrade of fastify or Node that renames what they
// rely on fails here, rather than streams silently keeping their requests and replies again.
import type { IncomingMessage, ServerResponse } from 'node:http';
import Fastify from 'fastify';
import { createLogger } from '@agent-mesh/common';
import { buildApp, type EdgeApp } from '../app';
import { devAuth, signToken } from '../auth';
import { memoryRequestLimiter } from '../ratelimit';
import { fakeGateways } from '../testing/fakes';
import net from 'node:net';
import { canReleaseParser, FASTIFY_RESPONSE_LISTENER, forgetRequest, NODE_PARSER_LISTENERS, releaseFastifyListeners, releaseParser } from './memory';

const listenerNames = (res: ServerResponse, event: 'finish' | 'error') => res.listeners(event).map((l) => (l as { name?: string }).name);

/** Where the own properties of `root` (string or symbol keys, through plain objects and arrays) hold a string containing `secret`. */
function whereHeld(root: object, secret: string): string[] {
  const found: string[] = [];
  const visit = (v: unknown, path: string, depth: number) => {
    if (typeof v === 'string') {
      if (v.includes(secret)) found.push(path);
      return;
    }
    if (depth > 3 || typeof v !== 'object' || v === null) return;
    // Plain objects of any realm (Node's own objects are not of the test's realm): their prototype is a root.
    const proto = Object.getPrototypeOf(v);
    if (v !== root && !Array.isArray(v) && proto !== null && Object.getPrototypeOf(proto) !== null) return;
    for (const k of Reflect.ownKeys(v)) visit((v as Record<PropertyKey, unknown>)[k], `${path}.${String(k)}`, depth + 1);
  };
  visit(root, 'req', 0);
  return found;
}

describe('on a bare fastify server', () => {
  test(`fastify's response listener is still named ${FASTIFY_RESPONSE_LISTENER}, on 'finish' and 'error', and is what gets dropped`, async () => {
    const app = Fastify();
    app.addHook('onResponse', async () => undefined); // with a hook, fastify watches every response's end
    let seen: { before: unknown; dropped: number; after: unknown } | undefined;
    app.get('/s', (_req, reply) => {
      const raw = reply.raw;
      const before = { finish: listenerNames(raw, 'finish'), error: listenerNames(raw, 'error') };
      void reply.hijack();
      const dropped = releaseFastifyListeners(raw);
      seen = { before, dropped, after: { finish: listenerNames(raw, 'finish'), error: listenerNames(raw, 'error') } };
      raw.end('ok');
    });
    await app.listen({ port: 0, host: '127.0.0.1' });
    try {
      const { port } = app.server.address() as { port: number };
      expect(await (await fetch(`http://127.0.0.1:${port}/s`)).text()).toBe('ok');
      expect(seen!.before).toEqual({ finish: expect.arrayContaining([FASTIFY_RESPONSE_LISTENER]), error: expect.arrayContaining([FASTIFY_RESPONSE_LISTENER]) });
      expect(seen!.dropped).toBe(2);
      expect(seen!.after).toEqual({ finish: expect.not.arrayContaining([FASTIFY_RESPONSE_LISTENER]), error: expect.not.arrayContaining([FASTIFY_RESPONSE_LISTENER]) });
    } finally {
      await app.close();
    }
  });

  test("Node keeps the request on the response (res.req) and on its connection's parser; forgetRequest leaves it no token", async () => {
    const app = Fastify();
    const TOKEN = 'header-token-0123456789abcdef';
    const QUERY = 'query-token-fedcba9876543210';
    let seen: { resReq: boolean; parserIncoming: boolean; heldBefore: string[]; heldAfter: string[]; url: string; headers: unknown; rawHeaders: unknown } | undefined;
    app.get('/s', (req, reply) => {
      const raw = reply.raw;
      const incoming = raw.req as IncomingMessage;
      const parser = (incoming.socket as unknown as { parser?: { incoming?: unknown } }).parser;
      void req.headers.authorization; // parsed headers, as fastify's routing and auth read them
      const heldBefore = [...whereHeld(incoming, TOKEN), ...whereHeld(incoming, QUERY)];
      forgetRequest(raw);
      seen = {
        resReq: incoming === req.raw,
        parserIncoming: parser?.incoming === incoming,
        heldBefore,
        heldAfter: [...whereHeld(incoming, TOKEN), ...whereHeld(incoming, QUERY)],
        url: incoming.url!,
        headers: { ...incoming.headers },
        rawHeaders: [...incoming.rawHeaders],
      };
      void reply.hijack();
      raw.end('ok');
    });
    await app.listen({ port: 0, host: '127.0.0.1' });
    try {
      const { port } = app.server.address() as { port: number };
      const res = await fetch(`http://127.0.0.1:${port}/s?access_token=${QUERY}&x=1`, { headers: { authorization: `Bearer ${TOKEN}` } });
      expect(await res.text()).toBe('ok');
      expect(seen!.resReq).toBe(true);
      expect(seen!.parserIncoming).toBe(true);
      // What forgetRequest clears is where Node holds them: headers (parsed and raw) and the URL.
      expect(seen!.heldBefore).toEqual(expect.arrayContaining(['req.Symbol(kHeaders).authorization', 'req.url', expect.stringMatching(/^req\.rawHeaders\.\d+$/)]));
      expect(seen!.heldAfter).toEqual([]);
      expect(seen!.url).toBe('/s');
      expect(seen!.headers).toEqual({});
      expect(seen!.rawHeaders).toEqual([]);
    } finally {
      await app.close();
    }
  });
});

describe("a stream's HTTP parser, given back", () => {
  /** A raw HTTP/1.1 client on one socket: what it has read so far, and its socket. */
  const rawClient = (port: number, request: string) => {
    const socket = net.connect(port, '127.0.0.1');
    let got = '';
    socket.on('data', (d) => (got += String(d)));
    socket.write(request);
    return { socket, got: () => got, closed: new Promise<void>((r) => socket.once('close', () => r())) };
  };
  const until = async (what: () => boolean) => {
    for (let i = 0; i < 200 && !what(); i++) await new Promise((r) => setTimeout(r, 10));
    expect(what()).toBe(true);
  };

  test(`Node's listeners holding it are still named ${Object.values(NODE_PARSER_LISTENERS).join(' and ')}: once the head says Connection: close the parser goes back to the pool, the stream goes on, a pipelined request is not served, and the client's end closes the connection`, async () => {
    const app = Fastify();
    const seen: { can: boolean; released: boolean; before: string[]; after: string[]; parser: unknown }[] = [];
    let raws: ServerResponse[] = [];
    let served = 0;
    app.get('/s', (_req, reply) => {
      served += 1;
      const raw = reply.raw;
      void reply.hijack();
      const socket = raw.socket!;
      const names = () => [...socket.listeners('data'), ...socket.listeners('end')].map((l) => (l as { name?: string }).name ?? '');
      const can = canReleaseParser(raw);
      const before = names();
      raw.writeHead(200, { 'content-type': 'text/event-stream', connection: 'close' });
      raw.write(': open\n\n');
      const released = releaseParser(raw);
      seen.push({ can, released, before, after: names(), parser: (socket as unknown as { parser?: unknown }).parser });
      raws.push(raw);
    });
    await app.listen({ port: 0, host: '127.0.0.1' });
    try {
      const { port } = app.server.address() as { port: number };
      // A second request pipelined behind the stream's: with the parser given back, it is never read as one.
      const a = rawClient(port, 'GET /s HTTP/1.1\r\nHost: x\r\n\r\nGET /s HTTP/1.1\r\nHost: x\r\n\r\n');
      await until(() => a.got().includes(': open'));
      expect(seen[0]).toEqual({
        can: true, released: true, parser: null,
        before: expect.arrayContaining(Object.values(NODE_PARSER_LISTENERS)),
        after: expect.not.arrayContaining(Object.values(NODE_PARSER_LISTENERS)),
      });
      expect(a.got()).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
      expect(a.got().toLowerCase()).toContain('connection: close');
      raws[0]!.write('data: more\n\n');
      await until(() => a.got().includes('data: more'));
      // Other connections get parsers (from the pool) and are served as usual, while the stream is open.
      const b = rawClient(port, 'GET /s HTTP/1.1\r\nHost: x\r\n\r\n');
      await until(() => b.got().includes(': open'));
      expect(served).toBe(2);
      expect(a.got().match(/HTTP\/1\.1 200/g)).toHaveLength(1);
      // The client's end closes its connection; the server's end of the stream closes it too.
      a.socket.end();
      await a.closed;
      await until(() => raws[0]!.destroyed || raws[0]!.socket === null || raws[0]!.socket.destroyed);
      raws[1]!.end();
      await b.closed;
      raws = [];
    } finally {
      await app.close();
    }
  });
});

describe('on the edge app', () => {
  let edge: EdgeApp;
  let gw: ReturnType<typeof fakeGateways>;
  let base: string;
  const requests: { req: IncomingMessage; res: ServerResponse; finish: unknown[]; error: unknown[] }[] = [];

  beforeAll(async () => {
    gw = fakeGateways();
    gw.fakeOrchestrator.intervalMs = 200; // the run streams long enough to look at it while it is open
    edge = await buildApp({
      cfg: {
        auth: devAuth('memory-test-secret-of-sufficient-length'),
        sse: { maxStreams: 10, heartbeatMs: 15_000, bufferMaxEvents: 1000, bufferMaxBytes: 1 << 20, retryMs: 2000 },
        maxMessageChars: 8000, bodyLimitBytes: 65_536, v1BodyLimitBytes: 1 << 20, corsOrigins: [], llmModel: 'upstream',
      },
      gateways: gw, logger: createLogger('edge-test', 'silent'), requestLimiter: memoryRequestLimiter(0), publicDir: '/nonexistent',
    });
    // After fastify's own 'request' listener, which has set up the response by now.
    edge.app.server.on('request', (req: IncomingMessage, res: ServerResponse) => {
      requests.push({ req, res, finish: listenerNames(res, 'finish'), error: listenerNames(res, 'error') });
    });
    await edge.app.listen({ port: 0, host: '127.0.0.1' });
    base = `http://127.0.0.1:${(edge.app.server.address() as { port: number }).port}`;
  });
  afterAll(async () => {
    for (const run of gw.fakeOrchestrator.runs.values()) run.done = true; // the fake's scripts stop playing
    edge.drain();
    await edge.app.close();
  });

  test('a committed event stream holds no fastify listener, no request headers and no token in its URL', async () => {
    const token = await signToken('memory-test-secret-of-sufficient-length', 'alice');
    const created = await fetch(`${base}/api/conversations`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: '{}' });
    const { id } = (await created.json()) as { id: string };
    const post = await fetch(`${base}/api/conversations/${id}/messages`, {
      method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify({ content: 'hello' }),
    });
    expect(post.status).toBe(200);
    const reader = post.body!.getReader();
    await reader.read(); // committed: headers and the first bytes are out
    const events = await fetch(`${base}/api/conversations/${id}/events?access_token=${token}`);
    expect(events.status).toBe(200);
    const eventsReader = events.body!.getReader();
    await eventsReader.read();
    try {
      const streams = requests.filter((r) => /\/(messages|events)(\?|$)/.test(r.req.url ?? ''));
      expect(streams.map((r) => [r.req.method, r.res.headersSent, r.res.writableEnded])).toEqual([['POST', true, false], ['GET', true, false]]);
      expect([post.headers.get('connection'), events.headers.get('connection')]).toEqual(['close', 'close']);
      for (const s of streams) {
        // fastify had its listener on the response when the request came in …
        expect(s.finish).toContain(FASTIFY_RESPONSE_LISTENER);
        expect(s.error).toContain(FASTIFY_RESPONSE_LISTENER);
        // … and the committed stream has let it go, with the request's headers and query.
        expect(listenerNames(s.res, 'finish')).not.toContain(FASTIFY_RESPONSE_LISTENER);
        expect(listenerNames(s.res, 'error')).not.toContain(FASTIFY_RESPONSE_LISTENER);
        expect(whereHeld(s.req, token)).toEqual([]);
        expect(s.req.url).not.toContain('?');
        // Its connection's last request (Connection: close, above): the HTTP parser is given back.
        expect((s.res.socket as unknown as { parser?: unknown }).parser).toBeNull();
      }
    } finally {
      await reader.cancel();
      await eventsReader.cancel();
    }
  });
});
