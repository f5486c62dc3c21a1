// Token accounting with the cl100k_base encoding, the way OpenAI bills chat completions.
import { createHash } from 'node:crypto';
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

/** Token ids of recent long texts, for the prompt cache (prompt-cache.ts): the same texts come back turn after turn. */
const recentEncodings = new Map<string, Uint32Array>();
const ENCODING_ENTRIES = 256;
/** A bound on the ids held, whatever the texts' lengths. */
const ENCODING_TOKENS = 1_000_000;
let encodedTokens = 0;

/** `encode`, remembering the ids of recent long texts. */
export function encodeCached(text: string): ArrayLike<number> {
  if (text.length < CACHE_MIN_LENGTH) return encode(text);
  const cached = recentEncodings.get(text);
  if (cached !== undefined) {
    recentEncodings.delete(text);
    recentEncodings.set(text, cached);
    return cached;
  }
  const ids = Uint32Array.from(encode(text));
  recentEncodings.set(text, ids);
  encodedTokens += ids.length;
  while (recentEncodings.size > ENCODING_ENTRIES || (encodedTokens > ENCODING_TOKENS && recentEncodings.size > 1)) {
    const [oldest, dropped] = recentEncodings.entries().next().value as [string, Uint32Array];
    recentEncodings.delete(oldest);
    encodedTokens -= dropped.length;
  }
  return ids;
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

/**
 * Ids that stand for what countPromptTokens counts without encoding text (the tokens around each
 * message, the reply's, an image's): negative, so never a real token's; only their place and
 * equality matter (prompt-cache.ts hashes them).
 */
const REPLY_ID = -1;
const MESSAGE_ID = -2;
const IMAGE_FILL_ID = -3;

/** A negative 32-bit id that stands for `text` (a role, an image's URL). */
function standInId(text: string): number {
  return -(createHash('sha256').update(text).digest().readUInt32BE(0) >>> 1) - 4;
}

/**
 * The prompt as the token stream it is billed as, in the order a provider reads it: the tool
 * definitions first (OpenAI renders them at the head of the prompt), then each message (its 4
 * tokens of overhead, which carry its role and tool_call_id, its text, its images, its name, its
 * tool calls), then the reply's 3. Exactly countPromptTokens(request) ids long; what is not text
 * is stood in for by ids that differ when it differs (an image: by its part, URL and detail).
 */
export function promptTokenStream(request: Pick<ChatCompletionRequest, 'messages' | 'tools'>): number[] {
  const out: number[] = [];
  const push = (ids: ArrayLike<number>) => {
    for (let i = 0; i < ids.length; i++) out.push(ids[i] as number);
  };
  if (request.tools !== undefined && request.tools.length > 0) push(encodeCached(JSON.stringify(request.tools)));
  for (const message of request.messages) {
    push([standInId(`${message.role}\0${message.tool_call_id ?? ''}`), ...new Array<number>(TOKENS_PER_MESSAGE - 1).fill(MESSAGE_ID)]);
    push(encodeCached(contentText(message.content)));
    const parts = Array.isArray(message.content) ? message.content.filter((p) => p.type === 'image_url') : [];
    (message.images ?? []).forEach((image, i) => {
      if (image.tokens <= 0) return;
      out.push(standInId(JSON.stringify(parts[i] ?? i)));
      for (let t = 1; t < image.tokens; t++) out.push(IMAGE_FILL_ID);
    });
    if (typeof message.name === 'string') push(encodeCached(message.name));
    if (message.tool_calls !== undefined) push(encodeCached(JSON.stringify(message.tool_calls)));
  }
  push(new Array<number>(TOKENS_PER_REPLY).fill(REPLY_ID));
  return out;
}
