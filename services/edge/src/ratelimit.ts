// Per-user request limit shared by every edge replica: a sliding-window log in one Redis sorted
// set per user, decided atomically by one Lua script on Redis time.
// TODO(quota): move onto the shared primitives of services/common/src/quota once they offer a
// per-key request limiter (today they model the LLM's leases/RPM/TPM).
import type { Logger, Redis } from '@agent-mesh/common';

export type RateDecision = { ok: true; remaining: number } | { ok: false; retryAfterMs: number };

export interface RequestLimiter {
  check(userId: string): Promise<RateDecision>;
}

// KEYS[1] = the user's window; ARGV = limit, window ms, a unique member.
// Returns {1, remaining} when admitted, {0, retryAfterMs} when not.
const SLIDING_WINDOW = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
if count >= limit then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  local retry = window
  if oldest[2] then retry = tonumber(oldest[2]) + window - now end
  return {0, math.max(retry, 1)}
end
redis.call('ZADD', KEYS[1], now, ARGV[3])
redis.call('PEXPIRE', KEYS[1], window)
return {1, limit - count - 1}
`;

interface RateCommands {
  edgeRateLimit(key: string, limit: number, windowMs: number, member: string): Promise<[number, number]>;
}

let seq = 0;

export function redisRequestLimiter(redis: Redis, perMinute: number, logger: Logger): RequestLimiter {
  redis.defineCommand('edgeRateLimit', { numberOfKeys: 1, lua: SLIDING_WINDOW });
  const cmd = redis as unknown as RateCommands;
  const member = () => `${process.pid}-${Date.now()}-${(seq = (seq + 1) % 1e9)}`;
  let warned = false;
  return {
    async check(userId) {
      if (perMinute <= 0) return { ok: true, remaining: Infinity };
      try {
        const [ok, n] = await cmd.edgeRateLimit(`edge:rl:${userId}`, perMinute, 60_000, member());
        warned = false;
        return ok === 1 ? { ok: true, remaining: n } : { ok: false, retryAfterMs: n };
      } catch (err) {
        // Fail open: a Redis outage must not lock every user out; the broker still guards the
        // expensive resource (the upstream quota).
        if (!warned) logger.warn({ err: (err as Error).message }, 'rate limiter unavailable: admitting requests');
        warned = true;
        return { ok: true, remaining: perMinute };
      }
    },
  };
}

/** An in-process limiter (tests, or an edge without Redis). */
export function memoryRequestLimiter(perMinute: number, now: () => number = Date.now): RequestLimiter {
  const windows = new Map<string, number[]>();
  return {
    async check(userId) {
      if (perMinute <= 0) return { ok: true, remaining: Infinity };
      const t = now();
      const w = (windows.get(userId) ?? []).filter((x) => x > t - 60_000);
      if (w.length >= perMinute) {
        windows.set(userId, w);
        return { ok: false, retryAfterMs: Math.max(1, w[0]! + 60_000 - t) };
      }
      w.push(t);
      windows.set(userId, w);
      return { ok: true, remaining: perMinute - w.length };
    },
  };
}
