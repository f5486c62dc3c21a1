import { readFileSync } from 'node:fs';
import { encode } from 'gpt-tokenizer/encoding/cl100k_base';
import { Cl100k } from './cl100k';

// Two references: tiktoken's own test plans (the token ids its Rust implementation gives), and
// gpt-tokenizer's encoder over texts drawn at random from many scripts, spaces and symbols.
const cl100k = new Cl100k();
const reference = (text: string): number => encode(text, { disallowedSpecial: new Set() }).length;

test('counts what tiktoken encodes in its test plans for cl100k_base', () => {
  const plans = readFileSync(require.resolve('gpt-tokenizer/data/TestPlans.txt'), 'utf8');
  const samples = [...plans.matchAll(/EncodingName: cl100k_base\nSample: ([^]*?)\nEncoded: \[([^\]]*)\]/g)];
  expect(samples.length).toBeGreaterThan(50);
  for (const [, sample, ids] of samples) {
    const expected = ids!.trim() === '' ? 0 : ids!.split(',').length;
    expect([sample, cl100k.count(sample!)]).toEqual([sample, expected]);
  }
});

test('counts as gpt-tokenizer does, over 5,000 random texts of many scripts', () => {
  const chars = [
    ...'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789',
    ...'    \n\n\r\t.,;:!?\'"()[]{}<>-_=+*/\\|@#$%^&~`',
    ...'éüßñçøåæœЖжЯя中文日本語한국어العربيةहिन्दी🎉👍🏽',
    '\u200d', '\u0301', '\ud800', '\udc00', "'s", "'ll", '<|endoftext|>',
  ];
  let seed = 7;
  const random = (below: number): number => ((seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31) / 2 ** 31) * below;
  const differ: [string, number, number][] = [];
  for (let k = 0; k < 5_000; k++) {
    let text = '';
    for (let i = random(80); i > 0; i--) text += chars[Math.floor(random(chars.length))];
    if (cl100k.count(text) !== reference(text)) differ.push([text, cl100k.count(text), reference(text)]);
  }
  expect(differ).toEqual([]);
});

test('long pieces and long texts: the same counts, the same after other texts (no state left behind)', () => {
  const texts = [
    'a'.repeat(3_000),
    'ab'.repeat(1_500) + ' ' + '🎉'.repeat(500),
    ' '.repeat(2_000) + 'x',
    'The planner proposed three steps; the critic asked for sources. Ünïcödé 日本語\n\n'.repeat(200),
    'function f(x) {\n  return x * 2; // <|endoftext|>\n}\n'.repeat(100),
  ];
  const first = texts.map((t) => cl100k.count(t));
  expect(first).toEqual(texts.map(reference));
  expect(texts.reverse().map((t) => cl100k.count(t))).toEqual(first.reverse());
  expect(cl100k.count('')).toBe(0);
  expect(cl100k.vocabulary).toBe(100_256);
});

test('a 200,000-letter piece is counted: merging is not quadratic', () => {
  // A 20,000-letter piece is checked against the reference; gpt-tokenizer's scan takes ~1 s for
  // 50,000 letters and grows with the square: ~16 s for this piece, minutes for a 1 MiB /v1 body.
  const piece = 'x'.repeat(20_000);
  expect(cl100k.count(piece)).toBe(reference(piece));
  expect(cl100k.count(piece.repeat(10))).toBe(cl100k.count(piece) * 10);
});
