import { Metadata } from '@grpc/grpc-js';
import { createLogger, reasonOf, status, type MeshError } from '@agent-mesh/common';
import { AgentRole, MessageRole, MessageStatus, PlanStatus, RunStatus, type Message, type Plan, type Run } from '@agent-mesh/common/gen/store/v1/store';
import type { Repos } from './repos';
import { createStoreServer } from './server';

const CONV = '0b6f3c1e-2a4d-4c8e-9f10-1234567890ab';
const RUN = '1b6f3c1e-2a4d-4c8e-9f10-1234567890ab';
const MSG = '2b6f3c1e-2a4d-4c8e-9f10-1234567890ab';
const NOW = 1_800_000_000_000;

function fakeRepos() {
  const calls: Record<string, unknown[][]> = {};
  const rec = (name: string, result: unknown) => (...args: unknown[]) => {
    (calls[name] ??= []).push(args);
    return Promise.resolve(typeof result === 'function' ? (result as (...a: unknown[]) => unknown)(...args) : result);
  };
  const runDoc = { _id: RUN, conversationId: CONV, userId: 'u', status: 'running', usage: { promptTokens: 0, completionTokens: 0, totalTokens: 0 }, costUsd: 0, createdAt: NOW, updatedAt: NOW };
  let created = true;
  const repos = {
    conversations: { reserveMessageSeq: rec('reserveMessageSeq', 7), assertOwned: rec('assertOwned', undefined), setLastRun: rec('setLastRun', undefined) },
    messages: { append: rec('append', (_c: unknown, msgs: unknown[]) => msgs.length) },
    runs: { save: rec('save', () => ({ run: runDoc, created })) },
    // Saves what it is given, as the repository does, the status as stored (a name).
    plans: { save: rec('savePlan', (p: { id: string }, now: number) => ({ ...p, _id: p.id, createdAt: now, updatedAt: now })) },
  } as unknown as Repos;
  return { repos, calls, setCreated: (v: boolean) => { created = v; } };
}

/** Calls a unary handler the way grpc-js does and returns its response or error. */
function invoke<Req, Res>(handler: unknown, request: Req): Promise<{ err: Partial<MeshError> | null; res: Res | null }> {
  return new Promise((resolve) => {
    (handler as (call: { request: Req; metadata: Metadata; getPath(): string }, cb: (err: Partial<MeshError> | null, res: Res | null) => void) => void)(
      { request, metadata: new Metadata(), getPath: () => '/store.v1.StoreService/Test' },
      (err, res) => resolve({ err, res }),
    );
  });
}

const logger = createLogger('store-test', 'silent');
const msg = (over: Partial<Message>): Message => ({
  id: MSG, conversationId: '', runId: '', role: MessageRole.MESSAGE_ROLE_AGENT, agent: AgentRole.AGENT_ROLE_PLANNER, round: 1, content: 'hi',
  status: MessageStatus.MESSAGE_STATUS_UNSPECIFIED, createdAtMs: 0, ...over,
});

describe('AppendMessages', () => {
  it('stamps messages, reserves their seq and moves lastRunId to the user message’s run', async () => {
    const f = fakeRepos();
    const server = createStoreServer({ repos: f.repos, logger, now: () => NOW });
    const { err, res } = await invoke(server.appendMessages, {
      userId: 'u', conversationId: CONV, messages: [msg({ role: MessageRole.MESSAGE_ROLE_USER, agent: AgentRole.AGENT_ROLE_UNSPECIFIED, runId: RUN })],
    });
    expect(err).toBeNull();
    expect(res).toEqual({ inserted: 1 });
    expect(f.calls.reserveMessageSeq![0]).toEqual(['u', CONV, 1, NOW, RUN]);
    const [conversationId, stored, firstSeq] = f.calls.append![0]!;
    expect(conversationId).toBe(CONV);
    expect(firstSeq).toBe(7);
    expect(stored).toEqual([{ _id: MSG, conversationId: CONV, role: 'user', round: 1, content: 'hi', status: 'complete', createdAt: NOW, runId: RUN }]);
  });

  it('refuses an agent message without an agent, and a message of another conversation', async () => {
    const f = fakeRepos();
    const server = createStoreServer({ repos: f.repos, logger });
    const a = await invoke(server.appendMessages, { userId: 'u', conversationId: CONV, messages: [msg({ agent: AgentRole.AGENT_ROLE_UNSPECIFIED })] });
    expect(a.err?.code).toBe(status.INVALID_ARGUMENT);
    expect(a.err && (a.err as { details?: string }).details).toContain('messages[0].agent');
    const b = await invoke(server.appendMessages, { userId: 'u', conversationId: CONV, messages: [msg({ conversationId: RUN })] });
    expect(b.err?.code).toBe(status.INVALID_ARGUMENT);
    expect(f.calls.append).toBeUndefined();
  });

  it('stores roles, agents and statuses by name, and refuses values no enum has', async () => {
    const f = fakeRepos();
    const server = createStoreServer({ repos: f.repos, logger, now: () => NOW });
    const ok = await invoke(server.appendMessages, {
      userId: 'u', conversationId: CONV,
      messages: [msg({ agent: AgentRole.AGENT_ROLE_REPORTER, status: MessageStatus.MESSAGE_STATUS_DEGRADED })],
    });
    expect(ok.err).toBeNull();
    expect(f.calls.append![0]![1]).toEqual([expect.objectContaining({ role: 'agent', agent: 'reporter', status: 'degraded' })]);
    for (const bad of [{ role: MessageRole.MESSAGE_ROLE_UNSPECIFIED }, { role: 7 as MessageRole }, { agent: 9 as AgentRole }, { status: 5 as MessageStatus }]) {
      const r = await invoke(server.appendMessages, { userId: 'u', conversationId: CONV, messages: [msg(bad)] });
      expect(r.err?.code).toBe(status.INVALID_ARGUMENT);
      expect(reasonOf(r.err)).toBe('invalid_enum');
    }
    expect(f.calls.append).toHaveLength(1);
  });
});

describe('SaveRun', () => {
  const run = (over: Partial<Run> = {}): Run => ({
    id: RUN, conversationId: CONV, userId: '', messageId: '', status: RunStatus.RUN_STATUS_RUNNING, checkpointJson: '', usage: undefined,
    costUsd: 0, createdAtMs: 0, updatedAtMs: 0, completedAtMs: 0, error: '', ...over,
  });

  it('checks ownership first and moves lastRunId only when the run is new', async () => {
    const f = fakeRepos();
    const server = createStoreServer({ repos: f.repos, logger, now: () => NOW });
    expect((await invoke(server.saveRun, { userId: 'u', run: run() })).err).toBeNull();
    expect(f.calls.assertOwned![0]).toEqual(['u', CONV]);
    expect(f.calls.setLastRun).toEqual([[CONV, RUN]]);
    f.setCreated(false);
    await invoke(server.saveRun, { userId: 'u', run: run({ status: RunStatus.RUN_STATUS_COMPLETED }) });
    expect(f.calls.setLastRun).toHaveLength(1);
  });

  it('refuses a run claimed for another user and an unknown status', async () => {
    const f = fakeRepos();
    const server = createStoreServer({ repos: f.repos, logger });
    expect((await invoke(server.saveRun, { userId: 'u', run: run({ userId: 'someone-else' }) })).err?.code).toBe(status.INVALID_ARGUMENT);
    expect((await invoke(server.saveRun, { userId: 'u', run: run({ status: 42 as RunStatus }) })).err?.code).toBe(status.INVALID_ARGUMENT);
    expect((await invoke(server.saveRun, { userId: 'u', run: run({ status: RunStatus.RUN_STATUS_UNSPECIFIED }) })).err?.code).toBe(status.INVALID_ARGUMENT);
    expect((await invoke(server.saveRun, { userId: 'u', run: run({ costUsd: Number.NaN }) })).err?.code).toBe(status.INVALID_ARGUMENT);
    expect(f.calls.save).toBeUndefined();
  });
});

describe('SavePlan', () => {
  const plan = (over: Partial<Plan> = {}): Plan => ({
    id: RUN, userId: '', conversationId: '', title: 'trip', steps: ['pack'], status: PlanStatus.PLAN_STATUS_ACTIVE, createdAtMs: 0, updatedAtMs: 0, ...over,
  });

  it('stores the status by name, unspecified as draft, and answers the enum', async () => {
    const f = fakeRepos();
    const server = createStoreServer({ repos: f.repos, logger, now: () => NOW });
    const active = await invoke<unknown, { plan: Plan }>(server.savePlan, { userId: 'u', plan: plan() });
    expect(active.err).toBeNull();
    expect(f.calls.savePlan![0]![0]).toMatchObject({ status: 'active' });
    expect(active.res!.plan.status).toBe(PlanStatus.PLAN_STATUS_ACTIVE);
    const draft = await invoke<unknown, { plan: Plan }>(server.savePlan, { userId: 'u', plan: plan({ status: PlanStatus.PLAN_STATUS_UNSPECIFIED }) });
    expect(f.calls.savePlan![1]![0]).toMatchObject({ status: 'draft' });
    expect(draft.res!.plan.status).toBe(PlanStatus.PLAN_STATUS_DRAFT);
  });

  it('refuses a status no enum has', async () => {
    const f = fakeRepos();
    const server = createStoreServer({ repos: f.repos, logger });
    const r = await invoke(server.savePlan, { userId: 'u', plan: plan({ status: 4 as PlanStatus }) });
    expect(r.err?.code).toBe(status.INVALID_ARGUMENT);
    expect(reasonOf(r.err)).toBe('invalid_enum');
    expect(f.calls.savePlan).toBeUndefined();
  });
});
