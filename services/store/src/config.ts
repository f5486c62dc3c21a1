// Every environment variable the store reads: its spec (type, default, description: the tables of
// docs/configuration.md are made from VARS) and its validation.
import { config } from '@agent-mesh/common';

type Env = config.Env;

export type ReadPreferenceMode = 'primary' | 'primaryPreferred' | 'secondary' | 'secondaryPreferred' | 'nearest';
const READ_PREFERENCES: readonly ReadPreferenceMode[] = ['primary', 'primaryPreferred', 'secondary', 'secondaryPreferred', 'nearest'];

export interface MongoOptions {
  uri: string;
  maxPoolSize: number;
  minPoolSize: number;
  maxIdleTimeMS: number;
  waitQueueTimeoutMS: number;
  retryWrites: boolean;
  /** `majority` or a number of nodes. */
  writeConcern: 'majority' | number;
  /** Replica set name, if any (MONGO_REPLICA_SET). */
  replicaSet?: string;
  readPreference: ReadPreferenceMode;
  /** How long an operation waits for a reachable server before failing. */
  serverSelectionTimeoutMS: number;
}

export interface StoreConfig {
  port: number;
  /** Interface of the gRPC and metrics listeners. */
  host: string;
  shutdownGraceMs: number;
  metricsPort: number;
  mongo: MongoOptions;
  /** Conversations idle longer than this are deleted with their messages and runs. */
  retentionMs: number;
  cleanupIntervalMs: number;
  /** A finished run's checkpoint is dropped this long after it completed. */
  runStateRetentionMs: number;
  /** Queries slower than this are logged with their shape. */
  slowQueryMs: number;
  /** How long an operation that never ran (the database restarting) is tried again. */
  dbRetryMs: number;
  /** How often MongoDB is pinged to decide the health status. */
  healthIntervalMs: number;
  /** Updates (findAndModify, update) running at once (0: no limit). */
  maxConcurrentUpdates: number;
}

const { STORE_PORT, STORE_HOST, METRICS_PORT, SHUTDOWN_GRACE_MS } = config.sharedVars;

/** Every variable the store reads. */
export const VARS = {
  STORE_PORT, STORE_HOST, METRICS_PORT, SHUTDOWN_GRACE_MS,
  ...config.defineVars({
    MONGODB_URI: { type: 'string', default: 'mongodb://127.0.0.1:27017/agentmesh', doc: 'MongoDB (FerretDB locally): `mongodb://` or `mongodb+srv://`' },
    MONGO_MAX_POOL_SIZE: { type: 'int', default: 100, min: 1, doc: 'connections at most' },
    MONGO_MIN_POOL_SIZE: { type: 'int', default: 10, min: 0, doc: 'connections kept open (at most `MONGO_MAX_POOL_SIZE`)' },
    MONGO_MAX_IDLE_TIME_MS: { type: 'int', default: 30_000, min: 0, doc: 'an idle connection above the minimum closes after this' },
    MONGO_WAIT_QUEUE_TIMEOUT_MS: { type: 'int', default: 5_000, min: 0, doc: 'longest wait for a free connection' },
    MONGO_SERVER_SELECTION_TIMEOUT_MS: { type: 'int', default: 5_000, min: 100, doc: 'how long an operation waits for a reachable server before failing' },
    MONGO_RETRY_WRITES: { type: 'bool', default: true, doc: 'retryable writes' },
    MONGO_WRITE_CONCERN: { type: 'string', default: 'majority', doc: '`majority` or a number of nodes' },
    MONGO_REPLICA_SET: { type: 'string', default: '', defaultDoc: 'none', doc: 'the replica set name, if any' },
    MONGO_READ_PREFERENCE: { type: 'string', values: READ_PREFERENCES, defaultDoc: '`secondaryPreferred` with a replica set, else `primary`', doc: 'where reads go' },
    RETENTION_DAYS: { type: 'number', default: 30, min: 0, doc: 'conversations untouched for longer are deleted with their messages and runs, and answers of the Responses API kept for longer too' },
    CLEANUP_INTERVAL_MS: { type: 'int', default: 600_000, min: 100, doc: 'how often retention runs' },
    RUN_STATE_RETENTION_MS: { type: 'int', default: 1_800_000, min: 0, doc: "a finished run's checkpoint state is dropped this long after it ended" },
    SLOW_QUERY_MS: { type: 'int', default: 100, min: 0, doc: 'slower queries are logged with their shape' },
    STORE_DB_RETRY_MS: { type: 'int', default: 3_000, min: 0, doc: 'an operation that could not run because the database is restarting is tried again for this long (0: never), then answered UNAVAILABLE' },
    STORE_HEALTH_INTERVAL_MS: { type: 'int', default: 5_000, min: 100, doc: 'how often MongoDB is pinged to decide the health status' },
    STORE_MAX_CONCURRENT_UPDATES: { type: 'int', default: 16, min: 0, doc: "updates (findAndModify, update) running at once (0: no limit). FerretDB 1.24 holds two PostgreSQL connections for each: keep store replicas × this below FerretDB's `pool_max_conns`" },
  }),
};

export function loadConfig(env: Env = process.env): StoreConfig {
  const read = <V extends config.Var>(v: V, fallback?: config.ValueOf<V>) => config.read(v, env, fallback);
  const port = read(VARS.STORE_PORT);
  const replicaSet = read(VARS.MONGO_REPLICA_SET) || undefined;
  const readPreference = read(VARS.MONGO_READ_PREFERENCE, replicaSet ? 'secondaryPreferred' : 'primary') as ReadPreferenceMode;
  const wc = read(VARS.MONGO_WRITE_CONCERN);
  if (wc !== 'majority' && !/^\d+$/.test(wc)) {
    throw new config.ConfigError(`MONGO_WRITE_CONCERN must be "majority" or a number, got "${wc}"`);
  }
  const uri = read(VARS.MONGODB_URI);
  if (!/^mongodb(\+srv)?:\/\//.test(uri)) throw new config.ConfigError('MONGODB_URI must start with mongodb:// or mongodb+srv://');
  const maxPoolSize = read(VARS.MONGO_MAX_POOL_SIZE);
  const minPoolSize = read(VARS.MONGO_MIN_POOL_SIZE);
  if (minPoolSize > maxPoolSize) throw new config.ConfigError(`MONGO_MIN_POOL_SIZE (${minPoolSize}) must be <= MONGO_MAX_POOL_SIZE (${maxPoolSize})`);
  return {
    port,
    host: read(VARS.STORE_HOST),
    shutdownGraceMs: read(VARS.SHUTDOWN_GRACE_MS),
    metricsPort: read(VARS.METRICS_PORT, config.metricsPortFor(port)),
    mongo: {
      uri,
      maxPoolSize,
      minPoolSize,
      maxIdleTimeMS: read(VARS.MONGO_MAX_IDLE_TIME_MS),
      waitQueueTimeoutMS: read(VARS.MONGO_WAIT_QUEUE_TIMEOUT_MS),
      retryWrites: read(VARS.MONGO_RETRY_WRITES),
      writeConcern: wc === 'majority' ? 'majority' : Number(wc),
      replicaSet,
      readPreference,
      serverSelectionTimeoutMS: read(VARS.MONGO_SERVER_SELECTION_TIMEOUT_MS),
    },
    retentionMs: read(VARS.RETENTION_DAYS) * 86_400_000,
    cleanupIntervalMs: read(VARS.CLEANUP_INTERVAL_MS),
    runStateRetentionMs: read(VARS.RUN_STATE_RETENTION_MS),
    slowQueryMs: read(VARS.SLOW_QUERY_MS),
    dbRetryMs: read(VARS.STORE_DB_RETRY_MS),
    healthIntervalMs: read(VARS.STORE_HEALTH_INTERVAL_MS),
    maxConcurrentUpdates: read(VARS.STORE_MAX_CONCURRENT_UPDATES),
  };
}
