// The plugin contract: what one tool file declares. The registry, the invoker and the agents
// (through ListTools) all read the same definition.
import type { PlanStore } from '../store/plan-store';

/** A JSON schema (draft 2020-12 subset that OpenAI function calling accepts). */
export type JsonSchema = Record<string, unknown>;

export interface ToolRateLimit {
  /** Calls running at once across all replicas. */
  maxConcurrent: number;
  /** Calls admitted per rolling minute across all replicas. */
  maxPerMinute: number;
  /** A call running longer is abandoned (its signal aborts) and answered with `timeout`. */
  timeoutMs: number;
}

export interface ToolCallContext {
  userId: string;
  runId: string;
  /** Aborts on timeout or when the caller goes away. */
  signal: AbortSignal;
  /** The user's plans, through the store service. */
  store: PlanStore;
}

/** How a call's cache key is derived: by arguments, by arguments and user, or a custom function. */
export type CacheKeyStrategy = 'params' | 'params+user' | ((args: Record<string, unknown>, ctx: { userId: string }) => string);

export interface ToolCachePolicy {
  enabled: boolean;
  ttlSeconds: number;
  keyStrategy: CacheKeyStrategy;
}

/** Why the real answer could not be had; passed to `fallback`. */
export type FallbackReason = 'breaker_open' | 'rate_limited' | 'timeout' | 'failed';

export interface ToolPlugin<A = Record<string, unknown>> {
  /** The function name agents call: lower snake case. */
  name: string;
  description: string;
  parameters: JsonSchema;
  rateLimit: ToolRateLimit;
  cache: ToolCachePolicy;
  execute(args: A, ctx: ToolCallContext): Promise<unknown>;
  /**
   * A degraded answer for when the tool cannot run (breaker open, refused, failed), or undefined
   * when there is nothing better to offer than the structured error.
   */
  fallback(args: A, reason: FallbackReason): Promise<unknown | undefined>;
  /**
   * Optional pre-warming: `key` names a call worth counting as popular (undefined = don't count),
   * `args` turns a popular or configured key back into arguments.
   */
  prewarm?: { key(args: A): string | undefined; args(key: string): A };
}

/** Thrown by a tool for arguments the schema cannot express (unknown time zone, plan not found):
 * answered as `invalid_arguments` and never counted against the tool's breaker. */
export class ToolInputError extends Error {
  override name = 'ToolInputError';
}

/** Erases a plugin's argument type so that plugins of different tools share one list. */
export function definePlugin<A>(plugin: ToolPlugin<A>): ToolPlugin {
  return plugin as unknown as ToolPlugin;
}
