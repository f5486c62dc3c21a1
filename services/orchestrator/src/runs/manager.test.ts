// RunManager with fakes for its registry (Redis), run log, store and pipeline: what it does with
// a run — start, refuse, cancel, lose, take over, hand over — without Redis or peers.
import { createLogger, isTerminalEvent, MeshError, reasonOf, type Logger } from '@agent-mesh/common';
import { loadConfig } from '../config';
import type { Message, Run } from '../gateways/store';
import { createMetrics } from '../metrics';
import { RunStopped } from '../pipeline/errors';
import type { PipelineResult, PipelineRun, runPipeline } from '../pipeline/pipeline';
import { initialCheckpoint, type Checkpoint } from '../pipeline/types';
import type { EndOfRun } from '../runlog/runlog';
import { RunManager, type RunManagerDeps } from './manager';
import type { RunMeta, StartOutcome } from './registry';

const USER = 'alice';
const CONV = '0b6f3c1e-2a4d-4c8e-9f10-1234567890ab';
let n = 0;
const uuid = () => `${String(++n).padStart(8, '0')}-2a4d-4c8e-9f10-1234567890ab`;

/** The registry's state as Redis would hold it, in maps. */
class FakeRegistry {
  metas = new Map<string, RunMeta>();
  leases = new Map<string, string>();
  active = new Map<string, string>();
  current = new Map<string, string>();
  byMessage = new Map<string, string>();
  checkpoints = new Map<string, Checkpoint>();
  cancels = new Map<string, string>();
  ended: { runId: string; owner: string; lastSeq: number }[] = [];
  released: string[] = [];
  forgotten: string[] = [];
  orphans: string[] = [];
  renewals = 0;

  async create(meta: RunMeta, owner: string): Promise<StartOutcome> {
    const existing = this.byMessage.get(meta.messageId);
    if (existing) return { kind: 'existing', runId: existing };
    const active = this.active.get(meta.conversationId);
    if (active) return { kind: 'busy', runId: active };
    this.byMessage.set(meta.messageId, meta.runId);
    this.active.set(meta.conversationId, meta.runId);
    this.current.set(meta.conversationId, meta.runId);
    this.metas.set(meta.runId, meta);
    this.leases.set(meta.runId, owner);
    return { kind: 'created', runId: meta.runId };
  }
  async meta(runId: string) { return this.metas.get(runId); }
  async currentRun(conversationId: string) { return this.current.get(conversationId) ?? null; }
  async activeRun(conversationId: string) { return this.active.get(conversationId) ?? null; }
  async renew(runId: string, owner: string) {
    this.renewals++;
    return this.leases.get(runId) === owner;
  }
  async claimExpired(owner: string) {
    const claimed = this.orphans.splice(0);
    for (const id of claimed) this.leases.set(id, owner);
    return claimed;
  }
  async release(runId: string, owner: string) {
    if (this.leases.get(runId) === owner) this.leases.delete(runId);
    this.released.push(runId);
  }
  endInto(_tx: unknown, run: { runId: string; conversationId: string }, owner: string, lastSeq: number) {
    this.ended.push({ runId: run.runId, owner, lastSeq });
    this.leases.delete(run.runId);
    if (this.active.get(run.conversationId) === run.runId) this.active.delete(run.conversationId);
  }
  async forget(runId: string, conversationId?: string) {
    this.forgotten.push(runId);
    this.leases.delete(runId);
    if (conversationId && this.active.get(conversationId) === runId) this.active.delete(conversationId);
  }
  async checkpoint(runId: string) { return this.checkpoints.get(runId); }
  async saveCheckpoint(runId: string, c: Checkpoint) { this.checkpoints.set(runId, c); }
  async requestCancel(runId: string, reason: string) { this.cancels.set(runId, reason); }
  async cancelRequested(runId: string) { return this.cancels.get(runId) ?? null; }
}

/** Run logs in memory, fenced by the fake registry's leases like the real one. */
class FakeLog {
  logs = new Map<string, { seq: number; type: string; data: Record<string, unknown> }[]>();
  constructor(private readonly registry: FakeRegistry) {}
  async append(run: { runId: string }, owner: string, firstSeq: number, events: { type: string; dataJson: string }[], endOfRun?: EndOfRun) {
    const lease = this.registry.leases.get(run.runId);
    if (lease && lease !== owner) throw new RunStopped('lease_lost');
    const log = this.logs.get(run.runId) ?? [];
    events.forEach((e, i) => { if (firstSeq + i > log.length) log.push({ seq: firstSeq + i, type: e.type, data: JSON.parse(e.dataJson) }); });
    this.logs.set(run.runId, log);
    if (events.some((e) => isTerminalEvent(e.type))) endOfRun?.({} as never, firstSeq + events.length - 1);
    return firstSeq + events.length - 1;
  }
  async lastSeq(runId: string) { return this.logs.get(runId)?.length ?? 0; }
  async read(runId: string, afterSeq: number, count = 500) {
    return (this.logs.get(runId) ?? []).filter((e) => e.seq > afterSeq).slice(0, count)
      .map((e) => ({ runId, seq: e.seq, type: e.type, dataJson: JSON.stringify(e.data) }));
  }
  types(runId: string) { return (this.logs.get(runId) ?? []).map((e) => e.type); }
}

class FakeStore {
  messages: Message[] = [];
  runs: Run[] = [];
  history: Promise<void> = Promise.resolve();
  async listMessages() { await this.history; return []; }
  async assertConversation() {}
  async runCheckpoint() { return ''; }
  async appendMessages(_u: string, _c: string, messages: Message[]) { this.messages.push(...messages); }
  async saveRun(_u: string, run: Run) { this.runs.push(run); }
}

/** A pipeline the test drives: each call (in `calls` once it has started its Planner) waits for finishAll() or the run's abort. */
class FakePipeline {
  calls: PipelineRun[] = [];
  private finishers: (() => void)[] = [];
  readonly fn = (async (_deps, run) => {
    const finished = new Promise<void>((resolve, reject) => {
      this.finishers.push(resolve);
      if (run.signal.aborted) reject(run.signal.reason);
      run.signal.addEventListener('abort', () => reject(run.signal.reason), { once: true });
    });
    finished.catch(() => undefined);
    await run.emit('agent.started', { agent: 'planner', round: 1 });
    run.progress!.agent = 'planner';
    run.progress!.text = 'half a pl';
    this.calls.push(run);
    const usage = { promptTokens: 10, completionTokens: 5, totalTokens: 15 };
    const done = { ...run.checkpoint, plan: '1. a', critique: 'ok', host: 'h', reporter: 'the answer', usage };
    await finished;
    run.onState?.(done);
    return { answer: 'the answer', rounds: 1, usage, checkpoint: done } satisfies PipelineResult;
  }) as typeof runPipeline;
  finishAll() { this.finishers.splice(0).forEach((f) => f()); }
}

const until = async (cond: () => boolean, what: string, ms = 3000) => {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
};

function setup(env: Record<string, string> = {}) {
  const registry = new FakeRegistry();
  const log = new FakeLog(registry);
  const store = new FakeStore();
  const pipeline = new FakePipeline();
  const logger: Logger = createLogger('manager-test', 'silent');
  const deps = {
    config: loadConfig({ RUN_LEASE_MS: '300', RUN_MAX_QUEUE_WAIT_MS: '0', ...env }),
    logger, metrics: createMetrics(), registry, log, store, pipeline: pipeline.fn,
    llm: { generate: () => { throw new Error('the fake pipeline calls no LLM'); } },
    tools: { listTools: async () => [], invoke: async () => { throw new Error('no tools'); } },
    prompts: {} as never,
  } as unknown as RunManagerDeps;
  const manager = new RunManager(deps);
  const start = (content = 'hello', messageId = uuid(), userId = USER) => manager.start({ userId, conversationId: CONV, messageId, content });
  return { manager, registry, log, store, pipeline, start };
}

describe('RunManager', () => {
  it('starts a run: run.started, the pipeline, the answer stored, then run.completed with the lease and slot released', async () => {
    const t = setup();
    const runId = await t.start();
    expect(t.log.types(runId)[0]).toBe('run.started');
    await until(() => t.pipeline.calls.length === 1, 'the pipeline');
    expect(t.manager.activeRunIds).toEqual([runId]);
    expect(t.pipeline.calls[0]).toMatchObject({ runId, userId: USER, question: 'hello', resumed: false, checkpoint: initialCheckpoint() });
    t.pipeline.finishAll();
    await until(() => t.manager.activeRunIds.length === 0, 'the run to end');
    expect(t.log.types(runId)).toEqual(['run.started', 'agent.started', 'run.completed']);
    expect(t.registry.ended).toEqual([{ runId, owner: t.manager.owner, lastSeq: 3 }]);
    expect(t.registry.active.has(CONV)).toBe(false);
    expect(t.store.runs.map((r) => r.status)).toEqual(['running', 'completed']);
    expect(t.store.runs.at(-1)).toMatchObject({ usage: { totalTokens: 15 }, checkpointJson: expect.stringContaining('the answer') });
    expect(t.store.messages.map((m) => `${m.role}:${m.agent ?? ''}`)).toEqual(['user:']);
  });

  it('is idempotent on the message id, refuses a second run on the conversation, and hides another user’s run', async () => {
    const t = setup();
    const messageId = uuid();
    const runId = await t.start('hello', messageId);
    expect(await t.start('hello', messageId)).toBe(runId);
    const busy = await t.start('another').catch((e: unknown) => e);
    expect(busy).toBeInstanceOf(MeshError);
    expect(reasonOf(busy)).toBe('run_in_progress');
    expect(reasonOf(await t.start('hello', messageId, 'mallory').catch((e: unknown) => e))).toBe('not_found');
    await until(() => t.pipeline.calls.length === 1, 'the pipeline');
    t.pipeline.finishAll();
    await until(() => t.manager.activeRunIds.length === 0, 'the run to end');
    expect(t.pipeline.calls).toHaveLength(1);
  });

  it('sheds starts beyond RUN_MAX_STARTING while the store is slow', async () => {
    const t = setup({ RUN_MAX_STARTING: '1' });
    let unblock!: () => void;
    t.store.history = new Promise((r) => (unblock = r));
    const first = t.start();
    const second = await t.start().catch((e: unknown) => e);
    expect(reasonOf(second)).toBe('busy');
    unblock();
    await first;
    await until(() => t.pipeline.calls.length === 1, 'the pipeline');
    t.pipeline.finishAll();
  });

  it('cancels the conversation’s run: run.cancelled with the partial text, stored as cancelled', async () => {
    const t = setup();
    const runId = await t.start();
    await until(() => t.pipeline.calls.length === 1, 'the pipeline');
    expect(await t.manager.cancel(USER, CONV)).toEqual({ runId, cancelled: true });
    await until(() => t.manager.activeRunIds.length === 0, 'the run to end');
    expect(t.registry.cancels.get(runId)).toBe('user_cancelled');
    expect(t.log.types(runId).at(-1)).toBe('run.cancelled');
    expect(t.log.logs.get(runId)!.at(-1)!.data).toEqual({ reason: 'user_cancelled', partial: 'half a pl' });
    expect(t.store.runs.at(-1)!.status).toBe('cancelled');
    expect(t.store.messages.at(-1)).toMatchObject({ role: 'agent', agent: 'planner', content: 'half a pl', status: 'cancelled' });
    expect(t.registry.ended.map((e) => e.runId)).toEqual([runId]);
    // Nothing active any more: a cancel now says so.
    expect(await t.manager.cancel(USER, CONV)).toEqual({ runId, cancelled: false });
  });

  it('a run whose lease another replica took is handed over: no terminal event, nothing released', async () => {
    const t = setup();
    const runId = await t.start();
    await until(() => t.pipeline.calls.length === 1, 'the pipeline');
    t.registry.leases.set(runId, 'another-replica');
    t.manager.startBackground();
    try {
      await until(() => t.manager.activeRunIds.length === 0, 'the lease renewal to notice');
    } finally {
      await t.manager.stop();
    }
    expect(t.pipeline.calls[0]!.signal.reason).toEqual(new RunStopped('lease_lost'));
    expect(t.log.types(runId).some(isTerminalEvent)).toBe(false);
    expect(t.registry.ended).toEqual([]);
    expect(t.store.runs.map((r) => r.status)).toEqual(['running']);
  });

  it('takes over an orphaned run from its checkpoint, continuing its log', async () => {
    const t = setup();
    const meta: RunMeta = { runId: uuid(), userId: USER, conversationId: CONV, messageId: uuid(), content: 'resume me', createdAtMs: Date.now(), trace: {} };
    t.registry.metas.set(meta.runId, meta);
    t.registry.active.set(CONV, meta.runId);
    const ckpt = { ...initialCheckpoint(), plan: '1. a' };
    t.registry.checkpoints.set(meta.runId, ckpt);
    t.log.logs.set(meta.runId, [{ seq: 1, type: 'run.started', data: {} }, { seq: 2, type: 'agent.started', data: {} }]);
    t.registry.orphans.push(meta.runId);
    t.manager.startBackground();
    try {
      await until(() => t.pipeline.calls.length === 1, 'the takeover');
      expect(t.pipeline.calls[0]).toMatchObject({ runId: meta.runId, resumed: true, checkpoint: ckpt, question: 'resume me' });
      t.pipeline.finishAll();
      await until(() => t.manager.activeRunIds.length === 0, 'the run to end');
    } finally {
      await t.manager.stop();
    }
    expect(t.log.logs.get(meta.runId)!.map((e) => e.seq)).toEqual([1, 2, 3, 4]);
    expect(t.log.types(meta.runId).at(-1)).toBe('run.completed');
    // The previous owner's outputs are sent again with the user's message (idempotent ids).
    expect(t.store.messages.map((m) => `${m.role}:${m.agent ?? ''}`)).toEqual(['user:', 'agent:planner']);
  });

  it('a claimed run whose log already ended is only cleaned up', async () => {
    const t = setup();
    const meta: RunMeta = { runId: uuid(), userId: USER, conversationId: CONV, messageId: uuid(), content: 'x', createdAtMs: Date.now(), trace: {} };
    t.registry.metas.set(meta.runId, meta);
    t.registry.active.set(CONV, meta.runId);
    t.log.logs.set(meta.runId, [{ seq: 1, type: 'run.started', data: {} }, { seq: 2, type: 'run.completed', data: {} }]);
    await t.manager.takeOver(meta.runId);
    expect(t.registry.forgotten).toEqual([meta.runId]);
    expect(t.registry.active.has(CONV)).toBe(false);
    expect(t.pipeline.calls).toHaveLength(0);
  });

  it('stop() hands its runs over: aborted without a terminal event, leases released', async () => {
    const t = setup();
    const runId = await t.start();
    await until(() => t.pipeline.calls.length === 1, 'the pipeline');
    await t.manager.stop();
    expect(t.pipeline.calls[0]!.signal.reason).toEqual(new RunStopped('shutdown'));
    expect(t.manager.activeRunIds).toEqual([]);
    expect(t.log.types(runId).some(isTerminalEvent)).toBe(false);
    expect(t.registry.released).toEqual([runId]);
    expect(t.registry.ended).toEqual([]);
  });
});
