// Prometheus metrics per process, served on a small HTTP side channel: `/metrics` (text, for
// Prometheus), `/metrics.json` (for the edge's /api/metrics summary), and the plain-HTTP probes
// `/healthz` (the process answers) and `/readyz` (it serves: 503 otherwise), which work when the
// gRPC port requires client certificates (mutual TLS) and Kubernetes' gRPC probe cannot connect.
import http from 'node:http';
import { getHeapStatistics } from 'node:v8';
import { collectDefaultMetrics, Gauge, Registry } from 'prom-client';
import type { Logger } from '../logging';

export { Counter, Gauge, Histogram, Registry, Summary } from 'prom-client';

export function createRegistry(service: string): Registry {
  const registry = new Registry();
  registry.setDefaultLabels({ service });
  collectDefaultMetrics({ register: registry });
  // The heap's ceiling (--max-old-space-size), so memory alerts can say "80 % of the limit".
  new Gauge({
    name: 'nodejs_heap_size_limit_bytes',
    help: 'V8 heap size limit in bytes',
    registers: [registry],
    collect(this: Gauge) { this.set(getHeapStatistics().heap_size_limit); },
  });
  return registry;
}

export async function startMetricsServer(
  registry: Registry,
  port: number,
  logger: Logger,
  /** Interface to bind (the service's `<SERVICE>_HOST`). */
  host: string,
  /** Whether the process is ready to serve (`/readyz`); without it, `/readyz` is always 503. */
  ready: () => boolean = () => false,
): Promise<{ port: number; close: () => Promise<void> }> {
  const server = http.createServer((req, res) => {
    const done = (code: number, type: string, body: string) => {
      res.writeHead(code, { 'content-type': type });
      res.end(body);
    };
    if (req.url === '/metrics') {
      registry.metrics().then((t) => done(200, registry.contentType, t), (e: Error) => done(500, 'text/plain', e.message));
    } else if (req.url === '/metrics.json') {
      registry.getMetricsAsJSON().then((j) => done(200, 'application/json', JSON.stringify(j)), (e: Error) => done(500, 'text/plain', e.message));
    } else if (req.url === '/healthz') {
      done(200, 'text/plain', 'ok\n');
    } else if (req.url === '/readyz') {
      if (ready()) done(200, 'text/plain', 'ready\n');
      else done(503, 'text/plain', 'not ready\n');
    } else {
      done(404, 'text/plain', 'not found');
    }
  });
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(port, host, resolve));
  const addr = server.address();
  const bound = typeof addr === 'object' && addr ? addr.port : port;
  logger.info({ port: bound }, 'metrics listening');
  return {
    port: bound,
    // Scrapes are short and keep their connections alive: those are closed at once.
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
