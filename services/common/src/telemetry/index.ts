// Span helpers for the domain: attributes named once, so that traces can be searched by run.
import { context, propagation, SpanStatusCode, trace, type Attributes, type Span } from '@opentelemetry/api';

export { traceHttpRequest } from './http-server';
export { traceHttpCall, type HttpCallSpan } from './http-client';

export const ATTR = {
  runId: 'mesh.run_id',
  conversationId: 'mesh.conversation_id',
  agentRole: 'mesh.agent_role',
  userId: 'mesh.user_id',
  tool: 'mesh.tool',
} as const;

export function tracer(name: string) {
  return trace.getTracer(name);
}

/** Runs `fn` inside a new active span, ending it (and recording any error) when `fn` settles. */
export async function withSpan<T>(name: string, attributes: Attributes, fn: (span: Span) => Promise<T>): Promise<T> {
  return tracer('agent-mesh').startActiveSpan(name, { attributes }, async (span) => {
    try {
      return await fn(span);
    } catch (err) {
      span.recordException(err as Error);
      span.setStatus({ code: SpanStatusCode.ERROR, message: (err as Error).message });
      throw err;
    } finally {
      span.end();
    }
  });
}

/** Adds attributes to the active span, if any. */
export function annotate(attributes: Attributes): void {
  trace.getActiveSpan()?.setAttributes(attributes);
}

/** The trace id of the active span (32 lowercase hex digits); undefined when nothing is traced. */
export function currentTraceId(): string | undefined {
  const ctx = trace.getActiveSpan()?.spanContext();
  return ctx && trace.isSpanContextValid(ctx) ? ctx.traceId : undefined;
}

/** Serialises the active trace context (W3C traceparent) so that work resumed later joins the trace. */
export function captureTraceContext(): Record<string, string> {
  const carrier: Record<string, string> = {};
  propagation.inject(context.active(), carrier);
  return carrier;
}

/** Runs `fn` in the trace context captured by `captureTraceContext`. */
export function withTraceContext<T>(carrier: Record<string, string> | undefined, fn: () => T): T {
  if (!carrier) return fn();
  return context.with(propagation.extract(context.active(), carrier), fn);
}

let shutdownSdk: (() => Promise<void>) | undefined;

/** Called by register.ts (the `--require`d SDK start) with the SDK's shutdown. */
export function setTelemetryShutdown(shutdown: () => Promise<void>): void {
  shutdownSdk = shutdown;
}

/**
 * Exports the spans still buffered and stops the tracing SDK; does nothing when telemetry was not
 * started (no `--require`, or OTEL_SDK_DISABLED=true). Passed to runService as its last phase.
 */
export async function flushTelemetry(): Promise<void> {
  await shutdownSdk?.();
}
