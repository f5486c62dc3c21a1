// Admission control at StartRun, shared by every orchestrator of the deployment. Under overload
// (demand above the upstream quota) a new run learns its fate at once instead of queueing without
// bound: while the estimated LLM queue wait of its first call is above RUN_MAX_QUEUE_WAIT_MS,
// StartRun is refused with RESOURCE_EXHAUSTED `busy` and a retry-after (the edge answers 503 with
// Retry-After) before the run touches the store, so refusals cost one Redis round trip.
//
// The estimate is a model kept in one Redis hash, updated by one script per decision:
// - `wait` at `at`: what the first call of a run admitted then would wait; the queue drains in
//   real time, so it is `wait` minus the time since;
// - every admitted run takes a ticket (a counter) and adds the marginal wait M the broker gives
//   one more run: the admissions of all its calls (at least one per agent), which rank before the
//   first calls of later runs. So the gate admits runs at the rate the upstream finishes them, with
//   a burst of at most the limit's worth;
// - the first call of an admitted run, as it joins the broker's queue, reports its ticket, the
//   wait W it was told (0: admitted at once) and M. When the queue is longer than the model says —
//   the next run would wait W, plus M for that call and for every run admitted after it — the
//   model takes the report's figure. A shorter report does not lower it: a first call admitted at
//   once says nothing of the later calls of the runs admitted before it, and lowering on such
//   reports let in bursts of ~75 runs whenever the upstream had free slots.
// So the gate admits just as many runs as the upstream has room for under the limit, on every
// replica at once, and reopens by itself as the queue drains, also when a run never reports (its
// first call answered from the cache). Before, each replica acted on its own last observation:
// between an observation and the next (a run's start and its first call take tens of
// milliseconds) every arrival was admitted, the more so the more replicas, and the admitted runs
// then waited far past the limit (measured: 10 s longer than estimated on average at 500 users;
// 22 % of runs degraded in a fleet of HPA-scaled orchestrators against 8 % on one).
//
// Without Redis the gate admits: no run can start without Redis anyway (its registry), and a run
// whose first call is estimated over the limit is still shed in its queue (`degraded`).
import type { Logger } from 'pino';
import type { Redis } from '@agent-mesh/common';

/** The one hash of the gate's state, shared by the orchestrators. */
export const GATE_KEY = 'mesh:admission:gate';
/** Idle state expires: a deployment that had no run for this long starts from an empty queue. */
const GATE_TTL_MS = 600_000;

/**
 * Before any run reported a marginal wait (a fresh deployment, or idle for GATE_TTL_MS), each
 * admission counts as 1/INITIAL_RUNS of the limit: the first run and that many more are let in
 * before the first report, like TCP's initial window. Without it, the first report came after ~85 runs had
 * been admitted at 500 users (a cold mesh's first runs take a while to reach the broker).
 */
const INITIAL_RUNS = 10;

// KEYS[1] the gate. ARGV: now (ms), limit (ms), ttl (ms), marginal before any report (ms).
// Returns {1, ticket} to admit, or {0, estimated wait (ms)} to refuse.
const CHECK = `
local s = redis.call('HMGET', KEYS[1], 'wait', 'at', 'marginal')
local now = tonumber(ARGV[1])
local wait = math.max(0, (tonumber(s[1]) or 0) - (now - (tonumber(s[2]) or now)))
if wait > tonumber(ARGV[2]) then return {0, math.floor(wait)} end
local ticket = redis.call('HINCRBY', KEYS[1], 'seq', 1)
local marginal = tonumber(s[3]) or 0
if marginal <= 0 then marginal = tonumber(ARGV[4]) end
redis.call('HSET', KEYS[1], 'wait', wait + marginal, 'at', now)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {1, ticket}
`;

// KEYS[1] the gate. ARGV: ticket, wait (ms), marginal (ms; 0: unknown, the last one known stays),
// now (ms), ttl (ms). An older ticket's report than the last one taken is ignored. Returns 1 when taken.
const OBSERVE = `
local ticket = tonumber(ARGV[1])
local s = redis.call('HMGET', KEYS[1], 'obs', 'seq', 'marginal', 'wait', 'at')
if ticket < (tonumber(s[1]) or 0) then return 0 end
local marginal = tonumber(ARGV[3])
if marginal <= 0 then marginal = tonumber(s[3]) or 0 end
local after = math.max(0, (tonumber(s[2]) or ticket) - ticket)
local now = tonumber(ARGV[4])
local wait = math.max(0, (tonumber(s[4]) or 0) - (now - (tonumber(s[5]) or now)))
wait = math.max(wait, tonumber(ARGV[2]) + (after + 1) * marginal)
redis.call('HSET', KEYS[1], 'obs', ticket, 'marginal', marginal, 'wait', wait, 'at', now)
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
`;

type Scripted = Redis & {
  meshGateCheck(key: string, now: string, limit: string, ttl: string, initialMarginal: string): Promise<[number, number]>;
  meshGateObserve(key: string, ticket: string, wait: string, marginal: string, now: string, ttl: string): Promise<number>;
};

/** What an admitted run's first call reports (AgentEnv.gate). */
export interface GateObserver {
  /** The first call joined the queue with this estimated wait (0: admitted at once) and marginal wait. */
  observe(waitMs: number, marginalMs: number): Promise<void>;
}

export type GateDecision = { admitted: true; observer?: GateObserver } | { admitted: false; retryAfterMs: number };

export class AdmissionGate {
  private readonly redis: Scripted;

  constructor(
    redis: Redis,
    /** The longest estimated wait a new run may face (0: no admission control). */
    private readonly limitMs: number,
    private readonly logger: Pick<Logger, 'warn'>,
    private readonly now: () => number = Date.now,
    private readonly key = GATE_KEY,
  ) {
    redis.defineCommand('meshGateCheck', { numberOfKeys: 1, lua: CHECK });
    redis.defineCommand('meshGateObserve', { numberOfKeys: 1, lua: OBSERVE });
    this.redis = redis as Scripted;
  }

  get enabled(): boolean {
    return this.limitMs > 0;
  }

  /** Admits a new run (with the observer its first call reports to), or says when to retry. */
  async check(): Promise<GateDecision> {
    if (!this.enabled) return { admitted: true };
    let verdict: number;
    let value: number;
    try {
      [verdict, value] = await this.redis.meshGateCheck(this.key, String(this.now()), String(this.limitMs), String(GATE_TTL_MS), String(this.limitMs / INITIAL_RUNS));
    } catch (err) {
      this.logger.warn({ err: (err as Error).message }, 'admission gate unavailable: admitting');
      return { admitted: true };
    }
    if (verdict === 0) return { admitted: false, retryAfterMs: retryAfterMs(value, this.limitMs) };
    const ticket = String(value);
    return {
      admitted: true,
      observer: {
        observe: (waitMs, marginalMs) =>
          this.redis.meshGateObserve(this.key, ticket, String(Math.max(0, Math.round(waitMs))), String(Math.max(0, Math.round(marginalMs))), String(this.now()), String(GATE_TTL_MS))
            .then(() => undefined, (err: unknown) => this.logger.warn({ err: (err as Error).message }, 'admission gate: observation not saved')),
      },
    };
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
