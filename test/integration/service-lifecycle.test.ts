// The bootstrap every service shares (services/common/src/lifecycle), seen from outside on a real
// llm-broker process: the bind host (`<SERVICE>_HOST`: loopback by default, every interface with
// 0.0.0.0), server reflection listing the health service, and SIGTERM spending SHUTDOWN_GRACE_MS
// phase by phase — a stream that ends within the drain completes, one that does not is cancelled at
// the drain's deadline, and the process exits 0 within the grace.
import os from 'node:os';
import path from 'node:path';
import { credentials, loadPackageDefinition, Metadata, type ServiceError } from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { FileDescriptorProto } from 'protobufjs/ext/descriptor';
import { createClient, shutdownPlan } from '@agent-mesh/common';
import { LlmBrokerServiceClient, type GenerateResponse } from '@agent-mesh/common/gen/llmbroker/v1/llm_broker';
import {
  configureEmulator, emulatorStats, generateRequest, grpcServing, startEmulator, startRedis, startService, testDir, waitFor,
  type EmulatorProc, type RedisProc, type ServiceProc,
} from '../support';

jest.setTimeout(60_000);

const GRACE_MS = 5_000;
/** The fields of a decoded FileDescriptorProto this test reads (protobufjs types it as a bare Message). */
interface DescribedFile { package: string; service: { name: string; method: { name: string }[] }[] }
let dir: string;
let redis: RedisProc;
let emulator: EmulatorProc;
let loopback: ServiceProc;
let wide: ServiceProc;

/**
 * An address of this machine that is not 127.0.0.1: its first non-loopback IPv4 address, or else
 * 127.0.0.2 (also local, and also not reached by a listener bound to 127.0.0.1 only).
 */
function otherLocalAddress(): string {
  const ifaces = Object.values(os.networkInterfaces()).flat();
  return ifaces.find((i) => i && i.family === 'IPv4' && !i.internal)?.address ?? '127.0.0.2';
}

const broker = (env: Record<string, string>, instance: string) =>
  startService('llm-broker', {
    logDir: dir,
    instance,
    env: { REDIS_URL: redis.url, LLM_BASE_URL: `${emulator.url}/v1`, LLM_API_KEY: 'k', OTEL_SDK_DISABLED: 'true', ...env },
  });

beforeAll(async () => {
  dir = testDir('lifecycle');
  redis = await startRedis({ logDir: dir });
  // ~1.2 s streams: 200 ms to the first token, 40 tokens at 40/s.
  emulator = await startEmulator({ logDir: dir, env: { EMULATOR_TTFT_MS: '200', EMULATOR_TOKENS_PER_SEC: '40', EMULATOR_COMPLETION_TOKENS: '40', EMULATOR_SEED: '3' } });
  loopback = await broker({}, '-loopback');
  wide = await broker({ LLM_BROKER_HOST: '0.0.0.0', SHUTDOWN_GRACE_MS: String(GRACE_MS) }, '-wide');
});

afterAll(async () => {
  for (const p of [loopback, wide, emulator, redis]) await p?.stop();
});

test('<SERVICE>_HOST: by default gRPC and metrics listen on 127.0.0.1 only; with 0.0.0.0 on every local address', async () => {
  const other = otherLocalAddress();
  console.log(`other local address: ${other}`);
  const metricsAt = (host: string, s: ServiceProc) =>
    fetch(`http://${host}:${s.metricsPort}/metrics`).then((r) => r.status, (err: Error) => (err.cause as { code?: string })?.code ?? err.message);

  expect(await grpcServing(`127.0.0.1:${loopback.port}`)).toBe(true);
  expect(await metricsAt('127.0.0.1', loopback)).toBe(200);
  expect(await grpcServing(`${other}:${loopback.port}`)).toBe(false);
  expect(await metricsAt(other, loopback)).toBe('ECONNREFUSED');

  expect(await grpcServing(`${other}:${wide.port}`)).toBe(true);
  expect(await metricsAt(other, wide)).toBe(200);
});

test('/healthz and /readyz on the metrics port: plain HTTP, 200 while gRPC health is SERVING, nothing else told', async () => {
  for (const p of ['/healthz', '/readyz']) {
    const res = await fetch(`http://127.0.0.1:${loopback.metricsPort}${p}`);
    expect(res.status).toBe(200);
    expect((await res.text()).length).toBeLessThan(10);
  }
});

test('server reflection lists grpc.health.v1.Health and describes it, so it can be called by name', async () => {
  const reflectionProto = path.join(path.dirname(require.resolve('@grpc/reflection/package.json')), 'build/proto/grpc/reflection/v1/reflection.proto');
  const def = loadPackageDefinition(loadSync(reflectionProto, { keepCase: true })) as any;
  const client = new def.grpc.reflection.v1.ServerReflection(loopback.addr, credentials.createInsecure());
  try {
    const ask = (request: Record<string, unknown>) =>
      new Promise<any>((resolve, reject) => {
        const call = client.ServerReflectionInfo({ deadline: Date.now() + 5_000 });
        call.on('data', (res: unknown) => {
          resolve(res);
          call.end();
        });
        call.on('error', reject);
        call.write(request);
      });
    const listed = await ask({ list_services: '' });
    const names = (listed.list_services_response.service as { name: string }[]).map((s) => s.name);
    expect(names).toEqual(expect.arrayContaining(['grpc.health.v1.Health', 'llmbroker.v1.LlmBrokerService']));

    const described = await ask({ file_containing_symbol: 'grpc.health.v1.Health' });
    const files = (described.file_descriptor_response.file_descriptor_proto as Buffer[]).map((b) => FileDescriptorProto.decode(b) as unknown as DescribedFile);
    const health = files.flatMap((f) => f.service.map((s) => ({ pkg: f.package, s }))).find(({ pkg, s }) => pkg === 'grpc.health.v1' && s.name === 'Health');
    expect(health?.s.method.map((m) => m.name)).toEqual(expect.arrayContaining(['Check', 'Watch']));
  } finally {
    client.close();
  }
});

test('SIGTERM: a stream that ends within the drain completes, one that does not is cancelled at its deadline, exit 0 within the grace', async () => {
  const plan = shutdownPlan(GRACE_MS);
  const client = createClient(LlmBrokerServiceClient, wide.addr);
  const watch = (question: string) => {
    const call = client.generate(generateRequest(question), new Metadata(), { deadline: Date.now() + 30_000 });
    // Its first delta (a first call admitted at once hears `queued` position 0 before it).
    const started = new Promise<void>((resolve) => call.on('data', (m: GenerateResponse) => m.update?.$case === 'delta' && resolve()));
    const ended = (async () => {
      const messages: GenerateResponse[] = [];
      try {
        for await (const m of call as AsyncIterable<GenerateResponse>) messages.push(m);
        return { at: Date.now(), last: messages.at(-1)?.update?.$case, code: 0 };
      } catch (err) {
        return { at: Date.now(), last: messages.at(-1)?.update?.$case, code: (err as ServiceError).code };
      }
    })();
    return { started, ended };
  };
  try {
    const short = watch('How should a city plan for heat waves in summer?');
    await short.started; // streaming: its first delta is here
    await configureEmulator(emulator, { hangRate: 1 });
    const hungBefore = (await emulatorStats(emulator)).hung;
    const long = watch('What does a hanging upstream look like?');
    // Admitted by the broker and sent upstream, which never answers.
    await waitFor('the hanging call upstream', async () => (await emulatorStats(emulator)).hung > hungBefore, { timeoutMs: 5_000, intervalMs: 50 });
    const t0 = Date.now();
    const probe = (p: string) => fetch(`http://127.0.0.1:${wide.metricsPort}${p}`).then((r) => r.status);
    expect(await probe('/readyz')).toBe(200);
    wide.proc.kill('SIGTERM');
    await waitFor('listener closed', async () => !(await grpcServing(wide.addr)), { timeoutMs: 1_000, intervalMs: 50 });
    // Draining: not ready, still alive (the metrics listener stays until the drain is over).
    expect(await probe('/readyz')).toBe(503);
    expect(await probe('/healthz')).toBe(200);

    const [s, l] = await Promise.all([short.ended, long.ended]);
    const exit = (await (wide as ServiceProc & { exited: Promise<{ code: number | null }> }).exited) as { code: number | null };
    const exitedAfterMs = Date.now() - t0;
    console.log(`short stream ended ${s.at - t0} ms, long one ${l.at - t0} ms (code ${l.code}), exit ${exitedAfterMs} ms after SIGTERM; plan ${JSON.stringify(plan)}`);
    expect({ last: s.last, code: s.code }).toEqual({ last: 'done', code: 0 });
    expect(l.code).not.toBe(0);
    expect(l.at - t0).toBeGreaterThanOrEqual(plan.drain - 50);
    expect(exit.code).toBe(0);
    expect(exitedAfterMs).toBeLessThan(GRACE_MS);
  } finally {
    client.close();
    await configureEmulator(emulator, { hangRate: 0 });
  }
});
