// Sentences that read like prose, built from a small vocabulary and the key words of the question.
import type { SeededRandom } from './random';
import { countTokens } from './tokens';

const NOUNS = [
  'approach', 'answer', 'budget', 'change', 'constraint', 'context', 'cost', 'data', 'decision',
  'detail', 'evidence', 'example', 'factor', 'goal', 'impact', 'issue', 'limit', 'method', 'metric',
  'option', 'outcome', 'pattern', 'priority', 'process', 'question', 'reason', 'requirement', 'result',
  'risk', 'schedule', 'source', 'step', 'strategy', 'summary', 'system', 'team', 'test', 'trade-off',
  'trend', 'user', 'value', 'workload',
] as const;

const ADJECTIVES = [
  'available', 'basic', 'careful', 'clear', 'common', 'concrete', 'current', 'direct', 'early',
  'important', 'key', 'likely', 'main', 'measurable', 'modest', 'obvious', 'practical', 'recent',
  'relevant', 'reliable', 'simple', 'small', 'specific', 'stable', 'strong', 'typical', 'useful',
] as const;

/** [third person singular, base form] */
const VERBS: readonly (readonly [string, string])[] = [
  ['affects', 'affect'], ['changes', 'change'], ['checks', 'check'], ['clarifies', 'clarify'],
  ['compares', 'compare'], ['confirms', 'confirm'], ['covers', 'cover'], ['defines', 'define'],
  ['explains', 'explain'], ['highlights', 'highlight'], ['improves', 'improve'], ['includes', 'include'],
  ['limits', 'limit'], ['measures', 'measure'], ['outlines', 'outline'], ['reduces', 'reduce'],
  ['reflects', 'reflect'], ['reviews', 'review'], ['shapes', 'shape'], ['shows', 'show'],
  ['supports', 'support'], ['tests', 'test'], ['tracks', 'track'], ['explores', 'explore'],
];

const PLAN_VERBS = [
  'Identify', 'Collect', 'Compare', 'Review', 'Summarize', 'Check', 'Outline', 'Estimate',
  'Verify', 'List', 'Explain', 'Prioritize', 'Assess', 'Draft',
] as const;

const ADVERBS = ['clearly', 'directly', 'often', 'usually', 'mostly', 'quickly', 'carefully', 'largely'] as const;
const DETERMINERS = ['the', 'the', 'this', 'each', 'a', 'one'] as const;
const PREPOSITIONS = ['for', 'with', 'across', 'around', 'behind', 'within', 'beyond', 'after'] as const;
const CONNECTORS = ['because', 'while', 'so', 'and', 'although', 'since'] as const;
const SHORT_SENTENCES = ['That matters.', 'It helps.', 'This is key.', 'Keep it simple.'] as const;

const STOP_WORDS = new Set(
  (
    'a about above after again against all also am an and any are as at be because been before being below between ' +
    'both but by can could did do does doing down during each few for from further had has have having he her here ' +
    'hers him his how i if in into is it its itself just me more most my no nor not now of off on once only or other ' +
    'our ours out over own same she should so some such than that the their theirs them then there these they this ' +
    'those through to too under until up very was we were what when where which while who whom why will with would ' +
    'you your yours please tell give show explain want need know like make get let without within across ' +
    'using use via per yet however therefore thing things way ways lot much many every ' +
    // words the orchestrator's own prompts use, which are not the subject of the question
    'round question answer plan critique verdict approve revise planner critic host reporter final user assistant ' +
    'system task step steps write draft review context previous reply respond response output'
  ).split(' '),
);

/**
 * The words that carry the meaning of a text, in order of appearance, without duplicates:
 * stop words, numbers and very short words left out; ordinary words lower-cased, names kept.
 */
export function keyWords(text: string, limit = 8): string[] {
  const out: string[] = [];
  const seen = new Set<string>();
  for (const match of text.matchAll(/[A-Za-z][A-Za-z0-9'-]*[A-Za-z0-9]/g)) {
    const word = match[0];
    const lower = word.toLowerCase();
    if (lower.length < 3 || STOP_WORDS.has(lower) || seen.has(lower)) continue;
    seen.add(lower);
    // Names and acronyms (capitals after the first letter, or all caps) keep their case.
    const keepCase = /[A-Z]/.test(word.slice(1)) || /^[A-Z]{2,}$/.test(word);
    out.push(keepCase ? word : lower);
    if (out.length >= limit) break;
  }
  return out;
}

function capitalize(text: string): string {
  return text.charAt(0).toUpperCase() + text.slice(1);
}

function withArticle(det: string, next: string): string {
  return det === 'a' && /^[aeiou]/i.test(next) ? 'an' : det;
}

/** Builds sentences about a topic; key words of the question turn up as the nouns now and then. */
export class SentenceWriter {
  private nextTopic = 0;

  constructor(
    private readonly rng: SeededRandom,
    private readonly topics: readonly string[],
  ) {}

  /** A topic word in turn, so that every key word is used before one repeats. */
  topic(): string {
    if (this.topics.length === 0) return this.rng.pick(NOUNS);
    const word = this.topics[this.nextTopic % this.topics.length] as string;
    this.nextTopic++;
    return word;
  }

  private noun(): string {
    return this.topics.length > 0 && this.rng.chance(0.35) ? this.topic() : this.rng.pick(NOUNS);
  }

  private nounPhrase(): string[] {
    const words: string[] = [];
    if (this.rng.chance(0.5)) words.push(this.rng.pick(ADJECTIVES));
    words.push(this.noun());
    const det = this.rng.pick(DETERMINERS);
    return [withArticle(det, words[0] as string), ...words];
  }

  /** A phrase that lengthens a sentence, of at most `room` words when one that short exists. */
  private modifier(room: number): string[] {
    const options: (() => string[])[] = [() => [this.rng.pick(ADVERBS)]];
    if (room >= 3) options.push(() => [this.rng.pick(PREPOSITIONS), ...this.nounPhrase()]);
    if (room >= 4) options.push(() => ['and', this.rng.pick(VERBS)[0], ...this.nounPhrase()]);
    if (room >= 7) options.push(() => [this.rng.pick(CONNECTORS), ...this.nounPhrase(), this.rng.pick(VERBS)[0], ...this.nounPhrase()]);
    return this.rng.pick(options)();
  }

  private extend(words: string[], wanted: number): string[] {
    while (words.length < wanted) {
      const room = wanted - words.length;
      // "quickly mostly largely" reads badly; a word short of the target is fine.
      if (room <= 2 && (ADVERBS as readonly string[]).includes(words[words.length - 1] ?? '')) break;
      words.push(...this.modifier(room));
    }
    return words;
  }

  /** A declarative sentence of about `wanted` words (a word is about one token). */
  sentence(wanted: number): string {
    if (wanted <= 3) return this.rng.pick(SHORT_SENTENCES);
    const words = this.extend([...this.nounPhrase(), this.rng.pick(VERBS)[0], ...this.nounPhrase()], wanted);
    return `${capitalize(words.join(' '))}.`;
  }

  /** An imperative sentence of about `wanted` words, naming `subject`: one line of a plan. */
  instruction(wanted: number, subject: string): string {
    const verb = this.rng.pick(PLAN_VERBS);
    const start = wanted < 6 ? [verb, 'the', subject] : [verb, 'the', this.rng.pick(ADJECTIVES), this.rng.pick(NOUNS), 'of', subject];
    return `${this.extend(start, wanted).join(' ')}.`;
  }

  /**
   * Sentences appended to `opening` until the text holds about `tokens` tokens
   * (counted per sentence, so the total lands within a token or two of the target).
   */
  paragraph(tokens: number, opening = ''): string {
    let text = opening;
    let used = countTokens(opening);
    let sentences = 0;
    while (used < tokens) {
      const remaining = tokens - used;
      if (remaining <= 2 && text !== '') break; // closer to the target than one more sentence
      const wanted = remaining < 24 ? Math.max(1, remaining - 1) : this.rng.int(9, 18);
      const separator = text === '' ? '' : sentences > 0 && sentences % 5 === 0 ? '\n\n' : ' ';
      const sentence = this.sentence(wanted);
      text += separator + sentence;
      used += countTokens(separator + sentence);
      sentences++;
    }
    return text;
  }
}
