// Keeps the gRPC health status in step with MongoDB: SERVING only while `ping` answers. Until the
// first success it also creates the indexes, so a store started before its database comes up
// becomes ready by itself.
import type { Logger, MeshServer } from '@agent-mesh/common';
import type { MongoClient } from 'mongodb';
import type { StoreMetrics } from '../metrics';
import { ping } from './connection';

export class DatabaseHealth {
  private timer?: NodeJS.Timeout;
  private stopped = false;
  private up?: boolean;
  private prepared = false;

  constructor(
    private readonly client: MongoClient,
    private readonly server: Pick<MeshServer, 'health'>,
    private readonly services: string[],
    private readonly opts: { intervalMs: number; prepare: () => Promise<void>; onReady?: () => void },
    private readonly logger: Logger,
    private readonly metrics: StoreMetrics,
  ) {}

  /** Checks now, then every intervalMs. */
  start(): void {
    void this.tick();
  }

  get serving(): boolean {
    return this.up === true;
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
  }

  private async tick(): Promise<void> {
    let ok = false;
    try {
      if (!this.prepared) {
        await this.opts.prepare();
        this.prepared = true;
        this.opts.onReady?.();
      }
      await ping(this.client, Math.max(2_000, this.opts.intervalMs));
      ok = true;
    } catch (err) {
      this.logger.warn({ err: (err as Error).message }, 'database ping failed');
    }
    if (this.stopped) return;
    this.set(ok);
    this.timer = setTimeout(() => void this.tick(), this.opts.intervalMs);
  }

  private set(ok: boolean): void {
    this.metrics.dbUp.set(ok ? 1 : 0);
    if (ok === this.up) return;
    this.up = ok;
    const s = ok ? 'SERVING' : 'NOT_SERVING';
    for (const name of this.services) this.server.health.setStatus(name, s);
    if (ok) this.logger.info('database reachable: SERVING');
    else this.logger.error('database unreachable: NOT_SERVING');
  }
}
