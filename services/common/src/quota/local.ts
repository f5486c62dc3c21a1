// In-process admission with the same rules as the Lua scripts: used when Redis is unreachable,
// with limits already divided by the number of live replicas.
import { burstOf, emissionIntervalMs, pace, settle, type PacingRate } from './gcra';
import type { AdmissionLimits, RefusalReason, RequestDecision } from './types';

export type LocalDecision = { ok: true } | { ok: false; reason: RefusalReason; retryAfterMs: number };

export class LocalAdmission {
  private inFlight = new Set<string>();
  private rpmTat = 0;
  private tpmTat = 0;
  private pausedUntil = 0;
  /** After losing Redis: slots held back from the share until `holdbackUntil` (see beginOutage). */
  private holdback = 0;
  private holdbackUntil = 0;

  constructor(
    private limits: Required<AdmissionLimits>,
    private readonly windowMs: number,
    private readonly burstFraction: number,
    private readonly now: () => number = () => Date.now(),
  ) {}

  setLimits(limits: Required<AdmissionLimits>): void {
    this.limits = limits;
  }

  get inFlightCount(): number {
    return this.inFlight.size;
  }

  private rate(limit: number): PacingRate {
    return { limit, windowMs: this.windowMs, burstFraction: this.burstFraction };
  }

  tryAcquire(leaseId: string, tokens: number): LocalDecision {
    const now = this.now();
    if (this.pausedUntil > now) return { ok: false, reason: 'paused', retryAfterMs: Math.ceil(this.pausedUntil - now) };
    // A share that rounds down to zero admits nothing: never more than the global quota.
    const holdback = now < this.holdbackUntil ? this.holdback : 0;
    if (this.limits.maxConcurrent !== 0 && this.inFlight.size + 1 > this.limits.maxConcurrent - holdback) {
      return { ok: false, reason: 'concurrency', retryAfterMs: 50 };
    }
    const r = pace(this.rpmTat, now, 1, this.rate(this.limits.requestsPerMinute));
    if (!r.ok) return { ok: false, reason: 'rpm', retryAfterMs: Math.ceil(r.retryAfterMs) };
    const t = pace(this.tpmTat, now, tokens, this.rate(this.limits.tokensPerMinute));
    if (!t.ok) return { ok: false, reason: 'tpm', retryAfterMs: Math.ceil(t.retryAfterMs) };
    this.rpmTat = r.tat;
    this.tpmTat = t.tat;
    if (this.limits.maxConcurrent !== 0) this.inFlight.add(leaseId);
    return { ok: true };
  }

  /** One more request of a lease (a retry), paced like an admission; refused while paused. */
  chargeRequest(): RequestDecision {
    const now = this.now();
    if (this.pausedUntil > now) return { ok: false, reason: 'paused', retryAfterMs: Math.ceil(this.pausedUntil - now) };
    const r = pace(this.rpmTat, now, 1, this.rate(this.limits.requestsPerMinute));
    if (!r.ok) return { ok: false, reason: 'rpm', retryAfterMs: Math.ceil(r.retryAfterMs) };
    this.rpmTat = r.tat;
    return { ok: true };
  }

  /** Gives one request back (never beyond a full bucket). */
  refundRequest(): void {
    this.rpmTat = settle(this.rpmTat, this.now(), -1, this.rate(this.limits.requestsPerMinute));
  }

  /** Counts a lease granted through Redis: in local mode every lease this replica holds counts. */
  track(leaseId: string): void {
    if (this.limits.maxConcurrent !== 0) this.inFlight.add(leaseId);
  }

  /**
   * Redis was just lost. The shared state admitted calls wherever they came, so another replica may
   * hold more than its share; until its calls can have ended (`drainMs`, the longest recent call),
   * this replica keeps back the most that others can hold beyond their shares: the global limit
   * minus what it holds itself minus one share. And its pacing starts from an empty bucket (no
   * burst: the shared bucket it replaces was in use).
   */
  beginOutage(globalConcurrency: number, drainMs: number, keepBurst = false): void {
    const now = this.now();
    const share = this.limits.maxConcurrent;
    this.holdback = globalConcurrency > 0 ? Math.max(0, globalConcurrency - this.inFlight.size - share) : 0;
    this.holdbackUntil = now + drainMs;
    if (keepBurst) return;
    for (const [key, limit] of [['rpmTat', this.limits.requestsPerMinute], ['tpmTat', this.limits.tokensPerMinute]] as const) {
      if (limit <= 0) continue;
      const rate = this.rate(limit);
      this[key] = Math.max(this[key], now + burstOf(rate) * emissionIntervalMs(rate));
    }
  }

  /** Frees a slot (whether or not it was local) and settles tokens. */
  release(leaseId: string, deltaTokens: number): void {
    this.inFlight.delete(leaseId);
    this.tpmTat = settle(this.tpmTat, this.now(), deltaTokens, this.rate(this.limits.tokensPerMinute));
  }


  pause(ms: number): void {
    this.pausedUntil = Math.max(this.pausedUntil, this.now() + ms);
  }

  /** What is left of this replica's pause (ms), 0 when not paused. */
  pausedForMs(): number {
    return Math.max(0, Math.ceil(this.pausedUntil - this.now()));
  }

  /** How far ahead the local pacing state runs (ms), to carry into Redis when it returns. */
  debtMs(): { rpm: number; tpm: number } {
    const now = this.now();
    return { rpm: Math.max(0, this.rpmTat - now), tpm: Math.max(0, this.tpmTat - now) };
  }

  resetDebt(): void {
    this.rpmTat = 0;
    this.tpmTat = 0;
  }
}

/** Stands for "a share that rounds down to nothing" (0 would mean unlimited). */
export const NOTHING = 1e-9;

/** This replica's share of a limit: floor(limit ÷ replicas); 0 (unlimited) stays unlimited. */
export function shareOf(limit: number, replicas: number): number {
  if (limit <= 0) return 0;
  return Math.floor(limit / Math.max(1, replicas)) || NOTHING;
}
