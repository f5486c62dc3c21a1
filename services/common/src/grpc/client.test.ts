// The client factory against real gRPC servers in this process: a client of a list of replicas
// spreads its very first calls over all of them.
import { loadPackageDefinition, Server, ServerCredentials, type Client, type ServiceError } from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { protoPath, service as healthService } from 'grpc-health-check';
import { closeClient, createClient } from './client';

type CheckClient = Client & { Check(req: { service: string }, cb: (err: ServiceError | null) => void): void };
type CheckCtor = new (...args: ConstructorParameters<typeof Client>) => CheckClient;
const Health = (loadPackageDefinition(loadSync(protoPath)) as unknown as { grpc: { health: { v1: { Health: CheckCtor } } } }).grpc.health.v1.Health;

/** A health server that counts the checks it answers. */
async function countingServer(): Promise<{ port: number; calls: number; server: Server }> {
  const server = new Server();
  const s = { port: 0, calls: 0, server };
  server.addService(healthService, {
    check: (_call: unknown, cb: (e: null, res: { status: string }) => void) => {
      s.calls += 1;
      cb(null, { status: 'SERVING' });
    },
  } as never);
  s.port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (err, port) => (err ? reject(err) : resolve(port))));
  return s;
}

describe('createClient', () => {
  test('connects to every replica up front: the first burst of calls reaches each of them', async () => {
    const servers = [await countingServer(), await countingServer()];
    const client = createClient(Health, servers.map((s) => `127.0.0.1:${s.port}`).join(','));
    try {
      // Made, then left alone for a moment (as a service between its start and its first request).
      await new Promise((r) => setTimeout(r, 300));
      await Promise.all(Array.from({ length: 8 }, () => new Promise<void>((resolve, reject) =>
        client.Check({ service: '' }, (err) => (err ? reject(err) : resolve())))));
      expect(servers.map((s) => s.calls)).toEqual([4, 4]);
    } finally {
      closeClient(client);
      for (const s of servers) s.server.forceShutdown();
    }
  });
});
