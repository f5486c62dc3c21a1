// Where one run's wall time goes: named moments and timed waits, in ms from the run's start,
// logged as one line when the run ends (`run timings`). Cheap enough to stay on in production;
// it is how the critical path was found (store round trips between agents, history reads).

export class RunProfile {
  private readonly t0: number;
  /** name → ms since start (a moment) or [start, duration] (a wait). */
  private readonly entries: Record<string, number | [number, number]> = {};

  constructor(startedAtMs = Date.now()) {
    this.t0 = startedAtMs;
  }

  /** Records a moment; a repeated name keeps its first occurrence (e.g. an agent's first token). */
  mark(name: string): void {
    if (!(name in this.entries)) this.entries[name] = Date.now() - this.t0;
  }

  /** Times an awaited operation under `name`. */
  async time<T>(name: string, fn: () => Promise<T>): Promise<T> {
    const start = Date.now();
    try {
      return await fn();
    } finally {
      this.entries[name] = [start - this.t0, Date.now() - start];
    }
  }

  /** Records a wait that was timed elsewhere (e.g. a background write). */
  record(name: string, startedAtMs: number, durationMs: number): void {
    this.entries[name] = [startedAtMs - this.t0, durationMs];
  }

  get elapsedMs(): number {
    return Date.now() - this.t0;
  }

  toJSON(): Record<string, number | [number, number]> {
    return { ...this.entries, total: this.elapsedMs };
  }
}
