// In-process admission with the same rules as the Lua scripts: used when Redis is unreachable,
// with limits already divided by the number of live replicas.
import { burstOf, emissionIntervalMs, pace, settle, type PacingRate } from './gcra';
import type { AdmissionLimits, RefusalReason, RequestDecision } from './types';

export type LocalDecision = { ok: true } | { ok: false; reason: RefusalReason; retryAfterMs: number };

/**
 * The tokens admitted within the last window, counted exactly, as the ACQUIRE script's TPM log
 * does in Redis (scripts.ts, TPM_WINDOW): the pacing alone lets calls larger than its burst put
 * more than the limit into a sliding window.
 */
export class TokenWindow {
  /** Admissions in the window, oldest first. */
  private entries: { id: string; at: number; tokens: number }[] = [];
  private sum = 0;

  constructor(private readonly windowMs: number) {}

  /** How long until `tokens` fit under `limit` (0: they fit now). */
  waitFor(tokens: number, limit: number, now: number): number {
    this.prune(now);
    let over = this.sum + tokens - limit;
    if (limit <= 0 || over <= 0) return 0;
    for (const e of this.entries) {
      over -= e.tokens;
      if (over <= 0) return Math.max(1, Math.ceil(e.at + this.windowMs - now));
    }
    return Math.ceil(this.windowMs);
  }

  add(id: string, tokens: number, now: number): void {
    this.entries.push({ id, at: now, tokens });
    this.sum += tokens;
  }

  /**
   * Settles an admission by `delta` tokens: a refund while it is in the window, once; a charge
   * beyond its reservation as an entry of its own, dated now (the provider charged it by then).
   */
  settle(id: string, delta: number, now: number): void {
    this.prune(now);
    if (delta > 0) {
      this.add('', delta, now);
      return;
    }
    const e = this.entries.find((x) => x.id === id);
    if (!e || delta === 0) return;
    const settled = Math.max(0, e.tokens + delta);
    this.sum += settled - e.tokens;
    e.tokens = settled;
    e.id = '';
  }

  /** The tokens still in the window, and how long ago the newest of them was admitted (ms). */
  held(now: number): { tokens: number; newestAgoMs: number } {
    this.prune(now);
    const newest = this.entries.at(-1);
    return { tokens: this.sum, newestAgoMs: newest ? Math.max(0, now - newest.at) : 0 };
  }

  clear(): void {
    this.entries = [];
    this.sum = 0;
  }

  private prune(now: number): void {
    let n = 0;
    while (n < this.entries.length && this.entries[n]!.at <= now - this.windowMs) this.sum -= this.entries[n++]!.tokens;
    if (n > 0) this.entries.splice(0, n);
  }
}

export class LocalAdmission {
  private inFlight = new Set<string>();
  private rpmTat = 0;
  private tpmTat = 0;
  private readonly tpmWindow: TokenWindow;
  private pausedUntil = 0;
  /** After losing Redis: slots held back from the share until `holdbackUntil` (see beginOutage). */
  private holdback = 0;
  private holdbackUntil = 0;

  constructor(
    private limits: Required<AdmissionLimits>,
    private readonly windowMs: number,
    private burstFraction: number,
    private readonly now: () => number = () => Date.now(),
    /** Whether TPM is paced besides its window (LimiterOptions.tokenPacing). */
    private readonly tokenPacing = true,
  ) {
    this.tpmWindow = new TokenWindow(windowMs);
  }

  setLimits(limits: Required<AdmissionLimits>): void {
    this.limits = limits;
  }

  setBurstFraction(fraction: number): void {
    this.burstFraction = fraction;
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
    const t = pace(this.tpmTat, now, tokens, this.rate(this.tokenPacing ? this.limits.tokensPerMinute : 0));
    if (!t.ok) return { ok: false, reason: 'tpm', retryAfterMs: Math.ceil(t.retryAfterMs) };
    const w = this.tpmWindow.waitFor(tokens, this.limits.tokensPerMinute, now);
    if (w > 0) return { ok: false, reason: 'tpm', retryAfterMs: w };
    if (this.limits.tokensPerMinute > 0) this.tpmWindow.add(leaseId, tokens, now);
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
    if (this.limits.tokensPerMinute > 0) this.tpmWindow.settle(leaseId, deltaTokens, this.now());
  }


  pause(ms: number): void {
    this.pausedUntil = Math.max(this.pausedUntil, this.now() + ms);
  }

  /** What is left of this replica's pause (ms), 0 when not paused. */
  pausedForMs(): number {
    return Math.max(0, Math.ceil(this.pausedUntil - this.now()));
  }

  /**
   * What the local state owes the shared one when Redis returns: how far ahead the pacing runs (ms),
   * and the tokens admitted here still in the TPM window, with how long ago the newest was admitted.
   */
  debtMs(): { rpm: number; tpm: number; windowTokens: number; windowAgoMs: number } {
    const now = this.now();
    const { tokens, newestAgoMs } = this.tpmWindow.held(now);
    return { rpm: Math.max(0, this.rpmTat - now), tpm: Math.max(0, this.tpmTat - now), windowTokens: tokens, windowAgoMs: newestAgoMs };
  }

  resetDebt(): void {
    this.rpmTat = 0;
    this.tpmTat = 0;
    this.tpmWindow.clear();
  }
}

/** Stands for "a share that rounds down to nothing" (0 would mean unlimited). */
export const NOTHING = 1e-9;

/** This replica's share of a limit: floor(limit ÷ replicas); 0 (unlimited) stays unlimited. */
export function shareOf(limit: number, replicas: number): number {
  if (limit <= 0) return 0;
  return Math.floor(limit / Math.max(1, replicas)) || NOTHING;
}
