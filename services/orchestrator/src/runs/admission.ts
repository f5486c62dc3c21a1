// Admission control at StartRun. Under overload (demand above the upstream quota) a new run learns
// its fate at once instead of queueing without bound: while the LLM queue's estimated wait for a
// run not begun yet is above the limit (RUN_MAX_QUEUE_WAIT_MS), StartRun is refused with
// RESOURCE_EXHAUSTED `busy` and a retry-after (the edge answers 503 with Retry-After) before the
// run touches Redis or the store, so refusals cost next to nothing.
//
// The estimate comes from the broker's first `queued` answer to the first call of each of this
// replica's recent runs (AgentEnv.gate): where a new call joins the queue, what the next run would
// face. One is trusted for `freshMs`; then, like a breaker half open, one run goes through as a
// probe and the others are still refused until its first call measures the queue again (or
// `freshMs` more has passed without an answer, e.g. a first call answered from the cache). A first
// call admitted without queueing, or queued under the limit, reopens the gate at once: runs are
// shed only while the queue is already full, and the upstream stays busy (goodput near the quota).
// Before the probe, every run that arrived once the estimate went stale went through, and each of
// them was then shed in-run (`degraded`, seconds later) instead of refused at once.
export interface GateState {
  /** Refuse until this time (ms since epoch) unless a newer observation says otherwise. */
  overUntil: number;
  /** The estimated wait that closed the gate. */
  waitMs: number;
  /** A probe run is out until then (0: none): the others are refused meanwhile. */
  probeUntil: number;
}

export class AdmissionGate {
  private state: GateState = { overUntil: 0, waitMs: 0, probeUntil: 0 };
  private refusedCount = 0;

  constructor(
    /** The longest estimated wait a new run may face (0: no admission control). */
    private readonly limitMs: number,
    /** How long one observation decides for the runs that follow. */
    private readonly freshMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  get enabled(): boolean {
    return this.limitMs > 0;
  }

  get refused(): number {
    return this.refusedCount;
  }

  /** A first call of a run not begun yet was told, as it joined the queue, to wait about `waitMs` (0: admitted at once). */
  observe(waitMs: number): void {
    if (!this.enabled) return;
    if (waitMs > this.limitMs) this.state = { overUntil: this.now() + this.freshMs, waitMs, probeUntil: 0 };
    else this.state = { overUntil: 0, waitMs, probeUntil: 0 };
  }

  /**
   * Undefined: admit. Otherwise the milliseconds after which a retry may find room: the time the
   * queue needs to drain from the observed wait down to the limit (at least one second).
   */
  check(): number | undefined {
    if (!this.enabled) return undefined;
    const now = this.now();
    const over = this.state.waitMs > this.limitMs;
    if (over && now >= this.state.overUntil && now >= this.state.probeUntil) {
      this.state.probeUntil = now + this.freshMs;
      return undefined; // the probe
    }
    if (!over) return undefined;
    this.refusedCount++;
    return retryAfterMs(this.state.waitMs, this.limitMs);
  }
}

/** How long until a queue estimated at `waitMs` is back under `limitMs`, at least one second. */
export function retryAfterMs(waitMs: number, limitMs: number): number {
  return Math.max(1_000, Math.ceil(waitMs - limitMs));
}

/** The sentence users read: "Service busy, please try again in N s." */
export function busyMessage(retryMs: number): string {
  return `Service busy, please try again in ${Math.max(1, Math.ceil(retryMs / 1000))} s.`;
}
