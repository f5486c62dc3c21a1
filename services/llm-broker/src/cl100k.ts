// Counts cl100k_base tokens with the encoding's ranks held in typed arrays.
//
// gpt-tokenizer's encoder (the one this replaces, still the source of the ranks and the split
// pattern) keeps the 100,256 ranks as JS strings in an array and a Map, 10.8 MB of live heap, next to
// an LRU cache of up to 100,000 encoded pieces; every old-generation collection of the process marks
// all of it, and in the edge with the broker inside that made the marking pauses that slowed the
// calls around them. Here the ranks are bytes and integers in ArrayBuffers, which the collector does
// not look into: the live heap of the table is a few objects. Merging is tiktoken's byte-pair merge
// (the lowest-ranked adjacent pair first, the leftmost of equals), with a heap, so a long piece takes
// O(n log n) rather than the O(n²) of the scan.
import { readFileSync } from 'node:fs';
import { CL100K_TOKEN_SPLIT_REGEX } from 'gpt-tokenizer/encodingParams/constants';

const NONE = -1;

/** cl100k_base's mergeable ranks: each token's bytes in one buffer, found by an open-addressed hash. */
class Ranks {
  private readonly bytes: Uint8Array;
  /** Token i's bytes are bytes[start[i] .. start[i + 1]). */
  private readonly start: Uint32Array;
  private readonly rank: Int32Array;
  /** Token index + 1 at each slot; 0 is empty. */
  private readonly slots: Int32Array;
  private readonly mask: number;

  /** Reads tiktoken's format: a line per token, its bytes in base64, a space, its rank. */
  constructor(file: string) {
    const text = readFileSync(file, 'latin1');
    const lines = text.split('\n').filter((line) => line !== '');
    const bytes = Buffer.alloc(text.length);
    this.start = new Uint32Array(lines.length + 1);
    this.rank = new Int32Array(lines.length);
    let end = 0;
    lines.forEach((line, i) => {
      const space = line.indexOf(' ');
      this.start[i] = end;
      end += bytes.write(line.slice(0, space), end, 'base64');
      this.rank[i] = Number(line.slice(space + 1));
    });
    this.start[lines.length] = end;
    this.bytes = new Uint8Array(bytes.subarray(0, end)); // a copy of the bytes used, not the whole buffer
    let size = 1;
    while (size < lines.length * 2.5) size *= 2;
    this.slots = new Int32Array(size);
    this.mask = size - 1;
    for (let i = 0; i < lines.length; i++) {
      let slot = hash(this.bytes, this.start[i]!, this.start[i + 1]!) & this.mask;
      while (this.slots[slot] !== 0) slot = (slot + 1) & this.mask;
      this.slots[slot] = i + 1;
    }
  }

  get size(): number {
    return this.rank.length;
  }

  /** The rank of the bytes in[from .. to), or NONE. */
  of(input: Uint8Array, from: number, to: number): number {
    const length = to - from;
    for (let slot = hash(input, from, to) & this.mask; ; slot = (slot + 1) & this.mask) {
      const token = this.slots[slot]! - 1;
      if (token < 0) return NONE;
      const at = this.start[token]!;
      if (this.start[token + 1]! - at !== length) continue;
      let same = true;
      for (let k = 0; k < length && same; k++) same = this.bytes[at + k] === input[from + k];
      if (same) return this.rank[token]!;
    }
  }
}

/** FNV-1a over bytes. */
function hash(input: Uint8Array, from: number, to: number): number {
  let h = 0x811c9dc5;
  for (let i = from; i < to; i++) h = Math.imul(h ^ input[i]!, 0x01000193);
  return h >>> 0;
}

/** Scratch space for one piece at a time, grown when a longer piece comes (never shrunk). */
let utf8 = new Uint8Array(1024);
let next = new Int32Array(1024);
let prev = new Int32Array(1024);
let pairRank = new Int32Array(1024);
/** A binary min-heap of adjacent pairs keyed rank · 2^32 + left part's start (leftmost first on ties). */
let heap = new Float64Array(1024);

function room(bytes: number): void {
  if (bytes + 1 <= next.length) return;
  let n = next.length;
  while (n < bytes + 1) n *= 2;
  next = new Int32Array(n);
  prev = new Int32Array(n);
  pairRank = new Int32Array(n);
  heap = new Float64Array(n);
}

/** Writes text[from .. to) as UTF-8 into `utf8` (lone surrogates as U+FFFD, like TextEncoder). */
function encodeUtf8(text: string, from: number, to: number): number {
  if (utf8.length < (to - from) * 3) utf8 = new Uint8Array((to - from) * 3);
  let n = 0;
  for (let i = from; i < to; i++) {
    let c = text.charCodeAt(i);
    if (c < 0x80) {
      utf8[n++] = c;
      continue;
    }
    if (c < 0x800) {
      utf8[n++] = 0xc0 | (c >> 6);
      utf8[n++] = 0x80 | (c & 0x3f);
      continue;
    }
    if (c >= 0xd800 && c <= 0xdfff) {
      const low = i + 1 < to ? text.charCodeAt(i + 1) : 0;
      if (c <= 0xdbff && low >= 0xdc00 && low <= 0xdfff) {
        c = 0x10000 + ((c - 0xd800) << 10) + (low - 0xdc00);
        i++;
        utf8[n++] = 0xf0 | (c >> 18);
        utf8[n++] = 0x80 | ((c >> 12) & 0x3f);
        utf8[n++] = 0x80 | ((c >> 6) & 0x3f);
        utf8[n++] = 0x80 | (c & 0x3f);
        continue;
      }
      c = 0xfffd;
    }
    utf8[n++] = 0xe0 | (c >> 12);
    utf8[n++] = 0x80 | ((c >> 6) & 0x3f);
    utf8[n++] = 0x80 | (c & 0x3f);
  }
  return n;
}

export class Cl100k {
  private readonly ranks: Ranks;
  private readonly split = new RegExp(CL100K_TOKEN_SPLIT_REGEX.source, 'gu');

  constructor(file = require.resolve('gpt-tokenizer/data/cl100k_base.tiktoken')) {
    this.ranks = new Ranks(file);
  }

  get vocabulary(): number {
    return this.ranks.size;
  }

  /** Tokens in the text, special tokens' text counted as text (as providers bill a prompt). */
  count(text: string): number {
    let total = 0;
    this.split.lastIndex = 0;
    for (let m = this.split.exec(text); m !== null; m = this.split.exec(text)) {
      const n = encodeUtf8(text, m.index, m.index + m[0].length);
      total += this.ranks.of(utf8, 0, n) === NONE ? this.merge(n) : 1;
    }
    return total;
  }

  /** The number of tokens byte-pair merging leaves of utf8[0 .. n). */
  private merge(n: number): number {
    room(n);
    // Parts form a list over their start offsets; part p spans [p, next[p]). Pair p joins part p
    // with the one after it.
    for (let p = 0; p < n; p++) {
      next[p] = p + 1;
      prev[p] = p - 1;
    }
    next[n] = n;
    let size = 0;
    const push = (p: number): void => {
      const r = next[p]! < n ? this.ranks.of(utf8, p, next[next[p]!]!) : NONE;
      pairRank[p] = r;
      if (r === NONE) return;
      let i = size++;
      const key = r * 0x1_0000_0000 + p;
      while (i > 0 && heap[(i - 1) >> 1]! > key) {
        heap[i] = heap[(i - 1) >> 1]!;
        i = (i - 1) >> 1;
      }
      heap[i] = key;
    };
    const pop = (): number => {
      const top = heap[0]!;
      const last = heap[--size]!;
      let i = 0;
      for (;;) {
        let child = 2 * i + 1;
        if (child >= size) break;
        if (child + 1 < size && heap[child + 1]! < heap[child]!) child++;
        if (heap[child]! >= last) break;
        heap[i] = heap[child]!;
        i = child;
      }
      heap[i] = last;
      return top;
    };
    for (let p = 0; p + 1 < n; p++) push(p);
    let parts = n;
    while (size > 0) {
      const key = pop();
      const p = key % 0x1_0000_0000;
      // A pair changed or gone since it was pushed is stale: its part's current pair says so.
      if (pairRank[p] !== (key - p) / 0x1_0000_0000) continue;
      const gone = next[p]!;
      next[p] = next[gone]!;
      if (next[p]! < n) prev[next[p]!] = p;
      pairRank[gone] = NONE;
      parts--;
      push(p);
      if (prev[p]! >= 0) push(prev[p]!);
    }
    return parts;
  }
}
