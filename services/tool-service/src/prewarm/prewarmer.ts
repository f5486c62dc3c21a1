// Pre-warming: on a schedule, fill the cache for the configured hot queries and the most frequent
// recent ones (counted in Redis sorted sets, one per hour, so old fashions fade). Each call goes
// through the tool's own admission: a refusal ends the round, so warming never eats the quota
// agents need beyond what the limiter allows. One replica warms per round (a Redis lock).
import type { Logger, Redis } from '@agent-mesh/common';
import type { ToolInvoker, PopularityRecorder } from '../invoke/invoker';
import type { ToolMetrics } from '../invoke/metrics';
import type { ToolRegistry } from '../tools/registry';

const HOUR_MS = 3_600_000;
/** Distinct keys kept per hourly set. */
const MAX_TRACKED = 1_000;

export class RedisPopularity implements PopularityRecorder {
  private writes = 0;

  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
    private readonly logger: Logger,
  ) {}

  /** A tool's hourly sets share the hash tag `{popular:<tool>}`: ZUNIONSTORE needs them (and its target) in one cluster slot. */
  bucket(tool: string, hour: number): string {
    return `${this.prefix}:{popular:${tool}}:${hour}`;
  }

  unionKey(tool: string): string {
    return `${this.prefix}:{popular:${tool}}:tmp:${process.pid}:${Date.now()}`;
  }

  record(tool: string, key: string): void {
    const k = this.bucket(tool, Math.floor(Date.now() / HOUR_MS));
    const pipe = this.redis.multi().zincrby(k, 1, key).pexpire(k, 3 * HOUR_MS);
    // Trim now and then rather than on every call.
    if (++this.writes % 100 === 0) pipe.zremrangebyrank(k, 0, -MAX_TRACKED - 1);
    pipe.exec().catch((err: unknown) => this.logger.debug({ err }, 'popularity count failed'));
  }

  /** The `limit` most frequent keys of this hour and the last. */
  async top(tool: string, limit: number): Promise<string[]> {
    if (limit <= 0) return [];
    const hour = Math.floor(Date.now() / HOUR_MS);
    const tmp = this.unionKey(tool);
    const res = await this.redis
      .multi()
      .zunionstore(tmp, 2, this.bucket(tool, hour), this.bucket(tool, hour - 1))
      .zrevrange(tmp, 0, limit - 1)
      .del(tmp)
      .exec();
    const range = res?.[1]?.[1];
    return Array.isArray(range) ? range.map(String) : [];
  }
}

export interface PrewarmOptions {
  intervalMs: number;
  /** Configured hot keys per tool (TOOL_PREWARM_QUERIES go to search_web). */
  configured: Record<string, string[]>;
  /** Most frequent recent keys added per tool and round. @default 20 */
  topRecent: number;
  prefix: string;
}

export class Prewarmer {
  private timer?: NodeJS.Timeout;
  private running?: Promise<void>;
  private stopped = false;

  constructor(
    private readonly registry: ToolRegistry,
    private readonly invoker: ToolInvoker,
    private readonly popularity: RedisPopularity,
    private readonly redis: Redis,
    private readonly metrics: ToolMetrics,
    private readonly logger: Logger,
    private readonly options: PrewarmOptions,
  ) {}

  start(firstDelayMs = 0): void {
    const tick = () => {
      if (this.stopped) return;
      this.running = this.round()
        .then(() => undefined)
        .catch((err: unknown) => this.logger.warn({ err }, 'pre-warming round failed'))
        .finally(() => {
          if (!this.stopped) this.timer = setTimeout(tick, this.options.intervalMs);
        });
    };
    this.timer = setTimeout(tick, firstDelayMs);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    await this.running;
  }

  /** One pass over every tool that can be pre-warmed; returns what happened per key. */
  async round(): Promise<Record<string, string>> {
    const report: Record<string, string> = {};
    // Only one replica warms per interval; the others would find the cache fresh anyway.
    const lockKey = `${this.options.prefix}:prewarm:lock`;
    const got = await this.redis.set(lockKey, String(process.pid), 'PX', Math.max(1_000, Math.floor(this.options.intervalMs * 0.8)), 'NX');
    if (got !== 'OK') return report;
    for (const plugin of this.registry.list()) {
      if (!plugin.prewarm || !plugin.cache.enabled) continue;
      const tool = this.registry.get(plugin.name)!;
      const keys = [...new Set([...(this.options.configured[plugin.name] ?? []), ...(await this.popularity.top(plugin.name, this.options.topRecent))])];
      for (const key of keys) {
        const checked = tool.validate(plugin.prewarm.args(key));
        if (!checked.ok) {
          report[key] = 'invalid';
          continue;
        }
        const result = await this.invoker.warm(tool, checked.args);
        this.metrics.prewarm.inc({ tool: plugin.name, result });
        report[key] = result;
        if (result === 'refused') {
          this.logger.info({ tool: plugin.name, key }, 'pre-warming stopped for this round: tool at its limit');
          break;
        }
        if (this.stopped) return report;
      }
    }
    this.logger.info({ keys: Object.keys(report).length, filled: Object.values(report).filter((r) => r === 'filled').length }, 'pre-warming round done');
    return report;
  }
}
