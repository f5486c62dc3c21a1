// Process entry of the edge: configuration, logger, Redis, gateways, the HTTP server, and a
// graceful drain on SIGTERM — wiring only.
import { createLogger, createRedis, Lifecycle, loadConfigOrExit } from '@agent-mesh/common';
import { buildApp } from './app';
import { loadConfig } from './config';
import { createGateways } from './gateways';
import { redisRequestLimiter } from './ratelimit';

async function main(): Promise<void> {
  const logger = createLogger('edge');
  const cfg = loadConfigOrExit('edge', logger, loadConfig);
  const lifecycle = new Lifecycle(logger, cfg.shutdownGraceMs);

  const redis = createRedis(cfg.redisUrl, logger);
  lifecycle.own('redis', async () => {
    await redis.quit().catch(() => redis.disconnect());
  });
  const gateways = createGateways(cfg, redis);
  lifecycle.own('gateways', () => gateways.close());

  const requestLimiter = redisRequestLimiter(redis, { perMinute: cfg.rateLimitPerMinute, burstFraction: cfg.rateLimitBurstFraction }, logger);
  lifecycle.own('request limiter', () => requestLimiter.close?.());
  const { app, drain } = await buildApp({ cfg, gateways, logger, requestLimiter });
  // Registered last, so it runs first: stop accepting, tell streams to reconnect, close the server.
  lifecycle.own('http', async () => {
    drain();
    const grace = new Promise<void>((resolve) => setTimeout(resolve, Math.max(0, cfg.shutdownGraceMs - 1_000)).unref());
    await Promise.race([app.close(), grace]);
  });
  lifecycle.handleSignals();

  await app.listen({ port: cfg.port, host: cfg.host });
  const addr = app.server.address();
  logger.info({ port: typeof addr === 'object' && addr ? addr.port : cfg.port }, 'listening');
}

main().catch((err: unknown) => {
  process.stderr.write(`edge failed to start: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
