// One tool call from arguments to outcome: validate → cache → single-flight (process, then
// replicas) → global admission → breaker + timeout → cache the answer. Whatever goes wrong
// becomes a structured outcome the calling agent can read; nothing here throws to the caller.
import type { AcquireResult, Logger, ReplicaLock } from '@agent-mesh/common';
import { ToolInputError, type FallbackReason, type ToolCallContext, type ToolPlugin } from '../tools/contract';
import type { RegisteredTool, ToolRegistry } from '../tools/registry';
import type { PlanStore } from '../store/plan-store';
import { createBreaker, isOpenRejection, stateOf, ToolTimeoutError, type BreakerOptions, type BreakerState, type SharedBreakers, type ToolBreaker } from './breaker';
import { cacheKey } from './cache-key';
import type { ToolMetrics } from './metrics';
import type { ResultCache } from './result-cache';
import { SingleFlight } from './single-flight';

export type ToolErrorCode = 'invalid_arguments' | 'unknown_tool' | 'timeout' | 'rate_limited' | 'failed';

/** A call's outcome before its duration is known. */
export type Decision =
  | { ok: true; resultJson: string; cached: boolean; degraded: boolean; degradedReason: string }
  | { ok: false; error: { code: ToolErrorCode; message: string }; degraded: boolean; degradedReason: string };

export type InvokeOutcome = Decision & { durationMs: number };

/** Admission of one call against a tool's global limits (GlobalLimiter from @agent-mesh/common). */
export interface ToolAdmission {
  tryAcquire(req: { holder: string; tokens: number }): Promise<AcquireResult>;
}

export interface InvokerOptions {
  /** Redis key prefix. */
  prefix: string;
  breaker: BreakerOptions;
  /** Cache TTL multiplier while a tool's breaker is not closed (the runbook's 5 → 30 min). @default 6 */
  degradedTtlFactor: number;
  /** Largest accepted arguments_json, in bytes. @default 65536 */
  maxArgumentsBytes: number;
  /** Whether the LLM upstream is paused: results are then kept `degradedTtlFactor` times longer too. */
  llmPaused?: () => Promise<boolean>;
}

export interface CallRequest {
  toolName: string;
  argumentsJson: string;
  userId: string;
  runId: string;
  /** Aborts when the caller goes away (only for calls whose execution is not shared). */
  signal: AbortSignal;
}

/** The shared execution's answer, before it is shaped for each caller. */
type Produced =
  | { kind: 'result'; json: string; fromCache: boolean }
  | { kind: 'degraded'; json: string; reason: string }
  | { kind: 'error'; code: ToolErrorCode; message: string; reason?: string };

/** Popularity counting for pre-warming (see prewarm/). */
export interface PopularityRecorder {
  record(tool: string, key: string): void;
}

export class ToolInvoker {
  private readonly breakers = new Map<string, ToolBreaker>();
  private readonly flights = new SingleFlight<Produced>();

  constructor(
    private readonly registry: ToolRegistry,
    private readonly admission: (tool: string) => ToolAdmission,
    private readonly cache: ResultCache,
    private readonly lock: ReplicaLock,
    private readonly store: PlanStore,
    private readonly metrics: ToolMetrics,
    private readonly logger: Logger,
    private readonly options: InvokerOptions,
    private readonly popularity?: PopularityRecorder,
    /** Breaker state shared with the other replicas (absent: each replica decides alone). */
    private readonly shared?: SharedBreakers,
  ) {
    for (const plugin of registry.list()) {
      const gauge = (s: BreakerState) => metrics.breakerState.set({ tool: plugin.name }, s === 'closed' ? 0 : s === 'half_open' ? 1 : 2);
      const onState = (s: BreakerState) => {
        gauge(s);
        shared?.onState(plugin.name, s, options.breaker.resetTimeoutMs);
      };
      this.breakers.set(plugin.name, createBreaker(plugin, options.breaker, logger, onState));
      gauge('closed');
    }
  }

  breakerState(tool: string): BreakerState | undefined {
    const b = this.breakers.get(tool);
    return b ? stateOf(b) : undefined;
  }

  async invoke(req: CallRequest): Promise<InvokeOutcome> {
    const started = Date.now();
    const outcome = await this.decide(req);
    const durationMs = Date.now() - started;
    const label = outcome.ok ? (outcome.degraded ? 'degraded' : outcome.cached ? 'cached' : 'ok') : outcome.error.code;
    const tool = this.registry.get(req.toolName) ? req.toolName : '(unknown)';
    this.metrics.calls.inc({ tool, outcome: label });
    this.metrics.latency.observe({ tool, outcome: label }, durationMs / 1000);
    return { ...outcome, durationMs };
  }

  private async decide(req: CallRequest): Promise<Decision> {
    const fail = (code: ToolErrorCode, message: string) => ({ ok: false as const, error: { code, message }, degraded: false, degradedReason: '' });
    const tool = this.registry.get(req.toolName);
    if (!tool) return fail('unknown_tool', `unknown tool "${req.toolName}"; available: ${this.registry.names().join(', ')}`);
    if (Buffer.byteLength(req.argumentsJson) > this.options.maxArgumentsBytes) {
      return fail('invalid_arguments', `arguments are larger than ${this.options.maxArgumentsBytes} bytes`);
    }
    let raw: unknown;
    try {
      raw = req.argumentsJson.trim() === '' ? {} : JSON.parse(req.argumentsJson);
    } catch (err) {
      return fail('invalid_arguments', `arguments are not valid JSON: ${(err as Error).message}`);
    }
    const checked = tool.validate(raw);
    if (!checked.ok) return fail('invalid_arguments', checked.message);
    const args = checked.args;
    const plugin = tool.plugin;

    const popularKey = plugin.prewarm?.key(args);
    if (popularKey && this.popularity) this.popularity.record(plugin.name, popularKey);

    const ctx = { userId: req.userId, runId: req.runId };
    let produced: Produced;
    if (plugin.cache.enabled) {
      const key = cacheKey(this.options.prefix, plugin.name, plugin.cache.keyStrategy, args, req.userId);
      const hit = await this.cache.get(key);
      if (hit !== undefined) {
        this.metrics.cache.inc({ tool: plugin.name, result: 'hit' });
        // While the tool (or the LLM upstream) is down, what we have must last: stretch the entry's life.
        void this.ttlFor(plugin).then(async (ttl) => {
          if (ttl > plugin.cache.ttlSeconds) await this.cache.extend(key, ttl);
        });
        return { ok: true, resultJson: hit, cached: true, degraded: false, degradedReason: '' };
      }
      this.metrics.cache.inc({ tool: plugin.name, result: 'miss' });
      // The shared execution must not die with the first caller: it is aborted once every caller waiting for it has gone.
      const { value, role } = await this.flights.run(key, (signal) => this.produceShared(tool, args, ctx, key, signal), req.signal);
      if (role === 'local_follower') this.metrics.merges.inc({ tool: plugin.name, scope: 'local' });
      produced = value;
    } else {
      produced = await this.produce(tool, args, { ...ctx, signal: req.signal });
    }
    switch (produced.kind) {
      case 'result':
        return { ok: true, resultJson: produced.json, cached: produced.fromCache, degraded: false, degradedReason: '' };
      case 'degraded':
        return { ok: true, resultJson: produced.json, cached: false, degraded: true, degradedReason: produced.reason };
      case 'error':
        return { ok: false, error: { code: produced.code, message: produced.message }, degraded: produced.reason !== undefined, degradedReason: produced.reason ?? '' };
    }
  }

  /** Runs a cacheable call once across replicas and caches its real answer. */
  async produceShared(tool: RegisteredTool, args: Record<string, unknown>, ctx: { userId: string; runId: string }, key: string, signal: AbortSignal): Promise<Produced> {
    const plugin = tool.plugin;
    const timeoutMs = plugin.rateLimit.timeoutMs;
    const turn = await this.lock.turn(`${key}:lock`, { leaseMs: timeoutMs + 1_000, waitMs: timeoutMs, ready: () => this.cache.get(key) });
    if (turn.role === 'follower') {
      this.metrics.merges.inc({ tool: plugin.name, scope: 'replica' });
      return { kind: 'result', json: turn.value, fromCache: true };
    }
    try {
      const produced = await this.produce(tool, args, { ...ctx, signal });
      if (produced.kind === 'result') await this.cache.set(key, produced.json, await this.ttlFor(plugin));
      return produced;
    } finally {
      if (turn.role === 'leader') await turn.release();
    }
  }

  /** Whether a cacheable call's answer is in the cache now (pre-warming skips those). */
  async isCached(tool: RegisteredTool, args: Record<string, unknown>): Promise<boolean> {
    const key = cacheKey(this.options.prefix, tool.plugin.name, tool.plugin.cache.keyStrategy, args, '');
    return this.cache.has(key);
  }

  /** Pre-warming: runs one call through the same admission, breaker and cache as agents' calls. */
  async warm(tool: RegisteredTool, args: Record<string, unknown>): Promise<'filled' | 'fresh' | 'refused' | 'failed'> {
    const key = cacheKey(this.options.prefix, tool.plugin.name, tool.plugin.cache.keyStrategy, args, '');
    if (await this.cache.has(key)) return 'fresh';
    const { value } = await this.flights.run(key, (signal) => this.produceShared(tool, args, { userId: 'prewarm', runId: '' }, key, signal));
    if (value.kind === 'result') return value.fromCache ? 'fresh' : 'filled';
    return value.kind === 'error' && value.code === 'rate_limited' ? 'refused' : 'failed';
  }

  /** The tool's TTL, or `degradedTtlFactor` times it while its breaker is not closed or the LLM upstream is paused. */
  private async ttlFor(plugin: ToolPlugin): Promise<number> {
    const degraded = this.breakerState(plugin.name) !== 'closed' || (await this.options.llmPaused?.()) === true;
    return degraded ? plugin.cache.ttlSeconds * this.options.degradedTtlFactor : plugin.cache.ttlSeconds;
  }

  /** Admission, breaker, timeout and fallback around one real execution. */
  private async produce(tool: RegisteredTool, args: Record<string, unknown>, ctx: Omit<ToolCallContext, 'store'>): Promise<Produced> {
    const plugin = tool.plugin;
    const breaker = this.breakers.get(plugin.name)!;
    // Open here, or on another replica (this replica's own breaker may not have seen the failures).
    if (breaker.opened || (breaker.closed && (await this.shared?.isOpen(plugin.name)))) {
      this.metrics.refusals.inc({ tool: plugin.name, reason: 'breaker_open' });
      return this.fallback(plugin, args, 'breaker_open', `${plugin.name} is temporarily unavailable (circuit open after repeated failures); try again later`);
    }
    const admitted = await this.admission(plugin.name).tryAcquire({ holder: `${plugin.name}:${ctx.runId || ctx.userId}`, tokens: 0 });
    if (!admitted.ok) {
      this.metrics.refusals.inc({ tool: plugin.name, reason: admitted.reason });
      return this.fallback(
        plugin, args, 'rate_limited',
        `${plugin.name} is over its limit (${admitted.reason === 'concurrency' ? 'too many calls at once' : admitted.reason === 'rpm' ? 'calls per minute' : admitted.reason}); retry after ${admitted.retryAfterMs} ms`,
      );
    }
    const lease = admitted.lease;
    const stopKeepAlive = lease.keepAlive();
    try {
      this.metrics.executions.inc({ tool: plugin.name });
      const result = await breaker.fire(args, { ...ctx, store: this.store });
      return { kind: 'result', json: JSON.stringify(result ?? null), fromCache: false };
    } catch (err) {
      if (err instanceof ToolInputError) return { kind: 'error', code: 'invalid_arguments', message: err.message };
      if (isOpenRejection(err)) {
        this.metrics.refusals.inc({ tool: plugin.name, reason: 'breaker_open' });
        return this.fallback(plugin, args, 'breaker_open', `${plugin.name} is temporarily unavailable (circuit open); try again later`);
      }
      if (err instanceof ToolTimeoutError) return this.fallback(plugin, args, 'timeout', err.message);
      this.logger.warn({ tool: plugin.name, err: (err as Error).message }, 'tool failed');
      return this.fallback(plugin, args, 'failed', `${plugin.name} failed: ${(err as Error).message}`);
    } finally {
      stopKeepAlive();
      await lease.release().catch((err: unknown) => this.logger.warn({ err }, 'lease release failed'));
    }
  }

  /** The tool's degraded answer if it has one, else the structured error. */
  private async fallback(plugin: ToolPlugin, args: Record<string, unknown>, reason: FallbackReason, message: string): Promise<Produced> {
    const code: ToolErrorCode = reason === 'breaker_open' ? 'failed' : reason;
    let offered: unknown;
    try {
      offered = await plugin.fallback(args, reason);
    } catch (err) {
      this.logger.warn({ tool: plugin.name, err: (err as Error).message }, 'tool fallback failed');
    }
    if (offered !== undefined) return { kind: 'degraded', json: JSON.stringify(offered), reason: `${reason}: ${message}` };
    return { kind: 'error', code, message, reason: reason === 'breaker_open' ? `${reason}: ${message}` : undefined };
  }
}
