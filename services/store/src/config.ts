// Every environment variable the store reads, with its default and validation, in one place.
import { config } from '@agent-mesh/common';

type Env = Record<string, string | undefined>;

export type ReadPreferenceMode = 'primary' | 'primaryPreferred' | 'secondary' | 'secondaryPreferred' | 'nearest';
const READ_PREFERENCES: readonly ReadPreferenceMode[] = ['primary', 'primaryPreferred', 'secondary', 'secondaryPreferred', 'nearest'];

export interface MongoOptions {
  uri: string;
  /** @default 100 (MONGO_MAX_POOL_SIZE) */
  maxPoolSize: number;
  /** @default 10 (MONGO_MIN_POOL_SIZE) */
  minPoolSize: number;
  /** @default 30000 (MONGO_MAX_IDLE_TIME_MS) */
  maxIdleTimeMS: number;
  /** @default 5000 (MONGO_WAIT_QUEUE_TIMEOUT_MS) */
  waitQueueTimeoutMS: number;
  /** @default true (MONGO_RETRY_WRITES) */
  retryWrites: boolean;
  /** `majority` or a number of nodes. @default majority (MONGO_WRITE_CONCERN) */
  writeConcern: 'majority' | number;
  /** Replica set name, if any (MONGO_REPLICA_SET). */
  replicaSet?: string;
  /** @default secondaryPreferred with a replica set, else primary (MONGO_READ_PREFERENCE) */
  readPreference: ReadPreferenceMode;
  /** How long an operation waits for a reachable server before failing. @default 5000 */
  serverSelectionTimeoutMS: number;
}

export interface StoreConfig {
  port: number;
  /** Interface of the gRPC and metrics listeners. @default 127.0.0.1 (STORE_HOST) */
  host: string;
  /** @default 10000 (SHUTDOWN_GRACE_MS) */
  shutdownGraceMs: number;
  metricsPort: number;
  mongo: MongoOptions;
  /** Conversations idle longer than this are deleted with their messages and runs. @default 30 days */
  retentionMs: number;
  /** @default 600000 (10 min) */
  cleanupIntervalMs: number;
  /** A finished run's checkpoint is dropped this long after it completed. @default 1800000 (30 min) */
  runStateRetentionMs: number;
  /** Queries slower than this are logged with their shape. @default 100 */
  slowQueryMs: number;
  /** How often MongoDB is pinged to decide the health status. @default 5000 */
  healthIntervalMs: number;
}

export function loadConfig(env: Env = process.env): StoreConfig {
  const port = config.int({ env: 'STORE_PORT', default: config.DEFAULT_PORTS.STORE, min: 0, max: 65535 }, env);
  const replicaSet = config.str({ env: 'MONGO_REPLICA_SET', default: '' }, env) || undefined;
  const readPreference = config.str(
    { env: 'MONGO_READ_PREFERENCE', default: replicaSet ? 'secondaryPreferred' : 'primary' },
    env,
  ) as ReadPreferenceMode;
  if (!READ_PREFERENCES.includes(readPreference)) {
    throw new config.ConfigError(`MONGO_READ_PREFERENCE must be one of ${READ_PREFERENCES.join(', ')}, got "${readPreference}"`);
  }
  const wc = config.str({ env: 'MONGO_WRITE_CONCERN', default: 'majority' }, env);
  if (wc !== 'majority' && !/^\d+$/.test(wc)) {
    throw new config.ConfigError(`MONGO_WRITE_CONCERN must be "majority" or a number, got "${wc}"`);
  }
  const uri = config.str({ env: 'MONGODB_URI', default: 'mongodb://127.0.0.1:27017/agentmesh' }, env);
  if (!/^mongodb(\+srv)?:\/\//.test(uri)) throw new config.ConfigError('MONGODB_URI must start with mongodb:// or mongodb+srv://');
  const maxPoolSize = config.int({ env: 'MONGO_MAX_POOL_SIZE', default: 100, min: 1 }, env);
  const minPoolSize = config.int({ env: 'MONGO_MIN_POOL_SIZE', default: 10, min: 0 }, env);
  if (minPoolSize > maxPoolSize) throw new config.ConfigError(`MONGO_MIN_POOL_SIZE (${minPoolSize}) must be <= MONGO_MAX_POOL_SIZE (${maxPoolSize})`);
  return {
    port,
    host: config.infra.bindHost('STORE', env),
    shutdownGraceMs: config.infra.shutdownGraceMs(env),
    metricsPort: config.int({ env: 'METRICS_PORT', default: config.metricsPortFor(port), min: 0, max: 65535 }, env),
    mongo: {
      uri,
      maxPoolSize,
      minPoolSize,
      maxIdleTimeMS: config.int({ env: 'MONGO_MAX_IDLE_TIME_MS', default: 30_000, min: 0 }, env),
      waitQueueTimeoutMS: config.int({ env: 'MONGO_WAIT_QUEUE_TIMEOUT_MS', default: 5_000, min: 0 }, env),
      retryWrites: config.bool({ env: 'MONGO_RETRY_WRITES', default: true }, env),
      writeConcern: wc === 'majority' ? 'majority' : Number(wc),
      replicaSet,
      readPreference,
      serverSelectionTimeoutMS: config.int({ env: 'MONGO_SERVER_SELECTION_TIMEOUT_MS', default: 5_000, min: 100 }, env),
    },
    retentionMs: config.num({ env: 'RETENTION_DAYS', default: 30, min: 0 }, env) * 86_400_000,
    cleanupIntervalMs: config.int({ env: 'CLEANUP_INTERVAL_MS', default: 600_000, min: 100 }, env),
    runStateRetentionMs: config.int({ env: 'RUN_STATE_RETENTION_MS', default: 1_800_000, min: 0 }, env),
    slowQueryMs: config.int({ env: 'SLOW_QUERY_MS', default: 100, min: 0 }, env),
    healthIntervalMs: config.int({ env: 'STORE_HEALTH_INTERVAL_MS', default: 5_000, min: 100 }, env),
  };
}
