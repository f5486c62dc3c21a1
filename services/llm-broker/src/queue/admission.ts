// The replica's waiting room in front of the global admission: calls wait in fair order, the head
// asks the global limiter for a lease, every waiting call hears its position and estimated wait,
// and a call that cannot be admitted before its deadline is refused early.
import type { AcquireResult, Lease, RefusalReason } from '@agent-mesh/common';
import { FairQueue, type QueueEntry } from './fair-queue';
import { WaitEstimator, type Owes } from './estimate';
import type { OwedLedger } from './owed';

/** What a call asks of the quota: `tokens` against the TPM, and `outputTokens` against a separate OTPM (OutputTokenAdmitter). */
export interface AdmitRequest {
  holder: string;
  tokens: number;
  outputTokens?: number;
}

export interface Admitter {
  tryAcquire(req: AdmitRequest): Promise<AcquireResult>;
  /**
   * Several at once, in order, stopping at the first refused (GlobalLimiter.tryAcquireMany): one
   * result per admitted request, then the refusal if any.
   */
  tryAcquireMany?(reqs: AdmitRequest[]): Promise<AcquireResult[]>;
}

export type QueueRefusalReason = 'queue_full' | 'deadline_unreachable';

/** The queue refuses a call (both map to RESOURCE_EXHAUSTED on the wire). */
export class QueueRefusal extends Error {
  override name = 'QueueRefusal';
  constructor(
    readonly reason: QueueRefusalReason,
    message: string,
    readonly retryAfterMs: number,
  ) {
    super(message);
  }
}

export interface AdmissionRequest extends QueueEntry, AdmitRequest {
  /** Absolute time (ms) by which the call must be admitted; undefined = none. */
  deadline?: number;
  signal: AbortSignal;
  /** The later calls of its run this call brings: a run's first call (of the agent pipeline), or a revision's (a started run's Planner). */
  owes?: Owes;
  /**
   * Position and estimated wait, on entry and whenever the position changes (throttled); for a call
   * of a run not begun, `marginalWaitMs`: what each further first call queued before it would add.
   * Such a call admitted at once hears position 0 (wait 0) with its marginal wait, as it is admitted.
   */
  onQueued?: (position: number, estimatedWaitMs: number, marginalWaitMs: number) => void;
  /**
   * What it asks of the token limit now (in place of `tokens`), asked right before each admission
   * attempt: a prompt the provider has cached since the call was queued asks less of it.
   */
  reforecast?: () => number;
}

export interface Admitted {
  lease: Lease;
  waitedMs: number;
}

interface Waiting extends QueueEntry {
  req: AdmissionRequest;
  enqueuedAt: number;
  resolve(a: Admitted): void;
  reject(e: Error): void;
  lastPosition: number;
  lastSentAt: number;
  onAbort: () => void;
}

export interface AdmissionHooks {
  onAdmitted?(waitedMs: number): void;
  onRefused?(reason: QueueRefusalReason | RefusalReason): void;
}

export interface AdmissionQueueOptions {
  maxLength: number;
  /** Least time between two `queued` updates to one caller. @default 500 */
  updateIntervalMs?: number;
  /** Longest sleep between two admission attempts while refused. @default 250 */
  maxPollMs?: number;
  /**
   * Calls at the head of the queue asked for in one decision, when the admitter can
   * (tryAcquireMany): admissions then keep up with arrivals instead of one per Redis round trip.
   * @default 64
   */
  maxBatch?: number;
  /** Fallback admission interval (ms per call) before any was measured. */
  nominalIntervalMs: () => number;
  /**
   * This replica's share of the token limit's pace, in ms per token (0 or absent: no token limit).
   * While the token limit holds the queue back, a call's turn comes as fast as the tokens of the
   * calls ahead of it allow: the interval measured per call, once it saw a large call's pace,
   * told a burst of small calls behind it that each would wait as long (and refused them as
   * unable to meet their deadlines).
   */
  tokenIntervalMs?: () => number;
  /**
   * How many brokers share the quota (their queues take turns): a run begun anywhere lands on this
   * queue only one time in so many, so the marginal wait it adds here is that much smaller. @default 1
   */
  replicas?: () => number;
  /** The ledger of the calls that runs begun still owe (see WaitEstimator): by default this broker's own. */
  owedLedger?: (callMs: () => number | undefined) => OwedLedger;
  now?: () => number;
}

export class AdmissionQueue {
  private readonly queue = new FairQueue<Waiting>();
  private running = false;
  private wake?: () => void;
  private blockedUntil = 0;
  /** Why the head was last refused: a call's end frees a slot and gives tokens back, never a place in the RPM window or a pause. */
  private blockedBy?: string;
  private readonly estimator: WaitEstimator;
  private readonly now: () => number;
  private updater?: NodeJS.Timeout;
  private closed = false;

  constructor(
    private readonly admitter: Admitter,
    private readonly opts: AdmissionQueueOptions,
    private readonly hooks: AdmissionHooks = {},
  ) {
    this.now = opts.now ?? Date.now;
    this.estimator = new WaitEstimator(opts.nominalIntervalMs, this.now, opts.owedLedger);
  }

  get depth(): number {
    return this.queue.size;
  }

  /** Estimated wait for a call at `position` (1 = next); `started`: of a run already begun; `waiting`: refused a slot already (see WaitEstimator.waitFor). */
  estimateWaitMs(position: number, started = true, waiting = false): number {
    return this.estimator.waitFor(position, Math.max(0, this.blockedUntil - this.now()), { startedAhead: started ? undefined : this.queue.started, waiting, intervalMs: this.tokenPacedIntervalMs() });
  }

  /** Held back by the token limit: the pace of the mean waiting call's tokens (see AdmissionQueueOptions.tokenIntervalMs). */
  private tokenPacedIntervalMs(): number | undefined {
    const perToken = this.blockedBy === 'tpm' ? (this.opts.tokenIntervalMs?.() ?? 0) : 0;
    return perToken > 0 && this.queue.size > 0 ? (perToken * this.queue.tokens) / this.queue.size : undefined;
  }

  /** What one more run begun (on any broker) adds to the wait of a first call here. */
  private get marginalFirstCallMs(): number {
    return this.estimator.runIntervalMs / Math.max(1, this.opts.replicas?.() ?? 1);
  }

  /** Waits for a lease; rejects with QueueRefusal, or with the signal's reason when cancelled. */
  admit(req: AdmissionRequest): Promise<Admitted> {
    if (req.signal.aborted) return Promise.reject(req.signal.reason as Error);
    if (this.closed) return Promise.reject(new QueueRefusal('queue_full', 'the broker is shutting down', 1_000));
    if (this.queue.size >= this.opts.maxLength) {
      this.hooks.onRefused?.('queue_full');
      return Promise.reject(new QueueRefusal('queue_full', `the LLM queue is full (${this.opts.maxLength} waiting)`, this.estimateWaitMs(this.queue.size)));
    }
    return new Promise<Admitted>((resolve, reject) => {
      const w: Waiting = {
        userId: req.userId,
        priority: req.priority,
        started: req.started,
        weight: req.tokens,
        req,
        enqueuedAt: this.now(),
        resolve,
        reject,
        lastPosition: 0,
        lastSentAt: 0,
        onAbort: () => {
          if (this.queue.remove(w)) reject(req.signal.reason as Error);
          this.kick();
        },
      };
      req.signal.addEventListener('abort', w.onAbort, { once: true });
      this.queue.push(w);
      // A call the estimate says cannot make its deadline is refused now, not when it expires.
      if (req.deadline !== undefined && this.refuseIfLate(w, this.queue.positionOf(w) ?? this.queue.size)) return;
      this.kick();
      this.ensureUpdater();
    });
  }

  /** Later calls of runs owed here (see WaitEstimator.owedCalls). */
  get owedCalls(): number {
    return this.estimator.owedCalls;
  }

  /** Another call finished here (after holding its admission `heldMs`): a slot may be free. */
  kick(heldMs?: number): void {
    if (heldMs !== undefined) this.estimator.onCallEnded(heldMs);
    // A block on the RPM window or a pause outlasts a call's end: the wait it estimates stands
    // (a settlement landing just after such a refusal made the next call queue for nothing).
    if (this.blockedBy !== 'rpm' && this.blockedBy !== 'paused') this.blockedUntil = 0;
    if (this.wake) {
      this.wake();
      return;
    }
    if (!this.running) void this.run();
  }

  close(): void {
    this.closed = true;
    if (this.updater) clearInterval(this.updater);
    for (let w = this.queue.shift(); w; w = this.queue.shift()) {
      w.req.signal.removeEventListener('abort', w.onAbort);
      w.reject(new QueueRefusal('queue_full', 'the broker is shutting down', 1_000));
    }
  }

  private refuseIfLate(w: Waiting, position: number): boolean {
    if (w.req.deadline === undefined) return false;
    const estimate = this.estimateWaitMs(position, w.started);
    if (this.now() + estimate <= w.req.deadline) return false;
    this.queue.remove(w);
    w.req.signal.removeEventListener('abort', w.onAbort);
    this.hooks.onRefused?.('deadline_unreachable');
    w.reject(new QueueRefusal('deadline_unreachable', `cannot be admitted before the deadline (estimated wait ${Math.round(estimate)} ms)`, estimate));
    return true;
  }

  /**
   * The dispatcher: one admission decision at a time, for the head of the queue — with an admitter
   * that decides several at once, for the calls at the head in admission order (none is admitted
   * before a call ahead of it: the decision stops at the first refused).
   */
  private async run(): Promise<void> {
    this.running = true;
    try {
      while (this.queue.size > 0 && !this.closed) {
        const many = this.admitter.tryAcquireMany?.bind(this.admitter);
        const batch = many ? this.queue.first(this.opts.maxBatch ?? 64) : [this.queue.peek()!];
        const head = batch[0]!;
        let results: AcquireResult[];
        try {
          for (const w of batch) if (w.req.reforecast) this.queue.reweigh(w, w.req.reforecast());
          const reqs = batch.map((w) => ({ holder: w.req.holder, tokens: w.weight ?? w.req.tokens, outputTokens: w.req.outputTokens }));
          results = many ? await many(reqs) : [await this.admitter.tryAcquire(reqs[0]!)];
        } catch (err) {
          // Neither Redis nor the local share could decide: fail the head rather than spin.
          this.queue.remove(head);
          head.reject(err as Error);
          continue;
        }
        let refused: Extract<AcquireResult, { ok: false }> | undefined;
        const givenBack: Promise<void>[] = [];
        for (const [i, result] of results.entries()) {
          if (!result.ok) {
            refused = result;
            break;
          }
          const w = batch[i]!;
          // A call may have been cancelled while we asked: then its lease is given back.
          if (this.queue.peek() === w) {
            this.queue.shift(); // shift, not remove: the user moves to the back of the round robin
            this.grant(w, result.lease);
          } else if (this.queue.remove(w)) this.grant(w, result.lease);
          else givenBack.push(result.lease.refund());
        }
        await Promise.all(givenBack);
        if (!refused) continue;
        const result = refused;
        this.hooks.onRefused?.(result.reason);
        this.estimator.onBlocked();
        const sleep = Math.max(5, Math.min(result.retryAfterMs, this.opts.maxPollMs ?? 250));
        // A pause or a pace (rpm, tpm) says exactly when the head fits. A concurrency refusal only
        // says when the oldest lease would expire if its holder died, and an output-token one
        // (otpm, counted over its window alone) when the oldest reservations leave the window; calls
        // usually end sooner and give their slot or unused max_tokens back, so the measured
        // admission interval is the better guess there.
        const endsSooner = result.reason === 'concurrency' || result.reason === 'otpm';
        const headWaitMs = endsSooner ? Math.min(result.retryAfterMs, this.estimator.admissionIntervalMs) : result.retryAfterMs;
        this.blockedUntil = this.now() + headWaitMs;
        this.blockedBy = result.reason;
        this.publishPositions(true);
        await new Promise<void>((resolve) => {
          const t = setTimeout(() => {
            this.wake = undefined;
            resolve();
          }, sleep);
          this.wake = () => {
            clearTimeout(t);
            this.wake = undefined;
            resolve();
          };
        });
      }
    } finally {
      this.running = false;
    }
  }

  private grant(w: Waiting, lease: Lease): void {
    w.req.signal.removeEventListener('abort', w.onAbort);
    const waitedMs = this.now() - w.enqueuedAt;
    // A run's first call admitted without waiting still hears the marginal wait (position 0): the
    // orchestrators' admission control needs it most when the queue starts to fill.
    if (!w.started && w.lastPosition === 0) w.req.onQueued?.(0, 0, Math.round(this.marginalFirstCallMs));
    this.estimator.onAdmitted(this.queue.size > 0, w.started, this.queue.size > this.queue.started, w.req.owes);
    this.hooks.onAdmitted?.(waitedMs);
    w.resolve({ lease, waitedMs });
  }

  private ensureUpdater(): void {
    if (this.updater || this.closed) return;
    this.updater = setInterval(() => {
      if (this.queue.size === 0) {
        clearInterval(this.updater);
        this.updater = undefined;
        return;
      }
      this.publishPositions(false);
    }, Math.max(50, Math.floor((this.opts.updateIntervalMs ?? 500) / 2)));
    this.updater.unref();
  }

  /** Sends `queued` to every caller whose position changed (at most every updateIntervalMs each). */
  private publishPositions(announceNew: boolean): void {
    const now = this.now();
    const interval = this.opts.updateIntervalMs ?? 500;
    for (const [w, position] of this.queue.positions()) {
      // The head too: a pause or pace longer than its deadline will not end in time.
      if (this.refuseIfLate(w, position)) continue;
      const fresh = w.lastPosition === 0;
      if (fresh ? !announceNew && position === 1 : position === w.lastPosition || now - w.lastSentAt < interval) continue;
      w.lastPosition = position;
      w.lastSentAt = now;
      w.req.onQueued?.(position, Math.round(this.estimateWaitMs(position, w.started, true)), w.started ? 0 : Math.round(this.marginalFirstCallMs));
    }
  }
}
