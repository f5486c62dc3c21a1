// The effective quota: starts at the configured limits, is cut on the provider's 429s
// (multiplicative decrease), capped by what the provider reports in `x-ratelimit-limit-*`, and
// creeps back up towards the configured value while no 429 arrives (additive increase). A 429 that
// says the provider's minute still had room refused a burst, not the rate: the pacing's bucket
// (its burst fraction) is halved instead, for good.
import type { AdmissionLimits } from '@agent-mesh/common';

export type LimitKind = 'requests' | 'tokens' | 'concurrency';

export interface AdaptiveOptions {
  /** Share kept on a 429. @default 0.7 */
  cut?: number;
  /** Share of the ceiling regained per `creepPeriodMs` without a 429. @default 0.02 */
  creep?: number;
  /** @default 1000 */
  creepPeriodMs?: number;
  /** No creep for this long after a cut. @default 5000 */
  holdMs?: number;
  /** Never below this share of the configured value. @default 0.05 */
  floor?: number;
  /** A reported provider limit not heard again for this long is forgotten. @default 60000 */
  reportTtlMs?: number;
}

/** The least burst fraction a refused burst halves the bucket to (the configuration's own minimum). */
export const MIN_BURST_FRACTION = 0.001;

type Limits = Required<AdmissionLimits>;
const KEY: Record<LimitKind, keyof Limits> = { requests: 'requestsPerMinute', tokens: 'tokensPerMinute', concurrency: 'maxConcurrent' };

export class AdaptiveLimits {
  private effective: Limits;
  /** What the provider says its limits are (0 = unknown). */
  private reported: Limits = { maxConcurrent: 0, requestsPerMinute: 0, tokensPerMinute: 0 };
  private reportedAt: Record<keyof Limits, number> = { maxConcurrent: 0, requestsPerMinute: 0, tokensPerMinute: 0 };
  private lastCut = -Infinity;
  private lastBurstCut = -Infinity;
  private lastCreep: number;
  private readonly o: Required<AdaptiveOptions>;

  constructor(
    private readonly configured: Limits,
    opts: AdaptiveOptions = {},
    private readonly now: () => number = Date.now,
  ) {
    this.effective = { ...configured };
    this.o = { cut: 0.7, creep: 0.02, creepPeriodMs: 1_000, holdMs: 5_000, floor: 0.05, reportTtlMs: 60_000, ...opts };
    this.lastCreep = now();
  }

  get limits(): Limits {
    return { ...this.effective };
  }

  /**
   * A 429 that came with the provider's minute not used up (see `refusedBurst`): the provider
   * enforces its limit over a shorter period (OpenAI's "quantized" limits: 60,000 requests a
   * minute may be enforced as 1,000 a second) and refused a burst. The pacing's bucket halved from
   * `current`, once per quarter hold period (the calls of one burst refused together are one cut),
   * never below MIN_BURST_FRACTION: undefined when not. It does not grow back (such a provider
   * keeps enforcing so), and a smaller bucket costs no rate: the pacing sustains (1 − fraction) of
   * each limit.
   */
  halveBurst(current: number): number | undefined {
    const now = this.now();
    if (now - this.lastBurstCut < this.o.holdMs / 4 || current <= MIN_BURST_FRACTION) return undefined;
    this.lastBurstCut = now;
    return Math.max(MIN_BURST_FRACTION, current / 2);
  }

  private ceiling(k: keyof Limits): number {
    const c = this.configured[k];
    // The provider may raise its limit or stop reporting it: an old report no longer binds.
    const r = this.now() - this.reportedAt[k] <= this.o.reportTtlMs ? this.reported[k] : 0;
    if (c === 0) return r; // unlimited here: the provider's word is the only limit
    return r > 0 ? Math.min(c, r) : c;
  }

  /** The provider's reported limits; returns true when the effective limits changed. */
  onHeaders(h: { limitRequests?: number; limitTokens?: number }): boolean {
    let changed = false;
    const apply = (k: keyof Limits, v: number | undefined) => {
      if (v === undefined || v <= 0) return;
      this.reportedAt[k] = this.now();
      if (this.reported[k] === v) return;
      this.reported[k] = v;
      const ceil = this.ceiling(k);
      if (this.effective[k] === 0 || this.effective[k] > ceil) {
        this.effective[k] = ceil;
        changed = true;
      }
    };
    apply('requestsPerMinute', h.limitRequests);
    apply('tokensPerMinute', h.limitTokens);
    return changed;
  }

  /** A 429 on `kind`: cut that limit (once per hold period, so a burst of 429s is one cut). */
  onRateLimited(kind: LimitKind): boolean {
    const now = this.now();
    if (now - this.lastCut < this.o.holdMs / 4) return false;
    const k = KEY[kind];
    const current = this.effective[k];
    if (current === 0) return false; // unknown limit: the pause alone protects us
    const floor = Math.max(1, this.ceiling(k) * this.o.floor);
    this.effective[k] = Math.max(floor, Math.floor(current * this.o.cut));
    this.lastCut = now;
    this.lastCreep = now;
    return true;
  }

  /** Creeps back towards the ceiling; call it periodically. Returns true when something changed. */
  tick(): boolean {
    const now = this.now();
    if (now - this.lastCut < this.o.holdMs) return false;
    const periods = Math.floor((now - this.lastCreep) / this.o.creepPeriodMs);
    if (periods <= 0) return false;
    this.lastCreep += periods * this.o.creepPeriodMs;
    let changed = false;
    for (const k of Object.values(KEY)) {
      const ceil = this.ceiling(k);
      if (ceil === 0 || this.effective[k] >= ceil) continue;
      this.effective[k] = Math.min(ceil, Math.ceil(this.effective[k] + ceil * this.o.creep * periods));
      changed = true;
    }
    return changed;
  }
}

/** Which limit a 429 was about, from the provider's remaining-* headers. */
export function limitKindOf(h: { remainingRequests?: number; remainingTokens?: number }, message = ''): LimitKind {
  if (/concurren/i.test(message)) return 'concurrency';
  if (/tokens per|TPM/i.test(message)) return 'tokens';
  if (/requests per|RPM/i.test(message)) return 'requests';
  if (h.remainingRequests !== undefined && h.remainingRequests <= 0) return 'requests';
  if (h.remainingTokens !== undefined && h.remainingTokens <= 0) return 'tokens';
  if (h.remainingRequests === undefined && h.remainingTokens === undefined) return 'requests';
  return 'concurrency';
}

/**
 * Whether a 429 on `kind` refused a burst rather than the minute's limit: its own headers say the
 * provider's minute still had room for the call (a request, or the `reserved` tokens).
 */
export function refusedBurst(kind: LimitKind, h: { remainingRequests?: number; remainingTokens?: number }, reserved: number): boolean {
  if (kind === 'requests') return h.remainingRequests !== undefined && h.remainingRequests >= 1;
  if (kind === 'tokens') return h.remainingTokens !== undefined && reserved > 0 && h.remainingTokens >= reserved;
  return false;
}
