// Which Redis topology the configuration names: REDIS_CLUSTER_NODES (a Cluster), REDIS_SENTINELS
// (a Sentinel-managed primary), else REDIS_URL (one server).
import { parseHostPorts, type RedisTarget } from '../redis';
import { ConfigError, read, type Env } from './spec';
import { redisVars } from './vars';

export function readRedisTarget(env: Env = process.env): RedisTarget {
  const url = read(redisVars.REDIS_URL, env);
  if (!/^rediss?:\/\//.test(url)) throw new ConfigError(`REDIS_URL must be a redis:// or rediss:// URL, got "${url}"`);
  const sentinels = read(redisVars.REDIS_SENTINELS, env);
  const nodes = read(redisVars.REDIS_CLUSTER_NODES, env);
  if (sentinels && nodes) throw new ConfigError('REDIS_SENTINELS and REDIS_CLUSTER_NODES exclude each other: set one (or neither, for REDIS_URL alone)');
  if (nodes) return { mode: 'cluster', nodes: parseHostPorts(nodes), url };
  if (sentinels) return { mode: 'sentinel', sentinels: parseHostPorts(sentinels), name: read(redisVars.REDIS_SENTINEL_NAME, env), url };
  return { mode: 'single', url };
}
