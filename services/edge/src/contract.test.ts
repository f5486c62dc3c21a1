// The public contract against the edge with in-memory peers (fast, every branch of the edge's own
// code): the properties of test/support/contract.ts — requests generated from /docs/json, every
// answer a documented status with a documented body, valid never 400, broken always 400, 405 with
// Allow. test/e2e/contract.test.ts runs the same properties against a real mesh.
import { createLogger } from '@agent-mesh/common';
import { checkMethods, checkOperations, loadContract, type Contract } from '../../../test/support/contract';
import { buildApp, type EdgeApp } from './app';
import { devAuth, signToken } from './auth';
import { memoryRequestLimiter } from './ratelimit';
import { fakeGateways } from './testing/fakes';

jest.setTimeout(120_000);

const SECRET = 'contract-secret-of-sufficient-length';
let edge: EdgeApp;
let contract: Contract;
let ownedId: string;
/** A response kept for the caller, for GET and DELETE /v1/responses/{response_id}. */
let responseId: string;
const token = () => signToken(SECRET, 'prop-user');

beforeAll(async () => {
  edge = await buildApp({
    cfg: { auth: devAuth(SECRET), sse: { maxStreams: 500, heartbeatMs: 15_000, bufferMaxEvents: 1000, bufferMaxBytes: 1 << 20, retryMs: 2000 }, maxMessageChars: 8000, bodyLimitBytes: 65_536, v1BodyLimitBytes: 1 << 20, corsOrigins: [], llmModel: 'upstream' },
    gateways: fakeGateways(),
    logger: createLogger('edge-contract', 'silent'),
    requestLimiter: memoryRequestLimiter(0),
    publicDir: '/nonexistent',
  });
  await edge.app.listen({ port: 0, host: '127.0.0.1' });
  const a = edge.app.server.address() as { port: number };
  contract = await loadContract(`http://127.0.0.1:${a.port}`);
  const created = await fetch(`${contract.base}/api/conversations`, { method: 'POST', headers: { authorization: `Bearer ${token()}`, 'content-type': 'application/json' }, body: '{}' });
  ownedId = ((await created.json()) as { id: string }).id;
  const kept = await fetch(`${contract.base}/v1/responses`, { method: 'POST', headers: { authorization: `Bearer ${token()}`, 'content-type': 'application/json' }, body: JSON.stringify({ model: 'upstream', input: 'hi' }) });
  expect(kept.status).toBe(200);
  responseId = ((await kept.json()) as { id: string }).id;
});

afterAll(async () => {
  edge?.drain();
  await edge?.app.close();
});

test('every operation answers only documented statuses with documented bodies; valid requests are never 400, broken ones always are', async () => {
  expect(contract.ops.length).toBeGreaterThanOrEqual(12);
  const report = await checkOperations(contract, { ownedId, owned: { response_id: responseId, model: 'model-a' }, token: token(), numRuns: 25, seed: 20261130 });
  expect(report.problems).toEqual([]);
});

test('an unsupported method on a known path is 405 with Allow; an unknown path 404', async () => {
  expect(await checkMethods(contract, { ownedId, token: token() })).toEqual([]);
});
