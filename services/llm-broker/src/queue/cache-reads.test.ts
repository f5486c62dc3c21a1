import type { CachePrefix } from '../upstream/provider';
import { CacheReadForecast, MIN_CACHED_TOKENS } from './cache-reads';

/** A breakpoint whose tokens are counted only when asked (and says how often it was). */
function prefix(key: string, tokens: number, ttlMs = 300_000): CachePrefix & { counted: number } {
  const p = { key, ttlMs, counted: 0, tokens: () => { p.counted += 1; return tokens; } };
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
    const short = prefix('short', MIN_CACHED_TOKENS - 1);
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
});
