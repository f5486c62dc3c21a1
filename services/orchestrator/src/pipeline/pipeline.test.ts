import { callerRoles } from '@agent-mesh/common';
import { CacheStatus } from '@agent-mesh/common/gen/llmbroker/v1/llm_broker';
import { loadConfig } from '../config';
import { DegradedError, RunStopped } from './errors';
import { interruptedAgent, runPipeline, type PipelineSettings } from './pipeline';
import type { RolePrompts } from './prompts';
import { initialCheckpoint, type Checkpoint, type HistoryTurn, type GenerateRequest, type GenerateResponse, type LlmGateway, type ToolGateway } from './types';

const prompts: RolePrompts = { planner: 'You are the Planner.', critic: 'You are the Critic.', host: 'You are the Host.', reporter: 'You are the Reporter.' };
const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = () => { clearTimeout(t); reject(signal!.reason); };
    const t = setTimeout(() => { signal?.removeEventListener('abort', onAbort); resolve(); }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });

interface CallLog { role: string; start: number; end?: number; doneAt?: number; aborted?: boolean; request: GenerateRequest }

/** A broker that answers by role, in chunks, with a delay per chunk. */
class FakeLlm implements LlmGateway {
  calls: CallLog[] = [];
  constructor(
    private readonly opts: {
      verdicts?: string[];
      chunkMs?: number;
      toolCallOnce?: boolean;
      fail?: (role: string) => Error | undefined;
      /** Roles whose calls the broker queues first (a `queued` update before the answer). */
      queued?: string[];
      /** Roles whose answers the broker replays from its response cache (billed nothing). */
      cached?: string[];
    } = {},
  ) {}
  private criticCalls = 0;
  async *generate(request: GenerateRequest, { signal }: { signal: AbortSignal }): AsyncIterable<GenerateResponse> {
    const role = callerRoles.fromWire(request.callerRole) ?? '';
    const log: CallLog = { role, start: Date.now(), request };
    this.calls.push(log);
    const err = this.opts.fail?.(role);
    if (err) throw err;
    if (this.opts.queued?.includes(role)) yield { update: { $case: 'queued', queued: { position: 1, estimatedWaitMs: 5, marginalWaitMs: 0 } } };
    const cached = this.opts.cached?.includes(role) ?? false;
    if (cached) yield { update: { $case: 'cached', cached: { stale: false, ageMs: 1000 } } };
    let text: string[];
    if (role === 'host' && this.opts.toolCallOnce && request.tools.length > 0 && !request.messages.some((m) => m.role === 'tool')) {
      yield { update: { $case: 'done', done: { finishReason: 'tool_calls', usage: { promptTokens: 5, completionTokens: 1, totalTokens: 6 }, toolCalls: [{ id: 'c1', name: 'search_web', argumentsJson: '{"query":"x"}' }], model: 'm', queueWaitMs: 0, cache: CacheStatus.CACHE_STATUS_UNSPECIFIED, cachedUsage: undefined, upstream: '', content: '', logprobs: [] } } };
      log.end = Date.now();
      return;
    }
    if (role === 'planner') text = ['1. First step\n', '2. Second step\n', '3. Third step\n', '4. Fourth step'];
    else if (role === 'critic') {
      const v = this.opts.verdicts?.[this.criticCalls] ?? 'APPROVE';
      this.criticCalls++;
      text = ['Critique. ', 'Fine.\n', `VERDICT: ${v}`];
    } else if (role === 'host') text = ['Host ', 'answer.'];
    else text = ['Final ', 'answer: ', 'done.'];
    try {
      for (const chunk of text) {
        await sleep(this.opts.chunkMs ?? 5, signal);
        yield { update: { $case: 'delta', delta: { content: chunk, logprobs: [] } } };
      }
    } catch (e) {
      log.aborted = true;
      throw e;
    }
    log.doneAt = Date.now();
    const usage = { promptTokens: 10, completionTokens: text.length, totalTokens: 10 + text.length };
    const billed = cached ? { promptTokens: 0, completionTokens: 0, totalTokens: 0 } : usage;
    yield { update: { $case: 'done', done: { finishReason: 'stop', usage: billed, toolCalls: [], model: 'm', queueWaitMs: 0, cache: cached ? 2 : 0, cachedUsage: cached ? usage : undefined, upstream: '', content: '', logprobs: [] } } };
    log.end = Date.now();
  }
}

/** The deployment's defaults (AGENT_TEMPERATURES, AGENT_CACHE_ROLES unset). */
const CALLS = loadConfig({}).agentCalls;

const tools: ToolGateway = {
  listTools: async () => [{ name: 'search_web', description: 'search', parametersJsonSchema: '{"type":"object"}' }],
  invoke: async (req) => ({ ok: true, resultJson: JSON.stringify({ results: ['r'] }), cached: false, degraded: false, degradedReason: '', durationMs: 1, error: undefined }),
};

function harness(llm: LlmGateway, settings: Partial<PipelineSettings> = {}, signal = new AbortController().signal, history: HistoryTurn[] = []) {
  const events: { type: string; data: Record<string, any> }[] = [];
  const stored: string[] = [];
  const checkpoint = initialCheckpoint();
  const run = runPipeline(
    { llm, tools, prompts, settings: { maxRounds: 3, overlap: false, hostStartSteps: 2, maxTokens: 100, calls: CALLS, callTimeoutMs: 1000, toolTimeoutMs: 1000, ...settings } },
    {
      runId: 'run-1', userId: 'u1', question: 'What is up?', history, checkpoint, emit: async (type, data) => { events.push({ type, data }); },
      signal, saveCheckpoint: async () => undefined, storeOutput: async (agent, round) => { stored.push(`${agent}:${round}`); },
    },
  );
  return { run, events, stored, checkpoint };
}

const types = (events: { type: string; data: Record<string, any> }[], agent?: string) =>
  events.filter((e) => agent === undefined || e.data.agent === agent).map((e) => e.type);

describe.each([false, true])('pipeline (overlap %s)', (overlap) => {
  it('approve in round 1 → one round, then Host and Reporter', async () => {
    const llm = new FakeLlm({ verdicts: ['APPROVE'] });
    const h = harness(llm, { overlap });
    const res = await h.run;
    expect(res.rounds).toBe(1);
    expect(res.answer).toBe('Final answer: done.');
    expect(h.events.filter((e) => e.type === 'round.completed').map((e) => e.data)).toEqual([{ round: 1, verdict: 'approve' }]);
    expect(h.stored).toEqual(expect.arrayContaining(['planner:1', 'critic:1', 'host:1', 'reporter:1']));
    expect(h.stored.filter((s) => s.startsWith('reporter'))).toHaveLength(1);
    expect(res.usage.totalTokens).toBeGreaterThan(0);
  });

  it('returns new checkpoints and leaves the one it was given as it was', async () => {
    const start = initialCheckpoint();
    const before = JSON.stringify(start);
    const saved: Checkpoint[] = [];
    const states: Checkpoint[] = [];
    const res = await runPipeline(
      { llm: new FakeLlm({ verdicts: ['REVISE', 'APPROVE'] }), tools, prompts, settings: { maxRounds: 3, overlap, hostStartSteps: 2, maxTokens: 100, calls: CALLS, callTimeoutMs: 1000, toolTimeoutMs: 1000 } },
      {
        runId: 'run-1', userId: 'u1', question: 'q', history: [], checkpoint: start, emit: async () => undefined, signal: new AbortController().signal,
        saveCheckpoint: async (c) => { saved.push(c); }, onState: (c) => states.push(c), storeOutput: async () => undefined,
      },
    );
    expect(JSON.stringify(start)).toBe(before);
    // Each saved state is its own object, and stays what it was when saved.
    expect(new Set(saved).size).toBe(saved.length);
    expect(saved.map((c) => [c.round, c.rounds.length, c.plan !== undefined, c.host !== undefined, c.reporter !== undefined])).toEqual([
      [1, 0, true, false, false], [2, 1, false, false, false], [2, 1, true, false, false], [2, 2, true, false, false], [2, 2, true, true, false], [2, 2, true, true, true],
    ]);
    expect(res.checkpoint).toBe(saved.at(-1));
    expect(res.checkpoint).toBe(states.at(-1));
    expect(res.checkpoint.usage).toEqual(res.usage);
    expect(res.usage.totalTokens).toBeGreaterThan(0);
  });

  it('revise, revise → 3 rounds; never more than MAX_ROUNDS', async () => {
    const h = harness(new FakeLlm({ verdicts: ['REVISE', 'REVISE', 'REVISE', 'REVISE'] }), { overlap });
    const res = await h.run;
    expect(res.rounds).toBe(3);
    expect(h.events.filter((e) => e.type === 'round.completed').map((e) => e.data.verdict)).toEqual(['revise', 'revise', 'revise']);
    expect(h.events.filter((e) => e.type === 'agent.started' && e.data.agent === 'planner').map((e) => e.data.round)).toEqual([1, 2, 3]);
    expect(h.events.filter((e) => e.type === 'agent.completed' && e.data.agent === 'reporter')).toHaveLength(1);
    const h2 = harness(new FakeLlm({ verdicts: ['REVISE', 'REVISE'] }), { overlap, maxRounds: 2 });
    expect((await h2.run).rounds).toBe(2);
  });

  it("keeps each agent's events in order", async () => {
    const h = harness(new FakeLlm({ verdicts: ['REVISE', 'APPROVE'] }), { overlap });
    await h.run;
    for (const agent of ['planner', 'critic', 'host', 'reporter']) {
      const byRound = new Map<number, string[]>();
      for (const e of h.events.filter((x) => x.data.agent === agent)) byRound.set(e.data.round, [...(byRound.get(e.data.round) ?? []), e.type]);
      for (const seq of byRound.values()) {
        expect(seq[0]).toBe('agent.started');
        expect(seq.at(-1)).toBe('agent.completed');
        expect(seq.slice(1, -1).every((t) => t === 'token' || t === 'queued' || t.startsWith('tool.'))).toBe(true);
      }
    }
    // the Host is announced only after the round was approved
    const approved = h.events.findIndex((e) => e.type === 'round.completed' && e.data.verdict === 'approve');
    const hostStart = h.events.findIndex((e) => e.type === 'agent.started' && e.data.agent === 'host');
    expect(hostStart).toBeGreaterThan(approved);
  });

  it('tool calls produce tool.called and tool.result, then the model is asked again', async () => {
    const llm = new FakeLlm({ toolCallOnce: true });
    const h = harness(llm, { overlap });
    await h.run;
    const called = h.events.find((e) => e.type === 'tool.called');
    const result = h.events.find((e) => e.type === 'tool.result');
    expect(called?.data).toEqual({ agent: 'host', round: 1, callId: 'c1', tool: 'search_web', arguments: { query: 'x' } });
    expect(result?.data).toMatchObject({ agent: 'host', callId: 'c1', tool: 'search_web', ok: true, result: { results: ['r'] }, cached: false, degraded: false });
    const second = llm.calls.filter((c) => c.role === 'host').at(-1)!;
    expect(second.request.messages.map((m) => m.role).slice(-2)).toEqual(['assistant', 'tool']);
    expect(second.request.messages.at(-2)?.toolCalls[0]?.id).toBe('c1');
  });

  it('degraded: a broker refusal ends the pipeline with DegradedError', async () => {
    const h = harness(new FakeLlm({ fail: (r) => (r === 'critic' ? new DegradedError('breaker_open', 'open') : undefined) }), { overlap });
    await expect(h.run).rejects.toBeInstanceOf(DegradedError);
  });

  it('cancel aborts the in-flight call', async () => {
    const ac = new AbortController();
    const llm = new FakeLlm({ chunkMs: 50 });
    const h = harness(llm, { overlap }, ac.signal);
    setTimeout(() => ac.abort(new RunStopped('cancelled')), 80);
    await expect(h.run).rejects.toBeInstanceOf(RunStopped);
    expect(llm.calls.some((c) => c.aborted)).toBe(true);
    expect(llm.calls.some((c) => c.role === 'reporter')).toBe(false);
  });
});

it('overlap: the Critic starts before the Planner is done and every call carries its role', async () => {
  const llm = new FakeLlm({ chunkMs: 20 });
  const h = harness(llm, { overlap: true });
  await h.run;
  const planner = llm.calls.find((c) => c.role === 'planner')!;
  const critic = llm.calls.find((c) => c.role === 'critic')!;
  expect(critic.start).toBeLessThan(planner.doneAt!);
  expect(critic.request.messages.at(-1)?.content).toContain('still being written');
  expect(llm.calls.map((c) => c.role)).toEqual(expect.arrayContaining(['planner', 'critic', 'host', 'reporter']));
  expect(planner.request.runStarted).toBe(false);
  expect(llm.calls.find((c) => c.role === 'reporter')!.request.runStarted).toBe(true);
  expect(llm.calls.every((c) => /Round: \d/.test(c.request.messages.at(-1)!.content))).toBe(true);
});

it('overlap: the Host starts on the plan\'s first steps, is announced only after approval, and the Reporter gets the complete plan', async () => {
  const llm = new FakeLlm({ chunkMs: 20 });
  const h = harness(llm, { overlap: true, hostStartSteps: 2 });
  await h.run;
  const planner = llm.calls.find((c) => c.role === 'planner')!;
  const host = llm.calls.find((c) => c.role === 'host')!;
  expect(host.start).toBeLessThan(planner.doneAt!);
  const hostInput = host.request.messages.at(-1)!.content;
  expect(hostInput).toContain('Plan (still being written, first steps):\n1. First step\n2. Second step');
  expect(hostInput).not.toContain('Fourth step');
  expect(llm.calls.find((c) => c.role === 'reporter')!.request.messages.at(-1)!.content).toContain('Plan:\n1. First step\n2. Second step\n3. Third step\n4. Fourth step');
  const approved = h.events.findIndex((e) => e.type === 'round.completed');
  expect(h.events.findIndex((e) => e.data.agent === 'host')).toBeGreaterThan(approved);
});

it('overlap with hostStartSteps 0: the Host starts on the complete plan', async () => {
  const llm = new FakeLlm({ chunkMs: 20 });
  await harness(llm, { overlap: true, hostStartSteps: 0 }).run;
  const planner = llm.calls.find((c) => c.role === 'planner')!;
  const host = llm.calls.find((c) => c.role === 'host')!;
  expect(host.start).toBeGreaterThanOrEqual(planner.doneAt!);
  expect(host.request.messages.at(-1)!.content).toContain('Plan:\n1. First step\n2. Second step\n3. Third step\n4. Fourth step');
});

it('overlap: a speculative Host that the broker queues yields, and the Host starts again after approval', async () => {
  const llm = new FakeLlm({ chunkMs: 20, queued: ['host'] });
  const outcomes: string[] = [];
  const events: { type: string; data: Record<string, any> }[] = [];
  const res = await runPipeline(
    { llm, tools, prompts, settings: { maxRounds: 3, overlap: true, hostStartSteps: 2, maxTokens: 100, calls: CALLS, callTimeoutMs: 1000, toolTimeoutMs: 1000 }, onSpeculation: (o) => outcomes.push(o) },
    { runId: 'r', userId: 'u', question: 'q', history: [], checkpoint: initialCheckpoint(), emit: async (type, data) => { events.push({ type, data }); },
      signal: new AbortController().signal, saveCheckpoint: async () => undefined, storeOutput: async () => undefined },
  );
  expect(res.answer).toBe('Final answer: done.');
  expect(outcomes).toEqual(['yielded']);
  const hosts = llm.calls.filter((c) => c.role === 'host');
  expect(hosts).toHaveLength(2);
  expect(hosts[0]!.doneAt).toBeUndefined(); // given up before it answered
  const criticDone = llm.calls.find((c) => c.role === 'critic')!.end!;
  expect(hosts[1]!.start).toBeGreaterThanOrEqual(criticDone);
  expect(hosts[1]!.request.messages.at(-1)!.content).toContain('Plan:\n1. First step');
  // the client sees one Host, after the approval, with its queued update
  expect(types(events, 'host')).toEqual(['agent.started', 'queued', 'token', 'token', 'agent.completed']);
});

it('overlap: a speculative Host is discarded on REVISE and its events never appear', async () => {
  const llm = new FakeLlm({ chunkMs: 20, verdicts: ['REVISE', 'APPROVE'] });
  const h = harness(llm, { overlap: true, hostStartSteps: 2 });
  await h.run;
  const hosts = llm.calls.filter((c) => c.role === 'host');
  // Speculation did happen (without it there is one Host, in round 2): a round-1 Host started
  // before the Critic's REVISE came in …
  expect(hosts).toHaveLength(2);
  expect(hosts[0]!.request.messages.at(-1)!.content).toContain('Round: 1');
  expect(hosts[0]!.start).toBeLessThan(llm.calls.find((c) => c.role === 'critic')!.end!);
  // … and the client never saw it: only round 2's Host is announced.
  expect(h.events.filter((e) => e.type === 'agent.started' && e.data.agent === 'host').map((e) => e.data.round)).toEqual([2]);
});

it('resume: the interrupted agent is announced and finished work is not repeated', async () => {
  const llm = new FakeLlm();
  const events: string[] = [];
  const checkpoint = { ...initialCheckpoint(), plan: '1. a', critique: 'ok\nVERDICT: APPROVE', rounds: [{ round: 1, plan: '1. a', critique: 'ok', verdict: 'approve' as const }] };
  expect(interruptedAgent(checkpoint)).toBe('host');
  const res = await runPipeline(
    { llm, tools, prompts, settings: { maxRounds: 3, overlap: true, maxTokens: 100, calls: CALLS, callTimeoutMs: 1000, toolTimeoutMs: 1000 } },
    { runId: 'r', userId: 'u', question: 'q', history: [], checkpoint, resumed: true, emit: async (t, d) => { events.push(`${t}:${String((d as { agent?: string }).agent ?? '')}`); },
      signal: new AbortController().signal, saveCheckpoint: async () => undefined, storeOutput: async () => undefined },
  );
  expect(events[0]).toBe('agent.restarted:host');
  expect(llm.calls.map((c) => c.role)).toEqual(['host', 'reporter']);
  expect(res.answer).toBe('Final answer: done.');
});

describe('LLM call policy per role (AGENT_TEMPERATURES, AGENT_CACHE_ROLES)', () => {
  it('by default the Planner and the Critic ask at temperature 0 with the response cache; the Host and the Reporter at the provider\'s default without', async () => {
    const llm = new FakeLlm({ verdicts: ['APPROVE'] });
    await harness(llm).run;
    const policy = (role: string) => {
      const r = llm.calls.find((c) => c.role === role)!.request;
      return { cache: r.cache, hasTemperature: r.hasTemperature, temperature: r.temperature };
    };
    expect(policy('planner')).toEqual({ cache: true, hasTemperature: true, temperature: 0 });
    expect(policy('critic')).toEqual({ cache: true, hasTemperature: true, temperature: 0 });
    expect(policy('host')).toEqual({ cache: false, hasTemperature: false, temperature: 0 });
    expect(policy('reporter')).toEqual({ cache: false, hasTemperature: false, temperature: 0 });
  });

  it('a configured policy reaches the calls: a temperature without the cache, the cache without a temperature', async () => {
    const llm = new FakeLlm({ verdicts: ['APPROVE'] });
    const calls = { ...CALLS, planner: { temperature: 0.7, cache: false }, reporter: { cache: true } };
    await harness(llm, { calls }).run;
    const req = (role: string) => llm.calls.find((c) => c.role === role)!.request;
    expect(req('planner')).toMatchObject({ cache: false, hasTemperature: true, temperature: 0.7 });
    expect(req('reporter')).toMatchObject({ cache: true, hasTemperature: false });
  });

  it('answers replayed from the cache cost the run nothing', async () => {
    const full = await harness(new FakeLlm({ verdicts: ['APPROVE'] })).run;
    const cached = await harness(new FakeLlm({ verdicts: ['APPROVE'], cached: ['planner', 'critic'] })).run;
    expect(cached.answer).toBe(full.answer);
    // Planner: 10 + 4 chunks; Critic: 10 + 3 chunks (the fake's usage: 10 prompt tokens + one per chunk).
    expect(full.usage.totalTokens - cached.usage.totalTokens).toBe(14 + 13);
    expect(cached.usage.totalTokens).toBe(10 + 2 + 10 + 3); // Host + Reporter only
  });
});

describe('load shedding (maxFirstWaitMs)', () => {
  it('a run not admitted yet ends degraded when the estimated wait is over the limit, and its call is cancelled', async () => {
    const llm = new FakeLlm({ queued: ['planner'] }); // estimatedWaitMs 5
    const h = harness(llm, { maxFirstWaitMs: 1 });
    await expect(h.run).rejects.toMatchObject({ name: 'DegradedError', reason: 'queue_wait' });
    expect(llm.calls.map((c) => c.role)).toEqual(['planner']);
    expect(llm.calls[0]!.doneAt).toBeUndefined();
  });

  it('under the limit, or off, the run waits its turn', async () => {
    expect((await harness(new FakeLlm({ queued: ['planner'] }), { maxFirstWaitMs: 100 }).run).rounds).toBe(1);
    expect((await harness(new FakeLlm({ queued: ['planner'] }), { maxFirstWaitMs: 0 }).run).rounds).toBe(1);
  });

  it('a begun run is never shed', async () => {
    const res = await harness(new FakeLlm({ queued: ['critic', 'host', 'reporter'] }), { maxFirstWaitMs: 1 }).run;
    expect(res.answer).toBe('Final answer: done.');
  });
});

describe('prompt-cache breakpoints (promptCacheTtl)', () => {
  const history: HistoryTurn[] = [{ role: 'user', content: 'Earlier question' }, { role: 'assistant', content: 'Earlier answer' }];
  /** The marked messages of a call: their roles and lifetimes. */
  const marks = (c: CallLog) => c.request.messages.flatMap((m, i) => (m.cacheTtl ? [`${i}:${m.role}:${m.cacheTtl}`] : []));

  it("mark each call's stable part: the conversation's last turn for the Planner and Host, the role's prompt for the Critic and Reporter", async () => {
    const llm = new FakeLlm({ verdicts: ['REVISE', 'APPROVE'] });
    await harness(llm, { promptCacheTtl: '1h' }, undefined, history).run;
    const byRole = (role: string) => llm.calls.filter((c) => c.role === role).map(marks);
    // The Planner's two rounds mark the same prefix, the second reading what the first wrote.
    expect(byRole('planner')).toEqual([['2:assistant:1h'], ['2:assistant:1h']]);
    expect(byRole('critic')).toEqual([['0:system:1h'], ['0:system:1h']]);
    expect(byRole('reporter')).toEqual([['0:system:1h']]);
    // The Host offers tools: its latest message is marked too.
    expect(byRole('host')).toEqual([['2:assistant:1h', '3:user:1h']]);
  });

  it("the Host's function-calling loop marks each call's latest message, and only that one beside the stable part", async () => {
    const llm = new FakeLlm({ toolCallOnce: true });
    await harness(llm, { promptCacheTtl: '5m' }, undefined, history).run;
    const host = llm.calls.filter((c) => c.role === 'host');
    expect(host.map(marks)).toEqual([['2:assistant:5m', '3:user:5m'], ['2:assistant:5m', '5:tool:5m']]);
    // Without history, the role's prompt is the stable part.
    const alone = new FakeLlm({ toolCallOnce: true });
    await harness(alone, { promptCacheTtl: '5m' }).run;
    expect(alone.calls.filter((c) => c.role === 'host').map(marks)).toEqual([['0:system:5m', '1:user:5m'], ['0:system:5m', '3:tool:5m']]);
  });

  it('off: nothing is marked', async () => {
    const llm = new FakeLlm({ toolCallOnce: true, verdicts: ['REVISE', 'APPROVE'] });
    await harness(llm, {}, undefined, history).run;
    expect(llm.calls.length).toBeGreaterThan(5);
    expect(llm.calls.flatMap(marks)).toEqual([]);
  });
});
