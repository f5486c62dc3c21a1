// Mutual TLS of the services' gRPC servers and clients (services/common/src/grpc/tls.ts), with
// certificates made by openssl in this test: a client with a certificate of the mesh's CA is
// served; one without a certificate, or with one of another CA, is refused; the server's files,
// replaced on disk by another CA's, are used without a restart. A real server on a real port,
// as startGrpcServer builds it for every service.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { credentials, loadPackageDefinition, type ChannelCredentials, type ServiceError } from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { protoPath } from 'grpc-health-check';
import { channelCredentials, createLogger, grpcTlsFromEnv, startGrpcServer, TLS_REFRESH_MS, type MeshServer } from '@agent-mesh/common';

jest.setTimeout(60_000);

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mesh-mtls-'));
const ssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });

/** A CA, and a certificate signed by it for `name` (valid for 127.0.0.1 and localhost). */
function makeCa(ca: string): void {
  ssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '1', '-subj', `/CN=${ca}`, '-keyout', `${ca}.key`, '-out', `${ca}.pem`);
}
function makeCert(ca: string, name: string): void {
  ssl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-subj', `/CN=${name}`, '-keyout', `${name}.key`, '-out', `${name}.csr`);
  fs.writeFileSync(path.join(dir, `${name}.ext`), 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n');
  ssl('x509', '-req', '-in', `${name}.csr`, '-CA', `${ca}.pem`, '-CAkey', `${ca}.key`, '-CAcreateserial', '-days', '1', '-extfile', `${name}.ext`, '-out', `${name}.pem`);
}
const files = (ca: string, name: string) => ({ ca: path.join(dir, `${ca}.pem`), cert: path.join(dir, `${name}.pem`), key: path.join(dir, `${name}.key`) });

let server: MeshServer;
const healthDef = loadPackageDefinition(loadSync(protoPath, { keepCase: true, enums: String })) as any;

beforeAll(async () => {
  makeCa('mesh-ca');
  makeCert('mesh-ca', 'store');
  makeCert('mesh-ca', 'edge');
  makeCa('other-ca');
  makeCert('other-ca', 'intruder');
  // The server's files, as a deployment mounts them (copied: they are replaced below).
  for (const [from, to] of [['mesh-ca.pem', 'srv-ca.pem'], ['store.pem', 'srv.pem'], ['store.key', 'srv.key']]) fs.copyFileSync(path.join(dir, from!), path.join(dir, to!));
  process.env.GRPC_TLS_CA = path.join(dir, 'srv-ca.pem');
  process.env.GRPC_TLS_CERT = path.join(dir, 'srv.pem');
  process.env.GRPC_TLS_KEY = path.join(dir, 'srv.key');
  server = await startGrpcServer({ host: '127.0.0.1', port: 0, services: [], protoFiles: [], logger: createLogger('mtls-test', 'silent') });
  server.serve();
});

afterAll(() => {
  server?.forceShutdown();
  for (const k of ['GRPC_TLS_CA', 'GRPC_TLS_CERT', 'GRPC_TLS_KEY']) delete process.env[k];
});

function check(creds: ChannelCredentials): Promise<string> {
  const client = new healthDef.grpc.health.v1.Health(`localhost:${server.port}`, creds);
  return new Promise((resolve) => {
    client.Check({ service: '' }, { deadline: Date.now() + 3_000 }, (err: ServiceError | null, res?: { status: string }) => {
      client.close();
      resolve(err ? `refused: ${err.code}` : res!.status);
    });
  });
}

test('all three variables or none', () => {
  expect(grpcTlsFromEnv({})).toBeUndefined();
  expect(() => grpcTlsFromEnv({ GRPC_TLS_CA: '/ca.pem' })).toThrow(/together/);
  expect(grpcTlsFromEnv({ GRPC_TLS_CA: 'a', GRPC_TLS_CERT: 'b', GRPC_TLS_KEY: 'c' })).toEqual({ ca: 'a', cert: 'b', key: 'c' });
});

test('a client certificate of the mesh CA is served; plaintext, no certificate or another CA is refused', async () => {
  expect(await check(channelCredentials(files('mesh-ca', 'edge')))).toBe('SERVING');
  expect(await check(credentials.createInsecure())).toMatch(/^refused/);
  const ca = fs.readFileSync(path.join(dir, 'mesh-ca.pem'));
  expect(await check(credentials.createSsl(ca))).toMatch(/^refused/); // TLS, but no client certificate
  const other = files('other-ca', 'intruder');
  // Another CA's client certificate (trusting the server's CA, so only the client side is wrong).
  expect(await check(credentials.createSsl(ca, fs.readFileSync(other.key), fs.readFileSync(other.cert)))).toMatch(/^refused/);
});

test('certificate files replaced on disk are used without a restart', async () => {
  makeCa('next-ca');
  makeCert('next-ca', 'store-next');
  makeCert('next-ca', 'edge-next');
  // Rotation: the server now trusts and presents the next CA's certificates.
  fs.copyFileSync(path.join(dir, 'next-ca.pem'), path.join(dir, 'srv-ca.pem'));
  fs.copyFileSync(path.join(dir, 'store-next.pem'), path.join(dir, 'srv.pem'));
  fs.copyFileSync(path.join(dir, 'store-next.key'), path.join(dir, 'srv.key'));
  await new Promise((r) => setTimeout(r, TLS_REFRESH_MS + 1_500));
  expect(await check(channelCredentials(files('next-ca', 'edge-next')))).toBe('SERVING');
  expect(await check(channelCredentials(files('mesh-ca', 'edge')))).toMatch(/^refused/);
});
