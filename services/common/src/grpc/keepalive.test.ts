// A real grpc-js server and client over loopback: a stream that is still running when its
// connection gets a graceful GOAWAY goes on to its end although keepalive pings come due.
import { credentials, makeGenericClientConstructor, Server, ServerCredentials, status, type ChannelOptions, type ServiceDefinition, type ServiceError } from '@grpc/grpc-js';
import { once } from 'node:events';
import http2 from 'node:http2';
import { keepDrainingConnectionsAlive } from './keepalive';

const same = (b: Buffer) => b;
/** One server stream: `n` messages, one every 100 ms. */
const definition: ServiceDefinition = {
  Count: {
    path: '/test.v1.Test/Count', requestStream: false, responseStream: true,
    requestSerialize: same, requestDeserialize: same, responseSerialize: same, responseDeserialize: same,
  },
};
const TestClient = makeGenericClientConstructor(definition, 'Test');

async function serve(options: ChannelOptions): Promise<{ server: Server; addr: string }> {
  const server = new Server(options);
  server.addService(definition, {
    Count: (call: { request: Buffer; write(b: Buffer): void; end(): void; on(e: string, f: () => void): void }) => {
      const n = Number(call.request.toString());
      let i = 0;
      const timer = setInterval(() => {
        call.write(Buffer.from(String(i++)));
        if (i === n) {
          clearInterval(timer);
          call.end();
        }
      }, 100);
      call.on('cancelled', () => clearInterval(timer));
    },
  });
  const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))));
  return { server, addr: `127.0.0.1:${port}` };
}

/** Reads a stream of `n` messages; `onFirst` runs at the first. */
function count(client: InstanceType<typeof TestClient>, n: number, onFirst: () => void): Promise<{ received: number; code: number; details?: string }> {
  return new Promise((resolve) => {
    const call = client.makeServerStreamRequest('/test.v1.Test/Count', same, same, Buffer.from(String(n)));
    let received = 0;
    call.on('data', () => {
      received += 1;
      if (received === 1) onFirst();
    });
    call.on('error', (e: ServiceError) => resolve({ received, code: e.code, details: e.details }));
    call.on('status', (s: { code: number }) => { if (s.code === status.OK) resolve({ received, code: s.code }); });
  });
}

beforeAll(() => keepDrainingConnectionsAlive());
/** What each test opened, closed after it whatever its outcome. */
const opened: (() => void)[] = [];
afterEach(() => opened.splice(0).forEach((close) => close()));

test("the client's keepalive pings do not drop a connection its server is draining (graceful GOAWAY): the stream ends whole", async () => {
  const { server, addr } = await serve({});
  // Pings every 200 ms: several come due during the 1.5 s the stream still runs after the GOAWAY.
  const client = new TestClient(addr, credentials.createInsecure(), { 'grpc.keepalive_time_ms': 200, 'grpc.keepalive_timeout_ms': 1000 });
  opened.push(() => client.close(), () => server.forceShutdown());
  let drained = false;
  const result = await count(client, 15, () => server.tryShutdown(() => { drained = true; }));
  expect(result).toEqual({ received: 15, code: status.OK });
  await new Promise((r) => setTimeout(r, 100));
  expect(drained).toBe(true); // the server did drain: the stream ran on a connection told to go away
});

test("the server's keepalive pings do not drop a connection it closed for its age (max_connection_age GOAWAY): the stream ends whole", async () => {
  const { server, addr } = await serve({ 'grpc.keepalive_time_ms': 200, 'grpc.keepalive_timeout_ms': 1000, 'grpc.max_connection_age_ms': 300 });
  const client = new TestClient(addr, credentials.createInsecure());
  opened.push(() => client.close(), () => server.forceShutdown());
  const result = await count(client, 15, () => undefined);
  expect(result).toEqual({ received: 15, code: status.OK });
});

test('only a closed session is spared: an open one pings its peer for real, a closed one with a stream still open answers at once without a frame', async () => {
  const server = http2.createServer();
  let pingsReceived = 0;
  server.on('session', (s) => s.on('ping', () => { pingsReceived += 1; }));
  server.on('stream', (stream) => stream.respond({ ':status': 200 })); // held open until the client ends it
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const session = http2.connect(`http://127.0.0.1:${(server.address() as { port: number }).port}`);
  opened.push(() => session.destroy(), () => server.close());
  await once(session, 'connect');
  const ping = () => new Promise<Error | null>((resolve) => session.ping((err) => resolve(err)));
  expect(await ping()).toBeNull();
  expect(pingsReceived).toBe(1);
  const stream = session.request({ ':path': '/' });
  await new Promise((r) => stream.once('response', r));
  session.close(); // graceful: the stream stays
  expect({ closed: session.closed, destroyed: session.destroyed }).toEqual({ closed: true, destroyed: false });
  expect(await ping()).toBeNull();
  await new Promise((r) => setTimeout(r, 100));
  expect(pingsReceived).toBe(1);
  stream.close();
});
