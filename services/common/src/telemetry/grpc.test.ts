// The spans of gRPC calls between a real client (createClient) and a real server (the handler
// adapters), recorded by a real tracer provider in memory.
import { Metadata, status, type ServiceError } from '@grpc/grpc-js';
import { SpanKind, SpanStatusCode, trace } from '@opentelemetry/api';
import { InMemorySpanExporter, NodeTracerProvider, SimpleSpanProcessor, type ReadableSpan } from '@opentelemetry/sdk-trace-node';
import { createLogger } from '../logging';
import { GenerateRequest, LlmBrokerServiceService, type GenerateResponse } from '../gen/llmbroker/v1/llm_broker';
import { StoreServiceService } from '../gen/store/v1/store';
import { MeshError } from '../grpc/errors';
import { llmBrokerClient, storeClient } from '../grpc/peers';
import { startGrpcServer, streamHandler, unaryHandler, type MeshServer } from '../grpc/server';

const exporter = new InMemorySpanExporter();
const provider = new NodeTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
const logger = createLogger('test', 'silent');
let server: MeshServer;
let address: string;

beforeAll(async () => {
  provider.register(); // the AsyncLocalStorage context manager and the W3C propagator, as in a service
  server = await startGrpcServer({
    host: '127.0.0.1',
    port: 0,
    protoFiles: ['store/v1/store.proto', 'llmbroker/v1/llm_broker.proto'],
    logger,
    services: [
      {
        name: 'store.v1.StoreService',
        definition: StoreServiceService,
        implementation: {
          // Work done for the call, later in its async chain: a child of its server span.
          getConversation: unaryHandler(logger, 'GetConversation', async () => {
            await new Promise((r) => setImmediate(r));
            trace.getTracer('test').startSpan('work').end();
            throw new MeshError('not_found', 'no such conversation');
          }),
        },
      },
      {
        name: 'llmbroker.v1.LlmBrokerService',
        definition: LlmBrokerServiceService,
        implementation: {
          generate: streamHandler(logger, 'Generate', async function* (): AsyncGenerator<GenerateResponse> {
            await new Promise((r) => setImmediate(r));
            trace.getTracer('test').startSpan('work').end();
            yield { update: { $case: 'delta', delta: { content: 'hi', logprobs: [] } } };
          }),
        },
      },
    ],
  });
  server.serve();
  address = `127.0.0.1:${server.port}`;
});
afterAll(async () => {
  server.forceShutdown();
  await provider.shutdown();
});
beforeEach(() => exporter.reset());

/** Waits for `n` ended spans (the server's end after the client has its answer). */
async function spans(n: number): Promise<ReadableSpan[]> {
  const until = Date.now() + 5_000;
  while (exporter.getFinishedSpans().length < n && Date.now() < until) await new Promise((r) => setTimeout(r, 10));
  return exporter.getFinishedSpans();
}

const parentOf = (s: ReadableSpan) => s.parentSpanContext?.spanId;

describe('gRPC spans', () => {
  test("a server stream: the client span is a child of the caller's, the server span continues it, the handler's work is the server span's child", async () => {
    const client = llmBrokerClient(address);
    const messages = await trace.getTracer('test').startActiveSpan('caller-scope', async (scope) => {
      const got: GenerateResponse[] = [];
      const call = client.generate(GenerateRequest.fromPartial({ userId: 'u' }), new Metadata());
      for await (const m of call as AsyncIterable<GenerateResponse>) got.push(m);
      scope.end();
      return got;
    });
    expect(messages).toHaveLength(1);
    const all = await spans(4);
    const scope = all.find((s) => s.name === 'caller-scope')!;
    const clientSpan = all.find((s) => s.kind === SpanKind.CLIENT)!;
    const serverSpan = all.find((s) => s.kind === SpanKind.SERVER)!;
    const work = all.find((s) => s.name === 'work')!;
    expect(clientSpan.name).toBe('grpc.llmbroker.v1.LlmBrokerService/Generate');
    expect(clientSpan.attributes).toMatchObject({ 'rpc.system': 'grpc', 'rpc.service': 'llmbroker.v1.LlmBrokerService', 'rpc.method': 'Generate', 'rpc.grpc.status_code': status.OK });
    expect(parentOf(clientSpan)).toBe(scope.spanContext().spanId);
    expect(serverSpan.name).toBe(clientSpan.name);
    expect(serverSpan.spanContext().traceId).toBe(scope.spanContext().traceId);
    expect(parentOf(serverSpan)).toBe(clientSpan.spanContext().spanId);
    expect(serverSpan.attributes['rpc.grpc.status_code']).toBe(status.OK);
    expect(parentOf(work)).toBe(serverSpan.spanContext().spanId);
    expect([clientSpan, serverSpan].map((s) => s.status.code)).toEqual([SpanStatusCode.UNSET, SpanStatusCode.UNSET]);
    client.close();
  });

  test("a unary call that the server refuses: both spans carry the status, the client's is an error, the server's is not (the caller's mistake)", async () => {
    const client = storeClient(address);
    const err = await new Promise<ServiceError | null>((resolve) =>
      client.getConversation({ userId: 'u', conversationId: 'c', messagePageSize: 1, messagePageToken: '' }, (e) => resolve(e)),
    );
    expect(err?.code).toBe(status.NOT_FOUND);
    const all = await spans(3);
    const clientSpan = all.find((s) => s.kind === SpanKind.CLIENT)!;
    const serverSpan = all.find((s) => s.kind === SpanKind.SERVER)!;
    expect(clientSpan.name).toBe('grpc.store.v1.StoreService/GetConversation');
    expect(parentOf(clientSpan)).toBeUndefined(); // no caller span: the call starts the trace
    expect(parentOf(serverSpan)).toBe(clientSpan.spanContext().spanId);
    expect(parentOf(all.find((s) => s.name === 'work')!)).toBe(serverSpan.spanContext().spanId);
    expect([clientSpan, serverSpan].map((s) => s.attributes['rpc.grpc.status_code'])).toEqual([status.NOT_FOUND, status.NOT_FOUND]);
    expect([clientSpan, serverSpan].map((s) => s.status.code)).toEqual([SpanStatusCode.ERROR, SpanStatusCode.UNSET]);
    client.close();
  });
});
