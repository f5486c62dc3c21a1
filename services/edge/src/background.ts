// Background responses (the Responses API's `background: true`): the call runs on in the edge that
// took it after the caller was answered `queued`, and its end is written to the store, where the
// caller reads it (GET /v1/responses/{id}). A cancel (POST …/cancel) may reach any edge: it is
// written to the store first, then told to every edge (Redis pub/sub), and the edge running the
// call stops it. At shutdown the calls still running are given the drain's time, then stopped and
// written as failed (before the store's client closes), so that no response stays in progress for good. (One whose edge died
// without that is answered as failed once its call could no longer be running: see responses.ts.)
import type { Logger } from '@agent-mesh/common';

/** Why a background call was stopped. */
export type StopReason = 'cancelled' | 'shutdown';

/** How a cancel reaches the other edges; absent: this edge only (tests, one edge). */
export interface CancelBroadcast {
  publish(responseId: string): Promise<unknown>;
  /** Calls `onCancel` with each id any edge publishes (and goes on doing so across reconnects). */
  subscribe(onCancel: (responseId: string) => void): Promise<unknown>;
  close(): Promise<unknown>;
}

/** The Redis channel a cancel is published on. */
export const CANCEL_CHANNEL = 'mesh:responses:cancel';

export class BackgroundCalls {
  private readonly running = new Map<string, AbortController>();
  private readonly tasks = new Set<Promise<void>>();

  constructor(private readonly logger: Logger, private readonly broadcast?: CancelBroadcast) {}

  /** Listens for cancels from other edges (not awaited: an edge starts while Redis is down, and the subscription follows). */
  start(): void {
    this.broadcast?.subscribe((id) => this.stopHere(id, 'cancelled')).catch((err: unknown) => this.logger.warn({ err: (err as Error).message }, 'background responses: no subscription to cancels from other edges'));
  }

  /** Runs `task` on its own; `abort` stops it (a cancel, the shutdown), with the StopReason as the signal's reason. */
  run(responseId: string, abort: AbortController, task: () => Promise<void>): void {
    this.running.set(responseId, abort);
    const done = task()
      .catch((err: unknown) => this.logger.error({ err, responseId }, 'background response: its end could not be written'))
      .finally(() => {
        this.running.delete(responseId);
        this.tasks.delete(done);
      });
    this.tasks.add(done);
  }

  /** Stops the call on whichever edge runs it. */
  async cancel(responseId: string): Promise<void> {
    if (this.stopHere(responseId, 'cancelled') || !this.broadcast) return;
    await this.broadcast.publish(responseId);
  }

  get size(): number {
    return this.running.size;
  }

  /** Waits for the calls under way until they end or `phaseEnd` fires (the shutdown's drain phase). */
  async drain(phaseEnd: AbortSignal): Promise<void> {
    if (this.tasks.size === 0 || phaseEnd.aborted) return;
    let onEnd: (() => void) | undefined;
    await Promise.race([Promise.all([...this.tasks]), new Promise<void>((resolve) => phaseEnd.addEventListener('abort', (onEnd = () => resolve()), { once: true }))]);
    if (onEnd) phaseEnd.removeEventListener('abort', onEnd);
  }

  /** Stops the calls still running (after the drain: their ends are written as failed, while the store's client is open) and waits for those writes. */
  async stop(): Promise<void> {
    if (this.running.size > 0) this.logger.warn({ calls: this.running.size }, 'background responses still running at shutdown: stopped, written as failed');
    for (const id of [...this.running.keys()]) this.stopHere(id, 'shutdown');
    await Promise.all([...this.tasks]);
    await this.broadcast?.close();
  }

  private stopHere(responseId: string, reason: StopReason): boolean {
    const abort = this.running.get(responseId);
    if (!abort) return false;
    abort.abort(reason);
    return true;
  }
}
