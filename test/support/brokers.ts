// The llm-brokers an integration test file starts: real processes on the file's Redis, calling the
// emulator, each with a client; every one is stopped by `stopAll()` in the file's afterAll.
import { createClient } from '@agent-mesh/common';
import { LlmBrokerServiceClient } from '@agent-mesh/common/gen/llmbroker/v1/llm_broker';
import { startService, type ServiceProc } from './index';

export interface TestBroker {
  proc: ServiceProc;
  client: LlmBrokerServiceClient;
  /** Its Redis database. */
  db: number;
}

export class TestBrokers {
  private readonly started: TestBroker[] = [];
  private nextDb = 1;

  /** `env`: what every broker of the file gets on top of the defaults below. */
  constructor(private readonly o: { logDir: string; redisUrl: string; emulatorUrl: string; env?: Record<string, string> }) {}

  /**
   * A broker on Redis database `db` (by default one of its own, so that no other broker's quota,
   * breaker or cache state reaches it; replicas of one deployment share one), with `env` on top.
   */
  async start(opts: { db?: number; env?: Record<string, string> } = {}): Promise<TestBroker> {
    const db = opts.db ?? this.nextDb++;
    const proc = await startService('llm-broker', {
      logDir: this.o.logDir,
      instance: String(this.started.length),
      env: {
        REDIS_URL: `${this.o.redisUrl}/${db}`,
        LLM_BASE_URL: `${this.o.emulatorUrl}/v1`,
        LLM_API_KEY: 'k',
        LLM_MAX_CONCURRENT: '20',
        LLM_RPM: '100000',
        OTEL_SDK_DISABLED: 'true',
        ...this.o.env,
        ...opts.env,
      },
    });
    const b = { proc, client: createClient(LlmBrokerServiceClient, proc.addr), db };
    this.started.push(b);
    return b;
  }

  async stop(b: TestBroker): Promise<void> {
    b.client.close();
    await b.proc.stop().catch(() => undefined);
  }

  async stopAll(): Promise<void> {
    for (const b of this.started) await this.stop(b);
  }
}
