// Anthropic's extended thinking: what the model thinks before it answers, and the proofs that let
// the API check a thinking block passed back in a later request — a `signature` over its text, or
// the `data` of a `redacted_thinking` block, the text encrypted — so that a block altered, made up
// or moved to another model on the way back is refused, as Anthropic refuses it.
import { createCipheriv, createDecipheriv, createHmac, randomBytes } from 'node:crypto';
import type { SeededRandom } from './random';
import type { ChatCompletionRequest, Effort } from './request';
import { contentText, encode } from './tokens';
import { keyWords, SentenceWriter } from './vocabulary';

/**
 * One key per process: a block verifies on any emulator of this process (as on any of Anthropic's
 * servers), on none of another process (as a block from another provider does not).
 */
const KEY = randomBytes(32);
const REDACTION_KEY = createHmac('sha256', KEY).update('redacted_thinking').digest();

const mac = (model: string, thinking: string): Buffer => createHmac('sha256', KEY).update(`${model}\0${thinking}`).digest();

/** A thinking block's `signature`: base64 of an HMAC-SHA256 of the model and the text. */
export function signThinking(model: string, thinking: string): string {
  return mac(model, thinking).toString('base64');
}

export function verifyThinking(model: string, thinking: string, signature: string): boolean {
  return signature === signThinking(model, thinking);
}

/**
 * A `redacted_thinking` block's `data`: base64 of the model and the text, AES-256-GCM encrypted
 * (IV, tag, ciphertext). The IV is derived from the text (the same thinking, the same data).
 */
export function redactThinking(model: string, thinking: string): string {
  const iv = mac(model, thinking).subarray(0, 12);
  const cipher = createCipheriv('aes-256-gcm', REDACTION_KEY, iv);
  const body = Buffer.concat([cipher.update(JSON.stringify([model, thinking]), 'utf8'), cipher.final()]);
  return Buffer.concat([iv, cipher.getAuthTag(), body]).toString('base64');
}

/** The text of a `redacted_thinking` block's data, or undefined when it is not data this process wrote for `model`. */
export function unredactThinking(model: string, data: string): string | undefined {
  const raw = Buffer.from(data, 'base64');
  // Node's base64 decoding skips what is not base64: the data must be exactly what was sent.
  if (raw.length < 29 || raw.toString('base64') !== data) return undefined;
  try {
    const decipher = createDecipheriv('aes-256-gcm', REDACTION_KEY, raw.subarray(0, 12));
    decipher.setAuthTag(raw.subarray(12, 28));
    const [m, t] = JSON.parse(Buffer.concat([decipher.update(raw.subarray(28)), decipher.final()]).toString('utf8')) as unknown[];
    return m === model && typeof t === 'string' ? t : undefined;
  } catch {
    return undefined;
  }
}

/** The budget as the thinking's length sees it: at most this, so that thinking stays short (tests, benchmarks). */
const BUDGET_SEEN = 320;

/**
 * Adaptive thinking's length per `output_config.effort`, in tokens, ±25 %: a short paragraph at
 * low, longer at each level up, at most 300 at max (kept short, as the budget's is).
 */
const EFFORT_THINKING: Record<Effort, number> = { low: 40, medium: 80, high: 140, xhigh: 190, max: 240 };

/**
 * How long the thinking is, in tokens: the length it aims at, and the most it may be. Enabled:
 * 30–60 % of the budget (counted at most 320 tokens: 96–192 tokens), never more than the budget.
 * Adaptive: by the effort (EFFORT_THINKING), never more than max_tokens leaves for a token of answer.
 */
function thinkingLength(thinking: NonNullable<ChatCompletionRequest['thinking']>, maxTokens: number | undefined, rng: SeededRandom): { target: number; most: number } {
  if (thinking.type === 'enabled') {
    return { target: Math.round(Math.min(thinking.budgetTokens, BUDGET_SEEN) * (0.3 + 0.3 * rng.next())), most: thinking.budgetTokens };
  }
  const most = Math.max(0, (maxTokens ?? Infinity) - 1);
  return { target: Math.min(most, Math.round(EFFORT_THINKING[thinking.effort] * (0.75 + 0.5 * rng.next()))), most };
}

/** The thinking before an answer, as token ids: about the latest user message, as long as thinkingLength says. */
export function composeThinking(request: Pick<ChatCompletionRequest, 'messages' | 'maxTokens'>, thinking: NonNullable<ChatCompletionRequest['thinking']>, rng: SeededRandom): number[] {
  const { target, most } = thinkingLength(thinking, request.maxTokens, rng);
  const question = request.messages.filter((m) => m.role === 'user').map((m) => contentText(m.content)).at(-1) ?? '';
  const writer = new SentenceWriter(rng, keyWords(question));
  const opening = request.messages.some((m) => m.role === 'tool')
    ? `The tool result is in, so the answer can build on it for ${writer.topic()}.`
    : `The user asks about ${writer.topic()}.`;
  return encode(writer.paragraph(target, opening)).slice(0, most);
}
