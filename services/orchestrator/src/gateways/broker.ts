// The llm-broker behind an async-iterable API: deadline always set, cancellation propagated
// (a cancelled gRPC call makes the broker abort the upstream request), refusals translated.
import { Metadata } from '@grpc/grpc-js';
import { codeOf, DEFAULT_UNARY_DEADLINE_MS, detailsOf, llmBrokerClient, reasonOf, status, type Reason } from '@agent-mesh/common';
import {
  type LlmBrokerServiceClient,
  type GenerateRequest,
  type GenerateResponse,
} from '@agent-mesh/common/gen/llmbroker/v1/llm_broker';
import { DegradedError, StepFailure } from '../pipeline/errors';
import type { CallOptions, LlmGateway } from '../pipeline/types';

/** Broker refusals that mean "busy, try later", not "broken". */
export const DEGRADED_REASONS: ReadonlySet<string> = new Set<Reason>(['breaker_open', 'deadline_unreachable', 'queue_full', 'upstream_rate_limited']);

/**
 * `admitted`: whether the broker had started the call upstream. A deadline that expires while the
 * call is still queued means the queue is longer than the run can wait: busy (degraded, retryable),
 * like the broker's own deadline_unreachable, not a failure of the model.
 */
export function translateBrokerError(err: unknown, admitted = true): Error {
  const reason = reasonOf(err);
  const code = codeOf(err);
  if (code === status.DEADLINE_EXCEEDED && !admitted) return new DegradedError('deadline_unreachable', 'the LLM queue did not admit the call before its deadline');
  // The model failed after some of its answer streamed: not "busy", a failure the user is told of.
  if (reason === 'upstream_stream_failed') return new StepFailure('llm_stream_failed', `the language model failed in the middle of its answer (${detailsOf(err)})`, true);
  if ((reason && DEGRADED_REASONS.has(reason)) || code === status.UNAVAILABLE || code === status.RESOURCE_EXHAUSTED) {
    return new DegradedError(reason ?? (code === status.UNAVAILABLE ? 'broker_unavailable' : 'resource_exhausted'), detailsOf(err));
  }
  if (code === status.DEADLINE_EXCEEDED) return new StepFailure('timeout', 'the language model did not answer in time', true);
  return new StepFailure(reason ?? 'llm_failed', detailsOf(err), code === status.INTERNAL || code === status.UNKNOWN);
}

/** Attempts of a call whose broker replica vanished while it was queued (then: degraded). */
const RESUBMIT_ATTEMPTS = 3;
const RESUBMIT_DELAY_MS = 200;

/**
 * The connection to the broker failed (UNAVAILABLE from the transport: no reason attached), as
 * opposed to the broker refusing the call itself (which always names its reason).
 */
export function brokerVanished(err: unknown): boolean {
  return codeOf(err) === status.UNAVAILABLE && !reasonOf(err);
}

export class BrokerGateway implements LlmGateway {
  readonly client: LlmBrokerServiceClient;
  constructor(addr: string) {
    this.client = llmBrokerClient(addr);
  }

  async *generate(request: GenerateRequest, opts: CallOptions): AsyncIterable<GenerateResponse> {
    const deadline = Math.min(Date.now() + (opts.timeoutMs ?? DEFAULT_UNARY_DEADLINE_MS), opts.deadline ?? Number.POSITIVE_INFINITY);
    for (let attempt = 1; ; attempt++) {
      const outcome = yield* this.attempt(request, opts, deadline);
      if (outcome === 'done') return;
      // The broker replica holding the queued call went away (killed, crashed): nothing reached
      // the upstream for this call, so ask another replica (round-robin skips the dead one).
      if (attempt >= RESUBMIT_ATTEMPTS || Date.now() + RESUBMIT_DELAY_MS >= deadline) throw outcome.error;
      await new Promise((r) => setTimeout(r, RESUBMIT_DELAY_MS));
      if (opts.signal.aborted) throw opts.signal.reason;
    }
  }

  /** One Generate call; `{ error }` when its broker vanished while the call was only queued. */
  private async *attempt(request: GenerateRequest, opts: CallOptions, deadline: number): AsyncGenerator<GenerateResponse, 'done' | { error: Error }> {
    if (opts.signal.aborted) throw opts.signal.reason;
    const call = this.client.generate(request, new Metadata(), { deadline: new Date(deadline) });
    const onAbort = () => call.cancel();
    opts.signal.addEventListener('abort', onAbort, { once: true });
    let admitted = false;
    try {
      for await (const msg of call as AsyncIterable<GenerateResponse>) {
        if (msg.update && msg.update.$case !== 'queued') admitted = true;
        yield msg;
      }
      return 'done';
    } catch (err) {
      if (opts.signal.aborted) throw opts.signal.reason;
      const translated = translateBrokerError(err, admitted);
      if (!admitted && brokerVanished(err)) return { error: translated };
      throw translated;
    } finally {
      opts.signal.removeEventListener('abort', onAbort);
      call.cancel(); // no-op when the stream ended; stops it when the consumer stopped early
    }
  }

  close(): void {
    this.client.close();
  }
}
