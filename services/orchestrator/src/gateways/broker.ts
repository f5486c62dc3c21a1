// The llm-broker behind an async-iterable API: deadline always set, cancellation propagated
// (a cancelled gRPC call makes the broker abort the upstream request), refusals translated.
import { Metadata } from '@grpc/grpc-js';
import { codeOf, createClient, detailsOf, reasonOf, status } from '@agent-mesh/common';
import {
  LlmBrokerServiceClient,
  type GenerateRequest,
  type GenerateResponse,
} from '@agent-mesh/common/dist/gen/llmbroker/v1/llm_broker';
import { DegradedError, StepFailure } from '../pipeline/errors';
import type { CallOptions, LlmGateway } from '../pipeline/types';

/** Broker refusals that mean "busy, try later", not "broken". */
export const DEGRADED_REASONS = new Set(['breaker_open', 'deadline_unreachable', 'queue_full', 'upstream_rate_limited']);

/**
 * `admitted`: whether the broker had started the call upstream. A deadline that expires while the
 * call is still queued means the queue is longer than the run can wait: busy (degraded, retryable),
 * like the broker's own deadline_unreachable, not a failure of the model.
 */
export function translateBrokerError(err: unknown, admitted = true): Error {
  const reason = reasonOf(err);
  const code = codeOf(err);
  if (code === status.DEADLINE_EXCEEDED && !admitted) return new DegradedError('deadline_unreachable', 'the LLM queue did not admit the call before its deadline');
  if ((reason && DEGRADED_REASONS.has(reason)) || code === status.UNAVAILABLE || code === status.RESOURCE_EXHAUSTED) {
    return new DegradedError(reason ?? (code === status.UNAVAILABLE ? 'broker_unavailable' : 'resource_exhausted'), detailsOf(err));
  }
  if (code === status.DEADLINE_EXCEEDED) return new StepFailure('timeout', 'the language model did not answer in time', true);
  return new StepFailure(reason ?? 'llm_failed', detailsOf(err), code === status.INTERNAL || code === status.UNKNOWN);
}

export class BrokerGateway implements LlmGateway {
  readonly client: LlmBrokerServiceClient;
  constructor(addr: string) {
    this.client = createClient(LlmBrokerServiceClient, addr);
  }

  async *generate(request: GenerateRequest, opts: CallOptions): AsyncIterable<GenerateResponse> {
    if (opts.signal.aborted) throw opts.signal.reason;
    const call = this.client.generate(request, new Metadata(), { deadline: new Date(Date.now() + opts.timeoutMs) });
    const onAbort = () => call.cancel();
    opts.signal.addEventListener('abort', onAbort, { once: true });
    let admitted = false;
    try {
      for await (const msg of call as AsyncIterable<GenerateResponse>) {
        if (msg.update && msg.update.$case !== 'queued') admitted = true;
        yield msg;
      }
    } catch (err) {
      if (opts.signal.aborted) throw opts.signal.reason;
      throw translateBrokerError(err, admitted);
    } finally {
      opts.signal.removeEventListener('abort', onAbort);
      call.cancel(); // no-op when the stream ended; stops it when the consumer stopped early
    }
  }

  close(): void {
    this.client.close();
  }
}
