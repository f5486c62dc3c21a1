// Runs as this replica sees them: starting one (admission, one active run per conversation, in
// the background, detached from the caller), cancelling from any replica, watching, the leases of
// the runs it executes, taking over runs whose owner died, and handing its runs over at shutdown.
// One run's execution, up to its one terminal event, is execution.ts's.
import os from 'node:os';
import {
  captureTraceContext, currentTraceId, MeshError, newId, notFound, TERMINAL_EVENTS, withTraceContext,
  type CallScope, type Logger,
} from '@agent-mesh/common';
import type { OrchestratorConfig } from '../config';
import type { StoreGateway } from '../gateways/store';
import type { OrchestratorMetrics } from '../metrics';
import { RunStopped } from '../pipeline/errors';
import { historyWithinBudget } from '../pipeline/history';
import type { runPipeline } from '../pipeline/pipeline';
import type { RolePrompts } from '../pipeline/prompts';
import { initialCheckpoint, type Checkpoint, type HistoryTurn, type LlmGateway, type ToolGateway } from '../pipeline/types';
import { RunEmitter, type RunLog } from '../runlog/runlog';
import { busyMessage, type AdmissionGate, type GateObserver } from './admission';
import { executeRun, HISTORY_MESSAGES } from './execution';
import { RunProfile } from './profile';
import type { RunMeta, RunRegistry } from './registry';

export interface RunManagerDeps {
  config: OrchestratorConfig;
  logger: Logger;
  metrics: OrchestratorMetrics;
  registry: Pick<RunRegistry,
    'create' | 'meta' | 'currentRun' | 'activeRun' | 'renew' | 'claimExpired' | 'release' | 'endInto' | 'forget' | 'checkpoint' | 'saveCheckpoint' | 'requestCancel' | 'cancelRequested'>;
  log: Pick<RunLog, 'append' | 'lastSeq' | 'read'>;
  store: Pick<StoreGateway, 'listMessages' | 'assertConversation' | 'runCheckpoint' | 'appendMessages' | 'saveRun'>;
  llm: LlmGateway;
  tools: ToolGateway;
  prompts: RolePrompts;
  /** The agents' pipeline (tests replace it). @default runPipeline */
  pipeline?: typeof runPipeline;
  /** Admission control (RUN_MAX_QUEUE_WAIT_MS), shared by the orchestrators. @default every run admitted */
  gate?: AdmissionGate;
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
  /** StartRuns in progress here (reading the history, registering the run). */
  private starting = 0;

  constructor(private readonly d: RunManagerDeps) {}

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
    // Admission control first: a refused run costs no store read.
    const admission = (await this.d.gate?.check()) ?? { admitted: true };
    if (!admission.admitted) {
      this.d.metrics.runsShed.inc({ at: 'start' });
      throw new MeshError('busy', busyMessage(admission.retryAfterMs), admission.retryAfterMs);
    }
    // A bulkhead for the start path: when the store is slow, starts pile up here; beyond
    // RUN_MAX_STARTING the next ones are told to come back instead of adding to the pile.
    if (this.starting >= this.d.config.runMaxStarting) {
      this.d.metrics.runsShed.inc({ at: 'starting' });
      throw new MeshError('busy', busyMessage(1_000), 1_000);
    }
    this.starting++;
    try {
      return await this.startAdmitted(req, caller, admission.observer);
    } finally {
      this.starting--;
    }
  }

  private async startAdmitted(req: StartRequest, caller: CallScope, gate?: GateObserver): Promise<string> {
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
    this.launch(meta, initialCheckpoint(), emitter, { resumed: false, history, profile, gate });
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

  /**
   * The run's event writer. Its terminal event, written by the execution, ends this replica's
   * ownership in the same transaction: the run's lease and its conversation's active-run slot are
   * released (RunRegistry.endInto).
   */
  private emitterFor(meta: RunMeta, nextSeq: number): RunEmitter {
    return new RunEmitter(this.d.log, meta, this.owner, nextSeq, (tx, lastSeq) => this.d.registry.endInto(tx, meta, this.owner, lastSeq));
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
    const execution = { meta, checkpoint: ckpt, emitter, ...how, signal: abort.signal };
    owned.done = withTraceContext(meta.trace, () => executeRun(this.d, execution))
      .then(() => undefined)
      .catch((err: unknown) => this.d.logger.error({ err, runId: meta.runId }, 'run crashed'))
      .finally(() => {
        this.owned.delete(meta.runId);
        this.d.metrics.activeRuns.dec();
      });
  }
}

interface LaunchOptions {
  resumed: boolean;
  /** The conversation's history, when StartRun already read it. */
  history?: HistoryTurn[];
  profile: RunProfile;
  /** A new run's admission: its first call reports the queue it found. */
  gate?: GateObserver;
}
