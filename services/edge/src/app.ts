// Builds the fastify app of the public API from injectable parts (gateways, limiters), so tests
// build it with fakes and main.ts with the real gRPC peers.
import fs from 'node:fs';
import path from 'node:path';
import { isUtf8 } from 'node:buffer';
import type { IncomingMessage, ServerResponse } from 'node:http';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import cors from '@fastify/cors';
import swagger from '@fastify/swagger';
import helmet, { type HelmetOptions } from 'helmet';
import { traceHttpRequest, type BudgetDecision, type Logger, type Registry } from '@agent-mesh/common';
import { bearerOf, TokenVerifier } from './auth';
import { BackgroundCalls, type CancelBroadcast, type LogNotices, type ResponseEventLog } from './background';
import { overBudget, unlimitedBudgets, type UserBudgets } from './budgets';
import type { AppConfig, EdgeContext } from './context';
import { anthropicType, badRequest, fromGrpc, HttpError, isGrpcError } from './errors';
import { validationMessage } from './validation';
import type { Gateways } from './gateways/types';
import { memoryRequestLimiter, RecentRefusals, type RequestLimiter } from './ratelimit';
import { conversationRoutes } from './routes/conversations';
import { docsRoutes } from './routes/docs';
import { eventRoutes } from './routes/events';
import { healthRoutes } from './routes/health';
import { metricsRoutes } from './routes/metrics';
import { opsRoutes } from './routes/ops';
import { usageRoutes } from './routes/usage';
import { openaiRoutes } from './routes/openai';
import { embeddingsRoutes } from './routes/embeddings';
import { messagesRoutes } from './routes/messages';
import { responsesRoutes } from './routes/responses';
import { frame } from './sse/frame';
import { HeartbeatHub } from './sse/heartbeat';
import { StreamLimiter } from './sse/limiter';
import type { SseStream } from './sse/stream';
import { EdgeStats } from './stats';

export interface AppDeps {
  cfg: AppConfig;
  gateways: Gateways;
  logger: Logger;
  requestLimiter?: RequestLimiter;
  /** Per-user token budgets (default: none). */
  budgets?: UserBudgets;
  /** Folder of the web UI (default: services/edge/public). */
  publicDir?: string;
  /** For tests: a load average source for the heartbeat interval. */
  loadAvg?: () => number;
  /** The registry /metrics serves (default: the edge's own, made here). */
  registry?: Registry;
  /** How a background response's cancel reaches the other edges (default: this edge only). */
  cancelBroadcast?: CancelBroadcast;
  /** Where background responses' events are kept for the other edges (default: none: streamed from the edge that runs the call only). */
  responseEvents?: ResponseEventLog;
  /** How the followers of that log hear of its appends (default: none: they read it every 100 ms). */
  responseNotices?: LogNotices;
}

export interface EdgeApp {
  app: FastifyInstance;
  ctx: EdgeContext;
  /** Graceful drain: refuse new work, tell open streams to reconnect (jittered), close them. */
  drain(): void;
}

export async function buildApp(deps: AppDeps): Promise<EdgeApp> {
  const { cfg, logger } = deps;
  const ctx: EdgeContext = {
    cfg,
    gw: deps.gateways,
    logger,
    requestLimiter: deps.requestLimiter ?? memoryRequestLimiter(0),
    budgets: deps.budgets ?? unlimitedBudgets,
    sseLimiter: new StreamLimiter({ maxStreams: cfg.sse.maxStreams }),
    hub: new HeartbeatHub(cfg.sse.heartbeatMs, deps.loadAvg ?? (cfg.sse.heartbeatAdaptive === false ? () => 0 : undefined)),
    stats: new EdgeStats(undefined, deps.budgets?.topSpenders?.bind(deps.budgets), deps.registry),
    background: new BackgroundCalls(logger, deps.cancelBroadcast, deps.responseEvents, deps.responseNotices),
    streams: new Set<SseStream>(),
    state: { draining: false },
  };
  ctx.background.start();
  ctx.stats.countBackground(() => ctx.background.size);
  const verifier = new TokenVerifier(cfg.auth);
  const refusedLately = new RecentRefusals();

  const app = Fastify({
    loggerInstance: logger as unknown as FastifyBaseLogger,
    // No per-request log lines (the metrics count requests; errors are logged by our handler).
    logController: new LogController({ disableRequestLogging: true }),
    // No per-request child logger either: nothing here logs through req.log, and at 20,000 open
    // streams a pino child per request is memory for nothing. Trace ids come from the logger's
    // own OpenTelemetry mixin.
    childLoggerFactory: (parent) => parent,
    bodyLimit: cfg.bodyLimitBytes,
    // A model's name (GET /v1/models/{model}) is the longest path parameter: up to 200 characters.
    routerOptions: { maxParamLength: MAX_PARAM_LENGTH },
    // The router's own refusal of a longer one is answered as every other error (its handler is
    // fastify's default otherwise: a 414 in fastify's shape).
    frameworkErrors: (err, req, reply) => sendError(err, req, reply),
    // Ids and bodies never reach a query unchecked: no type coercion (a number is not a string),
    // and what the description forbids (an unknown field of a closed object) is refused, not dropped.
    ajv: { customOptions: { coerceTypes: false, removeAdditional: false, allErrors: false } },
    return503OnClosing: true,
    forceCloseConnections: true,
  });
  app.decorateRequest('userId', '');
  app.decorateRequest('scopes', null);
  app.decorateRequest('gate', null);
  app.decorateRequest('streaming', false);

  // JSON bodies: refuse invalid UTF-8 instead of letting it turn into U+FFFD silently.
  const parseJson = app.getDefaultJsonParser('error', 'error');
  app.removeContentTypeParser('application/json');
  // JSON only: any other body type is 415, not a string that fails validation later.
  app.removeContentTypeParser('text/plain');
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, (req, body, done) => {
    const buf = body as Buffer;
    if (buf.length === 0) return done(null, undefined);
    if (!isUtf8(buf)) return done(new HttpError(400, 'invalid_utf8', 'request body is not valid UTF-8'), undefined);
    parseJson(req, buf.toString('utf8'), done);
  });

  await app.register(swagger, {
    openapi: {
      info: { title: 'agent mesh — public API', version: '1.0.0', description: 'Multi-agent runs streamed over SSE, and an OpenAI-compatible facade.' },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer', bearerFormat: 'JWT' } } },
      security: [{ bearer: [] }],
    },
  });
  await app.register(cors, {
    origin: cfg.corsOrigins.length > 0 ? cfg.corsOrigins : false,
    exposedHeaders: ['Retry-After', 'X-Queue-Token'],
    allowedHeaders: ['Authorization', 'Content-Type', 'Last-Event-ID', 'X-Queue-Token'],
  });

  // The first hook, synchronous (it runs on every request):
  // - A request is active from here: a later hook that refuses it (draining, auth) skips the hooks
  //   after it, but not onResponse, which counts it out.
  // - The request's server span starts (named by its route, `POST /v1/chat/completions`), and the
  //   rest of the request runs inside it; health checks, probes and scrapes are not traced.
  // - Security headers, worked out once. Pages (the web UI, /docs, an unknown path) get helmet's for
  //   the UI's policy (SECURITY_HEADERS); the JSON API (/api, /v1) an API's (API_SECURITY_HEADERS:
  //   never stored, never framed, no content of its own to load); event streams only those that
  //   mean something on a stream or its error answers. As fastify reply headers they are written
  //   once and not kept (helmet writes onto the raw response, whose header table Node keeps for the
  //   life of the connection: ~1.5 KB per stream at 20,000 streams).
  // - Draining: new requests are refused so the balancer sends them to another replica.
  app.addHook('onRequest', (req, reply, done) => {
    ctx.stats.active.inc();
    const route = req.routeOptions;
    void reply.headers(route.config.stream ? STREAM_SECURITY_HEADERS : isApi(route.url) ? API_SECURITY_HEADERS : SECURITY_HEADERS);
    if (ctx.state.draining && !route.config.whileDraining) return done(new HttpError(503, 'draining', 'this instance is shutting down: retry', 1));
    if (route.config.untraced) return done();
    traceHttpRequest(req.raw, reply.raw, route.url, done);
  });

  // Authentication (before the body is read) and the per-user request limit.
  app.addHook('onRequest', async (req: FastifyRequest) => {
    const auth = req.routeOptions.config.auth ?? 'public';
    if (auth === 'public') return;
    let token = bearerOf(req.headers.authorization);
    // Anthropic's clients send their key as `x-api-key`.
    if (!token && auth === 'api-key' && typeof req.headers['x-api-key'] === 'string') token = req.headers['x-api-key'];
    if (!token && auth === 'sse') {
      const q = req.query as Record<string, unknown> | undefined;
      if (typeof q?.['access_token'] === 'string') token = q['access_token'];
    }
    const principal = await verifier.principalOf(token);
    req.userId = principal.userId;
    req.scopes = principal.scopes;
    // The rate limit and (where the route spends tokens) the budget are asked at once: the Redis
    // client writes a turn's commands together (coalesceWrites), one round trip instead of two on every call's path.
    // They are answered in that order, as if asked in turn (the budget is only read). A user over
    // budget causes no run and no upstream call: refused here, or by the handler before its call.
    const spends = req.routeOptions.config.spends;
    const userId = req.userId;
    const limited = ctx.requestLimiter.check(userId).then((decision) => {
      if (decision.ok) return;
      ctx.stats.rateLimited.inc();
      refusedLately.note(userId, decision.retryAfterMs);
      throw new HttpError(429, 'rate_limited', 'too many requests: slow down', Math.ceil(decision.retryAfterMs / 1000));
    });
    const budget = spends ? ctx.budgets.check(userId) : undefined;
    budget?.catch(() => undefined); // a request refused by the rate limit does not wait for it
    if (spends === 'beside' && !refusedLately.has(userId)) {
      // Both go to the handler, which passes them beside the call's admission to the quota, in
      // one round trip. A user refused lately is checked here instead: a refusal after the
      // admission gives its lease back, a churn of the shared quota that a flood must not cause.
      req.gate = limited.then(() => budget!).then((b) => refuseOverBudget(userId, b));
      req.gate.catch(() => undefined); // the handler's to pass (not when the body is refused first)
      // The Redis client writes the checks' commands when this turn of the event loop ends, after
      // the body is read and the handler has begun: where they do not travel with an inline
      // broker's admission, they leave now, their round trip beside the reading of the body
      // instead of after it (0.74 → 0.27 ms of waiting for them before the gRPC call to the broker).
      if (!ctx.gw.broker.gateBeside) await new Promise((resolve) => setImmediate(resolve));
      return;
    }
    await limited;
    if (budget) refuseOverBudget(userId, await budget);
  });

  function refuseOverBudget(userId: string, budget: BudgetDecision): void {
    if (budget.ok) return;
    ctx.stats.budgetRefusals.inc({ budget: budget.window.budget });
    refusedLately.note(userId, budget.retryAfterMs);
    throw overBudget(budget);
  }

  // A route that needs a scope (the ops figures): checked after validation, so that a malformed
  // request is a 400 for everyone, as the contract says.
  app.addHook('preHandler', (req: FastifyRequest, _reply, done) => {
    const needed = req.routeOptions.config.scope;
    if (!needed) return done();
    const scope = needed === 'ops' ? cfg.auth.opsScope : undefined;
    if (!scope || !req.scopes?.has(scope)) {
      return done(new HttpError(403, 'forbidden', `this route needs a token with the "${scope ?? needed}" scope (AUTH_OPS_SCOPE)`));
    }
    done();
  });

  // Measurements: every request, by route pattern (counted active from its first hook on: see above).
  app.addHook('onResponse', (req, reply, done) => {
    // Streams are counted when they close (a client that goes away never 'finishes' a response).
    if (!req.streaming) {
      ctx.stats.active.dec();
      ctx.stats.observe(req.method, routeOf(req), reply.statusCode, reply.elapsedTime / 1000, false);
    }
    done();
  });

  /** An error as the route's family answers it: Anthropic's shape on /v1/messages, OpenAI's on /v1, the API's own elsewhere. */
  function sendError(err: FastifyError | Error, req: FastifyRequest, reply: FastifyReply) {
    const e = toHttpError(err, logger, req);
    if (e.retryAfterS !== undefined) void reply.header('retry-after', String(e.retryAfterS));
    if (ANTHROPIC_PATH.test(req.url)) return reply.code(e.statusCode).send({ type: 'error', error: { type: anthropicType(e.statusCode), message: e.message } });
    if (req.url.startsWith('/v1/')) {
      return reply.code(e.statusCode).send({ error: { message: e.message, type: openAiType(e.statusCode), param: e.param ?? null, code: e.code } });
    }
    return reply.code(e.statusCode).send({ error: { code: e.code, message: e.message }, ...e.extra });
  }
  app.setErrorHandler(sendError);
  // Known paths answer an unsupported method with 405 and Allow (fastify alone says 404).
  const known: { path: RegExp; methods: Set<string> }[] = [];
  app.addHook('onRoute', (route) => {
    if (route.url.includes('*')) return; // the web UI's catch-all is not a known path
    const pattern = new RegExp(`^${route.url.replace(/[.+?^${}()|[\]\\]/g, '\\$&').replace(/:[A-Za-z_]+/g, '[^/]+')}/?$`);
    let entry = known.find((k) => k.path.source === pattern.source);
    if (!entry) known.push((entry = { path: pattern, methods: new Set() }));
    for (const m of [route.method].flat()) entry.methods.add(m);
  });
  app.setNotFoundHandler((req, reply) => {
    const path = req.url.split('?')[0]!;
    const allowed = [...new Set(known.filter((k) => k.path.test(path)).flatMap((k) => [...k.methods]))];
    if (allowed.length && !allowed.includes(req.method)) {
      const message = `${req.method} is not supported on ${path}: use ${allowed.join(', ')}`;
      const body = req.url.startsWith('/v1/')
        ? { error: { message, type: 'invalid_request_error', param: null, code: 'method_not_allowed' } }
        : { error: { code: 'method_not_allowed', message } };
      return reply.code(405).header('allow', allowed.join(', ')).send(body);
    }
    const body = req.url.startsWith('/v1/')
      ? { error: { message: `unknown route ${req.method} ${req.url.split('?')[0]}`, type: 'invalid_request_error', param: null, code: 'not_found' } }
      : { error: { code: 'not_found', message: `unknown route ${req.method} ${req.url.split('?')[0]}` } };
    return reply.code(404).send(body);
  });

  await app.register(async (api) => {
    healthRoutes(api, ctx);
    metricsRoutes(api, ctx);
    opsRoutes(api, ctx);
    conversationRoutes(api, ctx);
    eventRoutes(api, ctx);
    openaiRoutes(api, ctx);
    embeddingsRoutes(api, ctx);
    responsesRoutes(api, ctx);
    messagesRoutes(api, ctx);
    usageRoutes(api, ctx);
    docsRoutes(api);
  });

  const publicDir = deps.publicDir ?? path.resolve(__dirname, '../public');
  if (fs.existsSync(publicDir)) {
    // Loaded only when there is a UI to serve (its dependency tree is ESM that jest cannot load).
    const { default: fastifyStatic } = await import('@fastify/static');
    await app.register(fastifyStatic, { root: publicDir, prefix: '/', index: ['index.html'], wildcard: true });
  }

  const drain = () => {
    if (ctx.state.draining) return;
    ctx.state.draining = true;
    ctx.sseLimiter.drain();
    for (const s of [...ctx.streams]) {
      // Spread the reconnects over a few seconds so they do not arrive as one wave.
      const retryMs = 500 + Math.floor(Math.random() * 4_500);
      s.endWith({ event: 'reconnect', retryMs, data: JSON.stringify({ reason: 'draining', retryMs, lastEventId: s.lastId ?? null }) }, 'draining');
    }
    ctx.hub.stop();
  };
  return { app, ctx, drain };
}

/**
 * helmet's headers for the web UI's policy. They are the same on every response, so they are worked
 * out once, by running helmet's middleware against a recorder: @fastify/helmet builds helmet and
 * parses the policy again on every request (2–3 % of an edge's CPU under /v1 load).
 */
const SECURITY_HEADERS = helmetHeaders({
  contentSecurityPolicy: {
    directives: {
      defaultSrc: ["'self'"],
      scriptSrc: ["'self'"],
      styleSrc: ["'self'", "'unsafe-inline'"],
      imgSrc: ["'self'", 'data:'],
      connectSrc: ["'self'"],
    },
  },
  // The UI is same-origin; cross-origin API clients are governed by CORS_ORIGINS.
  crossOriginResourcePolicy: { policy: 'same-site' },
});

/** The headers helmet's middleware sets for these options (none of them depends on the request). */
export function helmetHeaders(options: HelmetOptions): Record<string, string> {
  const headers: Record<string, string> = {};
  const recorder = {
    setHeader: (name: string, value: string | number | readonly string[]) => void (headers[name.toLowerCase()] = String(value)),
    removeHeader: () => undefined,
  };
  helmet(options)({} as IncomingMessage, recorder as unknown as ServerResponse, (err?: unknown) => {
    if (err) throw err;
  });
  return headers;
}

/** helmet's headers that apply to an event stream (the rest only matter on documents). */
const STREAM_SECURITY_HEADERS = {
  'strict-transport-security': 'max-age=31536000; includeSubDomains',
  'x-content-type-options': 'nosniff',
  'cross-origin-resource-policy': 'same-site',
} as const;

/**
 * The JSON API's answers (OWASP's REST Security Cheat Sheet): a user's data is never stored by a
 * browser or a proxy, an answer is never framed nor loads anything. A third of the UI policy's
 * bytes on every /v1 answer.
 */
const API_SECURITY_HEADERS = {
  ...STREAM_SECURITY_HEADERS,
  'cache-control': 'no-store',
  'content-security-policy': "default-src 'none'; frame-ancestors 'none'",
  'x-frame-options': 'DENY',
} as const;

/** A route of the JSON API (not a page, a stream, health or metrics). */
function isApi(url: string | undefined): boolean {
  return url !== undefined && (url.startsWith('/v1/') || url.startsWith('/api/'));
}

const MAX_PARAM_LENGTH = 200;

function routeOf(req: FastifyRequest): string {
  return req.routeOptions.url ?? 'unmatched';
}

function toHttpError(err: FastifyError | Error, logger: Logger, req: FastifyRequest): HttpError {
  if (err instanceof HttpError) return err;
  const fe = err as FastifyError;
  if (fe.validation) {
    const body = fe.validationContext === 'body';
    const { message, param } = validationMessage(fe.validationContext ?? 'request', fe.validation, body ? req.routeOptions.schema?.body : undefined, body ? req.body : undefined);
    return badRequest(message || fe.message, 'invalid_argument', body ? param : undefined);
  }
  if (isGrpcError(err)) return fromGrpc(err);
  // A path parameter over MAX_PARAM_LENGTH: no id is that long, so it is the 400 of an id of the
  // wrong form, which every route with one documents (not the router's 414).
  if (fe.code === 'FST_ERR_MAX_PARAM_LENGTH') return badRequest(`a path parameter is over ${MAX_PARAM_LENGTH} characters: no id is that long`);
  if (typeof fe.statusCode === 'number' && fe.statusCode >= 400 && fe.statusCode < 500) {
    return new HttpError(fe.statusCode, (fe.code ?? 'bad_request').toLowerCase(), fe.message);
  }
  logger.error({ err, route: req.routeOptions.url }, 'unhandled error');
  return new HttpError(500, 'internal', 'internal error');
}

function openAiType(statusCode: number): string {
  if (statusCode === 401) return 'authentication_error';
  if (statusCode === 404) return 'not_found_error';
  if (statusCode === 429) return 'rate_limit_error';
  if (statusCode >= 500) return 'server_error';
  return 'invalid_request_error';
}

/** Where an error is written as Anthropic writes it (`{"type": "error", "error": {type, message}}`): its Messages API. */
const ANTHROPIC_PATH = /^\/v1\/messages(\/count_tokens)?(\?|$)/;
