// The later calls that the runs begun still owe: each run's first call admitted is a debt of one
// call per further agent, a revision (a started run's Planner call) one of
// the calls it brings back (the Critic's and the Host's), and each other call of a started run
// admitted pays the oldest debt. A debt not paid within a few calls' lengths lapses: its run failed, was shed, had its
// later calls answered from the cache, or makes no later calls at all (a client that calls the
// broker as a Planner and never comes back). The share of owed calls that came rather than lapsed
// scales what is still owed, so a workload whose runs do not come back stops counting them.
// This is one broker's own ledger. Brokers sharing a quota keep one for the fleet in Redis
// (FleetOwedCalls, in fleet-owed.ts), with this one standing in while Redis is away: a run's later
// calls land on any broker, and a ledger per broker drifted with the split of first calls between
// them. Before revisions were owed, their calls paid other runs'
// debts and the ledger ran dry while calls kept coming; learning a debt's worth on average instead
// made estimates too long, and goodput fell (docs/benchmarks.md, "Two brokers").

/** Debts of runs begun within this many ms of each other are kept together. */
export const BUCKET_MS = 100;
/** Calls' lengths after which a debt lapses: a run's later calls come within two or three, and their waits in the queue. */
export const LAPSE_AFTER_CALLS = 8;
/** The smoothing of the share of owed calls that came. */
export const KEPT_ALPHA = 0.01;

/** A ledger of owed calls: this broker's own (OwedCalls), or its share of the fleet's (FleetOwedCalls). */
export interface OwedLedger {
  /** A call was admitted that brings `calls` more of its run: a run's first, or a revision's. */
  owe(calls: number): void;
  /** A call of a started run was admitted: it pays the oldest debt, if any is left. */
  paid(): void;
  /** The later calls still owed that are expected to come. */
  expected(): number;
}

export class OwedCalls implements OwedLedger {
  /** Unpaid debts, oldest first. */
  private readonly debts: { at: number; left: number }[] = [];
  private total = 0;
  /** Smoothed share of owed calls that came (1) rather than lapsed (0): until some lapse, all are expected. */
  private kept = 1;

  constructor(
    /** Smoothed time a call holds its admission; undefined before any call ended (nothing lapses then). */
    private readonly callMs: () => number | undefined,
    private readonly now: () => number = Date.now,
    private readonly lapseAfterCalls = LAPSE_AFTER_CALLS,
    private readonly keptAlpha = KEPT_ALPHA,
  ) {}

  /** A call was admitted that brings `calls` more of its run: a run's first, or a revision's. */
  owe(calls: number): void {
    const now = this.now();
    const last = this.debts.at(-1);
    if (last && now - last.at < BUCKET_MS) last.left += calls;
    else this.debts.push({ at: now, left: calls });
    this.total += calls;
  }

  /**
   * A call of a started run was admitted: it pays the oldest debt, if any is left (a Host's further
   * calls, after tools, are owed by no one: owing them made the estimates longer than the waits,
   * docs/benchmarks.md, "A Host's calls after tools, owed: not kept").
   */
  paid(): void {
    this.lapse();
    const oldest = this.debts[0];
    if (!oldest) return;
    oldest.left -= 1;
    this.total -= 1;
    if (oldest.left === 0) this.debts.shift();
    this.kept += this.keptAlpha * (1 - this.kept);
  }

  /** The later calls still owed that are expected to come. */
  expected(): number {
    this.lapse();
    return this.kept * this.total;
  }

  private lapse(): void {
    const callMs = this.callMs();
    if (callMs === undefined) return;
    const before = this.now() - this.lapseAfterCalls * callMs;
    for (let d = this.debts[0]; d && d.at < before; d = this.debts[0]) {
      this.debts.shift();
      this.total -= d.left;
      this.kept *= (1 - this.keptAlpha) ** d.left;
    }
  }
}
