import { loadConfig } from './config';

describe('loadConfig', () => {
  it('has the brief’s defaults', () => {
    const c = loadConfig({});
    expect(c.port).toBe(50054);
    expect(c.metricsPort).toBe(51054);
    expect(c.mongo).toMatchObject({
      uri: 'mongodb://127.0.0.1:27017/agentmesh',
      maxPoolSize: 100,
      minPoolSize: 10,
      maxIdleTimeMS: 30_000,
      waitQueueTimeoutMS: 5_000,
      retryWrites: true,
      writeConcern: 'majority',
      readPreference: 'primary',
    });
    expect(c.retentionMs).toBe(30 * 86_400_000);
    expect(c.cleanupIntervalMs).toBe(600_000);
    expect(c.runStateRetentionMs).toBe(1_800_000);
    expect(c.slowQueryMs).toBe(100);
  });

  it('reads secondaryPreferred by default with a replica set', () => {
    expect(loadConfig({ MONGO_REPLICA_SET: 'rs0' }).mongo.readPreference).toBe('secondaryPreferred');
    expect(loadConfig({ MONGO_REPLICA_SET: 'rs0', MONGO_READ_PREFERENCE: 'primary' }).mongo.readPreference).toBe('primary');
  });

  it('names a malformed variable', () => {
    expect(() => loadConfig({ MONGO_MAX_POOL_SIZE: 'lots' })).toThrow(/MONGO_MAX_POOL_SIZE/);
    expect(() => loadConfig({ MONGO_READ_PREFERENCE: 'anywhere' })).toThrow(/MONGO_READ_PREFERENCE/);
    expect(() => loadConfig({ MONGO_WRITE_CONCERN: 'some' })).toThrow(/MONGO_WRITE_CONCERN/);
    expect(() => loadConfig({ MONGO_MIN_POOL_SIZE: '200' })).toThrow(/MONGO_MIN_POOL_SIZE/);
    expect(() => loadConfig({ MONGODB_URI: 'http://x' })).toThrow(/MONGODB_URI/);
  });
});
