// GET /api/health: 200 when every dependency answers, 503 otherwise, with a per-dependency
// breakdown (llm = broker, database = store, cache = Redis). Cached briefly so that a flood of
// probes does not become a flood of checks. GET /healthz (this process answers, also while it
// drains) and GET /readyz (it takes requests: 503 while draining) are the probes every service
// has; they tell nothing else.
import type { FastifyInstance } from 'fastify';
import type { EdgeContext } from '../context';
import type { DependencyCheck, DependencyName } from '../gateways/types';
import { anyObject, errorResponses } from './schemas';

const CACHE_MS = 1_500;
const TIMEOUT_MS = 1_000;

type Report = { status: 'healthy' | 'unhealthy'; checks: Record<DependencyName, DependencyCheck>; checkedAt: string };

export function healthRoutes(app: FastifyInstance, ctx: EdgeContext): void {
  let cached: { at: number; report: Promise<Report> } | undefined;

  const check = async (): Promise<Report> => {
    const entries = await Promise.all(
      (Object.entries(ctx.gw.health) as [DependencyName, () => Promise<DependencyCheck>][]).map(async ([name, probe]) => {
        const started = performance.now();
        const timeout = new Promise<DependencyCheck>((resolve) =>
          setTimeout(() => resolve({ status: 'down', latencyMs: TIMEOUT_MS, detail: `no answer within ${TIMEOUT_MS} ms` }), TIMEOUT_MS).unref(),
        );
        const result = await Promise.race([
          probe().catch((err: Error) => ({ status: 'down' as const, latencyMs: Math.round(performance.now() - started), detail: err.message })),
          timeout,
        ]);
        return [name, result] as const;
      }),
    );
    const checks = Object.fromEntries(entries) as Record<DependencyName, DependencyCheck>;
    const healthy = entries.every(([, c]) => c.status === 'up');
    return { status: healthy ? 'healthy' : 'unhealthy', checks, checkedAt: new Date().toISOString() };
  };

  const probe = (summary: string, ok: string) => ({
    tags: ['operations'],
    summary,
    security: [],
    response: { 200: { type: 'string', description: ok } },
  });
  app.get('/healthz', { config: { auth: 'public', whileDraining: true, untraced: true }, schema: probe('Liveness: this process answers (also while it drains)', 'alive') }, async (_req, reply) =>
    reply.type('text/plain').header('cache-control', 'no-store').send('ok\n'),
  );
  app.get('/readyz', { config: { auth: 'public', untraced: true }, schema: { ...probe('Readiness: this instance takes requests (503 while it drains)', 'ready'), response: { 200: { type: 'string', description: 'ready' }, ...errorResponses(503) } } }, async (_req, reply) =>
    reply.type('text/plain').header('cache-control', 'no-store').send('ready\n'),
  );

  app.get(
    '/api/health',
    {
      config: { auth: 'public', untraced: true },
      schema: {
        tags: ['operations'],
        summary: 'Health with a per-dependency breakdown (200 healthy, 503 not)',
        security: [],
        response: {
          200: { ...anyObject, description: 'every dependency answers' },
          503: { ...anyObject, description: 'a dependency is down (same breakdown), or this instance is draining (error body)' },
        },
      },
    },
    async (_req, reply) => {
      const now = Date.now();
      if (!cached || now - cached.at > CACHE_MS) cached = { at: now, report: check() };
      const report = await cached.report;
      return reply
        .code(report.status === 'healthy' ? 200 : 503)
        .header('cache-control', 'no-store')
        .send({ ...report, edge: { openStreams: ctx.streams.size, draining: ctx.state.draining } });
    },
  );
}
