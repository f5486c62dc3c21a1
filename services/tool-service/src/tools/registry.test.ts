import { defaultTools, ToolRegistry, testTools } from './registry';
import { calculator } from './calculator';
import { currentTime } from './current-time';
import { plan } from './plan';
import { searchWeb } from './search-web';

const registry = new ToolRegistry([
  searchWeb({ searchUrl: '', localIndex: () => Promise.reject(new Error('unused')) }),
  plan(),
  calculator(),
  currentTime(),
  ...testTools(),
]);

const message = (tool: string, args: unknown) => {
  const r = registry.get(tool)!.validate(args);
  return r.ok ? 'ok' : r.message;
};

describe('argument validation', () => {
  it('names the field in every message', () => {
    expect(message('search_web', {})).toBe('query: is required');
    expect(message('search_web', { query: 3 })).toBe('query: must be string');
    expect(message('search_web', { query: 'x', limit: 0 })).toBe('limit: must be >= 1');
    expect(message('search_web', { query: 'x', extra: true })).toBe('extra: is not a known parameter');
    expect(message('plan', { action: 'delete' })).toBe('action: must be one of "create", "update", "get", "list"');
    expect(message('plan', { action: 'create', title: 'T' })).toBe('steps: is required');
    expect(message('plan', { action: 'get' })).toBe('planId: is required');
    expect(message('plan', { action: 'create', title: 'T', steps: [''] })).toBe('steps.0: must NOT have fewer than 1 characters');
    expect(message('search_web', 'not an object')).toBe('arguments: must be object');
  });

  it('fills defaults without touching the caller\'s object', () => {
    const args = { query: 'x' };
    const r = registry.get('search_web')!.validate(args);
    expect(r).toEqual({ ok: true, args: { query: 'x', limit: 5 } });
    expect(args).toEqual({ query: 'x' });
  });

  it('applies overrides and refuses unknown tool names in them', () => {
    const r = new ToolRegistry([calculator()], { calculator: { rateLimit: { maxPerMinute: 5 }, cache: { ttlSeconds: 1 } } });
    expect(r.get('calculator')!.plugin.rateLimit).toMatchObject({ maxPerMinute: 5, maxConcurrent: 200 });
    expect(r.get('calculator')!.plugin.cache).toMatchObject({ ttlSeconds: 1, enabled: true });
    expect(() => new ToolRegistry([calculator()], { nope: {} })).toThrow(/unknown tool "nope"/);
    expect(() => new ToolRegistry([calculator(), calculator()])).toThrow(/registered twice/);
  });

  it('keeps the test tools out of the default list; they are registered only on top of it', () => {
    const defaults = new ToolRegistry(defaultTools({ searchUrl: '', localIndex: () => Promise.reject(new Error('unused')) }));
    expect(defaults.names()).toEqual(['search_web', 'plan', 'calculator', 'current_time']);
    expect(registry.names()).toEqual(['search_web', 'plan', 'calculator', 'current_time', 'test_echo', 'test_quota', 'test_slots']);
  });
});
