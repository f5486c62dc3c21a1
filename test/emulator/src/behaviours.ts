// Ways a real provider misbehaves, each switchable for the whole instance (a probability per
// request, or armed for the next N requests) and for one request (the `x-emulator-behaviour`
// header or a `+name` suffix on the model).

export const BEHAVIOURS = [
  /** An OpenAI-style `data: {"error": …}` event mid-stream, then `data: [DONE]`. */
  'stream_error',
  /** The same error event, then the connection closes (no `[DONE]`). */
  'stream_error_close',
  /** A data line that is not JSON in the middle of the stream (an HTML error page from a proxy). */
  'bad_json',
  /** 429 `insufficient_quota` (billing), without Retry-After: no wait fixes it. */
  'insufficient_quota',
  /** 503 "overloaded" with Retry-After. */
  'overloaded',
  /** 401 `invalid_api_key`, whatever key was sent. */
  'wrong_key',
  /** No `x-ratelimit-*` headers on the response. */
  'no_ratelimit_headers',
  /** TPM charged at prompt + max_tokens on arrival and never refunded (OpenAI's documented model). */
  'no_refund',
  /** No bytes for `stallMs` midway through the stream. */
  'stall',
  /** Time to first token grows with the prompt (`ttftPerPromptTokenMs`). */
  'slow_prefill',
  /** Heavy-tailed latency: time to first token × a Pareto draw (shape `tailAlpha`). */
  'heavy_tail',
  /** The server closes the keep-alive socket after `idleCloseMs` idle, while announcing 65 s. */
  'idle_close',
  /** The connection is reset before the first byte of the response. */
  'reset',
  /** Two tool calls in one answer; their ids and names arrive in later chunks than their first. */
  'parallel_tool_calls',
  /** No usage chunk, even when `stream_options.include_usage` asked for it. */
  'no_usage',
  /** 404 `model_not_found`: the provider does not serve the model. */
  'model_not_found',
  /** Anthropic with thinking on (enabled or adaptive): the thinking comes as a `redacted_thinking` block (encrypted `data`, no deltas). */
  'redacted_thinking',
] as const;

export type Behaviour = (typeof BEHAVIOURS)[number];

export const BEHAVIOUR_HEADER = 'x-emulator-behaviour';

export function isBehaviour(name: string): name is Behaviour {
  return (BEHAVIOURS as readonly string[]).includes(name);
}

export class UnknownBehaviourError extends Error {
  override readonly name = 'UnknownBehaviourError';
}

/** Parses `a,b c` (commas or spaces); throws on an unknown name. */
export function parseBehaviourList(text: string): Behaviour[] {
  const out: Behaviour[] = [];
  for (const name of text.split(/[\s,]+/).filter(Boolean)) {
    if (!isBehaviour(name)) throw new UnknownBehaviourError(`unknown behaviour "${name}" (known: ${BEHAVIOURS.join(', ')})`);
    out.push(name);
  }
  return out;
}

/** `emulator-1+stream_error+no_usage` → the model `emulator-1` and its behaviours. */
export function splitModel(model: string): { model: string; behaviours: Behaviour[] } {
  const [base, ...suffixes] = model.split('+');
  return { model: base ?? model, behaviours: parseBehaviourList(suffixes.join(',')) };
}

/**
 * The behaviours of one request: the ones it asked for, the instance's armed ones (each armed
 * count is spent by one request), and each instance probability drawn with `draw`.
 */
export function chooseBehaviours(
  requested: readonly Behaviour[],
  rates: Partial<Record<Behaviour, number>>,
  armed: Partial<Record<Behaviour, number>>,
  draw: () => number,
): Set<Behaviour> {
  const chosen = new Set<Behaviour>(requested);
  for (const [name, left] of Object.entries(armed) as [Behaviour, number][]) {
    if (left > 0) {
      chosen.add(name);
      armed[name] = left - 1;
    }
  }
  for (const [name, rate] of Object.entries(rates) as [Behaviour, number][]) {
    if (rate > 0 && draw() < rate) chosen.add(name);
  }
  return chosen;
}

/** A Pareto(1, alpha) draw capped at `cap`: mostly near 1, now and then many times longer. */
export function paretoFactor(u: number, alpha: number, cap = 20): number {
  return Math.min(cap, (1 - Math.min(u, 0.999999)) ** (-1 / alpha));
}
