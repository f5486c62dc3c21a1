// Token accounting with the cl100k_base encoding, the way OpenAI bills chat completions.
import { getEncoding, type Tiktoken } from 'js-tiktoken';
import type { ChatCompletionRequest, ChatMessage } from './request';

/** Tokens wrapped around every message (`<|start|>role<|message|>…<|end|>`). */
export const TOKENS_PER_MESSAGE = 4;
/** Tokens that prime the reply (`<|start|>assistant<|message|>`). */
export const TOKENS_PER_REPLY = 3;

let encoding: Tiktoken | undefined;

/** The shared encoder; loading its ranks takes a few hundred ms, so do it once, at start. */
export function tokenizer(): Tiktoken {
  encoding ??= getEncoding('cl100k_base');
  return encoding;
}

/** Special tokens in user text are counted as plain text, never refused. */
export function encode(text: string): number[] {
  return tokenizer().encode(text, [], []);
}

/** Counts of recent long texts: prompts repeat (system prompts, history), and BPE is the costly part. */
const recentCounts = new Map<string, number>();
const CACHE_MIN_LENGTH = 64;
const CACHE_ENTRIES = 4096;

export function countTokens(text: string): number {
  if (text === '') return 0;
  if (text.length < CACHE_MIN_LENGTH) return encode(text).length;
  const cached = recentCounts.get(text);
  if (cached !== undefined) {
    recentCounts.delete(text); // refresh: the Map's order is the eviction order
    recentCounts.set(text, cached);
    return cached;
  }
  const count = encode(text).length;
  recentCounts.set(text, count);
  if (recentCounts.size > CACHE_ENTRIES) {
    const oldest = recentCounts.keys().next();
    if (oldest.done !== true) recentCounts.delete(oldest.value);
  }
  return count;
}

/** The text of a message's content, whether a string or an array of parts. */
export function contentText(content: ChatMessage['content']): string {
  if (typeof content === 'string') return content;
  if (!Array.isArray(content)) return '';
  return content.map((part) => (typeof part.text === 'string' ? part.text : '')).join('');
}

/**
 * Prompt tokens: per message 4 tokens of overhead plus its content, name and tool calls;
 * 3 tokens priming the reply; the tool definitions as JSON. An image counts the tokens its
 * provider bills for it (reckoned when the request was read: images.ts).
 */
export function countPromptTokens(request: Pick<ChatCompletionRequest, 'messages' | 'tools'>): number {
  let total = TOKENS_PER_REPLY;
  for (const message of request.messages) {
    total += TOKENS_PER_MESSAGE + countTokens(contentText(message.content));
    for (const image of message.images ?? []) total += image.tokens;
    if (typeof message.name === 'string') total += countTokens(message.name);
    if (message.tool_calls !== undefined) total += countTokens(JSON.stringify(message.tool_calls));
  }
  if (request.tools !== undefined && request.tools.length > 0) {
    total += countTokens(JSON.stringify(request.tools));
  }
  return total;
}
