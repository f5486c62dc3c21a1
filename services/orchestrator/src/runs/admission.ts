// Admission control at StartRun, shared by every orchestrator of the deployment. Under overload
// (demand above the upstream quota) a new run learns its fate at once instead of queueing without
// bound: while the estimated LLM queue wait of its first call is above RUN_MAX_QUEUE_WAIT_MS,
// StartRun is refused with RESOURCE_EXHAUSTED `busy` and a retry-after (the edge answers 503 with
// Retry-After) before the run touches the store, so refusals cost one Redis round trip.
//
// The estimate is a model kept in one Redis hash, updated by one script per decision:
// - every admitted run takes a ticket (a counter);
// - the first call of an admitted run, as it joins the broker's queue, reports its ticket, its
//   estimated wait W and the marginal wait M the broker gives one more first call queued before it
//   (0 wait: admitted at once). The newest ticket's report is kept;
// - a new run's first call would then wait the observed call's remaining wait, W minus the time
//   since, plus M for the observed call and for every run admitted after it (they are ahead of the
//   new one, or about to be: their first calls may still be on their way to the broker).
// So the gate admits just as many runs as the queue has room for under the limit, on every replica
// at once, and reopens by itself as the queue drains. Before, each replica acted on its own last
// observation: between an observation and the next (a run's start and its first call take tens
// of milliseconds) every arrival was admitted, the more so the more replicas, and the admitted runs
// then waited far past the limit (measured: 10 s short on average at 500 users; 22 % of runs
// degraded in a fleet of HPA-scaled orchestrators against 8 % on one).
//
// Without Redis the gate admits: no run can start without Redis anyway (its registry), and a run
// whose first call is estimated over the limit is still shed in its queue (`degraded`).
import type { Logger } from 'pino';
import type { Redis } from '@agent-mesh/common';

/** The one hash of the gate's state, shared by the orchestrators. */
export const GATE_KEY = 'mesh:admission:gate';
/** Idle state expires: a deployment that had no run for this long starts from an empty queue. */
const GATE_TTL_MS = 600_000;

// KEYS[1] the gate. ARGV: now (ms), limit (ms), ttl (ms).
// Returns {1, ticket} to admit, or {0, estimated wait (ms)} to refuse.
const CHECK = `
local s = redis.call('HMGET', KEYS[1], 'wait', 'at', 'obs', 'marginal', 'seq')
local seq = tonumber(s[5]) or 0
if s[1] then
  local remaining = math.max(0, tonumber(s[1]) - (tonumber(ARGV[1]) - tonumber(s[2])))
  local estimate = remaining + (seq - tonumber(s[3]) + 1) * tonumber(s[4])
  if estimate > tonumber(ARGV[2]) then return {0, math.floor(estimate)} end
end
seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {1, seq}
`;

// KEYS[1] the gate. ARGV: ticket, wait (ms), marginal (ms; 0: unknown, the last one stays), now (ms), ttl (ms).
// An older ticket's report than the one kept is ignored. Returns 1 when kept.
const OBSERVE = `
local ticket = tonumber(ARGV[1])
local obs = tonumber(redis.call('HGET', KEYS[1], 'obs') or '-1')
if ticket < obs then return 0 end
redis.call('HSET', KEYS[1], 'wait', ARGV[2], 'at', ARGV[4], 'obs', ticket)
if tonumber(ARGV[3]) > 0 or not redis.call('HGET', KEYS[1], 'marginal') then redis.call('HSET', KEYS[1], 'marginal', ARGV[3]) end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
`;

type Scripted = Redis & {
  meshGateCheck(key: string, now: string, limit: string, ttl: string): Promise<[number, number]>;
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
      [verdict, value] = await this.redis.meshGateCheck(this.key, String(this.now()), String(this.limitMs), String(GATE_TTL_MS));
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
