import { encode } from 'gpt-tokenizer/encoding/cl100k_base';
import { CountCache, countPromptTokens, countText } from './tokens';

describe('CountCache', () => {
  /** A counter that notes what it was asked (one "token" a character). */
  const counter = () => {
    const asked: string[] = [];
    return { asked, count: (text: string) => (asked.push(text), text.length) };
  };

  test('a long text is counted once, a short one every time', () => {
    const c = counter();
    const cache = new CountCache(c.count, 10, 1_000);
    const long = 'x'.repeat(50);
    // A text equal to one seen before, as a new request's body parses it: another string object.
    expect([cache.of(long), cache.of(`${'x'.repeat(25)}${'x'.repeat(25)}`), cache.of('short'), cache.of('short')]).toEqual([50, 50, 5, 5]);
    expect(c.asked).toEqual([long, 'short', 'short']);
  });

  test('holds at most maxChars: the texts used longest ago are forgotten first', () => {
    const c = counter();
    const cache = new CountCache(c.count, 10, 100);
    const [a, b, d] = ['a'.repeat(25), 'b'.repeat(25), 'd'.repeat(25)] as const;
    cache.of(a);
    cache.of(b);
    cache.of(a); // a is now the most recently used
    cache.of(d);
    cache.of('e'.repeat(25));
    expect(cache.held).toBe(100);
    cache.of('f'.repeat(25)); // over 100: b goes (used longest ago), a stays
    expect(cache.held).toBe(100);
    c.asked.length = 0;
    cache.of(a);
    cache.of(b);
    expect(c.asked).toEqual([b]);
    expect(cache.held).toBeLessThanOrEqual(100);
  });

  test('a text longer than a quarter of the bound is not kept', () => {
    const c = counter();
    const cache = new CountCache(c.count, 10, 100);
    cache.of('z'.repeat(26));
    cache.of('z'.repeat(26));
    expect(c.asked).toHaveLength(2);
    expect(cache.held).toBe(0);
  });
});

describe('countText and countPromptTokens', () => {
  test('the same counts as the encoder, for a text seen again', () => {
    const history = 'The planner proposed three steps; the critic asked for sources. '.repeat(20);
    const exact = encode(history).length;
    expect(countText(history)).toBe(exact);
    expect(countText(`${history}`.slice(0))).toBe(exact);
    const messages = [{ role: 'system', content: history }, { role: 'user', content: 'hi' }];
    expect(countPromptTokens(messages)).toBe(3 + 4 + exact + 4 + encode('hi').length);
    expect(countPromptTokens(messages)).toBe(countPromptTokens(messages.map((m) => ({ ...m }))));
  });
});
