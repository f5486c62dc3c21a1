// PostgreSQL (FerretDB's backend) restarted under a steady stream of store calls, the way an
// upgrade or a failover restarts it. Two store processes on the same FerretDB: one tries an
// operation that never ran again for STORE_DB_RETRY_MS, the other (0) answers UNAVAILABLE at once.
// The second shows that the restart really refused operations; the first, that its callers never
// saw it, and that nothing was written twice.
import { codeOf, createClient, newId, status, unary } from '@agent-mesh/common';
import { AgentRole, MessageRole, MessageStatus, StoreServiceClient } from '@agent-mesh/common/gen/store/v1/store';
import { promMetric, startFerret, startPostgres, startService, testDir, type FerretProc, type PostgresProc, type ServiceProc } from '../support';

jest.setTimeout(180_000);

let dir: string;
let postgres: PostgresProc;
let ferret: FerretProc;
const stores: Record<'riding' | 'failing', { proc: ServiceProc; client: StoreServiceClient }> = {} as never;

beforeAll(async () => {
  dir = testDir('store-db-restart');
  postgres = await startPostgres({ logDir: dir, dataDir: `${dir}/postgres`, durable: true });
  ferret = await startFerret({ logDir: dir, postgres });
  for (const [name, retryMs] of [['riding', '10000'], ['failing', '0']] as const) {
    const proc = await startService('store', {
      logDir: dir,
      instance: `-${name}`,
      env: { MONGODB_URI: ferret.uri, OTEL_SDK_DISABLED: 'true', STORE_DB_RETRY_MS: retryMs, MONGO_MIN_POOL_SIZE: '2' },
    });
    stores[name] = { proc, client: createClient(StoreServiceClient, proc.addr) };
  }
});

afterAll(async () => {
  for (const s of Object.values(stores)) {
    s.client.close();
    await s.proc.stop();
  }
  await ferret?.stop();
  await postgres?.stop();
});

test('calls during a PostgreSQL restart succeed on a store that tries again, and are written once', async () => {
  const user = 'alice';
  const conv: Record<string, string> = {};
  for (const [name, s] of Object.entries(stores)) {
    conv[name] = newId();
    await unary(s.client.createConversation.bind(s.client), { userId: user, conversationId: conv[name]!, title: name }, { timeoutMs: 10_000 });
  }
  const outcomes: Record<string, { ok: number; unavailable: number; other: string[] }> = {
    riding: { ok: 0, unavailable: 0, other: [] }, failing: { ok: 0, unavailable: 0, other: [] },
  };
  let restarting = true;
  // One message appended every 100 ms to each store's conversation while PostgreSQL restarts.
  const load = Object.entries(stores).map(async ([name, s]) => {
    const o = outcomes[name]!;
    while (restarting) {
      const msg = { id: newId(), conversationId: conv[name]!, runId: '', role: MessageRole.MESSAGE_ROLE_USER, agent: AgentRole.AGENT_ROLE_UNSPECIFIED, round: 0, content: 'x', status: MessageStatus.MESSAGE_STATUS_COMPLETE, createdAtMs: 0 };
      try {
        await unary(s.client.appendMessages.bind(s.client), { userId: user, conversationId: conv[name]!, messages: [msg] }, { timeoutMs: 15_000 });
        o.ok += 1;
      } catch (err) {
        if (codeOf(err) === status.UNAVAILABLE) o.unavailable += 1;
        else o.other.push((err as Error).message);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  });
  await new Promise((r) => setTimeout(r, 1_000));
  const port = postgres.port;
  const started = Date.now();
  await postgres.stop();
  postgres = await startPostgres({ logDir: dir, port, dataDir: `${dir}/postgres`, durable: true });
  const restartMs = Date.now() - started;
  await new Promise((r) => setTimeout(r, 2_000));
  restarting = false;
  await Promise.all(load);
  console.log(`PostgreSQL restart took ${restartMs} ms; ${JSON.stringify(outcomes)}`);

  expect(outcomes.failing!.unavailable).toBeGreaterThan(0); // the restart refused operations
  expect(outcomes.riding).toEqual({ ok: expect.any(Number), unavailable: 0, other: [] });
  expect(await promMetric(stores.riding.proc, 'store_db_query_retries_total')).toBeGreaterThan(0);
  // Every append the riding store acknowledged is there, once, and the sequence counts each once.
  const r = stores.riding;
  const got = await unary(r.client.getConversation.bind(r.client), { userId: user, conversationId: conv.riding!, messagePageSize: 200, messagePageToken: '' }, { timeoutMs: 10_000 });
  expect(got.messages).toHaveLength(outcomes.riding!.ok);
  expect(new Set(got.messages.map((m) => m.id)).size).toBe(outcomes.riding!.ok);
});
