// Loaded with `node --require` before any application module so that the instrumentations can
// patch http, grpc-js, undici, ioredis, mongodb and fastify as they load (each service only those
// it uses: SERVICE_INSTRUMENTATIONS). Exports OTLP over HTTP (protobuf, or JSON), the exporter made at first export.
//
// A tracer provider and the six instrumentations, not `@opentelemetry/sdk-node`: the NodeSDK also
// loads every exporter, the metrics and logs SDKs and their detectors, which doubled the time a
// service takes to start (it is on every replica's path to SERVING) for nothing the mesh uses.
// `register()` installs the same AsyncLocalStorage context manager and W3C trace-context and
// baggage propagators, and the sampler comes from OTEL_TRACES_SAMPLER(_ARG) as before.
import type { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-proto';
import { registerInstrumentations } from '@opentelemetry/instrumentation';
import { BatchSpanProcessor, NodeTracerProvider } from '@opentelemetry/sdk-trace-node';
import { envDetector, detectResources, resourceFromAttributes } from '@opentelemetry/resources';
import { ATTR_SERVICE_NAME } from '@opentelemetry/semantic-conventions';
import { processVars, read } from '../config';
import { setTelemetryShutdown } from './index';
import { DeferredExporter, instrumentationsFor } from './setup';

const enabled = !read(processVars.OTEL_SDK_DISABLED);

if (enabled) {
  const endpoint = read(processVars.OTEL_EXPORTER_OTLP_ENDPOINT).replace(/\/$/, '');
  const service = read(processVars.OTEL_SERVICE_NAME);
  const json = read(processVars.OTEL_EXPORTER_OTLP_PROTOCOL) === 'http/json';
  // Found now (not loaded: that waits for the first export), so that an image without it fails
  // at start instead of dropping every span unseen.
  const exporterModule = require.resolve(json ? '@opentelemetry/exporter-trace-otlp-http' : '@opentelemetry/exporter-trace-otlp-proto');
  const exporter = new DeferredExporter(() => {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const otlp = require(exporterModule) as { OTLPTraceExporter: typeof OTLPTraceExporter };
    return new otlp.OTLPTraceExporter({ url: `${endpoint}/v1/traces` });
  });
  const provider = new NodeTracerProvider({
    // OTEL_RESOURCE_ATTRIBUTES too (envDetector); the service's name wins.
    resource: detectResources({ detectors: [envDetector] }).merge(resourceFromAttributes({ [ATTR_SERVICE_NAME]: service })),
    spanProcessors: [new BatchSpanProcessor(exporter, { scheduledDelayMillis: read(processVars.OTEL_BSP_SCHEDULE_DELAY) })],
  });
  provider.register();
  registerInstrumentations({ tracerProvider: provider, instrumentations: instrumentationsFor(service) });
  const shutdown = () => {
    provider.shutdown().catch(() => undefined);
  };
  process.once('beforeExit', shutdown);
  // Flushed by the service's shutdown (runService's flushTelemetry: flushTelemetry in ./index.ts).
  setTelemetryShutdown(() => provider.shutdown());
}
