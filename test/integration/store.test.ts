// The store process against a real FerretDB: paging, idempotent writes, ownership, id validation,
// runs and plans, retention cleanup, metrics, and health following the database's availability.
import path from 'node:path';
import { MongoClient } from 'mongodb';
import { codeOf, createClient, createLogger, createRegistry, newId, reasonOf, status, unary } from '@agent-mesh/common';
import { AgentRole, MessageRole, MessageStatus, PlanStatus, RunStatus, StoreServiceClient, type Message, type SaveStoredResponseRequest, type StoredResponse } from '@agent-mesh/common/gen/store/v1/store';
import { RetentionCleanup } from '@agent-mesh/store/dist/cleanup';
import { QueryTimer } from '@agent-mesh/store/dist/db/instrumented';
import { ensureIndexes } from '@agent-mesh/store/dist/db/indexes';
import { createStoreMetrics } from '@agent-mesh/store/dist/metrics';
import { openCollections } from '@agent-mesh/store/dist/repos';
import { grpcServing, startFerret, startService, testDir, waitFor, type FerretProc, type ServiceProc } from '../support';

jest.setTimeout(120_000);

const ALICE = 'alice';
const BOB = 'bob';
let dir: string;
let ferretData: string;
let ferret: FerretProc;
let store: ServiceProc;
let client: StoreServiceClient;

beforeAll(async () => {
  dir = testDir('store');
  ferretData = path.join(dir, 'ferret-data');
  ferret = await startFerret({ logDir: dir, dataDir: ferretData });
  store = await startService('store', {
    logDir: dir,
    env: {
      MONGODB_URI: ferret.uri,
      OTEL_SDK_DISABLED: 'true',
      STORE_HEALTH_INTERVAL_MS: '500',
      MONGO_SERVER_SELECTION_TIMEOUT_MS: '2000',
      CLEANUP_INTERVAL_MS: '1000',
      MONGO_MIN_POOL_SIZE: '2',
    },
  });
  client = createClient(StoreServiceClient, store.addr);
});

afterAll(async () => {
  client?.close();
  await store?.stop();
  await ferret?.stop();
});

const call = {
  create: (userId: string, conversationId = newId(), title = 'a chat') =>
    unary(client.createConversation.bind(client), { userId, conversationId, title }, { timeoutMs: 10_000 }),
  list: (userId: string, pageSize: number, pageToken = '') =>
    unary(client.listConversations.bind(client), { userId, pageSize, pageToken }, { timeoutMs: 10_000 }),
  get: (userId: string, conversationId: string, messagePageSize = 0, messagePageToken = '') =>
    unary(client.getConversation.bind(client), { userId, conversationId, messagePageSize, messagePageToken }, { timeoutMs: 10_000 }),
  append: (userId: string, conversationId: string, messages: Message[]) =>
    unary(client.appendMessages.bind(client), { userId, conversationId, messages }, { timeoutMs: 10_000 }),
  recent: (userId: string, conversationId: string, limit = 0) =>
    unary(client.listMessages.bind(client), { userId, conversationId, limit }, { timeoutMs: 10_000 }),
};

function message(over: Partial<Message> = {}): Message {
  return {
    id: newId(), conversationId: '', runId: '', role: MessageRole.MESSAGE_ROLE_AGENT, agent: AgentRole.AGENT_ROLE_PLANNER, round: 1,
    content: 'text', status: MessageStatus.MESSAGE_STATUS_COMPLETE, createdAtMs: 0, ...over,
  };
}

function run(conversationId: string, over: Record<string, unknown> = {}) {
  return {
    id: newId(), conversationId, userId: '', messageId: '', status: RunStatus.RUN_STATUS_RUNNING, checkpointJson: '',
    usage: { promptTokens: 1, completionTokens: 2, totalTokens: 3 }, costUsd: 0.001,
    createdAtMs: 0, updatedAtMs: 0, completedAtMs: 0, error: '', ...over,
  };
}

async function refusal(p: Promise<unknown>): Promise<{ code?: number; details: string }> {
  try {
    await p;
  } catch (err) {
    return { code: codeOf(err), details: (err as { details?: string }).details ?? '' };
  }
  throw new Error('expected the call to fail');
}

describe('conversations', () => {
  it('creates idempotently, lists newest first by page token, and gets one', async () => {
    const user = `pager-${Date.now()}`;
    const ids: string[] = [];
    for (let i = 0; i < 5; i += 1) ids.push((await call.create(user, newId(), `chat ${i}`)).conversation!.id);
    const again = await call.create(user, ids[0]!, 'changed title');
    expect(again.conversation!.title).toBe('chat 0'); // a retry returns the stored one

    const seen: { id: string; createdAtMs: number }[] = [];
    let token = '';
    let pages = 0;
    do {
      const page = await call.list(user, 2, token);
      seen.push(...page.conversations.map((c) => ({ id: c.id, createdAtMs: c.createdAtMs })));
      token = page.nextPageToken;
      pages += 1;
    } while (token && pages < 10);
    expect(pages).toBe(3);
    expect(seen.map((c) => c.id).sort()).toEqual([...ids].sort()); // no duplicates, none missing
    const expected = [...seen].sort((a, b) => b.createdAtMs - a.createdAtMs || (a.id < b.id ? 1 : -1));
    expect(seen).toEqual(expected);
    expect(seen[0]!.createdAtMs).toBeGreaterThanOrEqual(seen[4]!.createdAtMs);

    const got = await call.get(user, ids[2]!);
    expect(got.conversation).toMatchObject({ id: ids[2], userId: user, title: 'chat 2' });
  });

  it('refuses a bad page token', async () => {
    const r = await refusal(call.list(ALICE, 2, 'not-a-token'));
    expect(r.code).toBe(status.INVALID_ARGUMENT);
    expect(r.details).toContain('page_token');
  });
});

describe('messages', () => {
  it('does not duplicate a retried AppendMessages, keeps same-millisecond order, pages oldest first', async () => {
    const conv = (await call.create(ALICE)).conversation!;
    const t = Date.now();
    const batch = ['first', 'second', 'third'].map((content) => message({ content, createdAtMs: t }));
    batch[0] = { ...batch[0]!, role: MessageRole.MESSAGE_ROLE_USER, agent: AgentRole.AGENT_ROLE_UNSPECIFIED, runId: newId() };
    expect((await call.append(ALICE, conv.id, batch)).inserted).toBe(3);
    expect((await call.append(ALICE, conv.id, batch)).inserted).toBe(0);
    const later = message({ content: 'fourth', createdAtMs: t + 1 });
    expect((await call.append(ALICE, conv.id, [batch[2]!, later])).inserted).toBe(1);

    const recent = await call.recent(ALICE, conv.id, 3);
    expect(recent.messages.map((m) => m.content)).toEqual(['second', 'third', 'fourth']);

    const p1 = await call.get(ALICE, conv.id, 2);
    expect(p1.messages.map((m) => m.content)).toEqual(['first', 'second']);
    expect(p1.messages.map((m) => [m.role, m.agent, m.status])).toEqual([
      [MessageRole.MESSAGE_ROLE_USER, AgentRole.AGENT_ROLE_UNSPECIFIED, MessageStatus.MESSAGE_STATUS_COMPLETE],
      [MessageRole.MESSAGE_ROLE_AGENT, AgentRole.AGENT_ROLE_PLANNER, MessageStatus.MESSAGE_STATUS_COMPLETE],
    ]);
    // The documents keep the names (the wire's enums are mapped by the store): no data migration.
    const mongo = new MongoClient(ferret.uri, { serverSelectionTimeoutMS: 5_000 });
    try {
      const docs = await mongo.db().collection('messages').find({ conversationId: conv.id }).sort({ seq: 1 }).limit(2).toArray();
      expect(docs.map((d) => [d.role, d.agent, d.status])).toEqual([['user', undefined, 'complete'], ['agent', 'planner', 'complete']]);
    } finally {
      await mongo.close();
    }
    const p2 = await call.get(ALICE, conv.id, 2, p1.nextMessagePageToken);
    expect(p2.messages.map((m) => m.content)).toEqual(['third', 'fourth']);
    expect(p2.nextMessagePageToken).toBe('');
    // The user's message named its run: it is the conversation's last run now.
    expect(p2.conversation!.lastRunId).toBe(batch[0]!.runId);
    expect(p2.conversation!.updatedAtMs).toBeGreaterThanOrEqual(conv.updatedAtMs);
  });

  it('refuses a message id already used in another conversation', async () => {
    const a = (await call.create(ALICE)).conversation!;
    const b = (await call.create(ALICE)).conversation!;
    const m = message();
    expect((await call.append(ALICE, a.id, [m])).inserted).toBe(1);
    const r = await refusal(call.append(ALICE, b.id, [message(), m]));
    expect(r.code).toBe(status.ALREADY_EXISTS);
    expect((await call.recent(ALICE, a.id)).messages.map((x) => x.id)).toEqual([m.id]);
  });

  it('refuses NUL characters and over-long content, naming the field', async () => {
    const conv = (await call.create(ALICE)).conversation!;
    const nul = await refusal(call.append(ALICE, conv.id, [message({ content: 'a\u0000b' })]));
    expect(nul.code).toBe(status.INVALID_ARGUMENT);
    expect(nul.details).toContain('messages[0].content');
    const long = await refusal(call.append(ALICE, conv.id, [message({ content: 'x'.repeat(100_001) })]));
    expect(long.code).toBe(status.INVALID_ARGUMENT);
  });
});

describe('ownership', () => {
  it("answers another user's conversation, run and plan exactly like an unknown one", async () => {
    const conv = (await call.create(ALICE)).conversation!;
    await call.append(ALICE, conv.id, [message()]);
    const aliceRun = run(conv.id);
    await unary(client.saveRun.bind(client), { userId: ALICE, run: aliceRun });
    const plan = await unary(client.savePlan.bind(client), {
      userId: ALICE, plan: { id: newId(), userId: '', conversationId: conv.id, title: 'p', steps: ['a'], status: PlanStatus.PLAN_STATUS_UNSPECIFIED, createdAtMs: 0, updatedAtMs: 0 },
    });

    const attempts: [string, Promise<unknown>][] = [
      ['get', call.get(BOB, conv.id)],
      ['get unknown', call.get(ALICE, newId())],
      ['append', call.append(BOB, conv.id, [message()])],
      ['list messages', call.recent(BOB, conv.id)],
      ['save run on their conversation', unary(client.saveRun.bind(client), { userId: BOB, run: run(conv.id) })],
      ['save their run', unary(client.saveRun.bind(client), { userId: BOB, run: { ...aliceRun, status: RunStatus.RUN_STATUS_FAILED } })],
      ['get run', unary(client.getRun.bind(client), { userId: BOB, runId: aliceRun.id })],
      ['get plan', unary(client.getPlan.bind(client), { userId: BOB, planId: plan.plan!.id })],
      ['save plan', unary(client.savePlan.bind(client), { userId: BOB, plan: { ...plan.plan!, userId: '', title: 'stolen' } })],
      ['new plan on their conversation', unary(client.savePlan.bind(client), { userId: BOB, plan: { ...plan.plan!, id: newId(), userId: '' } })],
    ];
    for (const [what, p] of attempts) {
      const r = await refusal(p);
      expect({ what, code: r.code }).toEqual({ what, code: status.NOT_FOUND });
    }
    // Nothing of Bob's attempts landed.
    const stillAlice = await call.get(ALICE, conv.id);
    expect(stillAlice.messages).toHaveLength(1);
    expect((await unary(client.getRun.bind(client), { userId: ALICE, runId: aliceRun.id })).run!.status).toBe(RunStatus.RUN_STATUS_RUNNING);
    expect((await unary(client.getPlan.bind(client), { userId: ALICE, planId: plan.plan!.id })).plan!.title).toBe('p');
  });
});

describe('id validation', () => {
  const bad = ['{"$ne": null}', '$gt', `${newId()}${'a'.repeat(5000)}`, ''];
  it.each(bad.map((v) => [v.slice(0, 20), v]))('refuses conversation_id %j with INVALID_ARGUMENT naming the field', async (_, value) => {
    for (const p of [call.get(ALICE, value), call.append(ALICE, value, [message()]), call.recent(ALICE, value), call.create(ALICE, value)]) {
      const r = await refusal(p);
      expect(r.code).toBe(status.INVALID_ARGUMENT);
      expect(r.details).toContain('conversation_id');
    }
  });

  it('names the field for user ids, run ids, plan ids and message ids', async () => {
    const conv = (await call.create(ALICE)).conversation!;
    const cases: [string, Promise<unknown>][] = [
      ['user_id', call.list('{"$ne": null}', 2)],
      ['user_id', call.get('', conv.id)],
      ['run_id', unary(client.getRun.bind(client), { userId: ALICE, runId: '$gt' })],
      ['run.id', unary(client.saveRun.bind(client), { userId: ALICE, run: { ...run(conv.id), id: '{"$ne": null}' } })],
      ['run.conversation_id', unary(client.saveRun.bind(client), { userId: ALICE, run: run('$gt') })],
      ['plan_id', unary(client.getPlan.bind(client), { userId: ALICE, planId: 'x'.repeat(300) })],
      ['messages[0].id', call.append(ALICE, conv.id, [message({ id: '{"$ne": null}' })])],
    ];
    for (const [field, p] of cases) {
      const r = await refusal(p);
      expect({ field, code: r.code }).toEqual({ field, code: status.INVALID_ARGUMENT });
      expect(r.details).toContain(field);
    }
  });
});

describe('runs', () => {
  it('saves idempotently, reads back, and sets completedAt when terminal', async () => {
    const conv = (await call.create(ALICE)).conversation!;
    const r = run(conv.id, { checkpointJson: JSON.stringify({ step: 'planner', 'a.b': { $x: 1 } }) });
    const first = await unary(client.saveRun.bind(client), { userId: ALICE, run: r });
    const second = await unary(client.saveRun.bind(client), { userId: ALICE, run: r });
    expect(second.run).toMatchObject({ id: r.id, status: RunStatus.RUN_STATUS_RUNNING, checkpointJson: r.checkpointJson, completedAtMs: 0 });
    expect(second.run!.createdAtMs).toBe(first.run!.createdAtMs);
    expect((await call.get(ALICE, conv.id)).conversation!.lastRunId).toBe(r.id);

    const done = await unary(client.saveRun.bind(client), {
      userId: ALICE, run: { ...r, status: RunStatus.RUN_STATUS_COMPLETED, checkpointJson: '', usage: { promptTokens: 10, completionTokens: 20, totalTokens: 30, cacheReadTokens: 6, cacheWriteTokens: 2, cacheWrite1hTokens: 1 }, costUsd: 0.5 },
    });
    expect(done.run!.completedAtMs).toBeGreaterThan(0);
    const got = await unary(client.getRun.bind(client), { userId: ALICE, runId: r.id });
    expect(got.run).toMatchObject({
      id: r.id, conversationId: conv.id, userId: ALICE, status: RunStatus.RUN_STATUS_COMPLETED, costUsd: 0.5,
      checkpointJson: r.checkpointJson, // an empty checkpoint in a save keeps the stored one
    });
    // The prompt tokens the provider's cache read and wrote (of them, for an hour) are kept beside the totals.
    expect(got.run!.usage).toEqual({ promptTokens: 10, completionTokens: 20, totalTokens: 30, cacheReadTokens: 6, cacheWriteTokens: 2, cacheWrite1hTokens: 1 });
    const tooMany = await refusal(unary(client.saveRun.bind(client), { userId: ALICE, run: { ...r, usage: { promptTokens: 10, completionTokens: 0, totalTokens: 10, cacheReadTokens: 8, cacheWriteTokens: 4 } } }));
    expect(tooMany.code).toBe(status.INVALID_ARGUMENT);
    const tooMany1h = await refusal(unary(client.saveRun.bind(client), { userId: ALICE, run: { ...r, usage: { promptTokens: 10, completionTokens: 0, totalTokens: 10, cacheWriteTokens: 2, cacheWrite1hTokens: 3 } } }));
    expect(tooMany1h.code).toBe(status.INVALID_ARGUMENT);
    expect(tooMany1h.details).toContain('cache_write_1h_tokens');

    // An older run saved late does not take lastRunId back.
    const newer = run(conv.id);
    await unary(client.saveRun.bind(client), { userId: ALICE, run: newer });
    await unary(client.saveRun.bind(client), { userId: ALICE, run: { ...r, status: RunStatus.RUN_STATUS_COMPLETED } });
    expect((await call.get(ALICE, conv.id)).conversation!.lastRunId).toBe(newer.id);

    const badStatus = await refusal(unary(client.saveRun.bind(client), { userId: ALICE, run: { ...r, status: 42 as RunStatus } }));
    expect(badStatus.code).toBe(status.INVALID_ARGUMENT);
  });

  it('keeps an ended run ended when a late checkpoint save says running', async () => {
    const conv = (await call.create(ALICE)).conversation!;
    const r = run(conv.id);
    await unary(client.saveRun.bind(client), { userId: ALICE, run: { ...r, status: RunStatus.RUN_STATUS_COMPLETED } });
    const late = await unary(client.saveRun.bind(client), { userId: ALICE, run: { ...r, status: RunStatus.RUN_STATUS_RUNNING, checkpointJson: '{"late":true}' } });
    expect(late.run).toMatchObject({ id: r.id, status: RunStatus.RUN_STATUS_COMPLETED });
    const got = await unary(client.getRun.bind(client), { userId: ALICE, runId: r.id });
    expect(got.run).toMatchObject({ status: RunStatus.RUN_STATUS_COMPLETED });
    expect(got.run!.checkpointJson).not.toContain('late');
    // Another user still cannot reach it this way.
    const bob = await refusal(unary(client.saveRun.bind(client), { userId: BOB, run: { ...r, status: RunStatus.RUN_STATUS_RUNNING } }));
    expect(bob.code).toBe(status.NOT_FOUND);
  });
});

describe('plans', () => {
  it('creates, updates and lists newest first', async () => {
    const user = `planner-${Date.now()}`;
    const base = { userId: '', conversationId: '', createdAtMs: 0, updatedAtMs: 0 };
    const a = await unary(client.savePlan.bind(client), { userId: user, plan: { ...base, id: newId(), title: 'A', steps: ['one'], status: PlanStatus.PLAN_STATUS_UNSPECIFIED } });
    expect(a.plan).toMatchObject({ title: 'A', steps: ['one'], status: PlanStatus.PLAN_STATUS_DRAFT, userId: user });
    const b = await unary(client.savePlan.bind(client), { userId: user, plan: { ...base, id: newId(), title: 'B', steps: [], status: PlanStatus.PLAN_STATUS_ACTIVE } });
    const a2 = await unary(client.savePlan.bind(client), { userId: user, plan: { ...a.plan!, userId: '', steps: ['one', 'two'], status: PlanStatus.PLAN_STATUS_DONE } });
    expect(a2.plan).toMatchObject({ id: a.plan!.id, steps: ['one', 'two'], status: PlanStatus.PLAN_STATUS_DONE, createdAtMs: a.plan!.createdAtMs });
    expect(a2.plan!.updatedAtMs).toBeGreaterThanOrEqual(a.plan!.updatedAtMs);
    const unknown: unknown = await unary(client.savePlan.bind(client), { userId: user, plan: { ...b.plan!, userId: '', status: 7 as PlanStatus } }).catch((e: unknown) => e);
    expect({ code: codeOf(unknown), reason: reasonOf(unknown) }).toEqual({ code: status.INVALID_ARGUMENT, reason: 'invalid_enum' });
    // The documents keep the names, as for messages and runs.
    const mongo = new MongoClient(ferret.uri, { serverSelectionTimeoutMS: 5_000 });
    try {
      const docs = await mongo.db().collection('plans').find({ userId: user }).sort({ title: 1 }).toArray();
      expect(docs.map((d) => [d.title, d.status])).toEqual([['A', 'done'], ['B', 'active']]);
    } finally {
      await mongo.close();
    }

    const p1 = await unary(client.listPlans.bind(client), { userId: user, pageSize: 1, pageToken: '' });
    const p2 = await unary(client.listPlans.bind(client), { userId: user, pageSize: 1, pageToken: p1.nextPageToken });
    const listed = [...p1.plans, ...p2.plans];
    expect(listed.map((p) => p.id).sort()).toEqual([a.plan!.id, b.plan!.id].sort());
    expect(listed[0]!.createdAtMs).toBeGreaterThanOrEqual(listed[1]!.createdAtMs);
    expect(p2.nextPageToken).toBe('');
  });
});

describe('kept responses of the Responses API', () => {
  const saveKept = (req: Omit<SaveStoredResponseRequest, 'onlyIfPending'> & { onlyIfPending?: boolean }) => unary(client.saveStoredResponse.bind(client), { onlyIfPending: false, ...req });
  const respId = () => `resp_${newId().replace(/-/g, '')}`;
  const code = async (p: Promise<unknown>) => { const e: unknown = await p.then(() => undefined, (err: unknown) => err); return { code: codeOf(e), reason: reasonOf(e) }; };

  it('saves (a retry overwrites), reads back and deletes the owner\'s; another user\'s answers as an unknown one; bad ids and oversize refused', async () => {
    const id = respId();
    const kept = { id, userId: '', createdAtMs: 0, responseJson: '{"id":"x","output":[]}', itemsJson: '[{"role":"user","content":"hi"}]', pending: false, updatedAtMs: 0 };
    await saveKept({ userId: ALICE, response: kept });
    await saveKept({ userId: ALICE, response: { ...kept, responseJson: '{"id":"x","output":[1]}' } });
    const got = await unary(client.getStoredResponse.bind(client), { userId: ALICE, responseId: id });
    expect(got.response).toMatchObject({ id, userId: ALICE, responseJson: '{"id":"x","output":[1]}', itemsJson: kept.itemsJson });
    expect(got.response!.createdAtMs).toBeGreaterThan(Date.now() - 60_000);

    const notFound = { code: status.NOT_FOUND, reason: 'not_found' };
    expect(await code(unary(client.getStoredResponse.bind(client), { userId: BOB, responseId: id }))).toEqual(notFound);
    expect(await code(unary(client.deleteStoredResponse.bind(client), { userId: BOB, responseId: id }))).toEqual(notFound);
    expect(await code(saveKept({ userId: BOB, response: { ...kept, responseJson: '{"stolen":true}' } }))).toEqual(notFound);
    expect((await unary(client.getStoredResponse.bind(client), { userId: ALICE, responseId: id })).response!.responseJson).toBe('{"id":"x","output":[1]}');

    expect(await code(unary(client.getStoredResponse.bind(client), { userId: ALICE, responseId: 'resp_1' }))).toEqual({ code: status.INVALID_ARGUMENT, reason: 'invalid_id' });
    expect(await code(saveKept({ userId: ALICE, response: { ...kept, id: respId(), itemsJson: 'x'.repeat(12 * 1024 * 1024) } })))
      .toEqual({ code: status.INVALID_ARGUMENT, reason: 'too_long' });
    // Large is kept and read back whole (over grpc-js's default 4 MiB message).
    const large = respId();
    const image = `[{"role":"user","content":[{"type":"input_image","image_url":"data:image/png;base64,${'A'.repeat(6 * 1024 * 1024)}"}]}]`;
    await saveKept({ userId: ALICE, response: { ...kept, id: large, itemsJson: image } });
    expect((await unary(client.getStoredResponse.bind(client), { userId: ALICE, responseId: large })).response!.itemsJson).toBe(image);

    await unary(client.deleteStoredResponse.bind(client), { userId: ALICE, responseId: id });
    expect(await code(unary(client.getStoredResponse.bind(client), { userId: ALICE, responseId: id }))).toEqual(notFound);
    expect(await code(unary(client.deleteStoredResponse.bind(client), { userId: ALICE, responseId: id }))).toEqual(notFound);
  });

  it('a pending (background) response is written over only with only_if_pending, once: its end or its cancel, whichever comes first; not another user\'s', async () => {
    const id = respId();
    const kept = { id, userId: '', createdAtMs: 0, responseJson: '{"status":"queued"}', itemsJson: '[]', pending: true, updatedAtMs: 0 };
    const save = (userId: string, responseJson: string, pending: boolean) =>
      saveKept({ userId, response: { ...kept, responseJson, pending }, onlyIfPending: true });
    const notPending = { code: status.FAILED_PRECONDITION, reason: 'response_not_pending' };
    // Nothing kept yet: nothing pending to write over.
    expect(await code(save(ALICE, '{"status":"completed"}', false))).toEqual(notPending);
    const t0 = Date.now();
    await saveKept({ userId: ALICE, response: kept });
    const read = async () => (await unary(client.getStoredResponse.bind(client), { userId: ALICE, responseId: id })).response!;
    expect(await read()).toMatchObject({ pending: true, responseJson: '{"status":"queued"}' });
    expect(Number((await read()).updatedAtMs)).toBeGreaterThanOrEqual(t0);
    await save(ALICE, '{"status":"in_progress"}', true);
    expect(await code(save(BOB, '{"status":"cancelled"}', false))).toEqual(notPending);
    await save(ALICE, '{"status":"cancelled"}', false);
    // The call's end, written after the cancel, does not overwrite it.
    expect(await code(save(ALICE, '{"status":"completed"}', false))).toEqual(notPending);
    expect(await read()).toMatchObject({ pending: false, responseJson: '{"status":"cancelled"}' });
  });

  it("lists a user's kept answers newest first, paged, ids and times only; erases them all, and no one else's", async () => {
    const user = `lister-${newId()}`;
    const other = `other-${newId()}`;
    const kept = (id: string, createdAtMs: number) => ({ id, userId: '', createdAtMs, responseJson: '{"output":[]}', itemsJson: '[]', pending: false, updatedAtMs: 0 });
    const ids = [respId(), respId(), respId()];
    const t0 = Date.now() - 10_000;
    // Two at the same millisecond: the id breaks the tie, and paging neither skips nor repeats one.
    for (const [i, id] of ids.entries()) await saveKept({ userId: user, response: kept(id, t0 + (i === 2 ? 1_000 : 0)) });
    const theirs = respId();
    await saveKept({ userId: other, response: kept(theirs, t0 + 2_000) });

    const listed: StoredResponse[] = [];
    let token = '';
    let pages = 0;
    do {
      const page = await unary(client.listStoredResponses.bind(client), { userId: user, pageSize: 1, pageToken: token });
      listed.push(...page.responses);
      token = page.nextPageToken;
      pages++;
    } while (token && pages < 10);
    expect(listed.map((r) => r.id)).toEqual([ids[2], ...[ids[0]!, ids[1]!].sort().reverse()]);
    expect(listed[0]).toEqual({ id: ids[2], userId: user, createdAtMs: t0 + 1_000, responseJson: '', itemsJson: '', pending: false, updatedAtMs: 0 });
    expect(pages).toBe(3);
    // A token this listing did not issue, or one of another listing (a UUID key), is refused.
    expect(await code(unary(client.listStoredResponses.bind(client), { userId: user, pageSize: 1, pageToken: 'bm9wZQ' }))).toEqual({ code: status.INVALID_ARGUMENT, reason: 'invalid_page_token' });
    const uuidToken = Buffer.from(JSON.stringify({ t: t0, k: newId() })).toString('base64url');
    expect(await code(unary(client.listStoredResponses.bind(client), { userId: user, pageSize: 1, pageToken: uuidToken }))).toEqual({ code: status.INVALID_ARGUMENT, reason: 'invalid_page_token' });
    expect(await code(unary(client.listStoredResponses.bind(client), { userId: user, pageSize: 101, pageToken: '' }))).toMatchObject({ code: status.INVALID_ARGUMENT });

    expect(await unary(client.eraseStoredResponses.bind(client), { userId: user })).toEqual({ deleted: 3 });
    expect((await unary(client.listStoredResponses.bind(client), { userId: user, pageSize: 0, pageToken: '' })).responses).toEqual([]);
    for (const id of ids) expect(await code(unary(client.getStoredResponse.bind(client), { userId: user, responseId: id }))).toEqual({ code: status.NOT_FOUND, reason: 'not_found' });
    expect(await unary(client.eraseStoredResponses.bind(client), { userId: user })).toEqual({ deleted: 0 });
    expect((await unary(client.listStoredResponses.bind(client), { userId: other, pageSize: 0, pageToken: '' })).responses.map((r) => r.id)).toEqual([theirs]);
    expect((await unary(client.getStoredResponse.bind(client), { userId: other, responseId: theirs })).response!.id).toBe(theirs);
  });
});

describe('retention cleanup', () => {
  it('removes only what it should (driver-level, injectable clock)', async () => {
    const uri = ferret.uri.replace(/\/agentmesh$/, '/cleanup_test');
    const mongo = new MongoClient(uri, { serverSelectionTimeoutMS: 5_000 });
    try {
      const db = mongo.db();
      await ensureIndexes(db);
      const metrics = createStoreMetrics(createRegistry('store-test'));
      const logger = createLogger('store-test', 'silent');
      const cols = openCollections(db, new QueryTimer(metrics, logger, 10_000));
      const now = 1_800_000_000_000;
      const DAY = 86_400_000;
      const kept = newId();
      const expired = newId();
      await cols.conversations.raw.insertMany([
        { _id: kept, userId: ALICE, title: '', createdAt: now - 40 * DAY, updatedAt: now - DAY, messageSeq: 1 },
        { _id: expired, userId: ALICE, title: '', createdAt: now - 40 * DAY, updatedAt: now - 31 * DAY, messageSeq: 1 },
      ]);
      const msg = (conversationId: string) => ({ _id: newId(), conversationId, role: 'user' as const, round: 0, content: 'hi', status: 'complete' as const, createdAt: now - 40 * DAY, seq: 1 });
      await cols.messages.raw.insertMany([msg(kept), msg(kept), msg(expired), msg(expired)]);
      const usage = { promptTokens: 0, completionTokens: 0, totalTokens: 0 };
      const runDoc = (conversationId: string, status: 'running' | 'completed', completedAt?: number) => ({
        _id: newId(), conversationId, userId: ALICE, status, checkpoint: '{"s":1}', usage, costUsd: 0,
        createdAt: now - 2 * 3_600_000, updatedAt: now - 3_600_000, ...(completedAt ? { completedAt } : {}),
      });
      const oldDone = runDoc(kept, 'completed', now - 3_600_000);
      const freshDone = runDoc(kept, 'completed', now - 60_000);
      const live = runDoc(kept, 'running');
      const expiredRun = runDoc(expired, 'completed', now - 31 * DAY);
      await cols.runs.raw.insertMany([oldDone, freshDone, live, expiredRun]);
      const response = (createdAt: number) => ({ _id: `resp_${newId().replace(/-/g, '')}`, userId: ALICE, createdAt, response: '{}', items: '[]' });
      const [oldResponse, newResponse] = [response(now - 31 * DAY), response(now - DAY)];
      await cols.responses.raw.insertMany([oldResponse, newResponse]);

      const cleanup = new RetentionCleanup(cols, { retentionMs: 30 * DAY, runStateRetentionMs: 30 * 60_000, now: () => now }, logger, metrics);
      const result = await cleanup.runOnce();
      // runsCleaned: the old finished run, and the expired conversation's run before it goes.
      expect(result).toEqual({ runsCleaned: 2, conversationsDeleted: 1, messagesDeleted: 2, runsDeleted: 1, responsesDeleted: 1 });
      expect((await cols.responses.raw.find({ _id: { $in: [oldResponse._id, newResponse._id] } }).toArray()).map((d) => d._id)).toEqual([newResponse._id]);

      const runs = await cols.runs.raw.find({}).toArray();
      const byId = new Map(runs.map((r) => [r._id, r]));
      expect(byId.get(oldDone._id)?.checkpoint).toBeUndefined();
      expect(byId.get(freshDone._id)?.checkpoint).toBe('{"s":1}');
      expect(byId.get(live._id)?.checkpoint).toBe('{"s":1}');
      expect(byId.has(expiredRun._id)).toBe(false);
      expect(await cols.conversations.raw.countDocuments({ _id: kept })).toBe(1);
      expect(await cols.conversations.raw.countDocuments({ _id: expired })).toBe(0);
      expect(await cols.messages.raw.countDocuments({ conversationId: kept })).toBe(2);
      expect(await cols.messages.raw.countDocuments({ conversationId: expired })).toBe(0);

      // A second pass finds nothing more to do.
      expect(await cleanup.runOnce()).toEqual({ runsCleaned: 0, conversationsDeleted: 0, messagesDeleted: 0, runsDeleted: 0, responsesDeleted: 0 });
    } finally {
      await mongo.close().catch(() => undefined);
    }
  });

  it('runs on its schedule in the service and shows in metrics', async () => {
    const metricsUrl = `http://127.0.0.1:${store.metricsPort}/metrics`;
    await waitFor('cleanup pass', async () => /store_cleanup_last_run_timestamp_seconds\{[^}]*\} [1-9]/.test(await (await fetch(metricsUrl)).text()), { timeoutMs: 20_000 });
    const text = await (await fetch(metricsUrl)).text();
    expect(text).toMatch(/store_cleanup_runs_cleaned_total/);
    expect(text).toMatch(/store_cleanup_conversations_deleted_total/);
    expect(text).toMatch(/store_db_query_seconds_bucket\{[^}]*op="findOneAndUpdate"[^}]*collection="conversations"/);
    expect(text).toMatch(/store_db_pool_max\{[^}]*\} 100/);
    expect(text).toMatch(/store_db_pool_size\{[^}]*\} [1-9]/);
    expect(text).toMatch(/store_db_pool_in_use/);
  });
});

describe('indexes on PostgreSQL', () => {
  // FerretDB pushes equality filters down as `_jsonb->'field' @> value`; its own btree indexes
  // cannot serve that, the GIN twins the local stack adds (deploy/local/stack.js) can. Sort and
  // limit are not pushed down (FerretDB sorts the rows the filter returns).
  it("serves the brief's user and conversation listings and _id lookups from an index", async () => {
    const uri = ferret.uri.replace(/\/agentmesh$/, '/explain_test');
    const mongo = new MongoClient(uri, { serverSelectionTimeoutMS: 5_000 });
    try {
      const db = mongo.db();
      await ensureIndexes(db);
      const conversations = Array.from({ length: 3000 }, (_, i) => ({ _id: newId(), userId: `u${i % 300}`, title: '', createdAt: i, updatedAt: i, messageSeq: 0 }));
      await db.collection<{ _id: string }>('conversations').insertMany(conversations);
      await db.collection<{ _id: string }>('messages').insertMany(conversations.map((c, i) => (
        { _id: newId(), conversationId: c._id, role: 'user' as const, round: 0, content: 'hi', status: 'complete' as const, createdAt: i, seq: 1 })));
      const plan = async (collection: string, filter: Record<string, unknown>, sort?: Record<string, 1 | -1>) => {
        let cursor = db.collection(collection).find(filter);
        if (sort) cursor = cursor.sort(sort).limit(20);
        const e = await cursor.explain();
        return { pushed: e.filterPushdown, sortPushed: e.sortPushdown, plan: JSON.stringify(e.queryPlanner) };
      };
      const byUser = await plan('conversations', { userId: 'u7' }, { createdAt: -1, _id: -1 });
      expect(byUser.pushed).toBe(true);
      expect(byUser.sortPushed).toBe(false);
      expect(byUser.plan).toMatch(/"Index Cond":"\(\(conversations_[0-9a-f]+\._jsonb -> 'userId'::text\) @>/);
      const byConversation = await plan('messages', { conversationId: conversations[5]!._id }, { createdAt: -1, seq: -1 });
      expect(byConversation.plan).toMatch(/"Index Cond":"\(\(messages_[0-9a-f]+\._jsonb -> 'conversationId'::text\) @>/);
      const byId = await plan('conversations', { _id: conversations[9]!._id });
      expect(byId.plan).toMatch(/"Index Cond":"\(\(conversations_[0-9a-f]+\._jsonb -> '_id'::text\) @>/);
      expect(byId.plan).not.toMatch(/Seq Scan/);
    } finally {
      await mongo.close().catch(() => undefined);
    }
  });
});

describe('health follows the database', () => {
  it('is NOT_SERVING while FerretDB is down and SERVING again after it comes back', async () => {
    const conv = (await call.create(ALICE)).conversation!;
    const port = ferret.port;
    await ferret.kill();
    await waitFor('store NOT_SERVING', async () => !(await grpcServing(store.addr)), { timeoutMs: 30_000, intervalMs: 250 });
    const down = await refusal(call.get(ALICE, conv.id));
    expect(down.code).toBe(status.UNAVAILABLE);

    ferret = await startFerret({ logDir: dir, dataDir: ferretData, port });
    await waitFor('store SERVING', () => grpcServing(store.addr), { timeoutMs: 60_000, intervalMs: 250 });
    expect((await call.get(ALICE, conv.id)).conversation!.id).toBe(conv.id); // same data dir: still there
  });
});
