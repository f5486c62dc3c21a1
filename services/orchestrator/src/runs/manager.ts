// Runs as this replica sees them: starting one (in the background, detached from the caller),
// executing it under a renewed lease, taking over runs whose owner died, cancelling from any
// replica, and ending every run with exactly one terminal event.
import os from 'node:os';
import {
  ATTR, captureTraceContext, currentTraceId, MeshError, newId, notFound, status, TERMINAL_EVENTS, withSpan, withTraceContext,
  type CallScope, type Logger,
} from '@agent-mesh/common';
import type { OrchestratorConfig } from '../config';
import type { Message, Run, StoreGateway } from '../gateways/store';
import type { OrchestratorMetrics } from '../metrics';
import { RunStopped, StepFailure, stopReasonOf } from '../pipeline/errors';
import { historyWithinBudget } from '../pipeline/history';
import { runPipeline, type PipelineDeps } from '../pipeline/pipeline';
import type { RolePrompts } from '../pipeline/prompts';
import { initialCheckpoint, type AgentRole, type Checkpoint, type HistoryTurn, type LlmGateway, type ToolGateway, type Usage } from '../pipeline/types';
import { RunEmitter, type RunLog } from '../runlog/runlog';
import { outputMessageId } from './ids';
import { RunProfile } from './profile';
import type { RunMeta, RunRegistry } from './registry';
import { RunWriter } from './writer';
import { AdmissionGate, busyMessage } from './admission';
import { classifyEnding, OUTCOMES } from './ending';

/** Longest user message accepted (characters). */
/** Recent messages read for the agents' history (then cut to HISTORY_TOKEN_BUDGET). */
export const HISTORY_MESSAGES = 50;

export interface RunManagerDeps {
  config: OrchestratorConfig;
  logger: Logger;
  metrics: OrchestratorMetrics;
  registry: RunRegistry;
  log: RunLog;
  store: StoreGateway;
  llm: LlmGateway;
  tools: ToolGateway;
  prompts: RolePrompts;
}

interface OwnedRun {
  meta: RunMeta;
  abort: AbortController;
  done: Promise<void>;
}

export interface StartRequest {
  userId: string;
  conversationId: string;
  messageId: string;
  content: string;
}

export class RunManager {
  /** This replica's identity as a lease owner. */
  readonly owner = `${os.hostname()}:${process.pid}:${newId().slice(0, 8)}`;
  private readonly owned = new Map<string, OwnedRun>();
  private timers: NodeJS.Timeout[] = [];
  private stopping = false;
  private renewing = false;
  private readonly gate: AdmissionGate;
  /** StartRuns in progress here (reading the history, registering the run). */
  private starting = 0;

  constructor(private readonly d: RunManagerDeps) {
    this.gate = new AdmissionGate(d.config.runMaxQueueWaitMs, d.config.runAdmissionFreshMs);
  }

  get activeRunIds(): string[] {
    return [...this.owned.keys()];
  }

  /** Renews this replica's leases and takes over orphaned runs, until stop(). */
  startBackground(): void {
    const lease = this.d.config.runLeaseMs;
    this.timers.push(setInterval(() => void this.renewLeases(), Math.max(100, Math.floor(lease / 3))));
    // Jitter spreads the replicas' scans so they do not race for the same runs in lockstep.
    this.timers.push(setInterval(() => void this.scanForOrphans(), Math.max(100, Math.floor(lease / 2 + Math.random() * 200))));
  }

  /**
   * Starts a run for the user's message and returns its id. One active run per conversation: a
   * second message while a run is active is refused (FAILED_PRECONDITION, reason run_in_progress;
   * the edge answers 409) rather than queued, so the user decides — wait, or cancel and resend.
   * Idempotent on message_id: a retried StartRun gets the run its first attempt started.
   * `caller`: the StartRun call's scope; the history read before the run starts ends with it.
   */
  async start(req: StartRequest, caller: CallScope = {}): Promise<string> {
    // Admission control first: a refused run costs no store read and no Redis write.
    const retryMs = this.gate.check();
    if (retryMs !== undefined) {
      this.d.metrics.runsShed.inc({ at: 'start' });
      throw new MeshError('busy', busyMessage(retryMs), retryMs);
    }
    // A bulkhead for the start path: when the store is slow, starts pile up here; beyond
    // RUN_MAX_STARTING the next ones are told to come back instead of adding to the pile.
    if (this.starting >= this.d.config.runMaxStarting) {
      this.d.metrics.runsShed.inc({ at: 'starting' });
      throw new MeshError('busy', busyMessage(1_000), 1_000);
    }
    this.starting++;
    try {
      return await this.startAdmitted(req, caller);
    } finally {
      this.starting--;
    }
  }

  private async startAdmitted(req: StartRequest, caller: CallScope): Promise<string> {
    const profile = new RunProfile();
    // One store call both proves the conversation is the user's (NOT_FOUND otherwise) and reads
    // the history the agents need: the run then starts its Planner without another round trip.
    const recent = await profile.time('store.history', () =>
      this.d.store.listMessages(req.userId, req.conversationId, HISTORY_MESSAGES, caller));
    const meta: RunMeta = { ...req, runId: newId(), createdAtMs: Date.now(), trace: captureTraceContext() };
    const outcome = await this.d.registry.create(meta, this.owner);
    if (outcome.kind === 'existing') {
      const existing = await this.d.registry.meta(outcome.runId);
      if (!existing || existing.userId !== req.userId || existing.conversationId !== req.conversationId) throw notFound('run');
      return outcome.runId;
    }
    if (outcome.kind === 'busy') {
      throw new MeshError('run_in_progress',
        'a run is already in progress on this conversation: wait for it to finish or cancel it');
    }
    this.d.metrics.runsStarted.inc();
    const emitter = this.emitterFor(meta, 1);
    const traceId = currentTraceId();
    await emitter.emit('run.started', { runId: meta.runId, conversationId: meta.conversationId, messageId: meta.messageId, ...(traceId ? { traceId } : {}) });
    const history = historyWithinBudget(recent, meta.runId, this.d.config.historyTokenBudget);
    this.launch(meta, initialCheckpoint(), emitter, { resumed: false, history, profile });
    return meta.runId;
  }

  /** The run a watcher may see: the given one, or the conversation's current/last run. */
  async resolveWatch(userId: string, conversationId: string, runId: string, afterSeq: number): Promise<string> {
    const id = runId || (await this.d.registry.currentRun(conversationId));
    const meta = id ? await this.d.registry.meta(id) : undefined;
    if (!meta || meta.userId !== userId || meta.conversationId !== conversationId) throw notFound('run');
    return meta.runId;
  }

  /** Cancels the conversation's active run wherever it executes. */
  async cancel(userId: string, conversationId: string, caller: CallScope = {}): Promise<{ runId: string; cancelled: boolean }> {
    const active = await this.d.registry.activeRun(conversationId);
    if (!active) {
      await this.d.store.assertConversation(userId, conversationId, caller);
      return { runId: (await this.d.registry.currentRun(conversationId)) ?? '', cancelled: false };
    }
    const meta = await this.d.registry.meta(active);
    if (!meta || meta.userId !== userId) throw notFound('conversation');
    await this.d.registry.requestCancel(active, 'user_cancelled');
    this.onCancelNotice(active);
    return { runId: active, cancelled: true };
  }

  /** A cancel published by any replica: abort the run if this replica executes it. */
  onCancelNotice(runId: string): void {
    this.owned.get(runId)?.abort.abort(new RunStopped('cancelled'));
  }

  /** Stops executing (runs are handed over to other replicas, not ended). */
  async stop(): Promise<void> {
    this.stopping = true;
    this.timers.forEach(clearInterval);
    const runs = [...this.owned.values()];
    for (const r of runs) r.abort.abort(new RunStopped('shutdown'));
    await Promise.all(runs.map((r) => r.done.catch(() => undefined)));
    for (const r of runs) await this.d.registry.release(r.meta.runId, this.owner).catch(() => undefined);
  }

  private emitterFor(meta: RunMeta, nextSeq: number): RunEmitter {
    return new RunEmitter(this.d.log, meta, this.owner, nextSeq);
  }

  /**
   * Renews every owned run's lease at once: the calls go out together (one round trip to Redis for
   * all, not one per run: with hundreds of runs, one after the other outlasted the lease). A round
   * still running when the next is due is not doubled.
   */
  private async renewLeases(): Promise<void> {
    if (this.renewing) return;
    this.renewing = true;
    try {
      await Promise.all([...this.owned].map(async ([runId, run]) => {
        try {
          if (!(await this.d.registry.renew(runId, this.owner))) {
            this.d.logger.warn({ runId }, 'lease lost: another replica owns the run now');
            run.abort.abort(new RunStopped('lease_lost'));
          }
        } catch (err) {
          this.d.logger.warn({ runId, err: (err as Error).message }, 'lease renewal failed');
        }
      }));
    } finally {
      this.renewing = false;
    }
  }

  private async scanForOrphans(): Promise<void> {
    if (this.stopping) return;
    try {
      const claimed = await this.d.registry.claimExpired(this.owner, 5);
      // A run this replica still executes (its lease lapsed while it was busy) goes on as it is.
      for (const runId of claimed) if (!this.owned.has(runId)) await this.takeOver(runId);
    } catch (err) {
      this.d.logger.warn({ err: (err as Error).message }, 'takeover scan failed');
    }
  }

  /** Resumes a run whose owner died, from its last checkpoint. */
  async takeOver(runId: string): Promise<void> {
    const meta = await this.d.registry.meta(runId);
    if (!meta) {
      await this.d.registry.forget(runId);
      return;
    }
    const lastSeq = await this.d.log.lastSeq(runId);
    const [last] = lastSeq > 0 ? await this.d.log.read(runId, lastSeq - 1, 1) : [];
    if (last && TERMINAL_EVENTS.has(last.type)) {
      await this.d.registry.forget(runId, meta.conversationId); // it ended; only the clean-up was lost
      return;
    }
    let ckpt = await this.d.registry.checkpoint(runId);
    if (!ckpt) {
      const stored = await this.d.store.runCheckpoint(meta.userId, runId).catch(() => '');
      ckpt = stored ? (JSON.parse(stored) as Checkpoint) : initialCheckpoint();
    }
    this.d.metrics.takeovers.inc();
    this.d.logger.info({ runId, round: ckpt.round, lastSeq }, 'taking over run');
    this.launch(meta, ckpt, this.emitterFor(meta, lastSeq + 1), { resumed: true, profile: new RunProfile() });
  }

  private launch(meta: RunMeta, ckpt: Checkpoint, emitter: RunEmitter, how: LaunchOptions): void {
    const abort = new AbortController();
    const owned: OwnedRun = { meta, abort, done: Promise.resolve() };
    this.owned.set(meta.runId, owned);
    this.d.metrics.activeRuns.inc();
    // Not tied to the StartRun call: a client that disconnects does not cancel the run. It runs
    // in the StartRun call's trace (saved in the run's meta, so a takeover continues it too).
    owned.done = withTraceContext(meta.trace, () => this.execute(meta, ckpt, emitter, how, abort))
      .catch((err: unknown) => this.d.logger.error({ err, runId: meta.runId }, 'run crashed'))
      .finally(() => {
        this.owned.delete(meta.runId);
        this.d.metrics.activeRuns.dec();
      });
  }

  private async execute(meta: RunMeta, ckpt: Checkpoint, emitter: RunEmitter, how: LaunchOptions, abort: AbortController): Promise<void> {
    const { config, logger, metrics, store } = this.d;
    const { resumed, profile } = how;
    const attrs = { [ATTR.runId]: meta.runId, [ATTR.conversationId]: meta.conversationId, [ATTR.userId]: meta.userId };
    const started = Date.now();
    // The run's deadline bounds every call it makes for its agents (not the writes of what it produced).
    const deadline = meta.createdAtMs + config.runTimeoutMs;
    const progress: { agent?: AgentRole; text: string } = { text: '' };
    const writes = { messages: 0, run: 0 };
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
    await withSpan(resumed ? 'orchestrator.run.resume' : 'orchestrator.run', attrs, async (span) => {
      let outcome = 'handed_over';
      const end = (o: string, usage: Usage = ckpt.usage) => {
        outcome = o;
        metrics.runsEnded.inc({ outcome: o });
        metrics.runDuration.observe({ outcome: o }, (Date.now() - started) / 1000);
        metrics.runCost.inc({ outcome: o }, this.cost(usage));
        span.setAttribute('mesh.run_outcome', o);
      };
      const run = (status: Run['status'], extra: Partial<Run> = {}): Run => ({
        id: meta.runId, conversationId: meta.conversationId, userId: meta.userId, messageId: meta.messageId, status,
        checkpointJson: JSON.stringify(ckpt), usage: ckpt.usage, costUsd: this.cost(ckpt.usage), createdAtMs: meta.createdAtMs,
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
        if (await this.d.registry.cancelRequested(meta.runId)) throw new RunStopped('cancelled');
        let history = how.history ?? [];
        if (!resumed) {
          writer.message(userMessage);
          writer.run(run('running'));
        } else {
          // The previous owner's writes were asynchronous: send again everything the checkpoint
          // says was produced (ids are deterministic, so what is stored already is not duplicated).
          writer.message(userMessage, ...checkpointOutputs(ckpt).map((o) => message(o.agent, o.round, o.content, 'complete')));
          try {
            const msgs = await profile.time('store.history', () =>
              store.listMessages(meta.userId, meta.conversationId, HISTORY_MESSAGES, { signal: abort.signal, deadline }));
            history = historyWithinBudget(msgs, meta.runId, config.historyTokenBudget);
          } catch (err) {
            if (abort.signal.aborted) throw err;
            logger.warn({ runId: meta.runId, err: (err as Error).message }, 'history unavailable: agents answer without it');
          }
        }
        const deps: PipelineDeps = {
          llm: this.d.llm, tools: this.d.tools, prompts: this.d.prompts,
          settings: {
            maxRounds: config.maxRounds, overlap: config.agentOverlap, hostStartSteps: config.agentHostStartSteps, maxTokens: config.agentMaxTokens,
            calls: config.agentCalls,
            callTimeoutMs: config.agentCallTimeoutMs, toolTimeoutMs: config.toolCallTimeoutMs, maxFirstWaitMs: config.runMaxQueueWaitMs,
            gate: this.gate,
          },
          onMissingVerdict: (round) => {
            metrics.missingVerdicts.inc();
            logger.warn({ runId: meta.runId, round }, 'critic gave no VERDICT line: assuming APPROVE');
          },
          onStepDone: (agent, ms) => metrics.agentStep.observe({ agent }, ms / 1000),
          onSpeculation: (outcome) => metrics.hostSpeculations.inc({ outcome }),
        };
        let checkpoints = 0;
        const result = await runPipeline(deps, {
          runId: meta.runId, userId: meta.userId, question: meta.content, history, checkpoint: ckpt, resumed,
          emit: emitter.emit, signal: abort.signal, deadline, progress, mark: (name) => profile.mark(name),
          // The checkpoint a takeover resumes from lives in Redis, next to the run's lease, meta and
          // log (a takeover needs all of them, so a store copy per step would never be read):
          // written before the next agent starts. The store gets the run at its start and end.
          saveCheckpoint: async (c) => {
            await profile.time(`checkpoint.${++checkpoints}`, () => this.d.registry.saveCheckpoint(meta.runId, c));
          },
          // Outputs are stored in one batch with the run's end (a resumed run re-sends them).
          storeOutput: async (agent, round, content) => writer.defer(message(agent, round, content, 'complete')),
        });
        const cost = { usd: this.cost(result.usage) };
        writer.run(run(OUTCOMES.completed.runStatus!));
        // The answer must be stored before the client hears the run is over.
        try {
          await profile.time('store.flush', () => writer.flush());
        } catch {
          throw new StepFailure('store_unavailable', 'the answer could not be stored', true);
        }
        await emitter.emit('run.completed', { runId: meta.runId, answer: result.answer, rounds: result.rounds, usage: result.usage, cost });
        end('completed', result.usage);
      } catch (err) {
        const stop = abort.signal.aborted ? stopReasonOf(abort.signal) : err instanceof RunStopped ? err.reason : undefined;
        const ending = classifyEnding({ err, stop, progress, checkpoint: ckpt });
        const status = OUTCOMES[ending.outcome].runStatus!;
        switch (ending.outcome) {
          case 'handed_over':
            // Another replica continues the run: its state, not this replica's, is the newest.
            writer.dropPendingRun();
            await settle('handover');
            logger.info({ runId: meta.runId, reason: ending.reason }, 'run handed over');
            return;
          case 'cancelled':
            writer.message(message(ending.agent, ending.round, ending.partial, OUTCOMES.cancelled.outputStatus!));
            writer.run(run(status));
            await settle(status);
            await emitter.emit('run.cancelled', { reason: 'user_cancelled', partial: ending.partial });
            break;
          case 'degraded':
            logger.warn({ runId: meta.runId, reason: ending.reason }, 'run degraded: broker refused');
            if (ending.shed) metrics.runsShed.inc({ at: 'queue' });
            writer.message(message('reporter', ending.round, ending.message, OUTCOMES.degraded.outputStatus!));
            writer.run(run(status, { error: ending.reason }));
            await settle(status);
            await emitter.emit('degraded', {
              reason: ending.reason, message: ending.message, retryable: true, ...(ending.retryAfterMs !== undefined ? { retryAfterMs: ending.retryAfterMs } : {}),
            });
            break;
          case 'failed':
            if (ending.unexpected) logger.error({ err, runId: meta.runId }, 'run failed');
            writer.run(run(status, { error: ending.failure.message }));
            await settle(status);
            await emitter.emit('run.failed', { code: ending.failure.code, message: ending.failure.message, retryable: ending.failure.retryable });
            break;
        }
        end(ending.outcome);
      } finally {
        logger.info({ runId: meta.runId, outcome, resumed, overlap: config.agentOverlap, timings: profile }, 'run timings');
      }
    });
  }

  private cost(u: Usage): number {
    const c = (u.promptTokens / 1000) * this.d.config.pricePer1kPrompt + (u.completionTokens / 1000) * this.d.config.pricePer1kCompletion;
    return Math.round(c * 1e8) / 1e8;
  }
}

interface LaunchOptions {
  resumed: boolean;
  /** The conversation's history, when StartRun already read it. */
  history?: HistoryTurn[];
  profile: RunProfile;
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
