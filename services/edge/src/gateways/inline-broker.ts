// The broker run inside the edge (EDGE_INLINE_BROKER): the same calls as over gRPC — the broker's
// events as GenerateResponse messages, its refusals as the errors a gRPC caller gets — so the
// routes cannot tell the two apart, without the hop.
import { asReceivedError, type Logger } from '@agent-mesh/common';
import type { CountTokensRequest, CountTokensResponse, EmbedRequest, EmbedResponse, GenerateRequest, GenerateResponse, ServedModel } from '@agent-mesh/common/gen/llmbroker/v1/llm_broker';
import { GENERATE_DEADLINE_MS } from './broker';
import type { BrokerGateway } from './types';

/** The broker's calls, from its inline module, bound to the broker. */
export interface InlineBroker {
  /** Generate (`generateResponses`). */
  generate(req: GenerateRequest, signal: AbortSignal, deadline: number, gate?: Promise<unknown>): AsyncIterable<GenerateResponse>;
  /** CountTokens (`countTokensResponse`). */
  countTokens(req: CountTokensRequest): CountTokensResponse;
  /** ListModels (the broker's `models`). */
  models(): ServedModel[];
  /** Embed (`embedResponse`). */
  embed(req: EmbedRequest, signal: AbortSignal, deadline: number, gate?: Promise<unknown>): Promise<EmbedResponse>;
}

export function inlineBrokerGateway(broker: InlineBroker, logger: Logger): BrokerGateway {
  /** The error a gRPC caller would get; the gate's own refusal is the caller's error, not the broker's, and stays as it is. */
  const received = async (err: unknown, gate: Promise<unknown> | undefined, method: string): Promise<unknown> =>
    gate && (await gate.then(() => false, (e: unknown) => e === err)) ? err : asReceivedError(err, logger, method);
  return {
    gateBeside: true,
    async countTokens(request) {
      try {
        return broker.countTokens({ request });
      } catch (err) {
        throw asReceivedError(err, logger, 'CountTokens');
      }
    },
    listModels: async () => broker.models(),
    async *generate(req, signal, gate) {
      try {
        yield* broker.generate(req, signal, Date.now() + GENERATE_DEADLINE_MS, gate);
      } catch (err) {
        throw await received(err, gate, 'Generate');
      }
    },
    async embed(req, signal, gate) {
      try {
        return await broker.embed(req, signal, Date.now() + GENERATE_DEADLINE_MS, gate);
      } catch (err) {
        throw await received(err, gate, 'Embed');
      }
    },
  };
}
