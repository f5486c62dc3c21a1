import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { Metadata, type ServerWritableStream } from '@grpc/grpc-js';
import { GenerateRequest, LlmBrokerServiceService, type GenerateResponse } from '../gen/llmbroker/v1/llm_broker';
import { createLogger } from '../logging';
import { MeshError, REASON_KEY, RETRY_AFTER_KEY, status } from './errors';
import { llmBrokerClient } from './peers';
import { startGrpcServer, streamHandler, unaryHandler } from './server';

const logger = createLogger('test', 'silent');

/** What a unary handler answers when `fn` throws `err`. */
async function answerTo(err: unknown): Promise<{ code: number; details: string; metadata?: Metadata }> {
  const handler = unaryHandler(logger, 'Test', async () => { throw err; });
  return new Promise((resolve) => {
    handler({ request: {}, metadata: new Metadata(), getPath: () => '/test.v1.TestService/Test' } as never, ((e: { code: number; details: string; metadata?: Metadata }) => resolve(e)) as never);
  });
}

describe('unaryHandler errors', () => {
  it("answers UNAVAILABLE with a retry-after when Redis cannot be reached (ioredis' offline error), not INTERNAL", async () => {
    const e = await answerTo(new Error("Stream isn't writeable and enableOfflineQueue options is false"));
    expect(e.code).toBe(status.UNAVAILABLE);
    expect(e.metadata?.get(REASON_KEY)).toEqual(['redis_unavailable']);
    expect(e.metadata?.get(RETRY_AFTER_KEY)).toEqual(['2000']);
  });

  it('passes a MeshError on as its reason and status', async () => {
    const e = await answerTo(new MeshError('not_found', 'no such run'));
    expect(e.code).toBe(status.NOT_FOUND);
    expect(e.metadata?.get(REASON_KEY)).toEqual(['not_found']);
  });

  it('answers INTERNAL without details for a bug', async () => {
    const e = await answerTo(new TypeError("Cannot read properties of undefined (reading 'x')"));
    expect(e).toEqual({ code: status.INTERNAL, details: 'internal error' });
  });
});

describe('streamHandler on a real server and client', () => {
  // What the handler saw of its call: its signal, and a promise of grpc-js' 'cancelled' (or 1 s).
  let seen: { signal: AbortSignal; cancelled: Promise<unknown> }[] = [];
  let stopServer: () => void;
  let client: ReturnType<typeof llmBrokerClient>;

  beforeAll(async () => {
    const server = await startGrpcServer({
      host: '127.0.0.1', port: 0, protoFiles: ['llmbroker/v1/llm_broker.proto'], logger,
      services: [{
        name: 'llmbroker.v1.LlmBrokerService',
        definition: LlmBrokerServiceService,
        implementation: {
          generate: streamHandler(logger, 'Generate', async function* (req: GenerateRequest, signal: AbortSignal, call: ServerWritableStream<GenerateRequest, GenerateResponse>) {
            seen.push({ signal, cancelled: new Promise((resolve) => { call.once('cancelled', resolve); setTimeout(resolve, 1_000); }) });
            yield { update: { $case: 'delta', delta: { content: 'hi', logprobs: [] } } } as GenerateResponse;
            // A caller that goes away is stopped here; one that reads on gets the end.
            if (req.userId === 'wait') await new Promise((resolve) => signal.addEventListener('abort', resolve));
          }),
        },
      }],
    });
    server.serve();
    stopServer = () => server.server.forceShutdown();
    client = llmBrokerClient(`127.0.0.1:${server.port}`);
  });
  afterAll(() => { client.close(); stopServer(); });
  beforeEach(() => { seen = []; });

  it("a call that ended is not aborted afterwards (grpc-js reports it cancelled once its status is sent; an abort costs a DOMException)", async () => {
    const call = client.generate(GenerateRequest.fromPartial({ userId: 'u' }));
    const got: GenerateResponse[] = [];
    for await (const m of call) got.push(m as GenerateResponse);
    expect(got).toHaveLength(1);
    await seen[0]!.cancelled;
    expect(seen[0]!.signal.aborted).toBe(false);
  });

  it('a call its client cancels is aborted', async () => {
    const call = client.generate(GenerateRequest.fromPartial({ userId: 'wait' }));
    await new Promise((resolve) => call.once('data', resolve));
    call.on('error', () => undefined);
    call.cancel();
    await seen[0]!.cancelled;
    expect(seen[0]!.signal.aborted).toBe(true);
  });
});

describe('loading', () => {
  it('a process that serves no gRPC (the edge) does not load the health and reflection services (~0.1 s of its start)', () => {
    // The built package, in a process of its own (jest keeps a module registry of its own).
    const dist = path.resolve(__dirname, '../../dist');
    const script = `require(${JSON.stringify(dist)});
      const loaded = (name) => Object.keys(require.cache).some((k) => k.includes(\`/node_modules/\${name}/\`));
      console.log(JSON.stringify(['@grpc/grpc-js', 'grpc-health-check', '@grpc/reflection'].map(loaded)));`;
    const out = execFileSync(process.execPath, ['-e', script], { encoding: 'utf8' });
    expect(JSON.parse(out)).toEqual([true, false, false]);
  });
});

test('GRPC_ALLOWED_CALLERS without mutual TLS is a start-up error that says why', async () => {
  process.env.GRPC_ALLOWED_CALLERS = 'edge';
  try {
    await expect(startGrpcServer({ host: '127.0.0.1', port: 0, services: [], protoFiles: [], logger })).rejects.toThrow(/GRPC_ALLOWED_CALLERS needs mutual TLS/);
  } finally {
    delete process.env.GRPC_ALLOWED_CALLERS;
  }
});
