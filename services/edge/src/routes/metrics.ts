// GET /metrics (the edge's Prometheus registry) and GET /api/metrics (the brief's figures as
// JSON: the edge's own plus summaries of every service's /metrics.json; a service that does not
// answer shows as unavailable).
import os from 'node:os';
import v8 from 'node:v8';
import type { FastifyInstance } from 'fastify';
import { anyObject, AUTHED, errorResponses } from './schemas';
import type { EdgeContext } from '../context';
import { brokerSummary, orchestratorSummary, processSummary, storeSummary, toolSummary } from '../peer-summary';
import type { PeerMetric, PeerMetricsReader } from '../gateways/types';

export function metricsRoutes(app: FastifyInstance, ctx: EdgeContext): void {
  let lastCpu = { at: performance.now(), usage: process.cpuUsage() };

  const cpuPercent = () => {
    const now = performance.now();
    const usage = process.cpuUsage();
    const elapsedUs = (now - lastCpu.at) * 1000;
    const usedUs = usage.user - lastCpu.usage.user + (usage.system - lastCpu.usage.system);
    lastCpu = { at: now, usage };
    return elapsedUs > 0 ? Math.round((usedUs / elapsedUs / os.cpus().length) * 10_000) / 100 : 0;
  };

  const read = async (reader: PeerMetricsReader | undefined): Promise<{ available: true; metrics: PeerMetric[] } | { available: false; error: string }> => {
    if (!reader) return { available: false, error: 'not configured' };
    try {
      return { available: true, metrics: await reader() };
    } catch (err) {
      return { available: false, error: (err as Error).message };
    }
  };

  app.get('/metrics', { config: { auth: 'public', untraced: true }, schema: { tags: ['operations'], summary: 'Prometheus metrics of this edge', security: [], response: { 200: { type: 'string', description: 'Prometheus text format' }, ...errorResponses(503) } } }, async (_req, reply) => {
    ctx.stats.sseQueue.set(ctx.sseLimiter.queued);
    return reply.type(ctx.stats.registry.contentType).send(await ctx.stats.registry.metrics());
  });

  app.get('/api/metrics', { config: { auth: 'bearer' }, schema: { tags: ['operations'], summary: "The brief's metrics as JSON, aggregated from the services", response: { 200: anyObject, ...errorResponses(...AUTHED) } } }, async () => {
    const [broker, store, orchestrator, tools] = await Promise.all([
      read(ctx.gw.metrics.broker),
      read(ctx.gw.metrics.store),
      read(ctx.gw.metrics.orchestrator),
      read(ctx.gw.metrics.tools),
    ]);
    const connections = await new Promise<number>((resolve) => app.server.getConnections((err, n) => resolve(err ? 0 : n)));
    const s = ctx.stats.summary();
    const mem = process.memoryUsage();
    const total = os.totalmem();
    const responseTime = s.runResponseTimeMs.count > 0 ? s.runResponseTimeMs : s.responseTimeMs;
    const llm = broker.available ? brokerSummary(broker.metrics) : null;
    const db = store.available ? storeSummary(store.metrics) : null;
    const runs = orchestrator.available ? orchestratorSummary(orchestrator.metrics) : null;
    const toolFigures = tools.available ? toolSummary(tools.metrics) : null;
    const peer = (p: typeof broker) => (p.available ? { available: true, process: processSummary(p.metrics) } : { available: false, error: p.error });
    const heapLimit = v8.getHeapStatistics().heap_size_limit;
    return {
      timestamp: new Date().toISOString(),
      requests: {
        total: s.total,
        active: Math.max(0, (await ctx.stats.active.get()).values[0]?.value ?? 0),
        queued: ctx.sseLimiter.queued,
        rps: s.rps,
        lastMinute: s.lastMinute,
      },
      responseTimeMs: { source: s.runResponseTimeMs.count > 0 ? 'runs' : 'requests', ...responseTime },
      httpResponseTimeMs: s.responseTimeMs,
      errorRate: s.errorRate,
      timeoutRate: s.timeoutRate,
      rateLimited: (await ctx.stats.rateLimited.get()).values[0]?.value ?? 0,
      cpu: { processPercent: cpuPercent(), loadAverage1m: os.loadavg()[0] ?? 0, cores: os.cpus().length },
      memory: {
        rssBytes: mem.rss,
        heapUsedBytes: mem.heapUsed,
        heapTotalBytes: mem.heapTotal,
        /** Heap in use against the heap limit (--max-old-space-size), in percent (target < 80). */
        heapUsedPercent: Math.round((mem.heapUsed / heapLimit) * 10_000) / 100,
        systemUsedPercent: Math.round(((total - os.freemem()) / total) * 10_000) / 100,
      },
      connections: { open: connections, sseStreams: ctx.sseLimiter.open, sseMax: ctx.sseLimiter.max, sseQueued: ctx.sseLimiter.queued, heartbeatMs: ctx.hub.intervalMs },
      llm: broker.available ? { available: true, ...llm } : { available: false, error: broker.error },
      database: store.available ? { available: true, ...db } : { available: false, error: store.error },
      runs: orchestrator.available ? { available: true, ...runs } : { available: false, error: orchestrator.error },
      tools: tools.available ? { available: true, ...toolFigures } : { available: false, error: tools.error },
      services: { llmBroker: peer(broker), store: peer(store), orchestrator: peer(orchestrator), toolService: peer(tools) },
    };
  });
}
