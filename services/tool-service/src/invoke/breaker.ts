// One opossum breaker per tool around its execution (with the tool's timeout). Argument errors
// raised by the tool do not count as failures: they say nothing about the tool's health.
import CircuitBreaker from 'opossum';
import type { Logger, Redis } from '@agent-mesh/common';
import { ToolInputError, type ToolCallContext, type ToolPlugin } from '../tools/contract';

export interface BreakerOptions {
  /** Failure share (%) in the rolling window that opens the breaker. @default 50 */
  errorThresholdPercentage: number;
  /** Calls in the window before the breaker may open. @default 5 */
  volumeThreshold: number;
  /** How long it stays open before one half-open probe. @default 30000 */
  resetTimeoutMs: number;
  /** Rolling statistics window. @default 10000 */
  rollingWindowMs: number;
}

export type BreakerState = 'closed' | 'half_open' | 'open';

export class ToolTimeoutError extends Error {
  override name = 'ToolTimeoutError';
}

/** Runs the tool with its timeout: the call's signal aborts and the promise rejects at the deadline. */
export async function executeWithTimeout(plugin: ToolPlugin, args: Record<string, unknown>, ctx: ToolCallContext, timeoutMs: number): Promise<unknown> {
  const controller = new AbortController();
  const onOuterAbort = () => controller.abort(ctx.signal.reason);
  if (ctx.signal.aborted) controller.abort(ctx.signal.reason);
  else ctx.signal.addEventListener('abort', onOuterAbort, { once: true });
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      plugin.execute(args, { ...ctx, signal: controller.signal }),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => {
          const err = new ToolTimeoutError(`${plugin.name} did not answer within ${timeoutMs} ms`);
          controller.abort(err);
          reject(err);
        }, timeoutMs);
      }),
    ]);
  } finally {
    if (timer) clearTimeout(timer);
    ctx.signal.removeEventListener('abort', onOuterAbort);
  }
}

export type ToolBreaker = CircuitBreaker<[Record<string, unknown>, ToolCallContext], unknown>;

export function createBreaker(
  plugin: ToolPlugin,
  options: BreakerOptions,
  logger: Logger,
  onState: (state: BreakerState) => void,
): ToolBreaker {
  const breaker = new CircuitBreaker(
    (args: Record<string, unknown>, ctx: ToolCallContext) => executeWithTimeout(plugin, args, ctx, plugin.rateLimit.timeoutMs),
    {
      name: plugin.name,
      timeout: false, // executeWithTimeout owns the deadline so that it can abort the work
      errorThresholdPercentage: options.errorThresholdPercentage,
      volumeThreshold: options.volumeThreshold,
      resetTimeout: options.resetTimeoutMs,
      rollingCountTimeout: options.rollingWindowMs,
      rollingCountBuckets: 10,
      // Bad input, or a call its callers gave up on, says nothing about the tool's health.
      // (opossum passes the call's arguments after the error: the tool's args, then its context.)
      errorFilter: (err: unknown, ...call: unknown[]) => err instanceof ToolInputError || (call[1] as ToolCallContext | undefined)?.signal.aborted === true,
    },
  );
  breaker.on('open', () => {
    logger.warn({ tool: plugin.name, resetTimeoutMs: options.resetTimeoutMs }, 'tool breaker opened');
    onState('open');
  });
  breaker.on('halfOpen', () => {
    logger.info({ tool: plugin.name }, 'tool breaker half-open: probing');
    onState('half_open');
  });
  breaker.on('close', () => {
    logger.info({ tool: plugin.name }, 'tool breaker closed');
    onState('closed');
  });
  return breaker;
}

export function stateOf(breaker: ToolBreaker): BreakerState {
  if (breaker.opened) return 'open';
  if (breaker.halfOpen) return 'half_open';
  return 'closed';
}

/** True for opossum's "breaker is open" rejection. */
export function isOpenRejection(err: unknown): boolean {
  return (err as { code?: unknown })?.code === 'EOPENBREAKER';
}

/**
 * A tool's breaker state shared by its replicas through Redis: a breaker that opens on one replica
 * makes every replica fail fast (with the tool's fallback) until its reset timeout, instead of each
 * replica paying its own volumeThreshold of failures against a broken backend. The replica that
 * opened it probes (half-open) and clears the mark when the tool answers again; if the probe fails,
 * it opens and marks again. Redis trouble never fails a call: each replica then decides alone.
 */
export class SharedBreakers {
  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
    private readonly logger: Logger,
  ) {}

  private key(tool: string): string {
    return `${this.prefix}:breaker:${tool}`;
  }

  /** True while some replica's breaker for the tool is open (its mark has not expired). */
  async isOpen(tool: string): Promise<boolean> {
    try {
      return (await this.redis.exists(this.key(tool))) === 1;
    } catch (err) {
      this.logger.debug({ tool, err: (err as Error).message }, 'shared breaker read failed');
      return false;
    }
  }

  /** Called by the breaker's state changes on this replica. */
  onState(tool: string, state: BreakerState, openMs: number): void {
    const done = state === 'open' ? this.redis.set(this.key(tool), '1', 'PX', openMs) : state === 'closed' ? this.redis.del(this.key(tool)) : undefined;
    done?.catch((err: unknown) => this.logger.warn({ tool, state, err: (err as Error).message }, 'shared breaker write failed'));
  }
}
