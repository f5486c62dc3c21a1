// The provider's own enforcement: requests and tokens per sliding (scaled) minute, and concurrency;
// optionally also per "quantum" (OpenAI: "60,000 requests/minute may be enforced as 1,000
// requests/second"), as a bucket holding the quantum's share of each limit, refilled at its rate.
// Tokens are counted as OpenAI does (TPM: input and output together) or, with an output limit set,
// as Anthropic does (ITPM and OTPM apart).

export interface LimitSettings {
  /** Requests admitted per window; 0 = unlimited. */
  rpm: number;
  /** Tokens charged per window; 0 = unlimited. With `otpm` set, input tokens only (Anthropic's ITPM). */
  tpm: number;
  /**
   * Output tokens charged per window (Anthropic's OTPM): max_tokens on arrival, corrected at the
   * end; 0 = off, and `tpm` then counts input and output together.
   */
  otpm?: number;
  /** Requests in flight; 0 = unlimited. */
  maxConcurrent: number;
  /** The sliding window: one minute times the time scale. */
  windowMs: number;
  /**
   * Quantized limits: RPM, TPM and OTPM are also enforced over this (scaled) time, as buckets holding
   * `limit × quantumMs ÷ windowMs` that refill at the limit's rate; 0 = off.
   */
  quantumMs?: number;
}

/** `tokens`: the TPM counting input and output; `input_tokens`, `output_tokens`: Anthropic's ITPM and OTPM. */
export type LimitKind = 'requests' | 'tokens' | 'input_tokens' | 'output_tokens' | 'concurrency';

export interface Rejection {
  admitted: false;
  limit: LimitKind;
  /** When a retry can succeed (for `Retry-After`); at least 1 ms. */
  retryAfterMs: number;
  /** In OpenAI's words. */
  message: string;
  /** In Anthropic's words, when the limits are Anthropic's (`otpm` set); else Anthropic's dialect sends `message` too. */
  anthropicMessage?: string;
}

/**
 * A request's tokens: its prompt, and its output (on arrival what it may generate, max_tokens; at
 * the end what it generated). A bare number is input alone.
 */
export interface TokenUse {
  input: number;
  output: number;
}

const tokenUse = (use: number | TokenUse): TokenUse => (typeof use === 'number' ? { input: use, output: 0 } : use);

/** An admitted request: it holds a concurrency slot and its token charges until settled. */
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
    /** The TPM's charge (the ITPM's when `output` is set). */
    readonly charge: TokenCharge,
    readonly slot: Slot,
    /** The OTPM's charge, when the request was admitted under one. */
    readonly output?: TokenCharge,
  ) {}

  /** Frees the slot and corrects the token charges to what the request really used. Idempotent. */
  settle(actual: number | TokenUse): void {
    if (this.settled) return;
    this.settled = true;
    this.limits.settle(this, tokenUse(actual));
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

type TokenKind = Exclude<LimitKind, 'requests' | 'concurrency'>;

/** Each token limit's name in OpenAI's refusals, and its unit in Anthropic's. */
const TOKEN_LIMITS: Record<TokenKind, { openAi: string; unit: string }> = {
  tokens: { openAi: 'tokens per min (TPM)', unit: 'tokens' },
  input_tokens: { openAi: 'input tokens per min (ITPM)', unit: 'input tokens' },
  output_tokens: { openAi: 'output tokens per min (OTPM)', unit: 'output tokens' },
};

/** Anthropic's refusal by one of its limits (which also names the organization; the emulator has none). */
function anthropicWords(limit: number, unit: string): string {
  return (
    `This request would exceed the rate limit for your organization of ${limit.toLocaleString('en-US')} ${unit} per minute. ` +
    'For details, refer to: https://docs.anthropic.com/en/api/rate-limits. You can see the response headers for current usage. ' +
    'Please reduce the prompt length or the maximum tokens requested, or try again later.'
  );
}

/**
 * The charges of one token limit over the sliding window, each corrected once its request is
 * settled, and the limit's bucket when it is quantized.
 */
class TokenWindow {
  private readonly charges = new Deque<TokenCharge>();
  private readonly bucket = new QuantumBucket();
  /** The tokens charged within the window. */
  used = 0;

  /** How long until `tokens` more fit within `limit`: until enough of the oldest charges leave the window. */
  windowWait(tokens: number, limit: number, windowMs: number, now: number): number {
    let freed = 0;
    for (const charge of this.charges) {
      freed += charge.tokens;
      if (this.used - freed + tokens <= limit) return charge.at + windowMs - now;
    }
    return windowMs;
  }

  /** How long until `tokens` fit in the bucket (0: now, or the limit is not quantized). */
  bucketWait(tokens: number, limit: number, quantumMs: number, windowMs: number, now: number): number {
    const capacity = QuantumBucket.capacity(limit, quantumMs, windowMs);
    return capacity > 0 ? this.bucket.waitFor(tokens, capacity, limit / windowMs, now) : 0;
  }

  charge(tokens: number, limit: number, quantumMs: number, windowMs: number, now: number): TokenCharge {
    if (QuantumBucket.capacity(limit, quantumMs, windowMs) > 0) this.bucket.take(tokens);
    const charge: TokenCharge = { at: now, tokens, live: true };
    this.charges.push(charge);
    this.used += tokens;
    return charge;
  }

  /** Corrects a charge to what its request really used: in the window while it is still in it, and in the bucket. */
  correct(charge: TokenCharge, actual: number, limit: number, quantumMs: number, windowMs: number): void {
    if (charge.live) this.used += actual - charge.tokens;
    const capacity = QuantumBucket.capacity(limit, quantumMs, windowMs);
    if (capacity > 0) this.bucket.give(charge.tokens - actual, capacity);
    charge.tokens = actual;
  }

  /** `x-ratelimit-{limit,remaining,reset}-{name}`: the reset is when the newest charge leaves the window. */
  headers(name: string, limit: number, windowMs: number, now: number): Record<string, string> {
    const newest = this.charges.last()?.at;
    return {
      [`x-ratelimit-limit-${name}`]: String(limit),
      [`x-ratelimit-remaining-${name}`]: String(Math.max(0, limit - this.used)),
      [`x-ratelimit-reset-${name}`]: formatDuration(newest === undefined ? 0 : newest + windowMs - now),
    };
  }

  prune(cutoff: number): void {
    for (let charge = this.charges.at(0); charge !== undefined && charge.at <= cutoff; charge = this.charges.at(0)) {
      charge.live = false;
      this.used -= charge.tokens;
      this.charges.shift();
    }
  }

  reset(): void {
    for (const charge of this.charges) charge.live = false;
    this.charges.clear();
    this.used = 0;
    this.bucket.reset();
  }
}

/** A token limit as one admission meets it: the tokens it asks of it. */
interface TokenAsk {
  window: TokenWindow;
  kind: TokenKind;
  limit: number;
  tokens: number;
}

export class ProviderLimits {
  private readonly requestBucket = new QuantumBucket();
  private readonly admissions = new Deque<number>();
  /** The TPM's charges; with an OTPM set, the input tokens' alone (the ITPM). */
  private readonly tokens = new TokenWindow();
  /** The OTPM's charges. */
  private readonly outputTokens = new TokenWindow();
  private readonly slots = new Set<Slot>();

  constructor(
    private readonly settings: () => LimitSettings,
    private readonly now: () => number = Date.now,
  ) {}

  get inFlight(): number {
    return this.slots.size;
  }

  /**
   * Admits a request charging its tokens now (`cost`: a bare number is input alone), or says which
   * limit refuses it and for how long. `cost` is asked for only when needed (counting tokens is the
   * expensive part of a refusal); `expectedDurationMs` only serves to estimate when a concurrency
   * slot frees up.
   */
  admit(cost: number | TokenUse | (() => number | TokenUse), expectedDurationMs: number): Admission | Rejection {
    const now = this.now();
    const { rpm, tpm, otpm = 0, maxConcurrent, windowMs, quantumMs = 0 } = this.settings();
    this.prune(now, windowMs);
    // With an output limit the limits are Anthropic's, and so are the words of their refusals.
    const split = otpm > 0;
    const anthropic = (limit: number, unit: string) => (split ? anthropicWords(limit, unit) : undefined);

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
        anthropic(rpm, 'requests'),
      );
    }
    const use = tokenUse(typeof cost === 'function' ? cost() : cost);
    // Anthropic counts input and output apart (ITPM, OTPM); OpenAI's TPM counts them together.
    const input: TokenAsk = split
      ? { window: this.tokens, kind: 'input_tokens', limit: tpm, tokens: use.input }
      : { window: this.tokens, kind: 'tokens', limit: tpm, tokens: use.input + use.output };
    const output: TokenAsk | undefined = split ? { window: this.outputTokens, kind: 'output_tokens', limit: otpm, tokens: use.output } : undefined;
    // A request that may generate nothing (embeddings) is not held back by the output limit.
    const asks = output !== undefined && output.tokens > 0 ? [input, output] : [input];
    for (const ask of asks) {
      const refusal = this.windowRefusal(ask, windowMs, now, split);
      if (refusal !== undefined) return refusal;
    }
    const requestCap = QuantumBucket.capacity(rpm, quantumMs, windowMs);
    const quantum = formatDuration(quantumMs);
    const requestWait = requestCap > 0 ? this.requestBucket.waitFor(1, requestCap, rpm / windowMs, now) : 0;
    if (requestWait > 0) {
      return this.reject(
        'requests',
        requestWait,
        `Rate limit reached on requests per min (RPM): Limit ${rpm}, enforced as ${+requestCap.toFixed(2)} per ${quantum}. Requested 1.`,
        anthropic(rpm, 'requests'),
      );
    }
    for (const { window, kind, limit, tokens } of asks) {
      const wait = window.bucketWait(tokens, limit, quantumMs, windowMs, now);
      if (wait > 0) {
        const cap = Math.floor(QuantumBucket.capacity(limit, quantumMs, windowMs));
        const { openAi, unit } = TOKEN_LIMITS[kind];
        return this.reject(kind, wait, `Rate limit reached on ${openAi}: Limit ${limit}, enforced as ${cap} per ${quantum}. Requested ${tokens}.`, anthropic(limit, unit));
      }
    }
    if (requestCap > 0) this.requestBucket.take(1);

    const charge = input.window.charge(input.tokens, input.limit, quantumMs, windowMs, now);
    const outputCharge = output && output.window.charge(output.tokens, output.limit, quantumMs, windowMs, now);
    const slot: Slot = { expectedEndAt: now + expectedDurationMs };
    this.admissions.push(now);
    this.slots.add(slot);
    return { admitted: true, ticket: new LimitTicket(this, charge, slot, outputCharge) };
  }

  /** Called by LimitTicket.settle. */
  settle(ticket: LimitTicket, actual: TokenUse): void {
    this.slots.delete(ticket.slot);
    const { tpm, otpm = 0, quantumMs = 0, windowMs } = this.settings();
    if (ticket.output === undefined) {
      this.tokens.correct(ticket.charge, actual.input + actual.output, tpm, quantumMs, windowMs);
    } else {
      // The input was known on arrival and stays charged; the output was reserved at max_tokens.
      this.outputTokens.correct(ticket.output, actual.output, otpm, quantumMs, windowMs);
    }
  }

  /**
   * The `x-ratelimit-*` headers for the current state; limits that are off are left out. The OTPM's
   * (`x-ratelimit-*-output-tokens`) are the emulator's own, for Anthropic's dialect: OpenAI has none.
   */
  headers(): Record<string, string> {
    const now = this.now();
    const { rpm, tpm, otpm = 0, windowMs } = this.settings();
    this.prune(now, windowMs);
    const headers: Record<string, string> = {};
    if (rpm > 0) {
      const newest = this.admissions.last();
      headers['x-ratelimit-limit-requests'] = String(rpm);
      headers['x-ratelimit-remaining-requests'] = String(Math.max(0, rpm - this.admissions.length));
      headers['x-ratelimit-reset-requests'] = formatDuration(newest === undefined ? 0 : newest + windowMs - now);
    }
    if (tpm > 0) Object.assign(headers, this.tokens.headers('tokens', tpm, windowMs, now));
    if (otpm > 0) Object.assign(headers, this.outputTokens.headers('output-tokens', otpm, windowMs, now));
    return headers;
  }

  /** Forgets the windows; requests in flight keep their slots. */
  reset(): void {
    this.admissions.clear();
    this.tokens.reset();
    this.outputTokens.reset();
    this.requestBucket.reset();
  }

  /** The refusal by a token limit counted over the window, or undefined when the tokens fit. */
  private windowRefusal({ window, kind, limit, tokens }: TokenAsk, windowMs: number, now: number, split: boolean): Rejection | undefined {
    if (limit === 0 || window.used + tokens <= limit) return undefined;
    const { openAi, unit } = TOKEN_LIMITS[kind];
    const anthropic = split ? anthropicWords(limit, unit) : undefined;
    const used = `Limit ${limit}, Used ${window.used}, Requested ${tokens}.`;
    if (tokens > limit) {
      return this.reject(kind, windowMs, `Request too large on ${openAi}: ${used} The input or output tokens must be reduced.`, anthropic);
    }
    return this.reject(kind, window.windowWait(tokens, limit, windowMs, now), `Rate limit reached on ${openAi}: ${used}`, anthropic);
  }

  private reject(limit: LimitKind, waitMs: number, message: string, anthropicMessage?: string): Rejection {
    const retryAfterMs = Number.isFinite(waitMs) ? Math.max(1, Math.ceil(waitMs)) : 1000;
    return { admitted: false, limit, retryAfterMs, message, ...(anthropicMessage === undefined ? {} : { anthropicMessage }) };
  }

  private prune(now: number, windowMs: number): void {
    const cutoff = now - windowMs;
    while ((this.admissions.at(0) ?? Infinity) <= cutoff) this.admissions.shift();
    this.tokens.prune(cutoff);
    this.outputTokens.prune(cutoff);
  }
}
