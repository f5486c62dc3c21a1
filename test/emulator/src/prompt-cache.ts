// Prompt caching, as the providers do it and report it. Anthropic caches what a request marks: the
// prefix up to each block with `cache_control` (in its order: tools, system, messages), read back
// by a later request whose prompt starts the same way, and reported as tokens written to and read
// from the cache beside the uncached input. OpenAI caches every prompt of 1024 tokens or more on its
// own, in steps of 128 tokens, and reports the part read as `cached_tokens`. A prefix is kept for
// its lifetime (5 minutes, or an hour), renewed by each use; shorter prefixes are never cached.
import { createHash } from 'node:crypto';
import type { ChatCompletionRequest } from './request';
import { promptTokenStream } from './tokens';

/** A breakpoint's lifetime (Anthropic's `cache_control.ttl`; absent: 5m). */
export type CacheTtl = '5m' | '1h';
export const CACHE_TTL_MS: Record<CacheTtl, number> = { '5m': 5 * 60_000, '1h': 60 * 60_000 };

/** The steps of OpenAI's cached prefixes beyond the first (the minimum): "increments of 128 tokens". */
export const OPENAI_CACHE_STEP = 128;
/** Anthropic checks for hits at the block boundaries up to about 20 blocks before each breakpoint. */
export const LOOKBACK_BLOCKS = 20;
/** Entries kept, the least recently used dropped first: OpenAI keeps one per step of each prompt. */
const ANTHROPIC_ENTRIES = 10_000;
const OPENAI_ENTRIES = 100_000;

/** How a prompt's tokens split by the cache, as the provider reports them. */
export interface CacheUse {
  /** Read from the cache: Anthropic's `cache_read_input_tokens`, OpenAI's `cached_tokens`. */
  read: number;
  /** Written to it: Anthropic's `cache_creation_input_tokens` (OpenAI reports none). */
  creation: number;
  /** Of `creation`, the tokens of entries kept for an hour (`cache_creation.ephemeral_1h_input_tokens`). */
  creation1h: number;
}

/** A request's use of the cache, decided on arrival: its split, and what it stores once admitted. */
export interface CachePlan extends CacheUse {
  /** Stores (or renews) the request's prefixes: only once it is admitted. */
  commit(): void;
}

export const NO_CACHE: CachePlan = { read: 0, creation: 0, creation1h: 0, commit: () => undefined };

/**
 * A place in an Anthropic prompt where a cached prefix may end: after a tool, a system block or a
 * message's content block (messages-request.ts makes them).
 */
export interface CacheBoundary {
  /** A digest of the prompt up to and including the block, its `cache_control` left out (the model is added to it for the key). */
  digest: string;
  /** The block's `cache_control`: a breakpoint, with its lifetime. */
  ttl: CacheTtl | undefined;
  /** The prompt tokens up to and including the block: the request cut after it, counted as a whole prompt is (countPromptTokens). */
  tokens(): number;
}

interface Entry {
  expiresAt: number;
  ttlMs: number;
}

/** Cached prefixes by key, each until its lifetime runs out; the least recently used go first past `capacity`. */
export class PrefixStore {
  private readonly entries = new Map<string, Entry>();

  constructor(
    private readonly capacity: number,
    private readonly now: () => number = Date.now,
  ) {}

  get size(): number {
    return this.entries.size;
  }

  /** Whether `key` is cached now. Looking does not renew it: only an admitted request does (`put`). */
  has(key: string): boolean {
    const entry = this.entries.get(key);
    if (entry === undefined) return false;
    if (entry.expiresAt > this.now()) return true;
    this.entries.delete(key);
    return false;
  }

  /**
   * Stores `key` for `ttlMs`, or renews it: for its own lifetime when `ttlMs` is not given (a read),
   * never for less than it had left (an hour's entry written again with 5 minutes keeps its hour).
   */
  put(key: string, ttlMs?: number): void {
    const old = this.entries.get(key);
    const ttl = Math.max(ttlMs ?? 0, old?.ttlMs ?? 0);
    if (ttl <= 0) return;
    this.entries.delete(key); // the Map's order is the eviction order
    this.entries.set(key, { expiresAt: Math.max(this.now() + ttl, old?.expiresAt ?? 0), ttlMs: ttl });
    if (this.entries.size > this.capacity) {
      const oldest = this.entries.keys().next();
      if (oldest.done !== true) this.entries.delete(oldest.value);
    }
  }

  clear(): void {
    this.entries.clear();
  }
}

export interface CacheSettings {
  /** The shortest prefix cached (and read). */
  minTokens: number;
  /** Multiplies the lifetimes, as it does the rate windows. */
  timeScale: number;
}

const keyOf = (model: string, digest: string): string => createHash('sha256').update(model).update('\0').update(digest).digest('base64url');

/**
 * Anthropic's cache for one request of `totalTokens` prompt tokens whose block boundaries are
 * `boundaries` (none marked: no caching). The read is the longest cached prefix ending at a
 * breakpoint or at one of the 20 boundaries before one; the creation, the tokens from there to the
 * last breakpoint when its prefix is long enough; once admitted, every breakpoint's prefix long
 * enough is stored or renewed for its lifetime, and the one read renewed. Prefix counts are capped
 * at the total, so that input + creation + read is the total exactly.
 */
export function anthropicCachePlan(boundaries: readonly CacheBoundary[], model: string, totalTokens: number, store: PrefixStore, settings: CacheSettings): CachePlan {
  const breakpoints = boundaries.flatMap((b, i) => (b.ttl === undefined ? [] : [i]));
  const last = breakpoints.at(-1);
  // A prefix is never longer than the prompt: a prompt under the minimum caches nothing.
  if (last === undefined || totalTokens < settings.minTokens) return NO_CACHE;
  const counted = new Map<number, number>();
  const tokensAt = (i: number): number => {
    let n = counted.get(i);
    if (n === undefined) counted.set(i, (n = Math.min(totalTokens, Math.max(0, boundaries[i]!.tokens()))));
    return n;
  };
  const keys = new Map<number, string>();
  const key = (i: number): string => {
    let k = keys.get(i);
    if (k === undefined) keys.set(i, (k = keyOf(model, boundaries[i]!.digest)));
    return k;
  };

  let readAt: number | undefined;
  for (let i = last, next = breakpoints.length - 1; i >= 0; i--) {
    // The breakpoint this boundary is looked up for: the first at or after it.
    while (next > 0 && breakpoints[next - 1]! >= i) next--;
    if (breakpoints[next]! - i > LOOKBACK_BLOCKS) {
      if (next === 0) break;
      continue;
    }
    if (store.has(key(i)) && tokensAt(i) >= settings.minTokens) {
      readAt = i;
      break;
    }
  }
  const read = readAt === undefined ? 0 : tokensAt(readAt);
  const written = breakpoints.filter((i) => tokensAt(i) >= settings.minTokens);
  let creation = 0;
  let creation1h = 0;
  if (tokensAt(last) >= settings.minTokens) {
    creation = Math.max(0, tokensAt(last) - read);
    // Each breakpoint's entry holds what lies between the previous one (or the read) and it.
    let from = read;
    for (const i of breakpoints) {
      if (tokensAt(i) <= from) continue;
      if (boundaries[i]!.ttl === '1h') creation1h += tokensAt(i) - from;
      from = tokensAt(i);
    }
    creation1h = Math.min(creation1h, creation);
  }
  return {
    read,
    creation,
    creation1h,
    commit: () => {
      if (readAt !== undefined) store.put(key(readAt));
      for (const i of written) store.put(key(i), CACHE_TTL_MS[boundaries[i]!.ttl!] * settings.timeScale);
    },
  };
}

/**
 * OpenAI's cache for one chat request of `totalTokens` prompt tokens: its token stream (tokens.ts)
 * cut at the minimum and every 128 tokens after it, each prefix keyed by the model and its tokens;
 * the read is the longest of them cached; once admitted, all are stored or renewed, for 5 minutes.
 * Only a prompt of at least the minimum is tokenized.
 */
export function openAiCachePlan(request: Pick<ChatCompletionRequest, 'messages' | 'tools'>, model: string, totalTokens: number, store: PrefixStore, settings: CacheSettings): CachePlan {
  if (totalTokens < settings.minTokens) return NO_CACHE;
  const stream = Int32Array.from(promptTokenStream(request));
  const length = Math.min(totalTokens, stream.length);
  const hash = createHash('sha256').update(model).update('\0');
  const prefixes: { tokens: number; key: string }[] = [];
  let hashed = 0;
  for (let end = settings.minTokens; end <= length; end += OPENAI_CACHE_STEP) {
    if (end === 0) continue;
    hash.update(new Uint8Array(stream.buffer, hashed * 4, (end - hashed) * 4));
    hashed = end;
    prefixes.push({ tokens: end, key: hash.copy().digest('base64url') });
  }
  let read = 0;
  for (let i = prefixes.length - 1; i >= 0; i--) {
    if (store.has(prefixes[i]!.key)) {
      read = prefixes[i]!.tokens;
      break;
    }
  }
  return {
    read,
    creation: 0,
    creation1h: 0,
    commit: () => {
      for (const p of prefixes) store.put(p.key, CACHE_TTL_MS['5m'] * settings.timeScale);
    },
  };
}

/** The emulator's caches, one per provider (their prefixes are keyed apart). */
export class PromptCaches {
  readonly anthropic: PrefixStore;
  readonly openAi: PrefixStore;

  constructor(now: () => number = Date.now) {
    this.anthropic = new PrefixStore(ANTHROPIC_ENTRIES, now);
    this.openAi = new PrefixStore(OPENAI_ENTRIES, now);
  }

  clear(): void {
    this.anthropic.clear();
    this.openAi.clear();
  }
}
