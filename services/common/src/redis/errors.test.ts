import { isRedisConnectionError } from './index';

describe('isRedisConnectionError', () => {
  test.each([
    'Connection is closed.',
    "Cluster isn't ready and enableOfflineQueue options is false",
    'CLUSTERDOWN The cluster is down',
    'Failed to refresh slots cache.',
    // ioredis gives up following redirections while a cluster promotes a replica.
    'Too many Cluster redirections. Last error: Error: Connection is closed.',
  ])('an outage: %s', (message) => {
    expect(isRedisConnectionError(new Error(message))).toBe(true);
  });

  test.each(['ERR wrong number of arguments', 'NOSCRIPT No matching script'])('not an outage: %s', (message) => {
    expect(isRedisConnectionError(new Error(message))).toBe(false);
  });
});
