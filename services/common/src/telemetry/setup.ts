// What the tracing preload (register.ts) sets up, apart from its side effects: the
// instrumentations each service needs, and an exporter made on first use.
import type { Instrumentation } from '@opentelemetry/instrumentation';
import type { ReadableSpan, SpanExporter } from '@opentelemetry/sdk-trace-node';

/* eslint-disable @typescript-eslint/no-require-imports -- loaded only when a service uses them (see below) */
/** Each instrumentation, loaded on demand: importing one costs 50–110 ms of the service's start. */
const INSTRUMENTATIONS: Record<string, () => Instrumentation> = {
  undici: () => new (require('@opentelemetry/instrumentation-undici') as typeof import('@opentelemetry/instrumentation-undici')).UndiciInstrumentation({ ignoreRequestHook: tracedAlready }),
  ioredis: () => new (require('@opentelemetry/instrumentation-ioredis') as typeof import('@opentelemetry/instrumentation-ioredis')).IORedisInstrumentation({ requireParentSpan: true }),
  mongodb: () => new (require('@opentelemetry/instrumentation-mongodb') as typeof import('@opentelemetry/instrumentation-mongodb')).MongoDBInstrumentation(),
  // No grpc instrumentation: the mesh's client factory and handler adapters make each call's spans
  // (../telemetry/grpc.ts). No http or fastify instrumentation: the edge makes each request's server span itself
  // (traceHttpRequest, in ./index.ts), at a fraction of @opentelemetry/instrumentation-http's cost.
  // @fastify/otel added a span for the request (the same as the http span) and one for its handler
  // to every request: half of a /v1 call's spans, made, exported and stored.
};

/**
 * A request that carries a trace context already was traced by its caller: the broker's calls to
 * its LLM provider make their client spans themselves (traceHttpCall, ./http-client.ts), at a
 * fraction of the undici instrumentation's cost, which then traces only the others (the edge's
 * reads of Prometheus and Jaeger, the tool-service's web search).
 */
export function tracedAlready(request: { headers: string | (string | string[])[] }): boolean {
  const h = request.headers;
  if (typeof h === 'string') return /(?:^|\r\n)traceparent:/i.test(h); // undici 5
  for (let i = 0; i < h.length; i += 2) if (String(h[i]).toLowerCase() === 'traceparent') return true;
  return false;
}

/**
 * What each service talks through (OTEL_SERVICE_NAME, as the launcher, the images and the manifests
 * set it): only those are instrumented. Any other name gets them all.
 */
export const SERVICE_INSTRUMENTATIONS: Record<string, string[]> = {
  edge: ['ioredis', 'undici'],
  orchestrator: ['ioredis'],
  'llm-broker': ['ioredis', 'undici'],
  'tool-service': ['ioredis', 'undici'],
  store: ['mongodb'],
};

/**
 * The OTLP exporter, made when the first batch of spans leaves (after the service is serving):
 * importing it costs ~150 ms, and nothing is exported before the first request anyway.
 */
export class DeferredExporter implements SpanExporter {
  private exporter?: SpanExporter;
  constructor(private readonly make: () => SpanExporter) {}

  /** True once the real exporter exists. */
  get made(): boolean {
    return this.exporter !== undefined;
  }

  export(spans: ReadableSpan[], done: Parameters<SpanExporter['export']>[1]): void {
    (this.exporter ??= this.make()).export(spans, done);
  }

  async shutdown(): Promise<void> {
    await this.exporter?.shutdown();
  }

  async forceFlush(): Promise<void> {
    await this.exporter?.forceFlush?.();
  }
}

/** The instrumentations of a service (all of them for a name not in SERVICE_INSTRUMENTATIONS). */
export function instrumentationsFor(service: string): Instrumentation[] {
  return (SERVICE_INSTRUMENTATIONS[service] ?? Object.keys(INSTRUMENTATIONS)).map((name) => INSTRUMENTATIONS[name]!());
}
