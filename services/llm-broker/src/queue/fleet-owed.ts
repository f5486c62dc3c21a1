// The ledger of owed calls (OwedCalls) kept once for the whole fleet, in Redis, by every broker that
// shares the upstream's quota. A run's first call lands on one broker and its later calls on any:
// each broker's own ledger held the debts of the runs begun on it and was paid by whichever calls
// reached it, so it drifted with the random split of first calls (a debt lapses only after eight
// calls' lengths, ~50 brief-s at the brief's load, over which the split of ~75 new runs between two
// brokers drifts by a few runs, ~10 owed calls, ~3 s of estimate) — one broker then told its first
// calls too long, the other too short, and the shared admission gate, which takes the long reports,
// closed (one run of four at 500 users with two brokers: 80.6 % goodput, docs/benchmarks.md).
//
// Each broker keeps the debts and payments of the last SYNC_MS and hands them to one script, which
// applies them to the fleet's ledger (lapse, pay oldest first, owe) and answers what the fleet still
// owes; a broker's share of it is the fleet's divided by the brokers sharing the quota (their later
// calls spread evenly), plus its share of what it has not handed over yet. While Redis does not
// answer (or before it first did) the broker's own ledger stands in: it is always kept.
import { withTimeout, type Redis } from '@agent-mesh/common';
import { BUCKET_MS, KEPT_ALPHA, LAPSE_AFTER_CALLS, OwedCalls, type OwedLedger } from './owed';

/** How often a broker hands its debts and payments over and hears the fleet's figure. */
const SYNC_MS = 100;
/** A fleet figure older than this (Redis slow or away) gives way to the broker's own ledger. */
const STALE_MS = 1_000;
/** A broker with nothing to hand over, whose fleet owed nothing when it last asked, asks again after this. */
const IDLE_SYNC_MS = STALE_MS / 2;
/** An idle fleet's ledger expires. */
const TTL_MS = 600_000;

// KEYS[1] the ledger: a hash of 'total' (calls owed) and 'kept' (share of owed calls that came);
// KEYS[2] its debts, oldest first, each "at:left". Debts lapse, new debts are added, then the
// payments pay the oldest (what a broker saw in one SYNC_MS pays its new debts only once the older
// ones are paid, as on its own ledger). ARGV: now (ms), calls owed, calls paid, lapse
// before (ms; 0: nothing lapses), kept's smoothing, bucket (ms), ttl (ms). Returns the calls owed
// and expected to come (kept × total), as a string (a Lua number would be cut to an integer).
const SYNC = `
local now, owe, pay, before = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local alpha, bucket = tonumber(ARGV[5]), tonumber(ARGV[6])
local s = redis.call('HMGET', KEYS[1], 'total', 'kept')
local total, kept = tonumber(s[1]) or 0, tonumber(s[2]) or 1
local function head()
  local d = redis.call('LINDEX', KEYS[2], 0)
  if not d then return nil end
  local at, left = string.match(d, '^(%d+):(%d+)$')
  return tonumber(at), tonumber(left)
end
if before > 0 then
  local at, left = head()
  while at and at < before do
    redis.call('LPOP', KEYS[2])
    total = total - left
    kept = kept * (1 - alpha) ^ left
    at, left = head()
  end
end
if owe > 0 then
  local last = redis.call('LINDEX', KEYS[2], -1)
  local at, left
  if last then at, left = string.match(last, '^(%d+):(%d+)$') end
  if at and now - tonumber(at) < bucket then redis.call('LSET', KEYS[2], -1, at .. ':' .. (tonumber(left) + owe))
  else redis.call('RPUSH', KEYS[2], now .. ':' .. owe) end
  total = total + owe
end
while pay > 0 do
  local at, left = head()
  if not at then break end
  local n = math.min(pay, left)
  pay, total, left = pay - n, total - n, left - n
  kept = 1 - (1 - kept) * (1 - alpha) ^ n
  if left == 0 then redis.call('LPOP', KEYS[2]) else redis.call('LSET', KEYS[2], 0, at .. ':' .. left) end
end
total = math.max(0, total)
redis.call('HSET', KEYS[1], 'total', total, 'kept', kept)
redis.call('PEXPIRE', KEYS[1], ARGV[7])
redis.call('PEXPIRE', KEYS[2], ARGV[7])
return tostring(kept * total)
`;

type Scripted = Redis & { meshOwedSync(ledger: string, debts: string, ...argv: string[]): Promise<string> };

/** The keys of the fleet's ledger for the quota with this key prefix (its hash tag: one cluster slot). */
export function owedKeys(quotaKey: string): { ledger: string; debts: string } {
  return { ledger: `{${quotaKey}}:owed`, debts: `{${quotaKey}}:owed:debts` };
}

export class FleetOwedCalls implements OwedLedger {
  private readonly redis: Scripted;
  private readonly keys: { ledger: string; debts: string };
  /** This broker's own ledger: what it tells while the fleet's figure is stale. */
  private readonly own: OwedCalls;
  /** Debts and payments not handed over yet. */
  private owing = 0;
  private paying = 0;
  /** Handed over, the answer not back yet: owed less paid. */
  private handed = 0;
  /** The fleet's calls owed and expected, and when Redis said so. */
  private fleet?: { calls: number; at: number };
  private readonly timer: NodeJS.Timeout;
  private syncing = false;

  constructor(
    redis: Redis,
    quotaKey: string,
    private readonly callMs: () => number | undefined,
    /** How many brokers share the quota. */
    private readonly replicas: () => number,
    private readonly now: () => number = Date.now,
    syncMs = SYNC_MS,
  ) {
    redis.defineCommand('meshOwedSync', { numberOfKeys: 2, lua: SYNC });
    this.redis = redis as Scripted;
    this.keys = owedKeys(quotaKey);
    this.own = new OwedCalls(callMs, now);
    this.timer = setInterval(() => void this.sync(), syncMs);
    this.timer.unref();
  }

  owe(calls: number): void {
    this.own.owe(calls);
    this.owing += calls;
  }

  paid(): void {
    this.own.paid();
    this.paying += 1;
  }

  /** This broker's share of the calls the fleet still owes and expects (its own ledger's while Redis is away). */
  expected(): number {
    if (!this.fleet || this.now() - this.fleet.at > STALE_MS) return this.own.expected();
    return Math.max(0, this.fleet.calls + this.handed + this.owing - this.paying) / Math.max(1, this.replicas());
  }

  close(): void {
    clearInterval(this.timer);
  }

  /**
   * Hands the debts and payments over and hears the fleet's figure (every SYNC_MS; a call already
   * under way makes this one a no-op). Those handed over while Redis fails are lost: the fleet's
   * debts lapse anyway.
   */
  async sync(): Promise<void> {
    const owe = this.owing;
    const pay = this.paying;
    // An idle broker of an idle fleet asks twice a second, not ten times: its figure stays fresh,
    // and a first call queued here brings a debt, which is handed over at the next tick.
    const idle = owe === 0 && pay === 0 && this.fleet?.calls === 0 && this.now() - this.fleet.at < IDLE_SYNC_MS;
    if (this.syncing || idle) return;
    this.syncing = true;
    this.owing = 0;
    this.paying = 0;
    this.handed = owe - pay;
    try {
      const now = this.now();
      const callMs = this.callMs();
      const before = callMs === undefined ? 0 : Math.max(1, Math.floor(now - LAPSE_AFTER_CALLS * callMs));
      const calls = await withTimeout(
        this.redis.meshOwedSync(this.keys.ledger, this.keys.debts, String(now), String(owe), String(pay), String(before), String(KEPT_ALPHA), String(BUCKET_MS), String(TTL_MS)),
        STALE_MS / 2,
        'redis',
      );
      this.fleet = { calls: Number(calls), at: now };
    } catch {
      // The own ledger stands in once the fleet's figure is stale.
    } finally {
      this.handed = 0;
      this.syncing = false;
    }
  }
}
