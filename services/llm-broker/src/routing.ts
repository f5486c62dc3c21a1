// Which upstreams may serve a call, in which order, and when to pass one over for the next
// (LLM_UPSTREAMS: the first listed is preferred). Pure: the broker asks, then acts.

/** What routing needs to know of one upstream. */
export interface Routable {
  name: string;
  /** The models it serves; the first is its default (for a call that names none). */
  models: readonly string[];
}

/**
 * The upstreams that may serve `model`, in fallback order. A call that names no model may go to
 * any upstream (each with its default model); one that names a model goes to the upstreams that
 * list it, and when none does, to the first alone (which passes the name through, as a single
 * upstream always did: the provider answers model_not_found if it does not know it).
 */
export function candidatesFor<U extends Routable>(upstreams: readonly U[], model: string): { upstream: U; model: string }[] {
  if (!model) return upstreams.map((u) => ({ upstream: u, model: u.models[0] ?? '' }));
  const listing = upstreams.filter((u) => u.models.includes(model));
  const chosen = listing.length > 0 ? listing : upstreams.slice(0, 1);
  return chosen.map((u) => ({ upstream: u, model }));
}

export type PassOverReason = 'breaker_open' | 'queue_wait';

/**
 * Whether to pass an upstream over before queueing there: its breaker is open, or its queue's
 * estimated wait ends after the call's deadline. The last candidate is never passed over (the
 * call is then refused there, saying why).
 */
export function passOver(
  state: { breakerOpen: boolean; estimatedWaitMs: number },
  deadline: number | undefined,
  now: number,
): PassOverReason | undefined {
  if (state.breakerOpen) return 'breaker_open';
  if (deadline !== undefined && now + state.estimatedWaitMs > deadline) return 'queue_wait';
  return undefined;
}

/**
 * Refusals before any token reached the caller that another upstream may not share. An upstream
 * answering `model_not_found` for a model it lists (retired, not deployed on that account) is
 * passed over too: the next candidate lists the model as well; the last one's answer reaches the
 * caller (404 on /v1, as OpenAI answers it).
 */
export const FALLBACK_REASONS: ReadonlySet<string> = new Set([
  'breaker_open', 'deadline_unreachable', 'queue_full', 'upstream_rate_limited', 'upstream_error', 'model_not_found',
]);
