// Process lifecycle: resources register a closer; SIGTERM/SIGINT runs the closers in reverse order
// within a grace period, then the process exits (forced if the grace runs out).
import { ConfigError } from '../config';
import type { Logger } from '../logging';

/**
 * The service's configuration, or the end of the process: a ConfigError (a missing or malformed
 * variable) is logged, also written to stderr (seen where logs are not), and exits with 2, the
 * usual code for a usage error. Any other error is not a configuration problem and is rethrown.
 */
export function loadConfigOrExit<C>(service: string, logger: Logger, load: () => C): C {
  try {
    return load();
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    logger.fatal({ err: err.message }, 'invalid configuration');
    process.stderr.write(`${service}: ${err.message}\n`);
    process.exit(2);
  }
}

type Closer = { name: string; close: () => Promise<void> | void };

export class Lifecycle {
  private readonly closers: Closer[] = [];
  private stopping?: Promise<void>;

  constructor(
    private readonly logger: Logger,
    /** @default 10000 (SHUTDOWN_GRACE_MS) */
    private readonly graceMs = Number(process.env.SHUTDOWN_GRACE_MS ?? 10_000),
  ) {}

  /** Registers a resource to close at shutdown; closers run last-registered first. */
  own(name: string, close: () => Promise<void> | void): void {
    this.closers.push({ name, close });
  }

  /** Installs the signal handlers. */
  handleSignals(): void {
    const onSignal = (signal: NodeJS.Signals) => {
      this.logger.info({ signal }, 'shutting down');
      void this.stop().then(() => process.exit(0));
    };
    process.once('SIGTERM', onSignal);
    process.once('SIGINT', onSignal);
  }

  get grace(): number {
    return this.graceMs;
  }

  stop(): Promise<void> {
    this.stopping ??= (async () => {
      const force = setTimeout(() => {
        this.logger.error({ graceMs: this.graceMs }, 'shutdown grace period exceeded: exiting');
        process.exit(1);
      }, this.graceMs + 2_000);
      force.unref();
      for (const c of [...this.closers].reverse()) {
        try {
          await c.close();
        } catch (err) {
          this.logger.warn({ err, resource: c.name }, 'error while closing');
        }
      }
      const flush = (globalThis as { __meshTelemetryShutdown?: () => Promise<void> }).__meshTelemetryShutdown;
      await flush?.().catch(() => undefined);
    })();
    return this.stopping;
  }
}
