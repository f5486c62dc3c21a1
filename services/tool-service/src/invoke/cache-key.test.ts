import { cacheKey } from './cache-key';

describe('cache keys', () => {
  it('are independent of key order at every level', () => {
    expect(cacheKey('p', 't', 'params', { a: 1, b: 2 }, 'u')).toBe(cacheKey('p', 't', 'params', { b: 2, a: 1 }, 'u'));
  });

  it('by params: the same for every user; by params+user: one per user', () => {
    const k = (strategy: 'params' | 'params+user', user: string) => cacheKey('p', 'search_web', strategy, { query: 'q' }, user);
    expect(k('params', 'alice')).toBe(k('params', 'bob'));
    expect(k('params+user', 'alice')).not.toBe(k('params+user', 'bob'));
    expect(k('params', 'alice')).toMatch(/^p:cache:search_web:[0-9a-f]{64}$/);
    expect(k('params+user', 'alice')).not.toContain('alice');
  });

  it('differ by arguments and by tool; a custom strategy decides what counts', () => {
    expect(cacheKey('p', 't', 'params', { q: 'a' }, 'u')).not.toBe(cacheKey('p', 't', 'params', { q: 'b' }, 'u'));
    expect(cacheKey('p', 't1', 'params', { q: 'a' }, 'u')).not.toBe(cacheKey('p', 't2', 'params', { q: 'a' }, 'u'));
    const lower = (args: Record<string, unknown>) => String(args.q).toLowerCase();
    expect(cacheKey('p', 't', lower, { q: 'ABC' }, 'u')).toBe(cacheKey('p', 't', lower, { q: 'abc' }, 'v'));
  });
});
