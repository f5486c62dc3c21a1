// A store whose MongoDB pool is larger than FerretDB's PostgreSQL pool, under more concurrent
// updates than FerretDB has connections. FerretDB 1.24 runs an update (findAndModify, update) on
// two connections at once: with as many running as FerretDB has connections, each waits for a
// second connection that never frees (README, Compatibility). The store therefore runs at most
// STORE_MAX_CONCURRENT_UPDATES of them at once, so that its MongoDB pool need not stay below
// FerretDB's: a store left alone after its peers died may use all of it. Two stores on one small
// FerretDB (8 connections), 40 run saves (findAndModify upserts) at once on each: one store with
// the limit (4), one without (0: the deadlock the limit prevents).
import { createClient, newId, unary } from '@agent-mesh/common';
import { RunStatus, StoreServiceClient } from '@agent-mesh/common/gen/store/v1/store';
import { startFerret, startPostgres, startService, testDir, type FerretProc, type PostgresProc, type ServiceProc } from '../support';

jest.setTimeout(120_000);

const FERRET_PG_POOL = 8;
const CALLERS = 40;
let dir: string;
let postgres: PostgresProc;
let ferret: FerretProc;
const started: ServiceProc[] = [];
const clients: StoreServiceClient[] = [];

beforeAll(async () => {
  dir = testDir('store-pool');
  postgres = await startPostgres({ logDir: dir });
  ferret = await startFerret({ logDir: dir, postgresUrl: `${postgres.url}/ferretdb?pool_max_conns=${FERRET_PG_POOL}` });
});

afterAll(async () => {
  for (const c of clients) c.close();
  for (const s of started) await s.stop(2_000);
  await ferret?.stop();
  await postgres?.stop();
});

async function store(name: string, findAndModifyMax: number): Promise<StoreServiceClient> {
  const proc = await startService('store', {
    logDir: dir,
    instance: `-${name}`,
    env: { MONGODB_URI: ferret.uri, OTEL_SDK_DISABLED: 'true', MONGO_MAX_POOL_SIZE: String(CALLERS), STORE_MAX_CONCURRENT_UPDATES: String(findAndModifyMax) },
  });
  started.push(proc);
  const client = createClient(StoreServiceClient, proc.addr);
  clients.push(client);
  return client;
}

/** CALLERS run saves (each a findAndModify upsert) at once; how many succeeded. */
async function concurrentRunSaves(client: StoreServiceClient): Promise<{ ok: number; errors: string[] }> {
  const user = `pool-${newId().slice(0, 8)}`;
  const conv = newId();
  await unary(client.createConversation.bind(client), { userId: user, conversationId: conv, title: 'pool' }, { timeoutMs: 10_000 });
  const errors: string[] = [];
  let ok = 0;
  await Promise.all(Array.from({ length: CALLERS }, async () => {
    const run = {
      id: newId(), conversationId: conv, userId: '', messageId: '', status: RunStatus.RUN_STATUS_RUNNING, checkpointJson: '',
      usage: { promptTokens: 1, completionTokens: 2, totalTokens: 3 }, costUsd: 0, createdAtMs: 0, updatedAtMs: 0, completedAtMs: 0, error: '',
    };
    try {
      await unary(client.saveRun.bind(client), { userId: user, run }, { timeoutMs: 8_000 });
      ok += 1;
    } catch (err) {
      errors.push((err as Error).message);
    }
  }));
  return { ok, errors };
}

/**
 * Whether the calls reach FerretDB together enough to take every connection depends on timing (a
 * busy machine spreads them): each test makes up to ROUNDS bursts.
 */
const ROUNDS = 5;

test('a store with a pool above FerretDB\'s serves concurrent findAndModify calls when it limits them', async () => {
  const limited = await store('limited', FERRET_PG_POOL / 2);
  for (let round = 0; round < ROUNDS; round += 1) {
    expect(await concurrentRunSaves(limited)).toEqual({ ok: CALLERS, errors: [] });
  }
});

test('without the limit the same calls wait on each other until their deadline (what the limit prevents)', async () => {
  const unlimited = await store('unlimited', 0);
  let r = { ok: CALLERS, errors: [] as string[] };
  for (let round = 1; round <= ROUNDS && r.ok === CALLERS; round += 1) {
    r = await concurrentRunSaves(unlimited);
    console.log(`without the limit, burst ${round}: ${r.ok} of ${CALLERS} saved; ${r.errors.length} failed, e.g. ${r.errors[0]}`);
  }
  expect(r.ok).toBeLessThan(CALLERS);
});
