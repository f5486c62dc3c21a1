// The provider's own enforcement: requests and tokens per sliding (scaled) minute, and concurrency;
// optionally also per "quantum" (OpenAI: "60,000 requests/minute may be enforced as 1,000
// requests/second"), as a bucket holding the quantum's share of each limit, refilled at its rate.

export interface LimitSettings {
  /** Requests admitted per window; 0 = unlimited. */
  rpm: number;
  /** Tokens charged per window; 0 = unlimited. */
  tpm: number;
  /** Requests in flight; 0 = unlimited. */
  maxConcurrent: number;
  /** The sliding window: one minute times the time scale. */
  windowMs: number;
  /**
   * Quantized limits: RPM and TPM are also enforced over this (scaled) time, as buckets holding
   * `limit × quantumMs ÷ windowMs` that refill at the limit's rate; 0 = off.
   */
  quantumMs?: number;
}

export type LimitKind = 'requests' | 'tokens' | 'concurrency';

export interface Rejection {
  admitted: false;
  limit: LimitKind;
  /** When a retry can succeed (for `Retry-After`); at least 1 ms. */
  retryAfterMs: number;
  message: string;
}

/** An admitted request: it holds a concurrency slot and a token charge until settled. */
export interface Admission {
  admitted: true;
  ticket: LimitTicket;
}

export interface TokenCharge {
  at: number;
  tokens: number;
  /** False once the charge left the window (or the window was reset). */
  live: boolean;
}

export interface Slot {
  expectedEndAt: number;
}

/** A FIFO with O(1) amortised removal from the front. */
class Deque<T> {
  private items: T[] = [];
  private head = 0;

  get length(): number {
    return this.items.length - this.head;
  }
  push(item: T): void {
    this.items.push(item);
  }
  at(index: number): T | undefined {
    return this.items[this.head + index];
  }
  last(): T | undefined {
    return this.length === 0 ? undefined : this.items[this.items.length - 1];
  }
  shift(): T | undefined {
    if (this.length === 0) return undefined;
    const item = this.items[this.head++];
    if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return item;
  }
  *[Symbol.iterator](): Iterator<T> {
    for (let i = this.head; i < this.items.length; i++) yield this.items[i] as T;
  }
  clear(): void {
    this.items = [];
    this.head = 0;
  }
}

export class LimitTicket {
  private settled = false;

  constructor(
    private readonly limits: ProviderLimits,
    readonly charge: TokenCharge,
    readonly slot: Slot,
  ) {}

  /** Frees the slot and corrects the token charge to what the request really used. Idempotent. */
  settle(actualTokens: number): void {
    if (this.settled) return;
    this.settled = true;
    this.limits.settle(this, actualTokens);
  }
}

/** Formats a duration like OpenAI's reset headers: "12ms", "1.2s", "1m30s". */
export function formatDuration(ms: number): string {
  const clamped = Math.max(0, ms);
  if (clamped < 1000) return `${Math.ceil(clamped)}ms`;
  const seconds = Math.round(clamped) / 1000;
  if (seconds < 60) return `${Number(seconds.toFixed(3))}s`;
  const minutes = Math.floor(seconds / 60);
  return `${minutes}m${Number((seconds - minutes * 60).toFixed(3))}s`;
}

/**
 * A limit enforced over a quantum of the window: it holds `limit × quantumMs ÷ windowMs` and refills
 * at `limit ÷ windowMs`, so a whole minute still admits the limit, but no more than a quantum's share
 * at once. A charge larger than the bucket passes only when the bucket is full (and empties it).
 */
export class QuantumBucket {
  private level = Infinity;
  private at = 0;

  /** The bucket's size, or 0 when the limit or the quantum is off. */
  static capacity(limit: number, quantumMs: number, windowMs: number): number {
    return limit > 0 && quantumMs > 0 ? (limit * quantumMs) / windowMs : 0;
  }

  /** How long until `amount` fits (0: now); `capacity` and `perMs` come from the live settings. */
  waitFor(amount: number, capacity: number, perMs: number, now: number): number {
    this.refill(capacity, perMs, now);
    const need = Math.min(amount, capacity);
    return this.level >= need ? 0 : (need - this.level) / perMs;
  }

  take(amount: number): void {
    this.level -= amount;
  }

  /** A charge corrected after the fact (positive: tokens refunded; negative: billed beyond the charge), kept within the bucket. */
  give(amount: number, capacity: number): void {
    this.level = Math.min(capacity, this.level + amount);
  }

  reset(): void {
    this.level = Infinity;
  }

  private refill(capacity: number, perMs: number, now: number): void {
    this.level = Math.min(capacity, this.level + Math.max(0, now - this.at) * perMs);
    this.at = now;
  }
}

export class ProviderLimits {
  private readonly requestBucket = new QuantumBucket();
  private readonly tokenBucket = new QuantumBucket();
  private readonly admissions = new Deque<number>();
  private readonly charges = new Deque<TokenCharge>();
  private tokensInWindow = 0;
  private readonly slots = new Set<Slot>();

  constructor(
    private readonly settings: () => LimitSettings,
    private readonly now: () => number = Date.now,
  ) {}

  get inFlight(): number {
    return this.slots.size;
  }

  /**
   * Admits a request charging `cost` tokens now, or says which limit refuses it and for how long.
   * `cost` is asked for only when needed (counting tokens is the expensive part of a refusal);
   * `expectedDurationMs` only serves to estimate when a concurrency slot frees up.
   */
  admit(cost: number | (() => number), expectedDurationMs: number): Admission | Rejection {
    const now = this.now();
    const { rpm, tpm, maxConcurrent, windowMs, quantumMs = 0 } = this.settings();
    this.prune(now, windowMs);

    if (maxConcurrent > 0 && this.slots.size >= maxConcurrent) {
      let firstEnd = Infinity;
      for (const slot of this.slots) firstEnd = Math.min(firstEnd, slot.expectedEndAt);
      return this.reject('concurrency', firstEnd - now, `Too many concurrent requests: limit ${maxConcurrent}. Please try again shortly.`);
    }
    if (rpm > 0 && this.admissions.length >= rpm) {
      // The request that must leave the window to bring the count below the limit.
      const oldest = this.admissions.at(this.admissions.length - rpm) ?? now;
      return this.reject(
        'requests',
        oldest + windowMs - now,
        `Rate limit reached on requests per min (RPM): Limit ${rpm}, Used ${this.admissions.length}, Requested 1.`,
      );
    }
    const tokens = typeof cost === 'number' ? cost : cost();
    if (tpm > 0 && this.tokensInWindow + tokens > tpm) {
      const used = `Limit ${tpm}, Used ${this.tokensInWindow}, Requested ${tokens}.`;
      if (tokens > tpm) {
        return this.reject('tokens', windowMs, `Request too large on tokens per min (TPM): ${used} The input or output tokens must be reduced.`);
      }
      let freed = 0;
      let waitUntil = now + windowMs;
      for (const charge of this.charges) {
        freed += charge.tokens;
        if (this.tokensInWindow - freed + tokens <= tpm) {
          waitUntil = charge.at + windowMs;
          break;
        }
      }
      return this.reject('tokens', waitUntil - now, `Rate limit reached on tokens per min (TPM): ${used}`);
    }
    const requestCap = QuantumBucket.capacity(rpm, quantumMs, windowMs);
    const tokenCap = QuantumBucket.capacity(tpm, quantumMs, windowMs);
    const quantum = formatDuration(quantumMs);
    const requestWait = requestCap > 0 ? this.requestBucket.waitFor(1, requestCap, rpm / windowMs, now) : 0;
    if (requestWait > 0) {
      return this.reject('requests', requestWait, `Rate limit reached on requests per min (RPM): Limit ${rpm}, enforced as ${+requestCap.toFixed(2)} per ${quantum}. Requested 1.`);
    }
    const tokenWait = tokenCap > 0 ? this.tokenBucket.waitFor(tokens, tokenCap, tpm / windowMs, now) : 0;
    if (tokenWait > 0) {
      return this.reject('tokens', tokenWait, `Rate limit reached on tokens per min (TPM): Limit ${tpm}, enforced as ${Math.floor(tokenCap)} per ${quantum}. Requested ${tokens}.`);
    }
    if (requestCap > 0) this.requestBucket.take(1);
    if (tokenCap > 0) this.tokenBucket.take(tokens);

    const charge: TokenCharge = { at: now, tokens, live: true };
    const slot: Slot = { expectedEndAt: now + expectedDurationMs };
    this.admissions.push(now);
    this.charges.push(charge);
    this.tokensInWindow += tokens;
    this.slots.add(slot);
    return { admitted: true, ticket: new LimitTicket(this, charge, slot) };
  }

  /** Called by LimitTicket.settle. */
  settle(ticket: LimitTicket, actualTokens: number): void {
    this.slots.delete(ticket.slot);
    if (ticket.charge.live) this.tokensInWindow += actualTokens - ticket.charge.tokens;
    const { tpm, quantumMs = 0, windowMs } = this.settings();
    const tokenCap = QuantumBucket.capacity(tpm, quantumMs, windowMs);
    if (tokenCap > 0) this.tokenBucket.give(ticket.charge.tokens - actualTokens, tokenCap);
    ticket.charge.tokens = actualTokens;
  }

  /** The `x-ratelimit-*` headers for the current state; limits that are off are left out. */
  headers(): Record<string, string> {
    const now = this.now();
    const { rpm, tpm, windowMs } = this.settings();
    this.prune(now, windowMs);
    const headers: Record<string, string> = {};
    if (rpm > 0) {
      const newest = this.admissions.last();
      headers['x-ratelimit-limit-requests'] = String(rpm);
      headers['x-ratelimit-remaining-requests'] = String(Math.max(0, rpm - this.admissions.length));
      headers['x-ratelimit-reset-requests'] = formatDuration(newest === undefined ? 0 : newest + windowMs - now);
    }
    if (tpm > 0) {
      const newest = this.charges.last()?.at;
      headers['x-ratelimit-limit-tokens'] = String(tpm);
      headers['x-ratelimit-remaining-tokens'] = String(Math.max(0, tpm - this.tokensInWindow));
      headers['x-ratelimit-reset-tokens'] = formatDuration(newest === undefined ? 0 : newest + windowMs - now);
    }
    return headers;
  }

  /** Forgets the windows; requests in flight keep their slots. */
  reset(): void {
    for (const charge of this.charges) charge.live = false;
    this.admissions.clear();
    this.charges.clear();
    this.tokensInWindow = 0;
    this.requestBucket.reset();
    this.tokenBucket.reset();
  }

  private reject(limit: LimitKind, waitMs: number, message: string): Rejection {
    const retryAfterMs = Number.isFinite(waitMs) ? Math.max(1, Math.ceil(waitMs)) : 1000;
    return { admitted: false, limit, retryAfterMs, message };
  }

  private prune(now: number, windowMs: number): void {
    const cutoff = now - windowMs;
    while ((this.admissions.at(0) ?? Infinity) <= cutoff) this.admissions.shift();
    for (let charge = this.charges.at(0); charge !== undefined && charge.at <= cutoff; charge = this.charges.at(0)) {
      charge.live = false;
      this.tokensInWindow -= charge.tokens;
      this.charges.shift();
    }
  }
}
