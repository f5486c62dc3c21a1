// How a run ended, decided in one place: a pure classification of what stopped the pipeline (its
// error and the run's abort reason) and, per outcome, what is recorded and told. The run's
// execution (execution.ts) carries it out: the store writes, the terminal event, the metrics.
import type { MessageStatusName, RunEventType, RunStatusName } from '@agent-mesh/common';
import { DegradedError, StepFailure, type StopReason } from '../pipeline/errors';
import type { AgentRole, Checkpoint } from '../pipeline/types';
import { busyMessage } from './admission';

export const BUSY_MESSAGE = 'Service busy, please try again shortly.';

export type RunOutcome = 'completed' | 'cancelled' | 'degraded' | 'failed' | 'handed_over';

/**
 * Per outcome: the run's status in the store, the status of the output message its end stores
 * (the cancelled agent's partial text, the degraded answer; none: nothing is stored but the
 * outputs already made), the terminal event (exactly one per run; none when another replica
 * continues it), and whether it counts in the run metrics (a handed-over run ends on the replica
 * that takes it over).
 */
export const OUTCOMES: Record<RunOutcome, { runStatus?: RunStatusName; outputStatus?: MessageStatusName; event?: RunEventType; counted: boolean }> = {
  completed: { runStatus: 'completed', event: 'run.completed', counted: true },
  cancelled: { runStatus: 'cancelled', outputStatus: 'cancelled', event: 'run.cancelled', counted: true },
  degraded: { runStatus: 'degraded', outputStatus: 'degraded', event: 'degraded', counted: true },
  failed: { runStatus: 'failed', event: 'run.failed', counted: true },
  handed_over: { counted: false },
};

/** How a run that did not complete ended, with what its terminal event and records need. */
export type RunEnding =
  | { outcome: 'handed_over'; reason: 'lease_lost' | 'shutdown' }
  /** `partial`: the text the user had seen of the agent that was answering. */
  | { outcome: 'cancelled'; agent: AgentRole; round: number; partial: string }
  /** `message`: what the user reads; `shed`: admission control ended it (its first call would wait too long). */
  | { outcome: 'degraded'; reason: string; message: string; retryAfterMs?: number; round: number; shed: boolean }
  /** `unexpected`: not a failure the pipeline named (a bug): logged with its stack. */
  | { outcome: 'failed'; failure: StepFailure; unexpected: boolean };

export interface EndingInput {
  /** What the pipeline threw. */
  err: unknown;
  /** The run's abort reason, when it was stopped (the signal's, or a RunStopped thrown before it). */
  stop?: StopReason;
  /** The agent answering when it stopped, and what it had streamed. */
  progress: { agent?: AgentRole; text: string };
  checkpoint: Pick<Checkpoint, 'round' | 'plan' | 'host' | 'reporter'>;
}

export function classifyEnding({ err, stop, progress, checkpoint: c }: EndingInput): RunEnding {
  if (stop === 'lease_lost' || stop === 'shutdown') return { outcome: 'handed_over', reason: stop };
  if (stop === 'cancelled') {
    return { outcome: 'cancelled', agent: progress.agent ?? 'reporter', round: c.round, partial: progress.text || c.reporter || c.host || c.plan || '' };
  }
  if (err instanceof DegradedError) {
    return {
      outcome: 'degraded', reason: err.reason, round: c.round, shed: err.reason === 'queue_wait',
      message: err.retryAfterMs !== undefined ? busyMessage(err.retryAfterMs) : BUSY_MESSAGE,
      ...(err.retryAfterMs !== undefined ? { retryAfterMs: err.retryAfterMs } : {}),
    };
  }
  if (err instanceof StepFailure) return { outcome: 'failed', failure: err, unexpected: false };
  return { outcome: 'failed', failure: new StepFailure('internal', 'the run failed unexpectedly', true), unexpected: true };
}
