// Deadlines and cancellation hop by hop, over real gRPC servers on loopback: a client calls a
// middle service whose handler calls a downstream one with `scopeOf(call)`, as the orchestrator
// and the tool-service do. The downstream handler never answers; what it sees is measured.
import { Metadata, status, type ServerUnaryCall, type ServiceError } from '@grpc/grpc-js';
import { createLogger } from '../logging';
import { OrchestratorServiceService } from '../gen/orchestrator/v1/orchestrator';
import { StoreServiceService } from '../gen/store/v1/store';
import { DEFAULT_UNARY_DEADLINE_MS } from './channel';
import { callOptions, scopeOf, unary } from './client';
import { healthClientOf, orchestratorClient, storeClient } from './peers';
import { startGrpcServer, unaryHandler, type MeshServer } from './server';

const logger = createLogger('test', 'silent');
const CONVERSATION = { userId: 'u', conversationId: 'c' };

interface Seen { deadline: number; cancelledAt?: number }
let downstream: MeshServer;
let middle: MeshServer;
const seen: Seen[] = [];
let arrived: () => void = () => undefined;

beforeAll(async () => {
  downstream = await startGrpcServer({
    host: '127.0.0.1',
    port: 0,
    protoFiles: ['store/v1/store.proto'],
    logger,
    services: [{
      name: 'store.v1.StoreService',
      definition: StoreServiceService,
      // Never answers: records its deadline and when it is cancelled.
      implementation: {
        getConversation: (call: ServerUnaryCall<unknown, unknown>) => {
          const s: Seen = { deadline: Number(call.getDeadline() instanceof Date ? (call.getDeadline() as Date).getTime() : call.getDeadline()) };
          seen.push(s);
          call.once('cancelled', () => (s.cancelledAt = Date.now()));
          arrived();
        },
      },
    }],
  });
  const store = storeClient(`127.0.0.1:${downstream.port}`);
  middle = await startGrpcServer({
    host: '127.0.0.1',
    port: 0,
    protoFiles: ['orchestrator/v1/orchestrator.proto'],
    logger,
    services: [{
      name: 'orchestrator.v1.OrchestratorService',
      definition: OrchestratorServiceService,
      implementation: {
        cancelRun: unaryHandler(logger, 'CancelRun', async (req: typeof CONVERSATION, call) => {
          await unary(store.getConversation.bind(store), { ...req, messagePageSize: 1, messagePageToken: '' }, scopeOf(call));
          return { runId: '', cancelled: false };
        }),
      },
    }],
  });
  downstream.serve();
  middle.serve();
});

afterAll(() => {
  middle?.forceShutdown();
  downstream?.forceShutdown();
});

/** Waits (2 s at most) for the downstream call to see its cancellation. */
async function cancelled(s: Seen): Promise<void> {
  for (const until = Date.now() + 2_000; s.cancelledAt === undefined && Date.now() < until; ) await new Promise((r) => setTimeout(r, 10));
  expect(s.cancelledAt).toBeDefined();
}

function callMiddle(deadlineMs: number) {
  const client = orchestratorClient(`127.0.0.1:${middle.port}`);
  const got = new Promise<void>((resolve) => (arrived = resolve));
  const started = Date.now();
  let cancel!: () => void;
  const ended = new Promise<{ code: number; at: number }>((resolve) => {
    const call = client.cancelRun(CONVERSATION, new Metadata(), { deadline: new Date(started + deadlineMs) }, (err: ServiceError | null) =>
      resolve({ code: err?.code ?? status.OK, at: Date.now() }),
    );
    cancel = () => call.cancel();
  });
  return { client, started, got, ended, cancel: () => cancel() };
}

test('a client that gives up ends the downstream call at once', async () => {
  const c = callMiddle(30_000);
  await c.got;
  const s = seen.at(-1)!;
  const gaveUpAt = Date.now();
  c.cancel();
  expect((await c.ended).code).toBe(status.CANCELLED);
  await cancelled(s);
  expect(s.cancelledAt! - gaveUpAt).toBeLessThan(1_000);
  c.client.close();
});

test("the downstream deadline is the caller's when it is sooner than the default, and it ends there", async () => {
  const c = callMiddle(400);
  await c.got;
  const s = seen.at(-1)!;
  // Each hop sends the time remaining, which the next one counts from its arrival: the hops'
  // latency may push it a little later, never anywhere near the default 5 s.
  expect(s.deadline).toBeLessThan(c.started + 400 + 250);
  const end = await c.ended;
  expect(end.code).toBe(status.DEADLINE_EXCEEDED);
  await cancelled(s);
  expect(s.cancelledAt!).toBeLessThan(c.started + 400 + 1_000);
  c.client.close();
});

test('callOptions: the own deadline, capped by the caller’s', () => {
  const now = 1_000_000;
  expect(callOptions({}, now).deadline).toEqual(new Date(now + DEFAULT_UNARY_DEADLINE_MS));
  expect(callOptions({ timeoutMs: 100 }, now).deadline).toEqual(new Date(now + 100));
  expect(callOptions({ deadline: now + 50 }, now).deadline).toEqual(new Date(now + 50));
  expect(callOptions({ timeoutMs: 100, deadline: now + 10_000 }, now).deadline).toEqual(new Date(now + 100));
});

test("a peer's health client runs on that peer client's channel and answers", async () => {
  const peer = storeClient(`127.0.0.1:${downstream.port}`);
  const health = healthClientOf(peer);
  expect(health.getChannel()).toBe(peer.getChannel());
  const res = await new Promise<{ status: string } | undefined>((resolve, reject) =>
    health.Check({ service: '' }, { deadline: Date.now() + 2_000 }, (err, r) => (err ? reject(err) : resolve(r))),
  );
  expect(res?.status).toBe('SERVING');
  peer.close();
});
