// Run ownership in a real Redis: a lease that lapsed is kept by its owner until another replica
// claims it, and then it is that replica's.
import IORedis from 'ioredis';
import { keys } from '../../services/orchestrator/src/runs/keys';
import { RunRegistry, type RunMeta } from '../../services/orchestrator/src/runs/registry';
import { startRedis, testDir, type RedisProc } from '../support';
import { newId } from '@agent-mesh/common';

const LEASE_MS = 300;
let redisProc: RedisProc;
let redis: IORedis;
let registry: RunRegistry;

beforeAll(async () => {
  redisProc = await startRedis({ logDir: testDir('run-registry') });
  redis = new IORedis(redisProc.url);
  registry = new RunRegistry(redis, LEASE_MS);
});

afterAll(async () => {
  redis?.disconnect();
  await redisProc?.stop();
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function newRun(owner: string): Promise<string> {
  const meta: RunMeta = {
    runId: newId(), userId: 'user-1', conversationId: newId(), messageId: newId(), content: 'hi', createdAtMs: Date.now(), trace: {},
  };
  expect(await registry.create(meta, owner)).toEqual({ kind: 'created', runId: meta.runId });
  return meta.runId;
}

it('keeps a lapsed lease with its owner while no other replica claimed the run', async () => {
  const runId = await newRun('replica-a');
  await sleep(LEASE_MS * 2);
  expect(await redis.exists(keys.lease(runId))).toBe(0);
  expect(await registry.renew(runId, 'replica-a')).toBe(true);
  // Renewed: nothing for another replica to claim.
  expect(await registry.claimExpired('replica-b', 100)).not.toContain(runId);
  expect(await redis.get(keys.lease(runId))).toBe('replica-a');
});

it('loses the run once another replica claimed it after the lease lapsed', async () => {
  const runId = await newRun('replica-a');
  await sleep(LEASE_MS * 2);
  expect(await registry.claimExpired('replica-b', 100)).toContain(runId);
  expect(await registry.renew(runId, 'replica-a')).toBe(false);
  expect(await registry.renew(runId, 'replica-b')).toBe(true);
});
