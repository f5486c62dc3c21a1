// One run's execution on the replica that owns it: the pipeline under the run's abort signal, the
// run's store writes (RunWriter), its checkpoints, and its end — how it ended is classified by
// ending.ts's table, and this module carries the outcome out: what is stored, the one terminal
// event, the metrics. Starting, cancelling, leases and takeover are the RunManager's.
import { ATTR, status, withSpan, type Logger } from '@agent-mesh/common';
import type { OrchestratorConfig } from '../config';
import type { Message, Run, StoreGateway } from '../gateways/store';
import type { OrchestratorMetrics } from '../metrics';
import { RunStopped, StepFailure, stopReasonOf } from '../pipeline/errors';
import { historyWithinBudget } from '../pipeline/history';
import { runPipeline, type PipelineDeps } from '../pipeline/pipeline';
import type { RolePrompts } from '../pipeline/prompts';
import type { AgentRole, Checkpoint, HistoryTurn, LlmGateway, ToolGateway, Usage } from '../pipeline/types';
import type { RunEmitter } from '../runlog/runlog';
import type { GateObserver } from './admission';
import { classifyEnding, OUTCOMES, type RunOutcome } from './ending';
import { outputMessageId } from './ids';
import type { RunProfile } from './profile';
import type { RunMeta, RunRegistry } from './registry';
import { RunWriter } from './writer';

/** Recent messages read for the agents' history (then cut to HISTORY_TOKEN_BUDGET). */
export const HISTORY_MESSAGES = 50;

export interface ExecutionDeps {
  config: OrchestratorConfig;
  logger: Logger;
  metrics: OrchestratorMetrics;
  registry: Pick<RunRegistry, 'cancelRequested' | 'saveCheckpoint'>;
  store: Pick<StoreGateway, 'appendMessages' | 'saveRun' | 'listMessages'>;
  llm: LlmGateway;
  tools: ToolGateway;
  prompts: RolePrompts;
  /** The agents' pipeline. @default runPipeline */
  pipeline?: typeof runPipeline;
}

export interface Execution {
  meta: RunMeta;
  /** Where the run starts: a fresh checkpoint, or the one a takeover resumes from. */
  checkpoint: Checkpoint;
  /** Writes the run's events; its terminal event ends the run's ownership (see RunManager.emitterFor). */
  emitter: RunEmitter;
  /** True when resuming another replica's run. */
  resumed: boolean;
  /** The conversation's history, when StartRun already read it. */
  history?: HistoryTurn[];
  profile: RunProfile;
  /** A new run's admission: its first call reports the queue it found. */
  gate?: GateObserver;
  /** The run's abort: a cancel, a lost lease or the replica's shutdown (its reason, a RunStopped). */
  signal: AbortSignal;
}

/** Runs the run to its end; resolves with how it ended (handed_over: another replica continues it). */
export async function executeRun(d: ExecutionDeps, x: Execution): Promise<RunOutcome> {
  const { config, logger, metrics, store } = d;
  const { meta, emitter, resumed, profile, signal } = x;
  const attrs = { [ATTR.runId]: meta.runId, [ATTR.conversationId]: meta.conversationId, [ATTR.userId]: meta.userId };
  const started = Date.now();
  // The run's deadline bounds every call it makes for its agents (not the writes of what it produced).
  const deadline = meta.createdAtMs + config.runTimeoutMs;
  // The run's newest state: the pipeline hands each one over (it never changes the one it was given).
  let state = x.checkpoint;
  const progress: { agent?: AgentRole; text: string } = { text: '' };
  const writes = { messages: 0, run: 0 };
  const cost = (u: Usage) => runCost(config, u);
  // Store writes leave the critical path (see RunWriter); they are not tied to the run's abort
  // signal, so a cancel or a handover never cuts a write of an output already produced.
  const writer = new RunWriter(
    {
      appendMessages: (messages) => retry(() => store.appendMessages(meta.userId, meta.conversationId, messages)),
      saveRun: (r) => retry(() => store.saveRun(meta.userId, r)),
    },
    (op, ms, ok) => {
      metrics.storeWrite.observe({ op, outcome: ok ? 'ok' : 'failed' }, ms / 1000);
      profile.record(`store.${op}.${++writes[op]}`, Date.now() - ms, ms);
      if (!ok) logger.warn({ runId: meta.runId, op }, 'store write failed');
    },
  );
  return withSpan(resumed ? 'orchestrator.run.resume' : 'orchestrator.run', attrs, async (span) => {
    let outcome: RunOutcome = 'handed_over';
    const end = (o: RunOutcome, usage: Usage = state.usage) => {
      outcome = o;
      metrics.runsEnded.inc({ outcome: o });
      metrics.runDuration.observe({ outcome: o }, (Date.now() - started) / 1000);
      metrics.runCost.inc({ outcome: o }, cost(usage));
      span.setAttribute('mesh.run_outcome', o);
    };
    const run = (status: Run['status'], extra: Partial<Run> = {}): Run => ({
      id: meta.runId, conversationId: meta.conversationId, userId: meta.userId, messageId: meta.messageId, status,
      checkpointJson: JSON.stringify(state), usage: state.usage, costUsd: cost(state.usage), createdAtMs: meta.createdAtMs,
      updatedAtMs: Date.now(), completedAtMs: status === 'running' ? 0 : Date.now(), error: '', ...extra,
    });
    const message = (agent: AgentRole, round: number, content: string, status: Message['status']): Message => ({
      id: outputMessageId(meta.runId, agent, round), conversationId: meta.conversationId, runId: meta.runId, role: 'agent',
      agent, round, content, status, createdAtMs: Date.now(),
    });
    const userMessage: Message = {
      id: meta.messageId, conversationId: meta.conversationId, runId: meta.runId, role: 'user', round: 0,
      content: meta.content, status: 'complete', createdAtMs: meta.createdAtMs,
    };
    /** Waits for the queued writes before a terminal event; a failure there is logged, not thrown. */
    const settle = async (what: string) => {
      try {
        await profile.time('store.flush', () => writer.flush());
      } catch (err) {
        logger.warn({ runId: meta.runId, what, err: (err as Error).message }, 'store write failed at run end');
      }
    };
    try {
      if (await d.registry.cancelRequested(meta.runId)) throw new RunStopped('cancelled');
      let history = x.history ?? [];
      if (!resumed) {
        writer.message(userMessage);
        writer.run(run('running'));
      } else {
        // The previous owner's writes were asynchronous: send again everything the checkpoint
        // says was produced (ids are deterministic, so what is stored already is not duplicated).
        writer.message(userMessage, ...checkpointOutputs(state).map((o) => message(o.agent, o.round, o.content, 'complete')));
        try {
          const msgs = await profile.time('store.history', () =>
            store.listMessages(meta.userId, meta.conversationId, HISTORY_MESSAGES, { signal, deadline }));
          history = historyWithinBudget(msgs, meta.runId, config.historyTokenBudget);
        } catch (err) {
          if (signal.aborted) throw err;
          logger.warn({ runId: meta.runId, err: (err as Error).message }, 'history unavailable: agents answer without it');
        }
      }
      const deps: PipelineDeps = {
        llm: d.llm, tools: d.tools, prompts: d.prompts,
        settings: {
          maxRounds: config.maxRounds, overlap: config.agentOverlap, hostStartSteps: config.agentHostStartSteps, maxTokens: config.agentMaxTokens,
          calls: config.agentCalls, promptCacheTtl: config.agentPromptCacheTtl,
          callTimeoutMs: config.agentCallTimeoutMs, toolTimeoutMs: config.toolCallTimeoutMs, maxFirstWaitMs: config.runMaxQueueWaitMs,
          gate: x.gate,
        },
        onMissingVerdict: (round) => {
          metrics.missingVerdicts.inc();
          logger.warn({ runId: meta.runId, round }, 'critic gave no VERDICT line: assuming APPROVE');
        },
        onStepDone: (agent, ms) => metrics.agentStep.observe({ agent }, ms / 1000),
        onSpeculation: (o) => metrics.hostSpeculations.inc({ outcome: o }),
      };
      let checkpoints = 0;
      const result = await (d.pipeline ?? runPipeline)(deps, {
        runId: meta.runId, userId: meta.userId, question: meta.content, history, checkpoint: state, resumed,
        emit: emitter.emit, signal, deadline, progress, mark: (name) => profile.mark(name),
        onState: (c) => (state = c),
        // The checkpoint a takeover resumes from lives in Redis, next to the run's lease, meta and
        // log (a takeover needs all of them, so a store copy per step would never be read):
        // written before the next agent starts. The store gets the run at its start and end.
        saveCheckpoint: async (c) => {
          await profile.time(`checkpoint.${++checkpoints}`, () => d.registry.saveCheckpoint(meta.runId, c));
        },
        // Outputs are stored in one batch with the run's end (a resumed run re-sends them).
        storeOutput: async (agent, round, content) => writer.defer(message(agent, round, content, 'complete')),
      });
      state = result.checkpoint;
      writer.run(run(OUTCOMES.completed.runStatus!));
      // The answer must be stored before the client hears the run is over.
      try {
        await profile.time('store.flush', () => writer.flush());
      } catch {
        throw new StepFailure('store_unavailable', 'the answer could not be stored', true);
      }
      await emitter.emit('run.completed', { runId: meta.runId, answer: result.answer, rounds: result.rounds, usage: result.usage, cost: { usd: cost(result.usage) } });
      end('completed', result.usage);
    } catch (err) {
      const stop = signal.aborted ? stopReasonOf(signal) : err instanceof RunStopped ? err.reason : undefined;
      const ending = classifyEnding({ err, stop, progress, checkpoint: state });
      const { runStatus, outputStatus } = OUTCOMES[ending.outcome];
      switch (ending.outcome) {
        case 'handed_over':
          // Another replica continues the run: its state, not this replica's, is the newest.
          writer.dropPendingRun();
          await settle('handover');
          logger.info({ runId: meta.runId, reason: ending.reason }, 'run handed over');
          return outcome;
        case 'cancelled':
          writer.message(message(ending.agent, ending.round, ending.partial, outputStatus!));
          writer.run(run(runStatus!));
          await settle(runStatus!);
          await emitter.emit('run.cancelled', { reason: 'user_cancelled', partial: ending.partial });
          break;
        case 'degraded':
          logger.warn({ runId: meta.runId, reason: ending.reason, detail: ending.message }, 'run degraded: broker refused');
          if (ending.shed) metrics.runsShed.inc({ at: 'queue' });
          writer.message(message('reporter', ending.round, ending.message, outputStatus!));
          writer.run(run(runStatus!, { error: ending.reason }));
          await settle(runStatus!);
          await emitter.emit('degraded', {
            reason: ending.reason, message: ending.message, retryable: true, ...(ending.retryAfterMs !== undefined ? { retryAfterMs: ending.retryAfterMs } : {}),
          });
          break;
        case 'failed':
          if (ending.unexpected) logger.error({ err, runId: meta.runId }, 'run failed');
          writer.run(run(runStatus!, { error: ending.failure.message }));
          await settle(runStatus!);
          await emitter.emit('run.failed', { code: ending.failure.code, message: ending.failure.message, retryable: ending.failure.retryable });
          break;
      }
      end(ending.outcome);
    } finally {
      logger.info({ runId: meta.runId, outcome, resumed, overlap: config.agentOverlap, timings: profile }, 'run timings');
    }
    return outcome;
  });
}

type Prices = Pick<OrchestratorConfig, 'pricePer1kPrompt' | 'pricePer1kCompletion' | 'pricePer1kCacheRead' | 'pricePer1kCacheWrite' | 'pricePer1kCacheWrite1h'>;

/** A run's cost in USD at the configured prices, the prompt tokens its provider's cache read or wrote (for 5 minutes, or an hour) at theirs (rounded to 1e-8). */
export function runCost(config: Prices, u: Usage): number {
  const reads = u.cacheReadTokens ?? 0;
  const writes = u.cacheWriteTokens ?? 0;
  const writes1h = Math.min(writes, u.cacheWrite1hTokens ?? 0);
  const plain = Math.max(0, u.promptTokens - reads - writes);
  const cached = reads * config.pricePer1kCacheRead + (writes - writes1h) * config.pricePer1kCacheWrite + writes1h * config.pricePer1kCacheWrite1h;
  const c = (plain * config.pricePer1kPrompt + cached + u.completionTokens * config.pricePer1kCompletion) / 1000;
  return Math.round(c * 1e8) / 1e8;
}

/** The outputs a checkpoint holds, as (agent, round, content). */
export function checkpointOutputs(c: Checkpoint): { agent: AgentRole; round: number; content: string }[] {
  const out: { agent: AgentRole; round: number; content: string }[] = [];
  for (const r of c.rounds) {
    if (r.plan) out.push({ agent: 'planner', round: r.round, content: r.plan });
    out.push({ agent: 'critic', round: r.round, content: r.critique });
  }
  const current = c.rounds.some((r) => r.round === c.round);
  if (c.plan !== undefined && !current) out.push({ agent: 'planner', round: c.round, content: c.plan });
  if (c.host !== undefined) out.push({ agent: 'host', round: c.round, content: c.host });
  if (c.reporter !== undefined) out.push({ agent: 'reporter', round: c.round, content: c.reporter });
  return out;
}

/** Retries an idempotent write a few times (store writes are upserts by client-made ids). */
async function retry<T>(fn: () => Promise<T>, attempts = 3): Promise<T> {
  for (let i = 0; ; i++) {
    try {
      return await fn();
    } catch (err) {
      const code = (err as { code?: unknown }).code;
      const transient = code === status.UNAVAILABLE || code === status.DEADLINE_EXCEEDED || code === undefined;
      if (!transient || i + 1 >= attempts || err instanceof RunStopped) throw err;
      // Jittered, so that runs hit by the same store hiccup do not retry in step.
      await new Promise((r) => setTimeout(r, 200 * 2 ** i * (0.5 + Math.random())));
    }
  }
}
