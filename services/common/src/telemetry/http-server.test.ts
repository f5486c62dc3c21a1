// traceHttpRequest on a real HTTP server, its spans recorded by a real tracer provider in memory.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { SpanKind, SpanStatusCode, trace } from '@opentelemetry/api';
import { InMemorySpanExporter, NodeTracerProvider, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-node';
import { traceHttpRequest } from './http-server';

const exporter = new InMemorySpanExporter();
const provider = new NodeTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
let server: http.Server;
let base: string;

/** Waits for `n` ended spans (a span ends when its response closes, after the client has it). */
async function spans(n: number) {
  const until = Date.now() + 5_000;
  while (exporter.getFinishedSpans().length < n && Date.now() < until) await new Promise((r) => setTimeout(r, 10));
  return exporter.getFinishedSpans();
}

beforeAll(async () => {
  provider.register(); // the AsyncLocalStorage context manager and the W3C propagator, as in a service
  server = http.createServer((req, res) => {
    const route = req.url!.startsWith('/things/') ? '/things/:id' : undefined;
    traceHttpRequest(req, res, route, () => {
      // Work done for the request, later in its async chain: a child of its span.
      setImmediate(() => {
        trace.getTracer('test').startSpan('work').end();
        if (req.url!.includes('stream')) {
          res.writeHead(200, { 'content-type': 'text/event-stream' });
          res.write(': open\n\n');
          return; // never ended: the client goes away
        }
        res.statusCode = req.url!.includes('fail') ? 500 : req.url!.includes('missing') ? 404 : 200;
        res.end('ok');
      });
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(async () => {
  server.closeAllConnections();
  await new Promise((r) => server.close(r));
  await provider.shutdown();
});
beforeEach(() => exporter.reset());

describe('traceHttpRequest', () => {
  test("continues the caller's trace with a server span named by the route; the request's work is its child", async () => {
    const traceId = '4bf92f3577b34da6a3ce929d0e0e4736';
    const res = await fetch(`${base}/things/42`, { headers: { traceparent: `00-${traceId}-00f067aa0ba902b7-01`, 'user-agent': 'probe/1' } });
    expect(res.status).toBe(200);
    const [work, server] = await spans(2);
    expect(server!.name).toBe('GET /things/:id');
    expect(server!.kind).toBe(SpanKind.SERVER);
    expect(server!.spanContext().traceId).toBe(traceId);
    expect(server!.parentSpanContext?.spanId).toBe('00f067aa0ba902b7');
    expect(server!.attributes).toMatchObject({
      'http.request.method': 'GET', 'url.path': '/things/42', 'url.scheme': 'http', 'http.route': '/things/:id', 'http.response.status_code': 200, 'user_agent.original': 'probe/1',
    });
    expect(server!.status.code).toBe(SpanStatusCode.UNSET);
    expect(work!.name).toBe('work');
    expect(work!.parentSpanContext?.spanId).toBe(server!.spanContext().spanId);
    expect(work!.spanContext().traceId).toBe(traceId);
  });

  test('records the path, never the query (where an event stream carries its access token)', async () => {
    await fetch(`${base}/things/7?access_token=eyJ.secret.sig&x=1`);
    const [, server] = await spans(2);
    expect(server!.attributes['url.path']).toBe('/things/7');
    expect(JSON.stringify(server!.attributes)).not.toContain('secret');
  });

  test('a 5xx is an error, a 4xx is not; a request without a route is named by its method, in a trace of its own', async () => {
    await fetch(`${base}/things/1?fail`);
    await fetch(`${base}/missing`);
    const servers = (await spans(4)).filter((s) => s.kind === SpanKind.SERVER);
    expect(servers.map((s) => [s.name, s.attributes['http.response.status_code'], s.status.code])).toEqual([
      ['GET /things/:id', 500, SpanStatusCode.ERROR],
      ['GET', 404, SpanStatusCode.UNSET],
    ]);
    expect(servers[1]!.parentSpanContext).toBeUndefined();
  });

  test('a stream the client leaves still ends its span', async () => {
    const ac = new AbortController();
    const res = await fetch(`${base}/things/9?stream`, { signal: ac.signal });
    expect(res.headers.get('content-type')).toBe('text/event-stream');
    await res.body!.getReader().read();
    expect(exporter.getFinishedSpans().filter((s) => s.kind === SpanKind.SERVER)).toHaveLength(0);
    ac.abort();
    const server = (await spans(2)).find((s) => s.kind === SpanKind.SERVER);
    expect(server?.attributes['http.response.status_code']).toBe(200);
  });
});
