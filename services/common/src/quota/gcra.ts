// Smooth rate pacing (GCRA, the "virtual scheduling" form of a token bucket). The same arithmetic
// runs inside the Redis Lua scripts (scripts.ts) and in the in-process fallback (local.ts).
//
// Burst allowance: a limit L per window W is paced as a bucket of `burst = max(1, floor(L × burstFraction))`
// units that refills at (L − burst) per W. Any window of length W therefore admits at most
// burst + (L − burst) = L units (no double burst at a boundary, unlike fixed windows), and the
// sustained rate is L × (1 − burstFraction) — 98 % of L with the default fraction 0.02.
// A single request larger than the burst (a big TPM reservation) is admitted only when the bucket
// is full to its own size.
//
// Delivery delays: L + 1 admissions span at least W + one emission interval (two when admitted
// back to back; one when the first came late and the burst absorbed it). A provider that counts
// exactly L per sliding W on its own clock sees L + 1 within its window when the first of them
// reaches it that much later after admission than the last (an event-loop stall, a new
// connection): a 429. A limiter whose window is counted a margin m longer than the provider's
// (LimiterOptions.windowMarginMs) tolerates a spread of m more, at a cost of m ÷ (W + m) of the rate.

export const DEFAULT_BURST_FRACTION = 0.02;
/** Excess below this is float rounding, not a refusal. */
export const PACE_TOLERANCE_MS = 0.001;

export interface PacingRate {
  /** Units per window; 0 or less = unlimited. */
  limit: number;
  windowMs: number;
  burstFraction: number;
}

/** Bucket size in units. */
export function burstOf(rate: PacingRate): number {
  return Math.max(1, Math.floor(rate.limit * rate.burstFraction));
}

/** Milliseconds one unit "costs" (the emission interval). */
export function emissionIntervalMs(rate: PacingRate): number {
  return rate.windowMs / Math.max(rate.limit - burstOf(rate), 1);
}

export type PacingDecision = { ok: true; tat: number } | { ok: false; retryAfterMs: number };

/** Whether `cost` units fit now, given the theoretical arrival time `tat` (0 = never used). */
export function pace(tat: number, now: number, cost: number, rate: PacingRate): PacingDecision {
  if (rate.limit <= 0 || cost <= 0) return { ok: true, tat };
  const t = emissionIntervalMs(rate);
  const newTat = Math.max(tat, now) + cost * t;
  const allowance = Math.max(burstOf(rate), cost) * t;
  const excess = newTat - now - allowance;
  // Float rounding at epoch-sized `now` (see scripts.ts): sub-microsecond excess is no excess.
  return excess > PACE_TOLERANCE_MS ? { ok: false, retryAfterMs: excess } : { ok: true, tat: newTat };
}

/**
 * Settles a reservation: `delta` < 0 gives units back (never beyond a full bucket), > 0 charges
 * more (pushing later admissions back).
 */
export function settle(tat: number, now: number, delta: number, rate: PacingRate): number {
  if (rate.limit <= 0 || delta === 0) return tat;
  const t = emissionIntervalMs(rate);
  return delta < 0 ? Math.max(now, tat + delta * t) : Math.max(tat, now) + delta * t;
}
