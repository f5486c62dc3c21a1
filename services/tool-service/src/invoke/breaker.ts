// One opossum breaker per tool around its execution (with the tool's timeout). Argument errors
// raised by the tool do not count as failures: they say nothing about the tool's health.
import CircuitBreaker from 'opossum';
import type { Logger } from '@agent-mesh/common';
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
      errorFilter: (err: unknown) => err instanceof ToolInputError,
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
