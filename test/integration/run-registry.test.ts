// Run ownership in a real Redis: a lease that lapsed is kept by its owner until another replica
// claims it, and then it is that replica's.
import IORedis from 'ioredis';
import { keys } from '../../services/orchestrator/src/runs/keys';
import { RunRegistry, type RunMeta } from '../../services/orchestrator/src/runs/registry';
import { RunLog } from '../../services/orchestrator/src/runlog/runlog';
import { RunStopped } from '../../services/orchestrator/src/pipeline/errors';
import { startRedis, testDir, type RedisProc } from '../support';
import { newId } from '@agent-mesh/common';

const LEASE_MS = 300;
let redisProc: RedisProc;
let redis: IORedis;
let registry: RunRegistry;
let log: RunLog;
const RETENTION_S = 120;

beforeAll(async () => {
  redisProc = await startRedis({ logDir: testDir('run-registry') });
  redis = new IORedis(redisProc.url);
  registry = new RunRegistry(redis, LEASE_MS, RETENTION_S);
  log = new RunLog(redis, { maxEvents: 100, retentionS: RETENTION_S });
});

afterAll(async () => {
  redis?.disconnect();
  await redisProc?.stop();
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function newRunMeta(owner: string): Promise<RunMeta> {
  const meta: RunMeta = {
    runId: newId(), userId: 'user-1', conversationId: newId(), messageId: newId(), content: 'hi', createdAtMs: Date.now(), trace: {},
  };
  expect(await registry.create(meta, owner)).toEqual({ kind: 'created', runId: meta.runId });
  return meta;
}

async function newRun(owner: string): Promise<string> {
  return (await newRunMeta(owner)).runId;
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

describe('the end of a run', () => {
  const token = { type: 'token', dataJson: '{}' };
  const done = { type: 'run.completed', dataJson: '{}' };
  const end = (meta: RunMeta, owner: string) => (tx: Parameters<RunRegistry['endInto']>[0], lastSeq: number) => registry.endInto(tx, meta, owner, lastSeq);
  const state = async (meta: RunMeta) => ({
    lease: await redis.get(keys.lease(meta.runId)),
    inTakeoverSet: (await redis.zscore(keys.leases, meta.runId)) !== null,
    active: await redis.get(keys.convActive(meta.conversationId)),
  });

  it('releases the lease and the active-run slot with the terminal event, and starts the retention', async () => {
    const meta = await newRunMeta('replica-a');
    expect(await log.append(meta, 'replica-a', 1, [token], end(meta, 'replica-a'))).toBe(1);
    // Not terminal: nothing released.
    expect(await state(meta)).toEqual({ lease: 'replica-a', inTakeoverSet: true, active: meta.runId });
    expect(await log.append(meta, 'replica-a', 2, [token, done], end(meta, 'replica-a'))).toBe(3);
    expect(await state(meta)).toEqual({ lease: null, inTakeoverSet: false, active: null });
    for (const k of [keys.log(meta.runId), keys.meta(meta.runId), keys.convRun(meta.conversationId), keys.messageRun(meta.messageId)]) {
      const ttl = await redis.ttl(k);
      expect(ttl).toBeGreaterThan(0);
      expect(ttl).toBeLessThanOrEqual(RETENTION_S);
    }
    // The conversation takes its next run at once.
    const next: RunMeta = { ...meta, runId: newId(), messageId: newId() };
    expect(await registry.create(next, 'replica-a')).toEqual({ kind: 'created', runId: next.runId });
    // The same terminal write again (its answer lost, retried) changes nothing, and frees no other run's slot.
    expect(await log.append(meta, 'replica-a', 2, [token, done], end(meta, 'replica-a'))).toBe(3);
    expect(await redis.get(keys.convActive(meta.conversationId))).toBe(next.runId);
  });

  it('a replica that lost the run neither writes its end nor releases anything', async () => {
    const meta = await newRunMeta('replica-a');
    await sleep(LEASE_MS * 2);
    expect(await registry.claimExpired('replica-b', 100)).toContain(meta.runId);
    await expect(log.append(meta, 'replica-a', 1, [done], end(meta, 'replica-a'))).rejects.toBeInstanceOf(RunStopped);
    expect(await log.lastSeq(meta.runId)).toBe(0);
    expect(await state(meta)).toEqual({ lease: 'replica-b', inTakeoverSet: true, active: meta.runId });
  });

  it('a terminal event that does not reach the log (a gap) releases nothing', async () => {
    const meta = await newRunMeta('replica-a');
    await expect(log.append(meta, 'replica-a', 5, [done], end(meta, 'replica-a'))).rejects.toThrow(/gap/);
    expect(await state(meta)).toEqual({ lease: 'replica-a', inTakeoverSet: true, active: meta.runId });
  });
});
