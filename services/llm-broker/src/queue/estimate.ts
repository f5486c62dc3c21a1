// An honest estimated wait: the admission interval measured while calls were waiting (the rate
// the quota really lets through, not the demand), smoothed; a nominal interval before any data.
// A call of a run not begun yet (a run's first call) is also overtaken by the later calls of the
// runs already going, which rank first and keep coming while it waits: only the share of
// admissions they leave reaches it. Counting just the calls ahead of it now, first calls under
// overload waited ~4× their estimate (a run makes ~4 calls), and the admission control that reads
// these estimates let in runs that then waited far past its limit.
// The smoothed share cannot see a wave coming: right after a burst from idle nearly every admission
// went to a first call, and the runs let in then make their later calls together a call's length
// later. So the calls that the runs begun here still owe are counted too (OwedCalls), and a first
// call is told the longer of the two waits.

import type { CallerRoleName } from '@agent-mesh/common';
import { OwedCalls, type OwedLedger } from './owed';

/** The slowest a first call is expected to advance: ≥ 1/MAX_SLOWDOWN of the admissions. */
const MAX_SLOWDOWN = 10;
/** The fewest calls a run of the pipeline makes: one per agent (Planner, Critic, Host, Reporter). */
const MIN_CALLS_PER_RUN = 4;

/** What a call admitted says of its run's later calls (see OwedCalls). */
export type Owes = 'run' | 'revision';
/** The later calls owed: one per further agent for a run begun; the Critic's and the Host's again for a revision. */
const OWED_CALLS: Record<Owes, number> = { run: MIN_CALLS_PER_RUN - 1, revision: 2 };

/** What a call says of its run's later calls: its first call begins it; a started run's Planner call revises it; a direct call has no run. */
export function owedBy(role: CallerRoleName, runStarted: boolean): Owes | undefined {
  if (role === 'direct') return undefined;
  if (!runStarted) return 'run';
  return role === 'planner' ? 'revision' : undefined;
}

export class WaitEstimator {
  private intervalMs?: number;
  private lastAdmission?: number;
  private backlogged = false;
  /**
   * Smoothed share of admissions that went to calls of started runs. Before it is measured: a run
   * makes at least one call per agent, one of them its first, so under saturation started runs
   * take about three quarters of the admissions.
   */
  private startedShare = 1 - 1 / MIN_CALLS_PER_RUN;
  /** Smoothed time a call holds its admission (from admitted to its end). */
  private callMs?: number;
  /** The later calls that the runs begun still owe, this broker's share: one per further agent. */
  private readonly owed: OwedLedger;

  constructor(
    private readonly nominalIntervalMs: () => number,
    private readonly now: () => number = Date.now,
    /** The ledger of owed calls, given how long a call holds its admission: the fleet's (FleetOwedCalls) or, by default, this broker's own. */
    ledger: (callMs: () => number | undefined) => OwedLedger = (callMs) => new OwedCalls(callMs, now),
    private readonly alpha = 0.2,
    private readonly shareAlpha = 0.05,
  ) {
    this.owed = ledger(() => this.callMs);
  }

  /**
   * An admission happened; `stillWaiting` says whether others were left behind, `started` whether
   * it went to a call of a run already begun, `firstsWaiting` whether a first call was left waiting.
   * The started share counts only the admissions that a first call could have had (it went to one,
   * or one was waiting): what slows first calls. Counting them all, the share neared 1 while
   * admission control kept new runs out, slowing the estimates tenfold, which kept them out longer.
   */
  onAdmitted(stillWaiting: boolean, started: boolean, firstsWaiting = true, owes?: Owes): void {
    const now = this.now();
    if (owes) this.owed.owe(OWED_CALLS[owes]);
    else if (started) this.owed.paid();
    if (!started || firstsWaiting) this.startedShare += this.shareAlpha * ((started ? 1 : 0) - this.startedShare);
    if (this.backlogged && this.lastAdmission !== undefined) {
      const sample = now - this.lastAdmission;
      this.intervalMs = this.intervalMs === undefined ? sample : this.intervalMs + this.alpha * (sample - this.intervalMs);
    }
    this.lastAdmission = now;
    this.backlogged = stillWaiting;
  }

  /** The later calls of the runs begun still owed and expected to come here (see OwedCalls). */
  get owedCalls(): number {
    return this.owed.expected();
  }

  /** A call admitted here ended after holding its admission `heldMs`. */
  onCallEnded(heldMs: number): void {
    this.callMs = this.callMs === undefined ? heldMs : this.callMs + this.alpha * (heldMs - this.callMs);
  }

  /** The head was refused: the queue is backlogged from now on. */
  onBlocked(): void {
    if (!this.backlogged) {
      // Measured from now: the time the queue sat idle since the last admission is no interval
      // (counted, it made one sample of seconds after every idle spell, and the estimates and the
      // marginal wait that admission control charges per run grew with it).
      this.backlogged = true;
      this.lastAdmission = this.now();
    }
  }

  get admissionIntervalMs(): number {
    return this.intervalMs ?? this.nominalIntervalMs();
  }

  /**
   * Wait for the call at `position` (1 = next), given the head is blocked for `headBlockedMs` more.
   * For a call of a run not begun, `startedAhead` is how many calls of started runs wait (all of
   * them ahead of it): the calls of runs not begun ahead of it advance only at the share of
   * admissions the started runs leave. `waiting`: the call was refused a slot, so its own admission
   * is one more such interval away (slots free as calls end, at random times: the next one is a
   * whole interval away on average), unless the head's block says when it ends. Not counted, a call
   * at the head was told 0 ms, and first calls' estimates were ~1 s short on average at the brief's
   * load (`npm run bench -- seed`). A first call is told the longer of two waits: by the share of
   * admissions the started runs took lately, and by the later calls the runs begun here still owe.
   */
  waitFor(position: number, headBlockedMs: number, o: { startedAhead?: number; waiting?: boolean; intervalMs?: number } = {}): number {
    const ahead = Math.max(0, position - 1);
    const own = o.waiting && headBlockedMs === 0 ? 1 : 0;
    // `intervalMs`: the pace the calls waiting now may go at (their tokens'), when shorter than the one measured.
    const interval = Math.min(this.admissionIntervalMs, o.intervalMs ?? Infinity);
    if (o.startedAhead === undefined) return headBlockedMs + (ahead + own) * interval;
    const started = Math.min(ahead, o.startedAhead);
    const firsts = ahead - started + own;
    const byShare = started * interval + firsts * this.slowdown * interval;
    return headBlockedMs + Math.max(byShare, this.owedWait(started, firsts, Math.max(0, this.owed.expected() - o.startedAhead), interval));
  }

  /**
   * The wait of a first call behind `started` calls of started runs and `firsts` first calls (its
   * own admission included), while `toCome` more calls of started runs, owed, arrive over the next
   * call's length (they end the calls in flight) and rank ahead of it: a fluid queue. Served before
   * they have all come, it gets only the admissions they leave; with nothing ahead of it, it is
   * served before any comes. Before any call has ended here there is no telling when they come:
   * they are taken to come at once (not counted, first calls queued in the first seconds after a
   * start waited up to 19 brief-s longer than told, `npm run bench -- seed` at 500 users; counted,
   * up to 7 s less).
   */
  private owedWait(started: number, firsts: number, toCome: number, interval: number): number {
    if (started + firsts === 0) return 0;
    const span = this.callMs;
    const taken = span === undefined ? 1 : (toCome * interval) / span;
    const beforeAllCame = ((started + firsts) * interval) / (1 - taken);
    if (taken < 1 && beforeAllCame <= span!) return beforeAllCame;
    return (started + toCome + firsts) * interval;
  }

  /** How much later a first call is admitted for each further first call ahead of it. */
  get firstCallIntervalMs(): number {
    return this.slowdown * this.admissionIntervalMs;
  }

  /**
   * What one more run begun costs the first calls behind it: the admissions of all its calls. A
   * run of the pipeline makes at least one call per agent (four); the measured share of started
   * runs' admissions says more once runs are going, but right after the queue fills, when nearly
   * all admissions so far were first calls, it says far less (admission control then let in ~85
   * runs in the first 5 brief-s at 500 users).
   */
  get runIntervalMs(): number {
    return Math.max(MIN_CALLS_PER_RUN, this.slowdown) * this.admissionIntervalMs;
  }

  private get slowdown(): number {
    return Math.min(MAX_SLOWDOWN, 1 / Math.max(1e-9, 1 - this.startedShare));
  }
}
