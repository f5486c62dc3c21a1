// Prompt token counting with the cl100k_base encoding, the way OpenAI-style providers bill chat
// completions: 4 tokens around each message, 3 priming the reply, tool definitions as JSON.
import { getEncoding, type Tiktoken } from 'js-tiktoken';

export interface CountableMessage {
  role: string;
  content: string;
  name?: string;
  toolCalls?: unknown[];
}

const PER_MESSAGE = 4;
const PER_REPLY = 3;

let encoding: Tiktoken | undefined;
/** Loading the ranks takes a few hundred ms: main.ts calls this once at start. */
export function tokenizer(): Tiktoken {
  encoding ??= getEncoding('cl100k_base');
  return encoding;
}

export function countText(text: string): number {
  return text === '' ? 0 : tokenizer().encode(text, [], []).length;
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
