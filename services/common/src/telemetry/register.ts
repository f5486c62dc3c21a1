// Loaded with `node --require` before any application module so that the instrumentations can
// patch http, grpc-js, undici, ioredis, mongodb and fastify as they load. Exports OTLP over HTTP.
//
// A tracer provider and the six instrumentations, not `@opentelemetry/sdk-node`: the NodeSDK also
// loads every exporter, the metrics and logs SDKs and their detectors, which doubled the time a
// service takes to start (it is on every replica's path to SERVING) for nothing the mesh uses.
// `register()` installs the same AsyncLocalStorage context manager and W3C trace-context and
// baggage propagators, and the sampler comes from OTEL_TRACES_SAMPLER(_ARG) as before.
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { registerInstrumentations } from '@opentelemetry/instrumentation';
import { BatchSpanProcessor, NodeTracerProvider } from '@opentelemetry/sdk-trace-node';
import { GrpcInstrumentation } from '@opentelemetry/instrumentation-grpc';
import { HttpInstrumentation } from '@opentelemetry/instrumentation-http';
import { UndiciInstrumentation } from '@opentelemetry/instrumentation-undici';
import { IORedisInstrumentation } from '@opentelemetry/instrumentation-ioredis';
import { MongoDBInstrumentation } from '@opentelemetry/instrumentation-mongodb';
import { FastifyOtelInstrumentation } from '@fastify/otel';
import { envDetector, detectResources, resourceFromAttributes } from '@opentelemetry/resources';
import { ATTR_SERVICE_NAME } from '@opentelemetry/semantic-conventions';
import { processVars, read } from '../config';
import { setTelemetryShutdown } from './index';

const enabled = !read(processVars.OTEL_SDK_DISABLED);

if (enabled) {
  const endpoint = read(processVars.OTEL_EXPORTER_OTLP_ENDPOINT).replace(/\/$/, '');
  const provider = new NodeTracerProvider({
    // OTEL_RESOURCE_ATTRIBUTES too (envDetector); the service's name wins.
    resource: detectResources({ detectors: [envDetector] }).merge(
      resourceFromAttributes({ [ATTR_SERVICE_NAME]: read(processVars.OTEL_SERVICE_NAME) }),
    ),
    spanProcessors: [
      new BatchSpanProcessor(new OTLPTraceExporter({ url: `${endpoint}/v1/traces` }), {
        scheduledDelayMillis: read(processVars.OTEL_BSP_SCHEDULE_DELAY),
      }),
    ],
  });
  provider.register();
  registerInstrumentations({
    tracerProvider: provider,
    instrumentations: [
      new HttpInstrumentation({
        // Health checks and metric scrapes are not worth a trace each.
        ignoreIncomingRequestHook: (req) => /^\/(api\/health|metrics|health)/.test(req.url ?? ''),
      }),
      new GrpcInstrumentation({ ignoreGrpcMethods: ['Check', 'Watch', 'ServerReflectionInfo'] }),
      new UndiciInstrumentation(),
      new IORedisInstrumentation({ requireParentSpan: true }),
      new MongoDBInstrumentation(),
      new FastifyOtelInstrumentation({ registerOnInitialization: true }),
    ],
  });
  const shutdown = () => {
    provider.shutdown().catch(() => undefined);
  };
  process.once('beforeExit', shutdown);
  // Flushed by the service's shutdown (runService's flushTelemetry: flushTelemetry in ./index.ts).
  setTelemetryShutdown(() => provider.shutdown());
}
