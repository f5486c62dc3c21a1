// What the emulated model says: role-aware answers for the agent pipeline and search tool calls.
//
// The contract with the orchestrator:
// - the role comes from the first system (or developer) message: "Planner" → a numbered plan of
//   3–5 lines, "Critic" → a critique whose last line is exactly `VERDICT: APPROVE` or
//   `VERDICT: REVISE`, "Host" → an answer, "Reporter" → a text starting `Final answer:`;
// - the Critic asks for another round with the revise rate in round 1, half of it in round 2 and
//   never from round 3; the round is the text `Round: N` in the system or a user message;
// - with a `search_web` tool offered, no tool result yet and a user asking to search / find /
//   look up / for the latest / news, the model calls `search_web` with {"query": "<key words>"};
//   once a tool result is in the conversation, the answer quotes it.
import { createHash } from 'node:crypto';
import type { SeededRandom } from './random';
import type { ChatCompletionRequest, ChatMessage } from './request';
import { contentText, countTokens } from './tokens';
import { keyWords, SentenceWriter } from './vocabulary';

export type AgentRole = 'planner' | 'critic' | 'host' | 'reporter' | 'other';
export type Verdict = 'APPROVE' | 'REVISE';

export interface TextAnswer {
  kind: 'text';
  role: AgentRole;
  text: string;
  verdict?: Verdict;
}

export interface ToolCallAnswer {
  kind: 'tool_call';
  role: AgentRole;
  call: { id: string; name: string; arguments: string };
}

export type Answer = TextAnswer | ToolCallAnswer;

export interface AnswerSettings {
  /** Typical length in tokens; each answer picks a length within ±25% of it. */
  completionTokens: number;
  /** Probability of `VERDICT: REVISE` in round 1. */
  reviseRate: number;
}

export const SEARCH_TOOL = 'search_web';
const SEARCH_INTENT = /\b(search(?:es|ed|ing)?|latest|find(?:s|ing)?|look(?:s|ing)?\s+up|news)\b/i;
const ROLE_WORDS: readonly [AgentRole, RegExp][] = [
  ['planner', /\bplanner\b/i],
  ['critic', /\bcritic\b/i],
  ['host', /\bhost\b/i],
  ['reporter', /\breporter\b/i],
];

function firstInstruction(messages: readonly ChatMessage[]): string {
  const message = messages.find((m) => m.role === 'system' || m.role === 'developer');
  return message === undefined ? '' : contentText(message.content);
}

/**
 * The agent a request comes from. A prompt often names other agents too ("You are the Critic;
 * review the Planner's plan"), so "you are (the) X" wins, then the role word that comes first.
 */
export function detectRole(messages: readonly ChatMessage[]): AgentRole {
  const prompt = firstInstruction(messages);
  const declared = /\byou\s+are\s+(?:the\s+|a\s+|an\s+)?(planner|critic|host|reporter)\b/i.exec(prompt);
  if (declared?.[1] !== undefined) return declared[1].toLowerCase() as AgentRole;
  let best: { role: AgentRole; at: number } | undefined;
  for (const [role, pattern] of ROLE_WORDS) {
    const at = prompt.search(pattern);
    if (at >= 0 && (best === undefined || at < best.at)) best = { role, at };
  }
  return best?.role ?? 'other';
}

/** `Round: N` from the system prompt, else from the latest user message that has it; default 1. */
export function parseRound(messages: readonly ChatMessage[]): number {
  const candidates = [firstInstruction(messages), ...userTexts(messages).reverse()];
  for (const text of candidates) {
    const match = /\bRound:\s*(\d+)/i.exec(text);
    if (match?.[1] !== undefined) return Math.max(1, Number.parseInt(match[1], 10));
  }
  return 1;
}

/**
 * A uniform draw in [0, 1) that depends only on the user's question and the round, as a real
 * model's verdict depends on its input: the same question gets the same verdicts whatever the
 * timing or order of requests (overlapped and sequential pipelines see a partial or a full plan,
 * and must still be compared on the same rounds).
 */
export function verdictDraw(messages: readonly ChatMessage[], round: number): number {
  const text = userTexts(messages).at(-1) ?? '';
  const question = /Question:\s*\n([\s\S]*?)(?:\n\n|$)/.exec(text)?.[1] ?? text;
  const digest = createHash('sha256').update(`${round}\u0000${question.trim()}`).digest();
  return digest.readUInt32BE(0) / 2 ** 32;
}

export function reviseProbability(round: number, reviseRate: number): number {
  if (round <= 1) return reviseRate;
  if (round === 2) return reviseRate / 2;
  return 0;
}

function userTexts(messages: readonly ChatMessage[]): string[] {
  return messages.filter((m) => m.role === 'user').map((m) => contentText(m.content));
}

function latestUserText(messages: readonly ChatMessage[]): string {
  return userTexts(messages).at(-1) ?? '';
}

/** The function to call, if this request should get a tool call instead of text. */
export function toolToCall(request: ChatCompletionRequest): string | undefined {
  const tools = request.tools ?? [];
  const choice = request.toolChoice ?? 'auto';
  if (tools.length === 0 || choice === 'none') return undefined;
  if (request.messages.some((m) => m.role === 'tool')) return undefined;
  if (typeof choice === 'object') return choice.function.name;
  const offersSearch = tools.some((t) => t.function.name === SEARCH_TOOL);
  if (choice === 'required') return offersSearch ? SEARCH_TOOL : tools[0]?.function.name;
  if (!offersSearch) return undefined;
  const asks = SEARCH_INTENT.test(latestUserText(request.messages)) || userTexts(request.messages).some((t) => SEARCH_INTENT.test(t));
  return asks ? SEARCH_TOOL : undefined;
}

/** A search query as a model would write it: the question's key words, without "search"/"find". */
export function searchQuery(messages: readonly ChatMessage[]): string {
  const texts = userTexts(messages);
  const asking = [...texts].reverse().find((t) => SEARCH_INTENT.test(t)) ?? texts.at(-1) ?? '';
  const words = keyWords(asking, 12).filter((w) => !/^(search\w*|find\w*|look\w*)$/i.test(w));
  if (words.length > 0) return words.slice(0, 6).join(' ');
  return asking.split(/\s+/).filter(Boolean).slice(0, 8).join(' ') || 'general information';
}

/** The readable text of a tool result: JSON is reduced to its string values. */
function toolResultText(content: string): string {
  try {
    const strings: string[] = [];
    const walk = (value: unknown): void => {
      if (typeof value === 'string') {
        if (value.length >= 3 && !/^https?:\/\//.test(value)) strings.push(value);
      } else if (Array.isArray(value)) {
        value.forEach(walk);
      } else if (typeof value === 'object' && value !== null) {
        Object.values(value).forEach(walk);
      }
    };
    walk(JSON.parse(content) as unknown);
    return strings.length > 0 ? strings.join('; ') : content;
  } catch {
    return content;
  }
}

/** "According to …, "<first words of the latest tool result>"." or '' without a tool result. */
function toolQuote(messages: readonly ChatMessage[]): string {
  const result = messages.filter((m) => m.role === 'tool').at(-1);
  if (result === undefined) return '';
  const words = toolResultText(contentText(result.content)).replace(/\s+/g, ' ').trim().split(' ').filter(Boolean);
  if (words.length === 0) return 'The tool returned nothing useful.';
  const quoted = words.slice(0, 24).join(' ').replace(/"/g, "'") + (words.length > 24 ? ' …' : '');
  const name = messages
    .flatMap((m) => m.tool_calls ?? [])
    .find((call) => call.id === result.tool_call_id)?.function.name;
  // Worded without "search", so that a later agent reading this text does not search again.
  const source = name === undefined || name === SEARCH_TOOL ? 'the web results' : `the ${name} tool`;
  return `According to ${source}, "${quoted}".`;
}

/** 3–5 numbered lines sharing the token budget; each line is measured, so the total stays close. */
function plan(writer: SentenceWriter, rng: SeededRandom, tokens: number, quote: string): string {
  const lines = rng.int(3, 5);
  const out: string[] = [];
  let used = 0;
  for (let i = 1; i <= lines; i++) {
    const budget = (tokens - used) / (lines - i + 1);
    // "N. " and the final period take about three tokens; a keyword may take more than one.
    const body = i === 1 && quote !== '' ? `Start from the sources. ${quote}` : writer.instruction(Math.max(3, Math.round(budget) - 4), writer.topic());
    const line = `${i}. ${body}`;
    used += countTokens(`${i === 1 ? '' : '\n'}${line}`);
    out.push(line);
  }
  return out.join('\n');
}

/** Decides and writes the answer; all randomness comes from the request's own generator. */
export function composeAnswer(request: ChatCompletionRequest, rng: SeededRandom, settings: AnswerSettings): Answer {
  const role = detectRole(request.messages);
  const tool = toolToCall(request);
  if (tool !== undefined) {
    const args = JSON.stringify({ query: searchQuery(request.messages) });
    return { kind: 'tool_call', role, call: { id: `call_${rng.id(24)}`, name: tool, arguments: args } };
  }

  // ±22% rather than ±25%: the last sentence may overshoot the target by a token or two.
  const tokens = Math.max(8, Math.round(settings.completionTokens * (0.78 + 0.44 * rng.next())));
  const topics = keyWords(latestUserText(request.messages));
  const writer = new SentenceWriter(rng, topics);
  const quote = toolQuote(request.messages);
  const lead = (text: string): string => (quote === '' ? text : `${text} ${quote}`);

  switch (role) {
    case 'planner':
      return { kind: 'text', role, text: plan(writer, rng, tokens, quote) };
    case 'critic': {
      const round = parseRound(request.messages);
      const verdict: Verdict = verdictDraw(request.messages, round) < reviseProbability(round, settings.reviseRate) ? 'REVISE' : 'APPROVE';
      const opening =
        verdict === 'APPROVE'
          ? `The plan is sound and covers ${writer.topic()} in a sensible order.`
          : `The plan leaves gaps around ${writer.topic()} and needs another pass.`;
      const critique = writer.paragraph(tokens - 6, lead(opening));
      return { kind: 'text', role, verdict, text: `${critique}\nVERDICT: ${verdict}` };
    }
    case 'host':
      return { kind: 'text', role, text: writer.paragraph(tokens, lead(`Here is what matters about ${writer.topic()}.`)) };
    case 'reporter':
      return { kind: 'text', role, text: writer.paragraph(tokens, lead(`Final answer: ${writer.sentence(10)}`)) };
    default:
      return { kind: 'text', role, text: writer.paragraph(tokens, quote) };
  }
}

/**
 * A text answer in the format asked for: JSON mode wraps it (`{"answer": …}`); a JSON schema gets
 * an object with each of its properties, the text in the first string one.
 */
export function formatted(answer: Answer, format: ChatCompletionRequest['responseFormat']): Answer {
  if (!format || answer.kind !== 'text') return answer;
  if (format.type === 'json_object') return { ...answer, text: JSON.stringify({ answer: answer.text }) };
  const properties = (format.schema['properties'] ?? {}) as Record<string, { type?: string }>;
  let textUsed = false;
  const value = (type: string | undefined): unknown => {
    if (type === 'number' || type === 'integer') return 1;
    if (type === 'boolean') return true;
    if (type === 'array') return [];
    if (type === 'object') return {};
    if (textUsed) return '';
    textUsed = true;
    return answer.text;
  };
  return { ...answer, text: JSON.stringify(Object.fromEntries(Object.entries(properties).map(([k, p]) => [k, value(p.type)]))) };
}
