// The LLM response cache, shared by every broker replica through Redis. An answer is stored under
// a hash of everything that decides it (the upstream that is asked first, model, messages, tools,
// max_tokens, temperature), is fresh for the TTL, then kept for a stale window in which it is served only
// while the upstream refuses (paused or breaker open). Identical concurrent misses make one
// upstream call: ReplicaLock elects one leader per key, the others wait for its answer.
import { createHash } from 'node:crypto';
import { canonicalJson, f32leBytes, f32leFloats, ReplicaLock, withTimeout, type Redis, type Turn } from '@agent-mesh/common';
import type { LogprobOut, ProviderRequest, ToolCallOut, UsageOut } from '../upstream/provider';

/** One complete answer, as the upstream streamed it. */
export interface CachedAnswer {
  deltas: string[];
  /** Each delta's tokens' log probabilities (null where it had none), when the call asked for them. */
  logprobs?: (LogprobOut[] | null)[];
  finishReason: string;
  /** The stop sequence that ended it, where the upstream said which. */
  stopSequence?: string;
  toolCalls: ToolCallOut[];
  model: string;
  /** What the upstream billed for it: what a hit saves. */
  usage: UsageOut;
  /** The upstream that answered (LLM_UPSTREAMS' name; absent in answers stored before it was kept). */
  upstream?: string;
  /** When it was stored (ms since the epoch). */
  storedAt: number;
}

/** One input's vector from the cache, with the input's tokens (what reusing it saved). */
export interface CachedVector {
  vector: Float32Array;
  tokens: number;
  ageMs: number;
  /** Within the TTL; an older one is served only while the upstreams refuse (stale). */
  fresh: boolean;
}

export interface Found {
  answer: CachedAnswer;
  ageMs: number;
  /** Within the TTL. */
  fresh: boolean;
}

export interface ResponseCacheOptions {
  /** Key prefix in Redis. */
  prefix: string;
  /** How long an answer is served as a hit. */
  ttlMs: number;
  /** How long after the TTL it may still be served, marked stale, while the upstream refuses. */
  staleMs: number;
  /** The single-flight lock's lease (a dead leader's followers take over after at most this). */
  lockMs: number;
  /** Longest a follower waits for the leader's answer before calling the upstream itself. */
  waitMs: number;
  /** Time limit of each Redis command. @default 500 */
  redisTimeoutMs?: number;
}

const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');

export class ResponseCache {
  private readonly lock: ReplicaLock;
  private readonly redisTimeoutMs: number;

  constructor(
    private readonly redis: Redis,
    private readonly o: ResponseCacheOptions,
  ) {
    this.redisTimeoutMs = o.redisTimeoutMs ?? 500;
    this.lock = new ReplicaLock(redis, { pollMs: Math.min(100, Math.max(10, o.lockMs / 4)), redisTimeoutMs: this.redisTimeoutMs });
  }

  /**
   * The key of one call to `upstream` (its protocol and URL: the same model name at another
   * provider is another answer): equal for calls the provider would answer alike.
   */
  keyOf(upstream: string, req: ProviderRequest): string {
    // Every field of the call but `stream` (the same answer, whole or streamed), the end user's
    // name (users share answers) and the provider's prompt-cache hint; a field left unset is left out of the canonical JSON, so the keys
    // of calls without the optional parameters stay what they were before those existed, and a
    // parameter added later is in the key by itself.
    const { stream: _stream, endUser: _endUser, promptCacheKey: _promptCacheKey, ...decisive } = req;
    return `${this.o.prefix}:${sha256(canonicalJson({ upstream, ...decisive, temperature: req.temperature ?? null }))}`;
  }

  /** Closes the connection that hears the single-flight leaders' releases, if one was opened. */
  close(): void {
    this.lock.close();
  }

  /** The stored answer, fresh or stale; rejects when Redis is unavailable. */
  async get(key: string): Promise<Found | undefined> {
    const json = await withTimeout(this.redis.get(key), this.redisTimeoutMs, 'redis');
    if (json === null) return undefined;
    const answer = JSON.parse(json) as CachedAnswer;
    const ageMs = Math.max(0, Date.now() - answer.storedAt);
    return { answer, ageMs, fresh: ageMs < this.o.ttlMs };
  }

  async put(key: string, answer: CachedAnswer): Promise<void> {
    const lifeMs = Math.max(1, Math.ceil(this.o.ttlMs + this.o.staleMs));
    await withTimeout(this.redis.set(key, JSON.stringify(answer), 'PX', lifeMs), this.redisTimeoutMs, 'redis');
  }

  /**
   * The key of one embeddings input for `upstream` (as keyOf): the model, the vectors' size
   * (`dimensions`, 0: the model's own) and the input, a text or its token ids.
   */
  embeddingKeyOf(upstream: string, model: string, dimensions: number, input: string | number[]): string {
    return `${this.o.prefix}:emb:${sha256(canonicalJson({ upstream, model, dimensions, input }))}`;
  }

  /**
   * The stored vector of each key, fresh or stale (undefined where none is, or an entry is not
   * one); rejects when Redis is unavailable. One command per key, written together: the keys of a
   * Redis Cluster lie in any slot.
   */
  async getVectors(keys: readonly string[]): Promise<(CachedVector | undefined)[]> {
    const values = await withTimeout(Promise.all(keys.map((k) => this.redis.getBuffer(k))), this.redisTimeoutMs, 'redis');
    const now = Date.now();
    return values.map((v) => {
      const e = v ? vectorEntry(v) : undefined;
      if (!e) return undefined;
      const ageMs = Math.max(0, now - e.storedAt);
      return { vector: e.vector, tokens: e.tokens, ageMs, fresh: ageMs < this.o.ttlMs };
    });
  }

  /** Stores each vector for the TTL and the stale window after it, as answers are. */
  async putVectors(entries: readonly { key: string; vector: Float32Array; tokens: number }[]): Promise<void> {
    const lifeMs = Math.max(1, Math.ceil(this.o.ttlMs + this.o.staleMs));
    const storedAt = Date.now();
    await withTimeout(Promise.all(entries.map((e) => this.redis.set(e.key, vectorValue(e.vector, e.tokens, storedAt), 'PX', lifeMs))), this.redisTimeoutMs, 'redis');
  }

  /** Single flight for a missed key: lead (call the upstream), follow (a fresh answer), or go alone. */
  turn(key: string, signal: AbortSignal, deadline?: number): Promise<Turn<Found>> {
    return this.lock.turn<Found>(`${key}:lock`, {
      ...this.waiting(signal, deadline),
      ready: async () => {
        const found = await this.get(key);
        return found?.fresh ? found : undefined;
      },
    });
  }

  /**
   * Single flight for the inputs of an embeddings call that were not found: lead (embed them),
   * follow (an identical call's vectors, once all are stored), or go alone. Keyed by those inputs'
   * keys together: calls that share only some inputs do not wait for each other.
   */
  vectorsTurn(keys: readonly string[], signal: AbortSignal, deadline?: number): Promise<Turn<CachedVector[]>> {
    return this.lock.turn<CachedVector[]>(`${this.o.prefix}:emb:${sha256(keys.join(' '))}:lock`, {
      ...this.waiting(signal, deadline),
      ready: async () => {
        const found = await this.getVectors(keys);
        return found.every((f) => f?.fresh) ? (found as CachedVector[]) : undefined;
      },
    });
  }

  /** A follower waits at most LLM_CACHE_WAIT_MS, and not past the call's deadline. */
  private waiting(signal: AbortSignal, deadline?: number) {
    const waitMs = Math.max(0, Math.min(this.o.waitMs, deadline === undefined ? Infinity : deadline - Date.now()));
    return { leaseMs: this.o.lockMs, waitMs, signal };
  }
}

/** A vector as stored: the input's tokens (uint32), when it was stored (float64, ms), then the components (float32); little-endian. */
function vectorValue(vector: Float32Array, tokens: number, storedAt: number): Buffer {
  const b = Buffer.allocUnsafe(HEADER + vector.length * 4);
  b.writeUInt32LE(tokens, 0);
  b.writeDoubleLE(storedAt, 4);
  f32leBytes(vector).copy(b, HEADER);
  return b;
}

const HEADER = 12;

function vectorEntry(b: Buffer): { vector: Float32Array; tokens: number; storedAt: number } | undefined {
  if (b.length < HEADER + 4 || (b.length - HEADER) % 4 !== 0) return undefined;
  return { vector: f32leFloats(b.subarray(HEADER)), tokens: b.readUInt32LE(0), storedAt: b.readDoubleLE(4) };
}
