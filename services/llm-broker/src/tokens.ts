// Prompt token counting with the cl100k_base encoding, the way OpenAI-style providers bill chat
// completions: 4 tokens around each message, 3 priming the reply, tool definitions as JSON.
// The ranks are gpt-tokenizer's (loaded in ~0.06 s), counted by ./cl100k with the ranks off the JS
// heap. (The emulator counts with js-tiktoken: an independent implementation checks this one.)
import { Cl100k } from './cl100k';

export interface CountableMessage {
  role: string;
  content: string;
  name?: string;
  toolCalls?: unknown[];
}

const PER_MESSAGE = 4;
const PER_REPLY = 3;

let encoder: Cl100k | undefined;
const cl100k = (): Cl100k => (encoder ??= new Cl100k());

/** Loads the encoder's ranks (main.ts calls it once at start, before the first request). */
export function tokenizer(): void {
  cl100k();
}

/**
 * Token counts of the long texts seen lately. A chat resends its whole history with every call, and
 * each agent of a run sends the run's earlier outputs again: each such text is encoded once (a
 * 20,000-character text takes ~1 ms to encode here, and a few µs to find in a Map, parsed anew from
 * a request's body). Bounded by the characters it holds; past that, the texts counted or found
 * longest ago are forgotten first.
 */
export class CountCache {
  private readonly counts = new Map<string, number>();
  private chars = 0;

  constructor(
    private readonly count: (text: string) => number,
    /** Shorter texts are encoded each time (as fast as a lookup). */
    private readonly minChars = 256,
    /** The most characters held (strings of 1–2 bytes a character). */
    private readonly maxChars = 8_000_000,
  ) {}

  /** Characters held, for tests. */
  get held(): number {
    return this.chars;
  }

  of(text: string): number {
    if (text.length < this.minChars || text.length > this.maxChars / 4) return this.count(text);
    const known = this.counts.get(text);
    if (known !== undefined) {
      this.counts.delete(text); // re-inserted below: Map order is the order last used
      this.counts.set(text, known);
      return known;
    }
    const n = this.count(text);
    this.counts.set(text, n);
    this.chars += text.length;
    for (const oldest of this.counts.keys()) {
      if (this.chars <= this.maxChars) break;
      this.counts.delete(oldest);
      this.chars -= oldest.length;
    }
    return n;
  }
}

const counted = new CountCache((text) => cl100k().count(text));

export function countText(text: string): number {
  return text === '' ? 0 : counted.of(text);
}

export function countPromptTokens(messages: CountableMessage[], toolsJson = ''): number {
  let total = PER_REPLY;
  for (const m of messages) {
    total += PER_MESSAGE + countText(m.content);
    if (m.name) total += countText(m.name);
    if (m.toolCalls && m.toolCalls.length > 0) total += countText(JSON.stringify(m.toolCalls));
  }
  if (toolsJson && toolsJson !== '[]') total += countText(toolsJson);
  return total;
}
