// One test file's whole mesh: Redis, FerretDB, the emulator and the five services, in a fresh log
// folder; `stop()` (in afterAll) stops all of it, services first.
import {
  startEmulator, startFerret, startMesh, startRedis, testDir,
  type EmulatorProc, type FerretProc, type Mesh, type RedisProc,
} from './index';

export interface TestMesh {
  dir: string;
  redis: RedisProc;
  ferret: FerretProc;
  emulator: EmulatorProc;
  mesh: Mesh;
  stop(): Promise<void>;
}

export async function startTestMesh(o: {
  /** Names the log folder. */
  name: string;
  jwtSecret: string;
  /** The emulator's environment (latencies, answer length, revise rate). */
  emulatorEnv?: Record<string, string>;
  env?: Record<string, string>;
  perService?: Record<string, Record<string, string>>;
}): Promise<TestMesh> {
  const dir = testDir(o.name);
  const [redis, ferret, emulator] = await Promise.all([
    startRedis({ logDir: dir }),
    startFerret({ logDir: dir }),
    startEmulator({ logDir: dir, env: o.emulatorEnv }),
  ]);
  let mesh: Mesh;
  try {
    mesh = await startMesh({
      logDir: dir, redisUrl: redis.url, mongoUri: ferret.uri, llmBaseUrl: `${emulator.url}/v1`, jwtSecret: o.jwtSecret,
      env: o.env, perService: o.perService,
    });
  } catch (err) {
    await Promise.all([emulator, ferret, redis].map((p) => p.stop()));
    throw err;
  }
  return {
    dir, redis, ferret, emulator, mesh,
    async stop() {
      await mesh.stop();
      await Promise.all([emulator, ferret, redis].map((p) => p.stop()));
    },
  };
}
