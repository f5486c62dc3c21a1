// A run's store writes, taken off the agents' critical path and kept few. The store (MongoDB;
// FerretDB on SQLite in development) answers a write in 100–300 ms under load, which used to be
// paid several times per run between agents, and each run cost ~15 queries. Now:
// - messages go out in order, one call at a time, with whatever piled up meanwhile batched into
//   the next call (message ids are deterministic, so a retried batch inserts nothing twice);
// - the agents' outputs are held (defer) and written in one batch with the run's end;
// - the run document is written latest-wins: at most one save in flight, and only the newest
//   pending state is sent after it, so an older state can never land after a newer one;
// - a message batch that fails (after the caller's retries) is tried once more at flush(): a
//   store overloaded for a few seconds delays the run's record instead of failing the run.
// Takeover does not depend on these writes: the checkpoint it resumes from is written to Redis
// at each step, and a resumed run re-sends the outputs its checkpoint holds.
// Before a run's terminal event, flush() makes everything durable (a client that reads the
// conversation after `run.completed` finds the answer).
import type { Message, Run } from '../gateways/store';

export interface RunStore {
  appendMessages(messages: Message[]): Promise<void>;
  saveRun(run: Run): Promise<void>;
}

/** Messages per AppendMessages call (the store accepts more; a batch this size is one insert). */
const MAX_BATCH = 20;

export class RunWriter {
  private readonly messages: Message[] = [];
  private readonly deferred: Message[] = [];
  /** Batches whose write failed, for one more attempt at flush(). */
  private readonly unwritten: Message[] = [];
  private lastError?: unknown;
  private messageLane?: Promise<void>;
  private nextRun?: Run;
  private runLane?: Promise<void>;
  private failure?: unknown;

  constructor(private readonly store: RunStore, private readonly onWrite?: (op: 'messages' | 'run', ms: number, ok: boolean) => void) {}

  /** The message write that failed for good (its second chance at flush() failed too), if any. */
  get failed(): unknown {
    return this.failure;
  }

  /** Queues messages (after any deferred ones); they are stored in the order they were queued. */
  message(...messages: Message[]): void {
    this.messages.push(...this.deferred.splice(0), ...messages);
    this.messageLane ??= this.drainMessages();
  }

  /** Holds messages until flush(), which writes them with everything else in one batch. */
  defer(...messages: Message[]): void {
    this.deferred.push(...messages);
  }

  /** Queues the run's newest state; an older state still waiting is replaced, not sent. */
  run(state: Run): void {
    this.nextRun = state;
    this.runLane ??= this.drainRun();
  }

  /** Forgets a run state not sent yet (a replica that lost the run must not overwrite the new owner's). */
  dropPendingRun(): void {
    this.nextRun = undefined;
  }

  /** Resolves once every queued write is done; rejects when a message batch still fails after its second chance. */
  async flush(): Promise<void> {
    // Twice at most: what failed while the run went on (or fails now) gets another attempt.
    for (let pass = 0; pass < 2 && this.failure === undefined; pass++) {
      await this.settled();
      if (this.unwritten.length === 0 && this.deferred.length === 0) break;
      // The lanes are idle: failed batches go out first, then the deferred outputs, in order.
      this.messages.push(...this.unwritten.splice(0), ...this.deferred.splice(0));
      this.messageLane ??= this.drainMessages();
    }
    await this.settled();
    if (this.unwritten.length > 0) this.failure ??= this.lastError;
    if (this.failure !== undefined) throw this.failure;
  }

  private async settled(): Promise<void> {
    while (this.messageLane || this.runLane) await Promise.all([this.messageLane, this.runLane]);
  }

  private async drainMessages(): Promise<void> {
    await null; // the lane is assigned before it can finish, even if every write fails synchronously
    try {
      while (this.messages.length > 0) {
        const batch = this.messages.splice(0, MAX_BATCH);
        if (!(await this.timed('messages', () => this.store.appendMessages(batch)))) this.unwritten.push(...batch);
      }
    } finally {
      this.messageLane = undefined;
    }
  }

  private async drainRun(): Promise<void> {
    await null;
    try {
      while (this.nextRun) {
        const state = this.nextRun;
        this.nextRun = undefined;
        await this.timed('run', () => this.store.saveRun(state));
      }
    } finally {
      this.runLane = undefined;
    }
  }

  /** Runs one write; false when it failed. A lost message is a lost output (the run must not
   * report success, see flush); a failed save of the run document is only reported. */
  private async timed(op: 'messages' | 'run', write: () => Promise<void>): Promise<boolean> {
    const started = Date.now();
    try {
      await write();
      this.onWrite?.(op, Date.now() - started, true);
      return true;
    } catch (err) {
      this.onWrite?.(op, Date.now() - started, false);
      if (op === 'messages') this.lastError = err;
      return false;
    }
  }
}
