import type { CachePrefix } from '../upstream/provider';
import { CacheReadForecast } from './cache-reads';

const MIN_TOKENS = 1_024;

/** A breakpoint whose tokens are counted only when asked (and says how often it was). */
function prefix(key: string, tokens: number, ttlMs = 300_000, lookback: string[] = []): CachePrefix & { counted: number } {
  const p = { key, lookback, ttlMs, minTokens: MIN_TOKENS, counted: 0, tokens: () => { p.counted += 1; return tokens; } };
  return p;
}

describe('CacheReadForecast', () => {
  let t = 0;
  const forecast = () => new CacheReadForecast(() => t);
  beforeEach(() => { t = 1_000_000; });

  it('expects no read before an answer said the prefix was cached, then the tokens the provider reported, until its lifetime ends', () => {
    const f = forecast();
    const system = prefix('sys', 2_000);
    expect(f.expected('u', [system])).toBe(0);
    f.learn('u', [system], 0, 1_980, t);
    // The provider's own count (read + written) is the prefix's size: its tokens are not counted here.
    expect(f.expected('u', [system])).toBe(1_980);
    expect(system.counted).toBe(0);
    t += 299_999;
    expect(f.expected('u', [system])).toBe(1_980);
    t += 1;
    expect(f.expected('u', [system])).toBe(0);
  });

  it('scales the lifetime with the providers\' time (LLM_TIME_SCALE)', () => {
    const f = new CacheReadForecast(() => t, 0.1);
    f.learn('u', [prefix('sys', 0)], 0, 2_000, t);
    t += 29_999;
    expect(f.expected('u', [prefix('sys', 0)])).toBe(2_000);
    t += 1;
    expect(f.expected('u', [prefix('sys', 0)])).toBe(0);
  });

  it('counts from when the call was sent, and each use renews the lifetime', () => {
    const f = forecast();
    const system = prefix('sys', 2_000);
    f.learn('u', [system], 0, 2_000, t - 10_000);
    t += 290_000;
    expect(f.expected('u', [system])).toBe(0);
    f.learn('u', [system], 2_000, 0, t);
    t += 200_000;
    expect(f.expected('u', [system])).toBe(2_000);
  });

  it('takes the longest prefix held of a call\'s breakpoints; earlier breakpoints are learnt by their count when they fit in what was cached', () => {
    const f = forecast();
    const system = prefix('sys', 1_500);
    const turn1 = prefix('turn1', 3_000);
    f.learn('u', [system, turn1], 0, 3_010, t);
    expect(system.counted).toBe(1);
    const turn2 = prefix('turn2', 4_000);
    // The next turn's last breakpoint is new: the system prompt is what will be read.
    expect(f.expected('u', [system, turn2])).toBe(1_500);
    expect(f.expected('u', [turn1, turn2])).toBe(3_010);
    // Known now: not counted again.
    f.learn('u', [system, turn2], 1_500, 2_500, t);
    expect(system.counted).toBe(1);
    expect(f.expected('u', [system, turn2])).toBe(4_000);
  });

  it('learns no earlier prefix shorter than the provider caches, or longer than what it cached; nothing from an answer that cached nothing', () => {
    const f = forecast();
    const short = prefix('short', MIN_TOKENS - 1);
    const long = prefix('long', 5_000);
    const last = prefix('last', 4_000);
    f.learn('u', [short, long, last], 0, 4_000, t);
    expect(f.expected('u', [short])).toBe(0);
    expect(f.expected('u', [long])).toBe(0);
    expect(f.expected('u', [last])).toBe(4_000);
    const other = prefix('other', 3_000);
    f.learn('u', [other], 0, 0, t);
    expect(f.expected('u', [other])).toBe(0);
    expect(other.counted).toBe(0);
  });

  it('keeps each upstream\'s apart, and forgets the least recently used beyond its size', () => {
    const f = new CacheReadForecast(() => t, 1, 2);
    f.learn('a', [prefix('p', 0)], 0, 1_100, t);
    expect(f.expected('b', [prefix('p', 0)])).toBe(0);
    f.learn('a', [prefix('q', 0)], 0, 1_200, t);
    f.learn('a', [prefix('p', 0)], 1_100, 0, t);
    f.learn('a', [prefix('r', 0)], 0, 1_300, t);
    expect(f.expected('a', [prefix('q', 0)])).toBe(0);
    expect(f.expected('a', [prefix('p', 0)])).toBe(1_100);
    expect(f.expected('a', [prefix('r', 0)])).toBe(1_300);
  });

  it('finds a prefix held at a boundary a breakpoint looks back to: a conversation that marks its last turn reads the turn before', () => {
    const f = forecast();
    f.learn('u', [prefix('turn1', 0)], 0, 3_000, t);
    // Turn 2 marks its own last block; turn 1's end is among the boundaries before it.
    const turn2 = prefix('turn2', 0, 300_000, ['a2', 'u2', 'turn1', 'u1']);
    expect(f.expected('u', [turn2])).toBe(3_000);
    expect(f.expected('u', [prefix('turn2', 0, 300_000, ['a2', 'u2'])])).toBe(0);
    // The provider read turn 1 and wrote the rest: turn 2 is held, and turn 1's lifetime renewed.
    t += 200_000;
    f.learn('u', [turn2], 3_000, 800, t);
    t += 200_000;
    expect(f.expected('u', [prefix('turn1', 0)])).toBe(3_000);
    expect(f.expected('u', [prefix('turn2', 0)])).toBe(3_800);
  });

  it('forgets a prefix the provider did not read when it was expected, and no longer infers it as an earlier breakpoint, until reported', () => {
    const f = forecast();
    const system = prefix('sys', 1_500);
    f.learn('u', [system, prefix('q1', 0)], 0, 2_000, t);
    expect(f.expected('u', [system])).toBe(1_500);
    // The provider held less than the broker counted (its own minimum, or an eviction): it read nothing.
    t += 1_000;
    f.learn('u', [system, prefix('q2', 0)], 0, 0, t);
    expect(f.expected('u', [system])).toBe(0);
    f.learn('u', [system, prefix('q3', 0)], 0, 2_100, t);
    expect(f.expected('u', [system])).toBe(0);
    expect(f.expected('u', [prefix('q3', 0)])).toBe(2_100);
    // Reported as a call's last prefix, it is held again.
    f.learn('u', [system], 0, 1_480, t);
    expect(f.expected('u', [system])).toBe(1_480);
  });

  it('keeps a prefix learnt after the call was sent: the call may have gone before the provider held it', () => {
    const f = forecast();
    const sentBefore = t;
    t += 2_000;
    f.learn('u', [prefix('sys', 0)], 0, 2_000, t - 1_500);
    // A call sent before that answer came back read nothing, and says nothing about the prefix.
    f.learn('u', [prefix('sys', 0)], 0, 0, sentBefore);
    expect(f.expected('u', [prefix('sys', 0)])).toBe(2_000);
  });

  it('learns no earlier prefix shorter than the call\'s model caches', () => {
    const f = forecast();
    const haiku = { ...prefix('sys', 1_500), minTokens: 2_048 };
    f.learn('u', [haiku, prefix('q', 0)], 0, 3_000, t);
    expect(f.expected('u', [haiku])).toBe(0);
  });

  it('goes on with what its replica knows when Redis fails or does not answer in time', async () => {
    const errors: unknown[] = [];
    const failing = {
      mget: () => Promise.reject(new Error('down')),
      pipeline: () => ({ set: () => undefined, del: () => undefined, exec: () => Promise.reject(new Error('down')) }),
    };
    const f = new CacheReadForecast(() => t, 1, 100, { redis: failing as never, prefix: 'p', onError: (e) => errors.push(e) });
    f.learn('u', [prefix('sys', 0)], 0, 2_000, t);
    await f.refresh('u', [prefix('other', 0)]);
    expect(f.expected('u', [prefix('sys', 0)])).toBe(2_000);
    expect(errors.length).toBe(2);
    const silent = { mget: () => new Promise(() => undefined) };
    const g = new CacheReadForecast(() => t, 1, 100, { redis: silent as never, prefix: 'p', timeoutMs: 20, onError: (e) => errors.push(e) });
    await g.refresh('u', [prefix('sys', 0)]);
    expect(g.expected('u', [prefix('sys', 0)])).toBe(0);
    expect(errors.length).toBe(3);
  });
});
