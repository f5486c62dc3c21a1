// The one bootstrap of every service's main.ts: logger, configuration (or exit 2), one handler for
// uncaught errors, listeners bound to the service's `<SERVICE>_HOST`, and one shutdown on
// SIGTERM/SIGINT that spends SHUTDOWN_GRACE_MS phase by phase (see shutdown.ts).
import type { Server as HttpServer } from 'node:http';
import type { Registry } from 'prom-client';
import { startGrpcServer, type MeshServer, type ServiceRegistration } from '../grpc/server';
import { createLogger, type Logger } from '../logging';
import { startMetricsServer } from '../metrics';
import { loadConfigOrExit } from './config-exit';
import { runPhases, shutdownPlan, type Phase, type ShutdownStep } from './shutdown';

/** A shutdown still running this long after SHUTDOWN_GRACE_MS ends with exit code 1. */
export const FORCE_EXIT_MARGIN_MS = 2_000;

/** What runService needs from every service's configuration. */
export interface ServiceConfig {
  /** The interface every listener of the service binds (`<SERVICE>_HOST`). */
  host: string;
  /** The whole shutdown budget (SHUTDOWN_GRACE_MS). */
  shutdownGraceMs: number;
}

export interface ServiceSpec<C extends ServiceConfig> {
  /** The service's name: its logger's, and the prefix of what it writes to stderr. */
  name: string;
  loadConfig: () => C;
  /** Exports buffered telemetry (`flushTelemetry`): the last phase of the shutdown. */
  flushTelemetry: () => Promise<void>;
  /** Wires the service: starts its listeners through `svc` and registers its shutdown steps. */
  build: (svc: Service<C>) => Promise<void>;
}

/** What a service's wiring gets: its configuration, logger, listeners and shutdown phases. */
export class Service<C extends ServiceConfig> {
  /** @internal the registered shutdown steps, in registration order */
  readonly steps: { phase: Phase; name: string; run: ShutdownStep }[] = [];
  private readonly grpcServers: MeshServer[] = [];
  private draining = false;

  constructor(
    readonly name: string,
    readonly config: C,
    readonly logger: Logger,
  ) {}

  /** The interface every listener binds. */
  get host(): string {
    return this.config.host;
  }

  /** Adds a step to a shutdown phase; the steps of one phase run together. */
  onShutdown(phase: Phase, name: string, run: ShutdownStep): void {
    this.steps.push({ phase, name, run });
  }

  /**
   * Starts a gRPC server (health, reflection) on the service's host. At shutdown it answers
   * NOT_SERVING, stops accepting, and lets in-flight calls and streams finish until the drain's
   * deadline, when the rest are cancelled.
   */
  async grpcServer(opts: { port: number; services: ServiceRegistration[]; protoFiles: string[] }): Promise<MeshServer> {
    const server = await startGrpcServer({ ...opts, host: this.host, logger: this.logger });
    this.grpcServers.push(server);
    this.onShutdown('notServing', 'grpc', () => {
      this.draining = true;
      server.notServing();
    });
    this.onShutdown('stopAccepting', 'grpc', () => void server.stopAccepting());
    this.onShutdown('drain', 'grpc', async (deadline) => {
      if (!(await untilDeadline(server.stopAccepting(), deadline))) server.forceShutdown();
    });
    return server;
  }

  /**
   * Drains an HTTP server the service started on its host: at shutdown it stops accepting, lets
   * in-flight requests end (keep-alive connections are closed as they go idle) until the drain's
   * deadline, then `close` ends whatever is left.
   */
  httpServer(server: HttpServer, close: () => Promise<void>): void {
    let drained: Promise<void> | undefined;
    const stopAccepting = () =>
      (drained ??= new Promise<void>((resolve) => {
        const idle = setInterval(() => server.closeIdleConnections(), 100);
        idle.unref();
        server.close(() => {
          clearInterval(idle);
          resolve();
        });
      }));
    this.onShutdown('stopAccepting', 'http', () => void stopAccepting());
    this.onShutdown('drain', 'http', async (deadline) => {
      if (!(await untilDeadline(stopAccepting(), deadline))) this.logger.warn('requests still in flight at the end of the drain: closing them');
      await close();
    });
  }

  /**
   * Ready: every gRPC server of the service reports SERVING (so not before it is started, nor
   * once the shutdown has begun). What `/readyz` answers.
   */
  ready(): boolean {
    return !this.draining && this.grpcServers.length > 0 && this.grpcServers.every((s) => s.serving());
  }

  /**
   * Starts the Prometheus side channel on the service's host, with the plain-HTTP probes
   * `/healthz` and `/readyz` (see `ready`); it closes after the drain.
   */
  async metricsServer(registry: Registry, port: number): Promise<{ port: number }> {
    const metrics = await startMetricsServer(registry, port, this.logger, this.host, () => this.ready());
    this.onShutdown('stop', 'metrics', () => metrics.close());
    return metrics;
  }
}

/**
 * Waits for `work` until `deadline` fires: true if it finished in time, false if the deadline
 * came first (the work goes on; the caller decides what to cancel).
 */
export async function untilDeadline(work: Promise<unknown>, deadline: AbortSignal): Promise<boolean> {
  if (deadline.aborted) return false;
  let onAbort!: () => void;
  const timeUp = new Promise<false>((resolve) => {
    onAbort = () => resolve(false);
    deadline.addEventListener('abort', onAbort, { once: true });
  });
  try {
    return await Promise.race([work.then(() => true as const), timeUp]);
  } finally {
    deadline.removeEventListener('abort', onAbort);
  }
}

/**
 * Runs a service until SIGTERM/SIGINT: configuration or exit 2, `build`, then on the signal the
 * phased shutdown within SHUTDOWN_GRACE_MS and exit 0. An uncaught exception or unhandled
 * rejection is logged and runs the same shutdown, ending with exit 1; so does a failed start
 * (without the shutdown: nothing is serving yet).
 */
export async function runService<C extends ServiceConfig>(spec: ServiceSpec<C>): Promise<void> {
  const logger = createLogger(spec.name);
  let svc: Service<C> | undefined;
  let exitCode = 0;
  let stopping: Promise<void> | undefined;

  const shutdown = (reason: string, code: number): void => {
    exitCode = Math.max(exitCode, code);
    stopping ??= (async () => {
      const graceMs = svc?.config.shutdownGraceMs ?? 0;
      const plan = shutdownPlan(graceMs);
      logger.info({ reason, graceMs, plan }, 'shutting down');
      const watchdog = setTimeout(() => {
        logger.error({ graceMs }, 'shutdown still running past its grace: exiting');
        process.exit(1);
      }, graceMs + FORCE_EXIT_MARGIN_MS);
      watchdog.unref();
      const started = Date.now();
      const reports = await runPhases([...(svc?.steps ?? []), { phase: 'telemetry', name: 'telemetry', run: spec.flushTelemetry }], plan);
      for (const r of reports) {
        if (r.outcome === 'failed') logger.warn(r, 'shutdown step failed');
        if (r.outcome === 'overran') logger.warn({ ...r, deadlineMs: plan[r.phase] }, 'shutdown step overran its phase');
      }
      logger.info({ ms: Date.now() - started, exitCode }, 'stopped');
      process.exit(exitCode);
    })();
  };

  const fatal = (what: string) => (err: unknown) => {
    logger.fatal({ err }, what);
    process.stderr.write(`${spec.name}: ${what}: ${(err as Error)?.stack ?? String(err)}\n`);
    shutdown(what, 1);
  };
  process.on('uncaughtException', fatal('uncaught exception'));
  process.on('unhandledRejection', fatal('unhandled rejection'));

  const config = loadConfigOrExit(spec.name, logger, spec.loadConfig);
  svc = new Service(spec.name, config, logger);
  for (const signal of ['SIGTERM', 'SIGINT'] as const) process.once(signal, () => shutdown(signal, 0));

  try {
    await spec.build(svc);
  } catch (err) {
    logger.fatal({ err }, 'failed to start');
    process.stderr.write(`${spec.name} failed to start: ${(err as Error)?.stack ?? String(err)}\n`);
    process.exit(1);
  }
}
