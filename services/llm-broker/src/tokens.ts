// Prompt token counting with the cl100k_base encoding, the way OpenAI-style providers bill chat
// completions: 4 tokens around each message, 3 priming the reply, tool definitions as JSON.
// gpt-tokenizer, not js-tiktoken: the same cl100k_base counts, but its ranks load in ~0.25 s where
// js-tiktoken's parse took 0.7–1.8 s, on every broker's path to SERVING. (The emulator counts with
// js-tiktoken: an independent implementation checks this one.)
import { encode } from 'gpt-tokenizer/encoding/cl100k_base';

export interface CountableMessage {
  role: string;
  content: string;
  name?: string;
  toolCalls?: unknown[];
}

const PER_MESSAGE = 4;
const PER_REPLY = 3;

/** Special tokens in the text are counted as text, as providers bill them. */
const AS_TEXT = { disallowedSpecial: new Set<string>() };

/** Loads the encoder's ranks (main.ts calls it once at start, before the first request). */
export function tokenizer(): void {
  encode('', AS_TEXT);
}

export function countText(text: string): number {
  return text === '' ? 0 : encode(text, AS_TEXT).length;
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
