// The span of each call to the provider: HttpProvider against a real HTTP server speaking the OpenAI
// protocol, its spans recorded by a real tracer provider in memory.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { SpanKind, SpanStatusCode, trace } from '@opentelemetry/api';
import { InMemorySpanExporter, NodeTracerProvider, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-node';
import { HttpProvider, joinContent } from './http';
import { openAiProtocol } from './openai';
import type { ProviderRequest, StreamEvent } from './provider';
import { CONNECT_FAILED } from './requests';

const exporter = new InMemorySpanExporter();
const tracing = new NodeTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
let server: http.Server;
let base: string;
/** The traceparent header of each request the server got. */
const seen: (string | undefined)[] = [];

const chunk = (content: string) => `data: ${JSON.stringify({ id: 'c1', object: 'chat.completion.chunk', model: 'm', choices: [{ index: 0, delta: { content } }] })}\n\n`;
const last = `data: ${JSON.stringify({ id: 'c1', object: 'chat.completion.chunk', model: 'm', choices: [{ index: 0, delta: {}, finish_reason: 'stop' }] })}\n\ndata: [DONE]\n\n`;

beforeAll(async () => {
  tracing.register();
  server = http.createServer((req, res) => {
    seen.push(req.headers.traceparent as string | undefined);
    let body = '';
    req.on('data', (b: Buffer) => (body += b));
    req.on('end', () => {
      if (req.headers['x-test'] === 'cut') {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        res.write(chunk('hello'));
        setTimeout(() => res.socket?.destroy(), 50); // the connection dies midway
        return;
      }
      if (req.headers['x-test'] === 'burst') {
        // Three tokens in one write, the fourth 100 ms later.
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        res.write(chunk('a') + chunk('b') + chunk('c'));
        setTimeout(() => res.end(`${chunk('d')}${last}`), 100);
        return;
      }
      if (req.headers['x-test'] === 'busy') {
        res.writeHead(503, { 'content-type': 'application/json' });
        return res.end(JSON.stringify({ error: { message: 'overloaded', type: 'server_error' } }));
      }
      if ((JSON.parse(body) as { stream: boolean }).stream === false) {
        const answer = { id: 'c1', object: 'chat.completion', model: 'm', choices: [{ index: 0, message: { role: 'assistant', content: 'whole' }, finish_reason: 'stop' }], usage: { prompt_tokens: 5, completion_tokens: 1, total_tokens: 6 } };
        res.writeHead(200, { 'content-type': 'application/json' }).flushHeaders(); // the body 150 ms after the headers
        return setTimeout(() => res.end(JSON.stringify(answer)), 150);
      }
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write(chunk('hello'));
      // The rest of the answer 150 ms later: the span lasts as long as the stream.
      setTimeout(() => res.end(`${chunk(' world')}${last}`), 150);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`;
});
afterAll(async () => {
  server.closeAllConnections();
  await new Promise((r) => server.close(r));
  await tracing.shutdown();
});
beforeEach(() => {
  exporter.reset();
  seen.length = 0;
});

const request: ProviderRequest = { model: 'm', messages: [{ role: 'user', content: 'hi' }], tools: [], maxTokens: 8 };

/** A provider whose requests carry `x-test: <header>` (the protocol's own headers, plus this one). */
function provider(baseUrl: string, header?: string): HttpProvider {
  const wire = header ? { ...openAiProtocol, request: (...a: Parameters<typeof openAiProtocol.request>) => {
    const r = openAiProtocol.request(...a);
    return { ...r, headers: { ...r.headers, 'x-test': header } };
  } } : openAiProtocol;
  return new HttpProvider(wire, { baseUrl, apiKey: 'sk-test', requestTimeoutMs: 2_000 });
}

/** Runs `fn` inside a parent span, as the broker's Generate handler does; returns the parent. */
function underParent(fn: () => Promise<void>) {
  return trace.getTracer('test').startActiveSpan('Generate', async (span) => {
    try {
      await fn();
    } finally {
      span.end();
    }
    return span;
  });
}

async function readAll(events: AsyncIterable<StreamEvent>): Promise<StreamEvent[]> {
  const out: StreamEvent[] = [];
  for await (const e of events) out.push(e);
  return out;
}

describe('HttpProvider traces each call as one client span', () => {
  test('a streamed call: a child of the active span, its context sent upstream, ended with the stream', async () => {
    const p = provider(base);
    let opened = 0;
    let events: StreamEvent[] = [];
    const parent = await underParent(async () => {
      const stream = await p.open(request, new AbortController().signal);
      opened = Date.now();
      expect(exporter.getFinishedSpans().filter((s) => s.kind === SpanKind.CLIENT)).toHaveLength(0); // not ended while streaming
      events = await readAll(stream.events);
    });
    await p.close();
    expect(events.filter((e) => e.type === 'content').map((e) => (e as { text: string }).text).join('')).toBe('hello world');
    const calls = exporter.getFinishedSpans().filter((s) => s.kind === SpanKind.CLIENT);
    expect(calls).toHaveLength(1);
    const span = calls[0]!;
    expect(span.name).toBe('POST');
    expect(span.parentSpanContext?.spanId).toBe(parent.spanContext().spanId);
    expect(span.spanContext().traceId).toBe(parent.spanContext().traceId);
    expect(seen).toEqual([`00-${span.spanContext().traceId}-${span.spanContext().spanId}-01`]);
    expect(span.attributes).toEqual({
      'http.request.method': 'POST',
      'url.full': `${base}/chat/completions`,
      'server.address': '127.0.0.1',
      'server.port': Number(new URL(base).port),
      'http.response.status_code': 200,
    });
    expect(span.status.code).toBe(SpanStatusCode.UNSET);
    const endMs = span.endTime[0] * 1000 + span.endTime[1] / 1e6;
    expect(endMs).toBeGreaterThanOrEqual(opened + 100); // the rest of the stream came 150 ms after the headers
  });

  test('a call for the whole answer: its span ends once the answer is read', async () => {
    const p = provider(base);
    let started = 0;
    let events: StreamEvent[] = [];
    await underParent(async () => {
      started = Date.now();
      events = await readAll((await p.open({ ...request, stream: false }, new AbortController().signal)).events);
    });
    await p.close();
    expect(events).toContainEqual({ type: 'content', text: 'whole' });
    const calls = exporter.getFinishedSpans().filter((s) => s.kind === SpanKind.CLIENT);
    expect(calls).toHaveLength(1);
    expect(calls[0]!.attributes['http.response.status_code']).toBe(200);
    expect(calls[0]!.endTime[0] * 1000 + calls[0]!.endTime[1] / 1e6).toBeGreaterThanOrEqual(started + 100);
  });

  test('a stream given up midway ends its span too', async () => {
    const p = provider(base);
    await underParent(async () => {
      const stream = await p.open(request, new AbortController().signal);
      const it = stream.events[Symbol.asyncIterator]();
      await it.next();
      await it.return?.(undefined);
    });
    const until = Date.now() + 2_000;
    while (exporter.getFinishedSpans().filter((s) => s.kind === SpanKind.CLIENT).length === 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 10));
    await p.close();
    expect(exporter.getFinishedSpans().filter((s) => s.kind === SpanKind.CLIENT)).toHaveLength(1);
  });

  test('a stream cut midway is a failed span', async () => {
    const p = provider(base, 'cut');
    await underParent(async () => {
      const stream = await p.open(request, new AbortController().signal);
      await expect(readAll(stream.events)).rejects.toThrow(/upstream stream failed/);
    });
    await p.close();
    const calls = exporter.getFinishedSpans().filter((s) => s.kind === SpanKind.CLIENT);
    expect(calls).toHaveLength(1);
    expect(calls[0]!.attributes['http.response.status_code']).toBe(200);
    expect(calls[0]!.status.code).toBe(SpanStatusCode.ERROR);
    expect(calls[0]!.attributes['error.type']).toEqual(expect.any(String));
  });

  test('an error status and a refused connection are failed spans, saying why', async () => {
    const busy = provider(base, 'busy');
    await underParent(async () => {
      await expect(busy.open(request, new AbortController().signal)).rejects.toMatchObject({ status: 503 });
    });
    await busy.close();
    const closed = http.createServer();
    await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
    const port = (closed.address() as AddressInfo).port;
    await new Promise((r) => closed.close(r));
    const refused = provider(`http://127.0.0.1:${port}/v1`);
    await underParent(async () => {
      await expect(refused.open(request, new AbortController().signal)).rejects.toThrow(/upstream connection failed/);
    });
    await refused.close();
    const [overloaded, unreachable] = exporter.getFinishedSpans().filter((s) => s.kind === SpanKind.CLIENT);
    expect(overloaded!.attributes).toMatchObject({ 'http.response.status_code': 503, 'error.type': '503' });
    expect(overloaded!.status.code).toBe(SpanStatusCode.ERROR);
    expect(unreachable!.attributes['http.response.status_code']).toBeUndefined();
    expect(unreachable!.attributes['error.type']).toBe(CONNECT_FAILED);
    expect(unreachable!.status).toMatchObject({ code: SpanStatusCode.ERROR, message: expect.stringMatching(/upstream connection failed/) });
  });
});

describe('the content of one read from the provider is passed on as one event', () => {
  test('tokens that arrived together are joined; one that came later is its own', async () => {
    const p = provider(base, 'burst');
    const events = await readAll((await p.open(request, new AbortController().signal)).events);
    await p.close();
    expect(events.filter((e) => e.type === 'content').map((e) => (e as { text: string }).text)).toEqual(['abc', 'd']);
    expect(events.at(-1)).toEqual({ type: 'finish', reason: 'stop' });
  });

  test('joinContent: runs of adjacent content joined, log probabilities kept in order, anything else a boundary', () => {
    const lp = (token: string) => ({ token, logprob: -1, bytes: [], topLogprobs: [] });
    expect(joinContent([{ type: 'content', text: 'a' }])).toEqual([{ type: 'content', text: 'a' }]);
    expect(joinContent([
      { type: 'model', model: 'm' },
      { type: 'content', text: 'a' }, { type: 'content', text: 'b' },
      { type: 'tool_call', index: 0, id: 'c1', name: 'f', arguments: '' },
      { type: 'content', text: 'c' }, { type: 'content', text: 'd' }, { type: 'content', text: 'e' },
      { type: 'finish', reason: 'stop' },
    ])).toEqual([
      { type: 'model', model: 'm' },
      { type: 'content', text: 'ab' },
      { type: 'tool_call', index: 0, id: 'c1', name: 'f', arguments: '' },
      { type: 'content', text: 'cde' },
      { type: 'finish', reason: 'stop' },
    ]);
    expect(joinContent([{ type: 'content', text: 'a', logprobs: [lp('a')] }, { type: 'content', text: 'b', logprobs: [lp('b')] }]))
      .toEqual([{ type: 'content', text: 'ab', logprobs: [lp('a'), lp('b')] }]);
    // One with log probabilities and one without are not joined (a provider gives them for all or none).
    expect(joinContent([{ type: 'content', text: 'a', logprobs: [lp('a')] }, { type: 'content', text: 'b' }])).toHaveLength(2);
  });
});
