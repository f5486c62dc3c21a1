// Why a run stopped, as the pipeline sees it (the gateways translate peer errors into these).

/** The broker refused or could not serve: the run ends `degraded` ("service busy"), retryable. */
export class DegradedError extends Error {
  override name = 'DegradedError';
  constructor(readonly reason: string, message: string, readonly retryAfterMs?: number) {
    super(message);
  }
}

/** Any other failure of a step: the run ends `run.failed` with this code. */
export class StepFailure extends Error {
  override name = 'StepFailure';
  constructor(readonly code: string, message: string, readonly retryable: boolean) {
    super(message);
  }
}

/** Abort reasons a run's AbortSignal may carry. */
export type StopReason = 'cancelled' | 'lease_lost' | 'shutdown';

export class RunStopped extends Error {
  override name = 'RunStopped';
  constructor(readonly reason: StopReason) {
    super(`run stopped: ${reason}`);
  }
}

export function stopReasonOf(signal: AbortSignal): StopReason | undefined {
  if (!signal.aborted) return undefined;
  const r = signal.reason as unknown;
  return r instanceof RunStopped ? r.reason : 'cancelled';
}
