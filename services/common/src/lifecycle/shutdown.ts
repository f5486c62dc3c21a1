// One shutdown budget (SHUTDOWN_GRACE_MS) split into phases that run in order. Each phase has a
// deadline measured from the signal; a phase that ends early leaves its time to the next ones, a
// step still running at its phase's deadline is told so (its AbortSignal fires) and left behind.

/** The phases, in the order they run. */
export const PHASES = [
  /** Health checks answer NOT_SERVING: balancers and probes stop sending work here. */
  'notServing',
  /** Listeners stop accepting: new connections and calls are refused or sent elsewhere. */
  'stopAccepting',
  /** In-flight calls and streams finish (or are told to reconnect); cancelled at the deadline. */
  'drain',
  /** The service's own stop: hand work over, release leases, stop timers. */
  'stop',
  /** Clients of other systems close (Redis, MongoDB, gRPC peers). */
  'clients',
  /** Buffered telemetry is flushed. */
  'telemetry',
] as const;

export type Phase = (typeof PHASES)[number];

/** A phase's deadline, in ms after the signal. */
export type ShutdownPlan = Record<Phase, number>;

const clamp = (v: number, lo: number, hi: number) => Math.min(hi, Math.max(lo, v));

/**
 * Splits `graceMs` into phase deadlines. The last phases get fixed shares (telemetry and clients
 * 10 % each, the service's own stop 20 %, each within bounds), the first two at most 5 % (they
 * only flip flags and close listeners), and the drain of in-flight work everything in between:
 * with the default 10 s, the drain may last until 6 s, the own stop until 8 s, clients until 9 s.
 * The shares shrink together when the grace is shorter than their lower bounds.
 */
export function shutdownPlan(graceMs: number): ShutdownPlan {
  const grace = Math.max(0, graceMs);
  let telemetry = clamp(grace * 0.1, 100, 2_000);
  let clients = clamp(grace * 0.1, 100, 2_000);
  let stop = clamp(grace * 0.2, 200, 5_000);
  const reserved = telemetry + clients + stop;
  if (reserved > grace) {
    const k = grace / reserved;
    telemetry *= k;
    clients *= k;
    stop *= k;
  }
  const drainEnd = grace - telemetry - clients - stop;
  const accepting = Math.min(drainEnd, clamp(grace * 0.05, 0, 500));
  const r = Math.round;
  return {
    notServing: r(accepting),
    stopAccepting: r(accepting),
    drain: r(drainEnd),
    stop: r(drainEnd + stop),
    clients: r(drainEnd + stop + clients),
    telemetry: r(grace),
  };
}

/** One step of a phase; `deadline` aborts when the phase's time is up. */
export type ShutdownStep = (deadline: AbortSignal) => Promise<void> | void;

export interface StepReport {
  phase: Phase;
  name: string;
  outcome: 'done' | 'failed' | 'overran';
  ms: number;
  error?: string;
}

/**
 * Runs the steps phase by phase: the steps of one phase start together (in registration order),
 * and the next phase starts when they have all settled or the phase's deadline has passed.
 * Never throws; returns what happened to each step.
 */
export async function runPhases(
  steps: ReadonlyArray<{ phase: Phase; name: string; run: ShutdownStep }>,
  plan: ShutdownPlan,
  now: () => number = Date.now,
): Promise<StepReport[]> {
  const start = now();
  const reports: StepReport[] = [];
  for (const phase of PHASES) {
    const mine = steps.filter((s) => s.phase === phase);
    if (mine.length === 0) continue;
    const deadline = new AbortController();
    const timer = setTimeout(() => deadline.abort(), Math.max(0, start + plan[phase] - now()));
    const timeUp = new Promise<'overran'>((resolve) => deadline.signal.addEventListener('abort', () => resolve('overran')));
    await Promise.all(
      mine.map(async (step) => {
        const began = now();
        let outcome: StepReport['outcome'];
        let error: string | undefined;
        try {
          outcome = await Promise.race([Promise.resolve().then(() => step.run(deadline.signal)).then(() => 'done' as const), timeUp]);
        } catch (err) {
          outcome = 'failed';
          error = (err as Error)?.message ?? String(err);
        }
        reports.push({ phase, name: step.name, outcome, ms: now() - began, ...(error ? { error } : {}) });
      }),
    );
    clearTimeout(timer);
  }
  return reports;
}
