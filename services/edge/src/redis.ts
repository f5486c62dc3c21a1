// The edge's Redis client: its calls' checks (rate limit, budget) and, with EDGE_INLINE_BROKER, the
// broker's admissions and settlements go over it, on every call's path.
import { createRedis, type Logger, type Redis, type RedisTarget } from '@agent-mesh/common';

/**
 * The commands of one turn of the event loop (the checks and admissions of many calls) leave in one
 * write (coalesceWrites, not on a Cluster: see createRedis), as the broker's own client does. Not
 * ioredis' auto-pipelining: it holds a turn's batch back while the one before is unanswered, a call's
 * admission behind other calls' settlements.
 */
export function edgeRedis(target: RedisTarget, logger: Logger): Redis {
  return createRedis(target, logger, { coalesceWrites: true });
}
