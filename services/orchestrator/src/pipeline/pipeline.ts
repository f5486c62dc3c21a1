// The multi-agent run: Planner → Critic per round until the Critic approves (or MAX_ROUNDS),
// then Host → Reporter. With overlap on, agents are pipelined (see planAndCritique): the Critic
// and, speculatively, the Host start on the plan's first steps while the Planner still writes;
// events of each agent stay in order either way. Resumable from a Checkpoint (after a crash).
import { runAgent, type AgentEnv } from './agent';
import { agentMessages, type PromptCacheTtl, type RolePrompts } from './prompts';
import { parseVerdict } from './verdict';
import type { AgentCallPolicy, AgentRole, Checkpoint, Emit, HistoryTurn, LlmGateway, ToolDefinition, ToolGateway, Usage, Verdict } from './types';
import { plusUsage } from './types';

export interface PipelineSettings {
  maxRounds: number;
  overlap: boolean;
  /**
   * With overlap: the Host starts once the plan has this many complete steps (0 or undefined: on
   * the complete plan). See HOST_START_AFTER_STEPS for why this is sound.
   */
  hostStartSteps?: number;
  maxTokens: number;
  /** Temperature and response cache per role. */
  calls: Record<AgentRole, AgentCallPolicy>;
  /** See AgentEnv.promptCacheTtl. */
  promptCacheTtl?: PromptCacheTtl;
  callTimeoutMs: number;
  toolTimeoutMs: number;
  /** A run not admitted yet is shed above this estimated queue wait (0: never). See AgentEnv. */
  maxFirstWaitMs?: number;
  /** See AgentEnv.gate. */
  gate?: AgentEnv['gate'];
}

export interface PipelineDeps {
  llm: LlmGateway;
  tools: ToolGateway;
  prompts: RolePrompts;
  settings: PipelineSettings;
  /** Reports a Critic answer without a verdict line (assumed APPROVE). */
  onMissingVerdict?: (round: number) => void;
  /** Observes each agent step's duration. */
  onStepDone?: (agent: AgentRole, ms: number) => void;
  /** Counts speculative Host calls by what became of them. */
  onSpeculation?: (outcome: 'used' | 'discarded' | 'yielded') => void;
}

export interface PipelineRun {
  runId: string;
  userId: string;
  question: string;
  history: HistoryTurn[];
  /** Where to start (a fresh run: initialCheckpoint()). Never modified: each step makes a new state. */
  checkpoint: Readonly<Checkpoint>;
  /** True when resuming another replica's run: the interrupted agent is announced as restarted. */
  resumed?: boolean;
  emit: Emit;
  signal: AbortSignal;
  /** The run's deadline (ms since the epoch): no call the pipeline makes outlives it. */
  deadline?: number;
  /** Persists the state after a completed agent step (a new object each time, not modified afterwards). */
  saveCheckpoint: (c: Checkpoint) => Promise<void>;
  /**
   * Told every new state, saved or not yet: what the run has got to (its outputs and the tokens
   * used so far) when it stops before completing.
   */
  onState?: (c: Checkpoint) => void;
  /** Stores an agent's final output (idempotent per run/agent/round). */
  storeOutput: (agent: AgentRole, round: number, content: string) => Promise<void>;
  /** The text of the agent streaming right now (for a cancel's partial output). */
  progress?: { agent?: AgentRole; text: string };
  /** Records a moment of the run for its timing profile (e.g. `planner.r1.first_token`). */
  mark?: (name: string) => void;
}

export interface PipelineResult {
  answer: string;
  rounds: number;
  usage: Usage;
  /** The completed run's last state. */
  checkpoint: Checkpoint;
}

/**
 * The Critic starts once the plan has this many complete steps. Why this is sound: a plan's
 * direction is fixed by its first steps, and that is what a critique judges; the Critic's prompt
 * says the plan may still be being written, and its verdict is applied to the full plan (which the
 * Host then receives complete). Critiquing step by step instead would cost one LLM call per step
 * against the quota that is the system's bottleneck.
 */
export const CRITIC_START_AFTER_STEPS = 1;
/** Without recognisable steps, the Critic starts after this much plan text. */
export const CRITIC_START_AFTER_CHARS = 240;

/** Complete steps (numbered or bulleted lines) of a plan being written; the last line may be unfinished. */
export function completeSteps(text: string): number {
  const lines = text.split('\n');
  lines.pop(); // the line being written is not complete yet
  return lines.filter((l) => /^\s*(\d+[.)]|[-*•])\s+\S/.test(l)).length;
}

export function planReadyForCritic(text: string): boolean {
  return completeSteps(text) >= CRITIC_START_AFTER_STEPS || text.length >= CRITIC_START_AFTER_CHARS;
}

/**
 * The Host's default start (AGENT_HOST_START_STEPS): after the plan's first two steps. Why this is
 * sound: the Planner writes the most important steps first (its prompt asks for it), the Host's
 * prompt says the plan may be incomplete and to follow the steps it sees, and the Reporter, which
 * writes the final answer, receives the complete plan and is told to cover any step the Host's
 * answer misses. The Host's output stays held back until the Critic approves, and a REVISE
 * cancels it (its tokens are the price: one Host call per revised round, as before, only longer).
 */
export const HOST_START_AFTER_STEPS = 2;

/** The first agent a resumed run runs again (the one that was interrupted). */
export function interruptedAgent(c: Checkpoint): AgentRole {
  if (c.reporter !== undefined) return 'reporter';
  if (c.host !== undefined) return 'reporter';
  if (c.critique !== undefined) return 'host';
  if (c.plan !== undefined) return 'critic';
  return 'planner';
}

/**
 * An agent started before we know it is wanted (the Host while the Critic judges the plan).
 * Its events are held back until release(), so a discarded speculation never reaches clients.
 * It runs on spare capacity only: when the broker queues it (the upstream quota is busy), it
 * yields at once — a speculative call must not take a slot, or outrank with the Host's priority,
 * the confirmed calls of other runs — and the agent starts normally once it is wanted.
 */
class Speculation<T> {
  private readonly held: Parameters<Emit>[] = [];
  private released = false;
  /** Gave up because the broker queued it (see the class comment). */
  yielded = false;
  readonly abort = new AbortController();
  promise!: Promise<T>;

  constructor(private readonly emit: Emit, parent: AbortSignal) {
    if (parent.aborted) this.abort.abort(parent.reason);
    else parent.addEventListener('abort', () => this.abort.abort(parent.reason), { once: true });
  }

  readonly bufferedEmit: Emit = async (type, data) => {
    if (this.released) return this.emit(type, data);
    if (type === 'queued' && !this.yielded) {
      this.yielded = true;
      this.discard();
    }
    if (this.yielded) return;
    this.held.push([type, data]);
  };

  async release(): Promise<T> {
    // Handed to the emitter all at once, in order: it writes them in one batch, not one round
    // trip per held token (which used to delay the Reporter by a few hundred ms under load).
    const held = this.held.splice(0).map((args) => this.emit(...args));
    this.released = true;
    await Promise.all(held);
    return this.promise;
  }

  discard(): void {
    this.abort.abort(new Error('speculation discarded'));
    this.promise.catch(() => undefined);
  }
}

export async function runPipeline(deps: PipelineDeps, run: PipelineRun): Promise<PipelineResult> {
  const { settings, prompts } = deps;
  // The run's state: replaced, never modified, as steps complete (the caller's stays as it was).
  let ckpt: Checkpoint = run.checkpoint;
  const update = (change: Partial<Checkpoint>): Checkpoint => {
    ckpt = { ...ckpt, ...change };
    run.onState?.(ckpt);
    return ckpt;
  };
  const env: AgentEnv = {
    runId: run.runId,
    userId: run.userId,
    llm: deps.llm,
    tools: deps.tools,
    maxTokens: settings.maxTokens,
    calls: settings.calls,
    promptCacheTtl: settings.promptCacheTtl,
    callTimeoutMs: settings.callTimeoutMs,
    toolTimeoutMs: settings.toolTimeoutMs,
    deadline: run.deadline,
    admitted: { value: run.resumed === true || ckpt.rounds.length > 0 || ckpt.plan !== undefined },
    maxFirstWaitMs: settings.maxFirstWaitMs,
    gate: settings.gate,
  };
  const progress = run.progress ?? { text: '' };
  const input = (extra: { plan?: string; planPartial?: boolean; hostAnswer?: string } = {}) => ({
    round: ckpt.round,
    question: run.question,
    history: run.history,
    previous: ckpt.rounds,
    ...extra,
  });
  const step = async (
    agent: AgentRole,
    opts: { plan?: string; planPartial?: boolean; hostAnswer?: string; emit?: Emit; signal?: AbortSignal; tools?: ToolDefinition[]; track?: boolean; onText?: (t: string) => void },
  ) => {
    const started = Date.now();
    const name = `${agent}.r${ckpt.round}`;
    run.mark?.(`${name}.start`);
    const out = await runAgent(env, {
      agent,
      round: ckpt.round,
      messages: agentMessages(prompts, agent, input(opts), settings.promptCacheTtl),
      emit: opts.emit ?? run.emit,
      signal: opts.signal ?? run.signal,
      tools: opts.tools,
      onText: (t) => {
        run.mark?.(`${name}.first_token`);
        if (opts.track !== false) {
          progress.agent = agent;
          progress.text = t;
        }
        opts.onText?.(t);
      },
    });
    update({ usage: plusUsage(ckpt.usage, out.usage) });
    run.mark?.(`${name}.done`);
    deps.onStepDone?.(agent, Date.now() - started);
    return out.content;
  };
  // Fetched once per run, in parallel with the first agents, so the Host never waits for it.
  let toolList: Promise<ToolDefinition[]> | undefined;
  const listTools = (): Promise<ToolDefinition[]> =>
    (toolList ??= deps.tools.listTools({ signal: run.signal }).catch((err: unknown) => {
      if (run.signal.aborted) throw err;
      return []; // the Host answers without tools rather than failing the run
    }));
  if (ckpt.host === undefined) listTools().catch(() => undefined);
  const hostStep = async (plan: string, o: { partial?: boolean; emit?: Emit; signal?: AbortSignal } = {}) =>
    step('host', { plan, planPartial: o.partial, emit: o.emit, signal: o.signal, tools: await listTools(), track: o.emit === undefined });

  if (run.resumed && ckpt.reporter === undefined) {
    await run.emit('agent.restarted', { agent: interruptedAgent(ckpt), round: ckpt.round, reason: 'takeover' });
  }

  let speculativeHost: Speculation<string> | undefined;
  while (ckpt.critique === undefined) {
    let critique: string;
    if (ckpt.plan === undefined) {
      const pair = await planAndCritique();
      critique = pair.critique;
      speculativeHost = pair.host;
    } else {
      critique = await step('critic', { plan: ckpt.plan });
    }
    await run.storeOutput('critic', ckpt.round, critique);
    const parsed = parseVerdict(critique);
    if (!parsed.explicit) deps.onMissingVerdict?.(ckpt.round);
    const verdict: Verdict = parsed.verdict;
    await run.emit('round.completed', { round: ckpt.round, verdict });
    const rounds = [...ckpt.rounds, { round: ckpt.round, plan: ckpt.plan ?? '', critique, verdict }];
    if (verdict === 'revise' && ckpt.round < settings.maxRounds) {
      if (speculativeHost) deps.onSpeculation?.(speculativeHost.yielded ? 'yielded' : 'discarded');
      speculativeHost?.discard();
      speculativeHost = undefined;
      update({ rounds, round: ckpt.round + 1, plan: undefined });
    } else {
      update({ rounds, critique });
    }
    await run.saveCheckpoint(ckpt);
  }

  const plan = ckpt.plan ?? '';
  if (ckpt.host === undefined) {
    if (speculativeHost) deps.onSpeculation?.(speculativeHost.yielded ? 'yielded' : 'used');
    const host = speculativeHost && !speculativeHost.yielded ? await speculativeHost.release() : await hostStep(plan);
    await run.storeOutput('host', ckpt.round, host);
    await run.saveCheckpoint(update({ host }));
  }
  if (ckpt.reporter === undefined) {
    const answer = await step('reporter', { plan, hostAnswer: ckpt.host });
    await run.storeOutput('reporter', ckpt.round, answer);
    await run.saveCheckpoint(update({ reporter: answer }));
  }
  return { answer: ckpt.reporter ?? '', rounds: ckpt.round, usage: ckpt.usage, checkpoint: ckpt };

  /** Planner, then Critic: overlapped (Critic on the partial plan, Host speculatively) or sequential. */
  async function planAndCritique(): Promise<{ critique: string; host?: Speculation<string> }> {
    if (!settings.overlap) {
      const plan = await step('planner', {});
      await completePlan(plan);
      return { critique: await step('critic', { plan }) };
    }
    // Planner and Critic share a controller: when one fails, the other is stopped too.
    const pair = new AbortController();
    const onRunAbort = () => pair.abort(run.signal.reason);
    run.signal.addEventListener('abort', onRunAbort, { once: true });
    let critic: Promise<string> | undefined;
    const startCritic = (plan: string, partial: boolean) => {
      critic ??= step('critic', { plan, planPartial: partial, signal: pair.signal, track: false });
      critic.catch((err: unknown) => pair.abort(err)); // the planner then fails with the critic's error
    };
    // The Host needs an approval: started before it, with its events held back, it runs behind
    // the Planner's last steps and the Critic. A REVISE discards it (the cancel reaches the
    // upstream call). Started on the plan's first steps (hostStartSteps) or on the complete plan.
    let host: Speculation<string> | undefined;
    const startHost = (plan: string, partial: boolean) => {
      if (host) return;
      const spec = (host = new Speculation<string>(run.emit, run.signal));
      spec.promise = hostStep(plan, { partial, emit: spec.bufferedEmit, signal: spec.abort.signal });
      spec.promise.catch(() => undefined);
    };
    const hostSteps = settings.hostStartSteps ?? 0;
    try {
      const planner = step('planner', {
        signal: pair.signal,
        onText: (t) => {
          if (!critic && planReadyForCritic(t)) startCritic(t, true);
          if (!host && hostSteps > 0 && completeSteps(t) >= hostSteps) startHost(t, true);
        },
      });
      const plan = await planner;
      await completePlan(plan);
      if (!critic) startCritic(plan, false);
      startHost(plan, false);
      const critique = await critic!;
      return { critique, host };
    } catch (err) {
      pair.abort(err);
      host?.discard();
      await critic?.catch(() => undefined);
      throw err;
    } finally {
      run.signal.removeEventListener('abort', onRunAbort);
    }
  }

  async function completePlan(plan: string): Promise<void> {
    await run.storeOutput('planner', ckpt.round, plan);
    await run.saveCheckpoint(update({ plan }));
  }
}
