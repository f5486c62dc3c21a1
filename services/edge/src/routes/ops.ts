// The operations figures from Prometheus (GET /api/ops/figures: the dashboard's panels, for tokens
// with the ops scope) and a run's trace from Jaeger (GET /api/runs/:runId/trace: the run's owner
// only). Both read fixed things on the caller's behalf: the figures' queries are the allow-list of
// ops/figures.ts, and a trace is shown only for a run the store says is the caller's.
import type { FastifyInstance } from 'fastify';
import { annotate, ATTR } from '@agent-mesh/common';
import type { EdgeContext } from '../context';
import { badRequest, HttpError } from '../errors';
import { requestScope } from '../scope';
import { FIGURES, seriesName } from '../ops/figures';
import { runTraceOf, traceHasRun, traceView } from '../ops/jaeger';
import { PromQueryError, type PromRange } from '../ops/prometheus';
import { errorBody, errorResponses, ID_PATTERN } from './schemas';

/** The windows a caller may ask for, and the step of each (~120 points a series). */
const WINDOWS = { '5m': [300, 5], '15m': [900, 10], '1h': [3_600, 30], '6h': [21_600, 180] } as const;
type Window = keyof typeof WINDOWS;

const unavailable = (what: string, variable: string) => ({
  ...errorBody,
  description: `${what} is not configured (\`${variable}\`) or cannot be read (\`error.code\` says which), or this instance is draining: retry after Retry-After`,
});

const figuresResponse = {
  type: 'object',
  required: ['window', 'start', 'end', 'stepS', 'figures'],
  properties: {
    window: { type: 'string', enum: Object.keys(WINDOWS) },
    start: { type: 'string', format: 'date-time' },
    end: { type: 'string', format: 'date-time' },
    stepS: { type: 'integer' },
    figures: {
      type: 'array',
      items: {
        type: 'object',
        required: ['id', 'title', 'unit', 'series'],
        properties: {
          id: { type: 'string' },
          title: { type: 'string' },
          unit: { type: 'string', description: "Grafana's unit name: short, s, reqps, ops, percentunit (a ratio: 0.5 = 50 %), currencyUSD" },
          series: {
            type: 'array',
            items: {
              type: 'object',
              required: ['name', 'labels', 'points'],
              properties: {
                name: { type: 'string' },
                labels: { type: 'object', additionalProperties: { type: 'string' } },
                points: { type: 'array', description: '[Unix ms, value or null]', items: { type: 'array', items: { type: ['number', 'null'] } } },
              },
            },
          },
          error: { type: 'string', description: 'Prometheus refused one of the queries (the other series are there)' },
        },
      },
    },
  },
} as const;

const traceResponse = {
  type: 'object',
  required: ['traceId', 'runId', 'startedAt', 'durationMs', 'services', 'spans', 'truncated'],
  properties: {
    traceId: { type: 'string' },
    runId: { type: 'string' },
    startedAt: { type: 'string', format: 'date-time' },
    durationMs: { type: 'number' },
    services: { type: 'array', items: { type: 'string' } },
    spans: {
      type: 'array',
      items: {
        type: 'object',
        required: ['spanId', 'parentSpanId', 'service', 'name', 'startMs', 'durationMs', 'error'],
        properties: {
          spanId: { type: 'string' },
          parentSpanId: { type: ['string', 'null'] },
          service: { type: 'string' },
          name: { type: 'string' },
          startMs: { type: 'number', description: "ms from the trace's first span" },
          durationMs: { type: 'number' },
          error: { type: 'boolean' },
        },
      },
    },
    truncated: { type: 'boolean', description: 'the trace has more spans than are returned (5,000)' },
  },
} as const;

export function opsRoutes(app: FastifyInstance, ctx: EdgeContext): void {
  app.get(
    '/api/ops/figures',
    {
      config: { auth: 'bearer', scope: 'ops' },
      schema: {
        tags: ['operations'],
        summary: "The dashboard's figures from Prometheus (run time percentiles, rps, errors, LLM queue vs quota, tokens per minute, open streams, store latency, pool, breakers, cost, …), for tokens with the ops scope (AUTH_OPS_SCOPE)",
        querystring: {
          type: 'object',
          additionalProperties: false,
          properties: { window: { type: 'string', enum: Object.keys(WINDOWS), description: 'how far back (default 15m)' } },
        },
        response: {
          200: figuresResponse,
          ...errorResponses(400, 401, 403, 429),
          503: unavailable('Prometheus', 'PROMETHEUS_URL'),
        },
      },
    },
    async (req) => {
      const prometheus = ctx.gw.prometheus;
      if (!prometheus) throw new HttpError(503, 'prometheus_not_configured', 'Prometheus is not configured on this edge (PROMETHEUS_URL)');
      const window = ((req.query as { window?: Window }).window ?? '15m') as Window;
      const [seconds, stepS] = WINDOWS[window];
      const endS = Math.floor(Date.now() / 1000 / stepS) * stepS;
      const range: PromRange = { startS: endS - seconds, endS, stepS };
      const figures = await Promise.all(FIGURES.map(async (f) => {
        const errors: string[] = [];
        const series = (await Promise.all(f.queries.map(async (q) => {
          try {
            return (await prometheus.queryRange(q.expr, range)).map((s) => ({ name: seriesName(q.legend, s.labels), labels: s.labels, points: s.points }));
          } catch (err) {
            if (!(err instanceof PromQueryError)) throw err;
            errors.push(`${q.expr}: ${err.message}`);
            return [];
          }
        }))).flat();
        return { id: f.id, title: f.title, unit: f.unit, series, ...(errors.length ? { error: errors.join('; ') } : {}) };
      }));
      return { window, start: new Date(range.startS * 1000).toISOString(), end: new Date(endS * 1000).toISOString(), stepS, figures };
    },
  );

  app.get(
    '/api/runs/:runId/trace',
    {
      config: { auth: 'bearer' },
      schema: {
        tags: ['runs'],
        summary: "A run's trace across the services, from Jaeger, for the web UI's waterfall: the run's owner only. `traceId` is the one `run.started` carries; without it the trace is found by the run's id",
        params: {
          type: 'object',
          required: ['runId'],
          properties: { runId: { type: 'string', pattern: ID_PATTERN, description: 'run id (lowercase UUID)' } },
        },
        querystring: {
          type: 'object',
          additionalProperties: false,
          properties: { traceId: { type: 'string', pattern: '^[0-9a-f]{32}$', description: 'the trace id of the run (run.started `traceId`)' } },
        },
        response: {
          200: traceResponse,
          ...errorResponses(400, 401, 404, 429, 502, 504),
          404: { ...errorBody, description: "the run is not the caller's (or does not exist), or the tracing backend holds no trace of it (yet: spans arrive within seconds)" },
          503: unavailable('Jaeger', 'JAEGER_QUERY_URL'),
        },
      },
    },
    async (req, reply) => {
      const runId = (req.params as { runId: string }).runId;
      const traceId = (req.query as { traceId?: string }).traceId;
      if (!/^[0-9a-f-]{36}$/.test(runId)) throw badRequest('invalid run id');
      // Not the run id: this request's own trace would then be found as one of the run's.
      annotate({ [ATTR.userId]: req.userId });
      const jaeger = ctx.gw.jaeger;
      if (!jaeger) throw new HttpError(503, 'jaeger_not_configured', 'the tracing backend is not configured on this edge (JAEGER_QUERY_URL)');
      // Ownership first: another user's run is not found, whatever its trace.
      const { run } = await ctx.gw.store.getRun({ userId: req.userId, runId }, requestScope(reply));
      if (!run) throw new HttpError(404, 'not_found', 'run not found');
      const notYet = () => new HttpError(404, 'trace_not_found', 'no trace of this run in the tracing backend (yet: spans arrive within seconds)');
      if (traceId) {
        const t = await jaeger.trace(traceId);
        if (!t) throw notYet();
        if (!traceHasRun(t, runId)) throw new HttpError(404, 'trace_not_found', 'that trace is not this run\'s');
        return traceView(t, runId);
      }
      const t = runTraceOf(await jaeger.findRunTraces(runId, run.createdAtMs), runId);
      if (!t) throw notYet();
      return traceView(t, runId);
    },
  );
}
