// One test file's fleet as `npm start -- --replicas 2` runs it (two replicas of every service
// behind nginx) on the Redis the test brings, with its own FerretDB and an emulator whose runs last
// several seconds (four agents of ~1 s each, so there is time to kill things mid-run) and which
// refuses any upstream call beyond `concurrency` at once: an overshoot of the brokers' shared
// limit shows as a 429. `stop()` (in afterAll) stops all of it, services first.
import {
  configureEmulator, mintToken, startEmulator, startFerret, startFleet, testDir,
  type EmulatorProc, type FerretProc, type Fleet,
} from './index';

/** Upstream calls in flight at once for the whole fleet (the brokers share it through Redis). */
export const FLEET_CONCURRENCY = 4;

export interface TestRedis {
  url: string;
  /** The services' environment for it (a Sentinel's or a Cluster's nodes). */
  env?: Record<string, string>;
  stop(): Promise<unknown>;
}

export interface TestFleet {
  dir: string;
  ferret: FerretProc;
  emulator: EmulatorProc;
  fleet: Fleet;
  /** A request to the fleet's front door as `user`. */
  call(path: string, init?: RequestInit, user?: string): Promise<Response>;
  /** A new conversation of `user`'s; its id. */
  newConversation(user: string): Promise<string>;
  stop(): Promise<void>;
}

export async function startTestFleet<R extends TestRedis>(o: {
  /** Names the log folder. */
  name: string;
  jwtSecret: string;
  /** Starts the Redis of this fleet in the log folder. */
  redis: (logDir: string) => Promise<R>;
  /** The emulator's time to first token, ms. */
  ttftMs: number;
  /** How long a run's lease lasts before another orchestrator may take it over. */
  runLeaseMs: number;
  prometheus?: false | { scrapeInterval: string; evaluationInterval: string };
}): Promise<TestFleet & { redis: R }> {
  const dir = testDir(o.name);
  const [redis, ferret, emulator] = await Promise.all([
    o.redis(dir),
    startFerret({ logDir: dir }),
    startEmulator({ logDir: dir, env: { EMULATOR_REVISE_RATE: '0' } }),
  ]);
  const infra = [emulator, ferret, redis];
  let fleet: Fleet;
  try {
    await configureEmulator(emulator, { timeScale: 1, ttftMs: o.ttftMs, tokensPerSec: 40, completionTokens: 30, reviseRate: 0, maxConcurrent: FLEET_CONCURRENCY });
    fleet = await startFleet({
      replicas: 2, logDir: dir, redisUrl: redis.url, mongoUri: ferret.uri, llmBaseUrl: `${emulator.url}/v1`, jwtSecret: o.jwtSecret,
      prometheus: o.prometheus ?? false,
      env: redis.env,
      perService: {
        edge: { RATE_LIMIT_PER_MINUTE: '100000', SSE_HEARTBEAT_MS: '1000' },
        orchestrator: { RUN_LEASE_MS: String(o.runLeaseMs) },
        'llm-broker': { LLM_LEASE_MS: '3000', LLM_MAX_CONCURRENT: String(FLEET_CONCURRENCY) },
        'tool-service': { TOOL_CORPUS_SOURCES: 'docs' },
      },
    });
  } catch (err) {
    await Promise.all(infra.map((p) => p.stop()));
    throw err;
  }
  const call = async (path: string, init: RequestInit = {}, user = 'alice'): Promise<Response> => {
    const token = await mintToken(o.jwtSecret, user);
    return fetch(`${fleet.url}${path}`, { ...init, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', ...(init.headers ?? {}) } });
  };
  return {
    dir, redis, ferret, emulator, fleet, call,
    async newConversation(user) {
      const res = await call('/api/conversations', { method: 'POST', body: JSON.stringify({ title: o.name }) }, user);
      if (res.status !== 201) throw new Error(`creating a conversation: HTTP ${res.status} ${await res.text()}`);
      return ((await res.json()) as { id: string }).id;
    },
    async stop() {
      await fleet.stop();
      await Promise.all(infra.map((p) => p.stop()));
    },
  };
}
