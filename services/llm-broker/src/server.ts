// gRPC side of the broker: translates GenerateRequest to the domain call and domain events and
// refusals back to GenerateResponse messages and status codes.
import type { ServerWritableStream } from '@grpc/grpc-js';
import { annotate, ATTR, callerRoles, f32leBytes, MeshError, streamHandler, unaryHandler, type CallerRoleName, type Logger } from '@agent-mesh/common';
import {
  CacheStatus,
  LlmBrokerServiceService,
  ToolChoiceMode,
  type CountTokensRequest,
  type CountTokensResponse,
  type EmbedRequest,
  type EmbedResponse,
  type ListModelsRequest,
  type ListModelsResponse,
  type GenerateRequest,
  type GenerateResponse,
  type LlmBrokerServiceServer,
  type ToolChoice,
} from '@agent-mesh/common/gen/llmbroker/v1/llm_broker';
import { BrokerRefusal, type EmbedInput, type CacheOutcome, type GenerateEvent, type GenerateInput, type LlmBroker, type LogprobOut, type ToolChoiceSpec, type ToolSpec } from './broker';
import { QueueRefusal } from './queue/admission';

export const SERVICE_NAME = 'llmbroker.v1.LlmBrokerService';
export const PROTO_FILES = ['llmbroker/v1/llm_broker.proto'];

/**
 * The deprecated `tools_json` (OpenAI's `tools` array as text, from callers older than `tools`)
 * as typed tools; a refusal names what is wrong with it.
 */
export function toolsFromJson(text: string): ToolSpec[] {
  let list: unknown;
  try {
    list = JSON.parse(text);
  } catch {
    throw new BrokerRefusal('invalid_request', 'tools_json must be a JSON array');
  }
  if (!Array.isArray(list)) throw new BrokerRefusal('invalid_request', 'tools_json must be a JSON array');
  return list.map((t: unknown, i) => {
    const fn = (t as { function?: { name?: unknown; description?: unknown; parameters?: unknown } } | null)?.function;
    if (typeof fn?.name !== 'string') throw new BrokerRefusal('invalid_request', `tools_json[${i}] must be {"type":"function","function":{"name":…}}`);
    return {
      name: fn.name,
      description: typeof fn.description === 'string' ? fn.description : '',
      parametersJsonSchema: fn.parameters === undefined ? '' : JSON.stringify(fn.parameters),
    };
  });
}

/** The call's caller role: unspecified, or a value this build does not know, is served as direct. */
export const callerRoleOf = (req: GenerateRequest): CallerRoleName => callerRoles.fromWire(req.callerRole) ?? 'direct';

export function toInput(req: GenerateRequest): GenerateInput {
  return {
    userId: req.userId,
    runId: req.runId,
    callerRole: callerRoleOf(req),
    runStarted: req.runStarted,
    model: req.model,
    messages: req.messages.map((m) => ({
      role: m.role,
      content: m.content,
      name: m.name || undefined,
      toolCallId: m.toolCallId || undefined,
      toolCalls: m.toolCalls,
      ...(m.parts && m.parts.parts.length > 0 ? { parts: m.parts.parts } : {}),
      ...(m.cacheTtl ? { cacheTtl: m.cacheTtl } : {}),
      ...(m.thinking.length > 0 ? { thinking: m.thinking.map(({ text, signature, redactedData }) => ({ text, signature, redactedData })) } : {}),
    })),
    // tools_json: from callers older than `tools` (deprecated).
    tools: req.tools.length > 0 ? req.tools : req.toolsJson ? toolsFromJson(req.toolsJson) : [],
    toolChoice: toolChoiceOf(req.toolChoice),
    maxTokens: req.maxTokens,
    stop: req.stop,
    topP: req.topP,
    topK: req.topK,
    thinkingBudgetTokens: req.thinkingBudgetTokens,
    contextManagementJson: req.contextManagementJson,
    thinkingAdaptive: req.thinkingAdaptive,
    effort: req.effort,
    seed: req.seed,
    presencePenalty: req.presencePenalty,
    frequencyPenalty: req.frequencyPenalty,
    responseFormatJson: req.responseFormatJson,
    parallelToolCalls: req.parallelToolCalls,
    logprobs: req.logprobs,
    topLogprobs: req.topLogprobs,
    reasoningEffort: req.reasoningEffort,
    verbosity: req.verbosity,
    endUser: req.endUser,
    promptCacheKey: req.promptCacheKey,
    anthropicBetas: req.anthropicBetas,
    logitBias: req.logitBias,
    temperature: req.hasTemperature ? req.temperature : undefined,
    cache: req.cache,
    noStream: req.noStream,
    streamToolCalls: req.streamToolCalls,
  };
}

/** The wire's tool choice in the broker's terms: unset, unspecified or a mode this build does not know is auto. */
function toolChoiceOf(choice: ToolChoice | undefined): ToolChoiceSpec {
  switch (choice?.mode) {
    case ToolChoiceMode.TOOL_CHOICE_MODE_NONE: return 'none';
    case ToolChoiceMode.TOOL_CHOICE_MODE_REQUIRED: return 'required';
    case ToolChoiceMode.TOOL_CHOICE_MODE_FUNCTION: return { name: choice.functionName };
    default: return 'auto';
  }
}

const CACHE_STATUS: Record<CacheOutcome, CacheStatus> = {
  miss: CacheStatus.CACHE_STATUS_MISS,
  hit: CacheStatus.CACHE_STATUS_HIT,
  stale: CacheStatus.CACHE_STATUS_STALE,
};

/** A broker event as its message; `content` and `logprobs`: what was held back for Done (answer_in_done). */
export function toResponse(e: GenerateEvent, content = '', logprobs: LogprobOut[] = []): GenerateResponse {
  switch (e.type) {
    case 'queued':
      return { update: { $case: 'queued', queued: { position: e.position, estimatedWaitMs: e.estimatedWaitMs, marginalWaitMs: e.marginalWaitMs } } };
    case 'cached':
      return { update: { $case: 'cached', cached: { stale: e.stale, ageMs: e.ageMs } } };
    case 'delta':
      return { update: { $case: 'delta', delta: { content: e.content, logprobs: e.logprobs ?? [] } } };
    case 'thinking':
      return { update: { $case: 'thinking', thinking: { text: e.text ?? '', signature: e.signature ?? '', redactedData: e.redactedData ?? '' } } };
    case 'toolCall':
      return { update: { $case: 'toolCall', toolCall: { index: e.index, id: e.id ?? '', name: e.name ?? '', arguments: e.arguments } } };
    case 'embeddings':
      // Only an Embed call gets vectors (embedResponse), never a Generate call.
      throw new Error('embeddings are answered by Embed, not Generate');
    case 'done':
      return {
        update: {
          $case: 'done',
          done: {
            finishReason: e.finishReason,
            ...(e.stopSequence ? { stopSequence: e.stopSequence } : {}),
            usage: e.usage,
            toolCalls: e.toolCalls,
            model: e.model,
            queueWaitMs: e.queueWaitMs,
            cache: e.cache ? CACHE_STATUS[e.cache] : CacheStatus.CACHE_STATUS_UNSPECIFIED,
            cachedUsage: e.cachedUsage,
            upstream: e.upstream,
            content,
            logprobs,
            ...(e.contextManagement ? { contextManagementJson: JSON.stringify(e.contextManagement) } : {}),
          },
        },
      };
  }
}


/** Domain refusals → MeshErrors: the reason, and its status from the catalogue (the orchestrator's "degraded"). */
export function toMeshError(err: unknown): unknown {
  if (err instanceof QueueRefusal || err instanceof BrokerRefusal) return new MeshError(err.reason, err.message, err.retryAfterMs);
  return err;
}

function deadlineOf(call: { getDeadline(): Date | number }): number | undefined {
  const d = call.getDeadline();
  const ms = d instanceof Date ? d.getTime() : d;
  return Number.isFinite(ms) && ms > 0 ? ms : undefined;
}

/**
 * One Generate call: the broker's events as GenerateResponse messages, a refusal as a MeshError.
 * The gRPC handler serves it; so does an edge that runs the broker inside itself, which may give a
 * `gate` to pass before the upstream call (GenerateInput.gate): its failure is thrown as it is.
 */
export async function* generateResponses(broker: LlmBroker, logger: Logger, req: GenerateRequest, signal: AbortSignal, deadline?: number, gate?: Promise<unknown>): AsyncGenerator<GenerateResponse> {
  const role = callerRoleOf(req);
  annotate({ [ATTR.runId]: req.runId, [ATTR.agentRole]: role, [ATTR.userId]: req.userId });
  const started = Date.now();
  // With answer_in_done, the text waits for Done (one message: one write, one read for the caller).
  let held = '';
  const heldLogprobs: LogprobOut[] = [];
  try {
    for await (const e of broker.generate(gate ? { ...toInput(req), gate } : toInput(req), signal, deadline)) {
      if (e.type !== 'done') {
        if (!req.answerInDone) yield toResponse(e);
        else if (e.type === 'delta') {
          held += e.content;
          if (e.logprobs) heldLogprobs.push(...e.logprobs);
        }
        // The thinking is not text: passed on as it comes, for the caller to keep apart.
        else if (e.type === 'queued' || e.type === 'thinking') yield toResponse(e);
        continue;
      }
      const ms = Date.now() - started;
      try {
        yield toResponse(e, held, heldLogprobs);
      } finally {
        // Logged once the caller has the answer (its line is not on the answer's path).
        logger.info({ runId: req.runId, role, upstream: e.upstream, queueWaitMs: e.queueWaitMs, ms, usage: e.usage, finish: e.finishReason, ...(e.cache ? { cache: e.cache } : {}) }, 'generate done');
      }
    }
    if (signal.aborted) logger.info({ runId: req.runId, role, ms: Date.now() - started }, 'generate cancelled by the caller');
  } catch (err) {
    const mapped = toMeshError(err);
    if (mapped instanceof MeshError && !signal.aborted) logger.info({ reason: mapped.reason, role }, 'generate refused');
    throw mapped;
  }
}

/** One CountTokens call: the count, or the refusal Generate would answer, as a MeshError. */
export function countTokensResponse(broker: LlmBroker, req: CountTokensRequest): CountTokensResponse {
  if (!req.request) throw new MeshError('invalid_request', 'request is required');
  try {
    return broker.countTokens(toInput(req.request));
  } catch (err) {
    throw toMeshError(err);
  }
}

/** The wire's request in the broker's terms. */
export function toEmbedInput(req: EmbedRequest): EmbedInput {
  return {
    userId: req.userId,
    model: req.model,
    inputs: req.inputs.map((i) => (i.input?.$case === 'tokens' ? i.input.tokens.ids : i.input?.$case === 'text' ? i.input.text : '')),
    ...(req.dimensions ? { dimensions: req.dimensions } : {}),
    ...(req.endUser ? { endUser: req.endUser } : {}),
    ...(req.cache ? { cache: true } : {}),
  };
}

const NO_BYTES = Buffer.alloc(0);

/**
 * One Embed call: the vectors, or a refusal as a MeshError. The gRPC handler serves it; so does an
 * edge running the broker inside itself, with its `gate` (as generateResponses).
 */
export async function embedResponse(broker: LlmBroker, logger: Logger, req: EmbedRequest, signal: AbortSignal, deadline?: number, gate?: Promise<unknown>): Promise<EmbedResponse> {
  annotate({ [ATTR.userId]: req.userId });
  const started = Date.now();
  try {
    const r = await broker.embed(gate ? { ...toEmbedInput(req), gate } : toEmbedInput(req), signal, deadline);
    logger.info({ role: 'direct', upstream: r.upstream, queueWaitMs: r.queueWaitMs, ms: Date.now() - started, usage: r.usage, inputs: req.inputs.length, requests: r.requests, ...(r.cached ? { cachedInputs: r.cached.inputs } : {}) }, 'embed done');
    return {
      // As bytes when the caller reads them (no component by component encoding, here or there).
      embeddings: r.vectors.map((v) => (req.vectorsAsBytes ? { values: [], f32le: f32leBytes(v) } : { values: Array.from(v), f32le: NO_BYTES })),
      promptTokens: r.usage.promptTokens,
      model: r.model,
      upstream: r.upstream,
      queueWaitMs: r.queueWaitMs,
      cachedInputs: r.cached?.inputs ?? 0,
      cachedPromptTokens: r.cached?.promptTokens ?? 0,
      cachedStale: r.cached?.stale ?? false,
    };
  } catch (err) {
    const mapped = toMeshError(err);
    if (mapped instanceof MeshError && !signal.aborted) logger.info({ reason: mapped.reason, role: 'direct' }, 'embed refused');
    throw mapped;
  }
}

/** A unary call's cancellation (the caller left, or its deadline passed) as an AbortSignal. */
function cancelledSignal(call: { on(event: 'cancelled', listener: () => void): unknown }): AbortSignal {
  const abort = new AbortController();
  call.on('cancelled', () => abort.abort(new Error('the caller cancelled the call')));
  return abort.signal;
}

export function brokerService(broker: LlmBroker, logger: Logger) {
  const implementation: LlmBrokerServiceServer = {
    generate: streamHandler<GenerateRequest, GenerateResponse>(logger, 'Generate', (req, signal, call) => generateResponses(broker, logger, req, signal, deadlineOf(call))),
    countTokens: unaryHandler<CountTokensRequest, CountTokensResponse>(logger, 'CountTokens', async (req) => countTokensResponse(broker, req)),
    listModels: unaryHandler<ListModelsRequest, ListModelsResponse>(logger, 'ListModels', async () => ({ models: broker.models() })),
    embed: unaryHandler<EmbedRequest, EmbedResponse>(logger, 'Embed', (req, call) => embedResponse(broker, logger, req, cancelledSignal(call), deadlineOf(call))),
  };
  return { name: SERVICE_NAME, definition: LlmBrokerServiceService, implementation };
}
