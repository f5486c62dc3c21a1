// An honest estimated wait: the admission interval measured while calls were waiting (the rate
// the quota really lets through, not the demand), smoothed; a nominal interval before any data.

export class WaitEstimator {
  private intervalMs?: number;
  private lastAdmission?: number;
  private backlogged = false;

  constructor(
    private readonly nominalIntervalMs: () => number,
    private readonly now: () => number = Date.now,
    private readonly alpha = 0.2,
  ) {}

  /** An admission happened; `stillWaiting` says whether others were left behind. */
  onAdmitted(stillWaiting: boolean): void {
    const now = this.now();
    if (this.backlogged && this.lastAdmission !== undefined) {
      const sample = now - this.lastAdmission;
      this.intervalMs = this.intervalMs === undefined ? sample : this.intervalMs + this.alpha * (sample - this.intervalMs);
    }
    this.lastAdmission = now;
    this.backlogged = stillWaiting;
  }

  /** The head was refused: the queue is backlogged from now on. */
  onBlocked(): void {
    if (!this.backlogged) {
      this.backlogged = true;
      this.lastAdmission ??= this.now();
    }
  }

  get admissionIntervalMs(): number {
    return this.intervalMs ?? this.nominalIntervalMs();
  }

  /** Wait for the call at `position` (1 = next), given the head is blocked for `headBlockedMs` more. */
  waitFor(position: number, headBlockedMs: number): number {
    return headBlockedMs + Math.max(0, position - 1) * this.admissionIntervalMs;
  }
}
