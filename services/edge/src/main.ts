// Process entry of the edge: Redis, gateways (and, with EDGE_INLINE_BROKER, the broker for `/v1`),
// the HTTP server — wiring only (configuration, listener host and shutdown phases: runService).
import { BUDGET_KEY_PREFIX, closeRedis, createRegistry, createSubscriber, flushTelemetry, redisReady, runService, TokenBudgets, type Service } from '@agent-mesh/common';
import { buildApp } from './app';
import { CANCEL_CHANNEL, redisEventLog, redisLogNotices, type CancelBroadcast } from './background';
import { GENERATE_DEADLINE_MS } from './gateways/broker';
import { loadConfig, type EdgeConfig } from './config';
import { createGateways } from './gateways';
import { inlineBrokerGateway } from './gateways/inline-broker';
import { brokerModule } from './inline-broker';
import { redisRequestLimiter } from './ratelimit';
import { edgeRedis } from './redis';

void runService({ name: 'edge', loadConfig, flushTelemetry, build });

async function build(svc: Service<EdgeConfig>): Promise<void> {
  const { config: cfg, logger } = svc;

  const redis = edgeRedis(cfg.redis, logger);
  svc.onShutdown('clients', 'redis', () => closeRedis(redis));
  // Listen once Redis is connected, or after 3 s without it: a replica answering before its
  // connection is up would decide its users' limits on an outage's local share (as the broker and
  // the tool-service, it starts on that share if Redis is not there, and joins it when it comes).
  await redisReady(redis, 3_000).catch((err: Error) => logger.warn({ err: err.message }, 'starting without redis: request limits on this replica\'s share'));
  const gateways = createGateways(cfg, redis);
  svc.onShutdown('clients', 'gateways', () => gateways.close());
  const registry = createRegistry('edge');
  if (cfg.inlineBroker) {
    // Its metrics (mesh_llm_*) on the edge's /metrics; its queues and settlements end in the edge's shutdown.
    const { assembleBroker, countTokensResponse, describeUpstreams, embedResponse, generateResponses } = brokerModule();
    // On the edge's Redis connection: the admissions and the edge's budget checks of one turn leave in one write.
    const { broker } = await assembleBroker(svc, cfg.inlineBroker, registry, redis);
    const log = logger.child({ component: 'llm-broker' });
    gateways.broker = inlineBrokerGateway({
      generate: (req, signal, deadline, gate) => generateResponses(broker, log, req, signal, deadline, gate),
      countTokens: (req) => countTokensResponse(broker, req),
      models: () => broker.models(),
      embed: (req, signal, deadline, gate) => embedResponse(broker, log, req, signal, deadline, gate),
    }, log);
    logger.info({ upstreams: describeUpstreams(cfg.inlineBroker) }, 'the broker runs inside this edge for /v1');
  }

  const requestLimiter = redisRequestLimiter(redis, { perMinute: cfg.rateLimitPerMinute, burstFraction: cfg.rateLimitBurstFraction, admitAhead: cfg.rateLimitAhead, admitAheadMs: cfg.rateLimitAheadMs, fallbackReplicas: cfg.rateLimitFallbackReplicas }, logger, registry);
  svc.onShutdown('stop', 'request limiter', () => requestLimiter.close?.());
  const budgets = new TokenBudgets(redis, BUDGET_KEY_PREFIX, {
    ...cfg.budgets,
    onError: (err) => logger.warn({ err: (err as Error).message }, 'token budgets unavailable: not enforced'),
  });
  // A background response's cancel may reach any edge: it is published to all (Pub/Sub).
  const subscriber = createSubscriber(cfg.redis, logger);
  const cancelBroadcast: CancelBroadcast = {
    publish: (id) => redis.publish(CANCEL_CHANNEL, id),
    subscribe: async (onCancel) => {
      subscriber.on('message', (channel: string, id: string) => channel === CANCEL_CHANNEL && onCancel(id));
      await subscriber.subscribe(CANCEL_CHANNEL);
    },
    close: () => closeRedis(subscriber),
  };
  // A background response's events are kept in Redis, where any edge follows them, woken by each append's announcement.
  const responseEvents = redisEventLog(redis, GENERATE_DEADLINE_MS / 1000);
  const responseNotices = redisLogNotices(subscriber, logger);
  const { app, ctx, drain } = await buildApp({ cfg, gateways, logger, requestLimiter, budgets, registry, cancelBroadcast, responseEvents, responseNotices });
  // Draining answers /api/health 503 and refuses new requests; open streams are told to reconnect.
  svc.onShutdown('notServing', 'draining', () => drain());
  // Background responses get the drain's time to end, then are stopped and written as failed.
  svc.onShutdown('drain', 'background responses', (phaseEnd) => ctx.background.drain(phaseEnd));
  svc.onShutdown('stop', 'background responses', () => ctx.background.stop());
  svc.httpServer(app.server, () => app.close());

  await app.listen({ port: cfg.port, host: svc.host });
  const addr = app.server.address();
  logger.info({ host: svc.host, port: typeof addr === 'object' && addr ? addr.port : cfg.port }, 'listening');
}
