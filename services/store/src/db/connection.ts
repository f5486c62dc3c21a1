// The MongoDB client: pool options from config, and pool usage kept in gauges from the driver's
// connection-pool (CMAP) events.
import { withTimeout } from '@agent-mesh/common';
import { MongoClient, type MongoClientOptions } from 'mongodb';
import type { MongoOptions } from '../config';
import type { StoreMetrics } from '../metrics';

export function mongoClientOptions(o: MongoOptions): MongoClientOptions {
  return {
    maxPoolSize: o.maxPoolSize,
    minPoolSize: o.minPoolSize,
    maxIdleTimeMS: o.maxIdleTimeMS,
    waitQueueTimeoutMS: o.waitQueueTimeoutMS,
    retryWrites: o.retryWrites,
    writeConcern: { w: o.writeConcern },
    readPreference: o.readPreference,
    serverSelectionTimeoutMS: o.serverSelectionTimeoutMS,
    ...(o.replicaSet ? { replicaSet: o.replicaSet } : {}),
    appName: 'agent-mesh-store',
  };
}

export function createMongoClient(o: MongoOptions, metrics: StoreMetrics): MongoClient {
  const client = new MongoClient(o.uri, mongoClientOptions(o));
  metrics.poolMax.set(o.maxPoolSize);
  // Counted from events rather than sampled, so a scrape sees the pool as it is. The gauges never
  // go below zero: a pool cleared after a network error closes connections that were in use.
  let open = 0;
  let inUse = 0;
  const publish = () => {
    metrics.poolSize.set(Math.max(0, open));
    metrics.poolInUse.set(Math.max(0, Math.min(inUse, open)));
  };
  client.on('connectionCreated', () => { open++; publish(); });
  client.on('connectionClosed', () => { open = Math.max(0, open - 1); publish(); });
  client.on('connectionCheckedOut', () => { inUse++; publish(); });
  client.on('connectionCheckedIn', () => { inUse = Math.max(0, inUse - 1); publish(); });
  client.on('connectionPoolCleared', () => { inUse = 0; publish(); });
  return client;
}

/** Resolves when the server answers `ping` within timeoutMs; rejects with the reason otherwise. */
export async function ping(client: MongoClient, timeoutMs: number): Promise<void> {
  const res = await withTimeout(client.db().command({ ping: 1 }), timeoutMs, () => new Error(`ping not answered within ${timeoutMs} ms`));
  if (res.ok !== 1) throw new Error('ping answered not ok');
}
