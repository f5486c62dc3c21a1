// One chat completion through the broker: wait in the fair queue for a global lease, call the
// provider behind the breaker (retrying only before the first token), stream the deltas, and
// settle the token reservation with the provider's usage — or refund it on cancel or failure.
import type CircuitBreaker from 'opossum';
import type { GlobalLimiter, Logger, TokenBudgets } from '@agent-mesh/common';
import { Channel } from './channel';
import type { BrokerMetrics } from './metrics';
import { AdaptiveLimits, limitKindOf } from './queue/adaptive';
import type { AdmissionQueue, Admitted } from './queue/admission';
import { countPromptTokens, countText } from './tokens';
import type { ChatRequestBody, OpenStream } from './upstream/openai';
import { UpstreamError } from './upstream/openai';
import type { ChunkEvent, ToolCallOut, UsageOut } from './upstream/sse';
import { backoffMs, type RetryBudget } from './upstream/resilience';

export interface ChatMessageIn {
  role: string;
  content: string;
  name?: string;
  toolCallId?: string;
  toolCalls?: ToolCallOut[];
}

export interface GenerateInput {
  userId: string;
  runId: string;
  agentRole: string;
  runStarted: boolean;
  model: string;
  messages: ChatMessageIn[];
  toolsJson: string;
  maxTokens: number;
  temperature?: number;
}

export type GenerateEvent =
  | { type: 'queued'; position: number; estimatedWaitMs: number }
  | { type: 'delta'; content: string }
  | { type: 'done'; finishReason: string; usage: UsageOut; toolCalls: ToolCallOut[]; model: string; queueWaitMs: number };

export type BrokerRefusalReason = 'breaker_open' | 'upstream_rate_limited' | 'upstream_error' | 'upstream_rejected' | 'invalid_request';

/** The broker could not serve the call (mapped to a gRPC status by server.ts). */
export class BrokerRefusal extends Error {
  override name = 'BrokerRefusal';
  constructor(
    readonly reason: BrokerRefusalReason,
    message: string,
    readonly retryAfterMs?: number,
  ) {
    super(message);
  }
}

export interface BrokerDeps {
  queue: AdmissionQueue;
  limiter: GlobalLimiter;
  adaptive: AdaptiveLimits;
  breaker: CircuitBreaker<[ChatRequestBody, AbortSignal], OpenStream>;
  retryBudget: RetryBudget;
  metrics: BrokerMetrics;
  logger: Logger;
  defaultModel: string;
  defaultMaxTokens: number;
  priorities: Record<string, number>;
  /** Retries before the first token, at most. @default 3 */
  maxRetries?: number;
  breakerResetMs: number;
  /** Charges what each call cost to its user's token budgets (common/src/quota/budget.ts). */
  budgets?: Pick<TokenBudgets, 'charge'>;
}

const sleep = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(t);
      reject(signal.reason as Error);
    };
    signal.addEventListener('abort', onAbort, { once: true });
  });

export class LlmBroker {
  private inFlightCount = 0;

  constructor(private readonly d: BrokerDeps) {}

  get inFlight(): number {
    return this.inFlightCount;
  }

  /** Wire messages in the OpenAI shape. */
  private static wireMessages(messages: ChatMessageIn[]): unknown[] {
    return messages.map((m) => ({
      role: m.role,
      content: m.content,
      ...(m.name ? { name: m.name } : {}),
      ...(m.toolCallId ? { tool_call_id: m.toolCallId } : {}),
      ...(m.toolCalls && m.toolCalls.length > 0
        ? { tool_calls: m.toolCalls.map((c) => ({ id: c.id, type: 'function', function: { name: c.name, arguments: c.argumentsJson } })) }
        : {}),
    }));
  }

  async *generate(input: GenerateInput, signal: AbortSignal, deadline?: number): AsyncGenerator<GenerateEvent> {
    const { d } = this;
    if (input.messages.length === 0) throw new BrokerRefusal('invalid_request', 'messages must not be empty');
    let tools: unknown[] | undefined;
    if (input.toolsJson) {
      try {
        tools = JSON.parse(input.toolsJson) as unknown[];
        if (!Array.isArray(tools)) throw new Error('not an array');
      } catch {
        throw new BrokerRefusal('invalid_request', 'tools_json must be a JSON array');
      }
    }
    if (d.breaker.opened) {
      d.metrics.refusals.inc({ reason: 'breaker_open' });
      throw new BrokerRefusal('breaker_open', 'the upstream LLM is failing: circuit open', d.breakerResetMs);
    }
    const wire = LlmBroker.wireMessages(input.messages);
    const maxTokens = input.maxTokens > 0 ? input.maxTokens : d.defaultMaxTokens;
    const promptTokens = countPromptTokens(
      input.messages.map((m, i) => ({ role: m.role, content: m.content, name: m.name, toolCalls: (wire[i] as { tool_calls?: unknown[] }).tool_calls })),
      tools && tools.length > 0 ? JSON.stringify(tools) : '',
    );
    const reserved = promptTokens + maxTokens;
    const body: ChatRequestBody = {
      model: input.model || d.defaultModel,
      messages: wire,
      max_tokens: maxTokens,
      ...(tools && tools.length > 0 ? { tools } : {}),
      ...(input.temperature !== undefined ? { temperature: input.temperature } : {}),
    };

    // 1. Wait for a lease, streaming queue updates meanwhile.
    const updates = new Channel<GenerateEvent>();
    const admission = d.queue
      .admit({
        userId: input.userId || 'anonymous',
        priority: d.priorities[input.agentRole.toLowerCase()] ?? d.priorities.direct ?? 0,
        started: input.runStarted,
        holder: input.runId || input.userId,
        tokens: reserved,
        deadline,
        signal,
        onQueued: (position, estimatedWaitMs) => updates.push({ type: 'queued', position, estimatedWaitMs }),
      })
      .finally(() => updates.close());
    admission.catch(() => undefined); // awaited below; this only keeps it from counting as unhandled
    for await (const u of updates) yield u;
    const { lease, waitedMs }: Admitted = await admission;
    d.metrics.admissions.inc();
    d.metrics.queueWait.observe(waitedMs / 1000);
    d.metrics.tokens.inc({ kind: 'reserved' }, reserved);

    // 2. Call the provider while holding (and renewing) the lease.
    const stopRenew = lease.keepAlive();
    this.inFlightCount += 1;
    let settled = false;
    let reachedProvider = false;
    let completionText = '';
    const settle = async (billed: number) => {
      if (settled) return;
      settled = true;
      const actual = Math.max(0, Math.ceil(billed));
      if (actual > 0 && input.userId) void d.budgets?.charge(input.userId, actual);
      d.metrics.tokens.inc({ kind: 'settled' }, actual);
      if (actual < reserved) d.metrics.tokens.inc({ kind: 'refunded' }, reserved - actual);
      await (actual === 0 ? lease.refund() : lease.release({ actualTokens: actual })).catch((err: unknown) =>
        d.logger.warn({ err }, 'could not settle the lease'),
      );
    };
    try {
      const { stream, first } = await this.open(body, signal, deadline, () => (reachedProvider = true));
      let finishReason = 'stop';
      let usage: UsageOut | undefined;
      let model = body.model;
      const handle = (e: ChunkEvent): GenerateEvent | undefined => {
        if (e.type === 'content') {
          completionText += e.text;
          return { type: 'delta', content: e.text };
        }
        if (e.type === 'finish') finishReason = e.reason;
        else if (e.type === 'usage') usage = e.usage;
        else if (e.type === 'model') model = e.model;
        return undefined;
      };
      const iterator = stream.events[Symbol.asyncIterator]();
      for (let r = first; !r.done; r = await iterator.next()) {
        const out = handle(r.value);
        if (out) yield out;
      }
      d.metrics.upstreamRequests.inc({ outcome: 'completed' });
      const finalUsage = usage ?? {
        promptTokens,
        completionTokens: countText(completionText),
        totalTokens: promptTokens + countText(completionText),
      };
      await settle(finalUsage.totalTokens);
      yield { type: 'done', finishReason, usage: finalUsage, toolCalls: stream.toolCalls(), model, queueWaitMs: waitedMs };
    } catch (err) {
      if (!signal.aborted && err instanceof UpstreamError) {
        if (reachedProvider) d.metrics.upstreamErrors.inc({ kind: err.status === 0 ? 'connection' : String(err.status) });
        throw LlmBroker.refusalOf(err);
      }
      throw err;
    } finally {
      stopRenew();
      this.inFlightCount -= 1;
      if (!settled) {
        if (signal.aborted) d.metrics.upstreamRequests.inc({ outcome: 'cancelled' });
        // Cancelled or failed: give back all the provider did not bill (prompt + what it generated).
        await settle(reachedProvider ? promptTokens + countText(completionText) : 0);
      }
      d.queue.kick();
    }
  }

  /** Opens the stream and reads its first event, retrying (before any token) what may succeed. */
  private async open(
    body: ChatRequestBody,
    signal: AbortSignal,
    deadline: number | undefined,
    onSent: () => void,
  ): Promise<{ stream: OpenStream; first: IteratorResult<ChunkEvent> }> {
    const { d } = this;
    const maxRetries = d.maxRetries ?? 3;
    d.retryBudget.onRequest();
    for (let attempt = 0; ; attempt += 1) {
      const attemptAbort = new AbortController();
      const onAbort = () => attemptAbort.abort(signal.reason);
      // Linked for the stream's whole life: a cancelled call aborts the upstream body too.
      signal.addEventListener('abort', onAbort, { once: true });
      try {
        const stream = await d.breaker.fire(body, attemptAbort.signal);
        onSent();
        if (d.adaptive.onHeaders(stream.limits)) d.limiter.setLimits(d.adaptive.limits);
        const first = await stream.events[Symbol.asyncIterator]().next();
        return { stream, first };
      } catch (raw) {
        signal.removeEventListener('abort', onAbort);
        attemptAbort.abort();
        if (signal.aborted) throw raw;
        const code = (raw as { code?: string }).code;
        if (code === 'EOPENBREAKER') {
          d.metrics.refusals.inc({ reason: 'breaker_open' });
          throw new BrokerRefusal('breaker_open', 'the upstream LLM is failing: circuit open', d.breakerResetMs);
        }
        const err = raw instanceof UpstreamError ? raw : code === 'ETIMEDOUT' ? new UpstreamError('upstream timed out', 0) : undefined;
        if (!err) throw raw;
        let floor = 0;
        if (err.rateLimited) {
          d.metrics.upstream429.inc();
          floor = err.retryAfterMs ?? 1_000;
          await d.limiter.pauseFor(floor);
          if (d.adaptive.onHeaders(err.limits) || d.adaptive.onRateLimited(limitKindOf(err.limits, err.message))) {
            d.limiter.setLimits(d.adaptive.limits);
            d.logger.warn({ limits: d.adaptive.limits }, 'provider rate limit: effective limits cut');
          }
        } else {
          d.metrics.upstreamErrors.inc({ kind: err.status === 0 ? 'connection' : String(err.status) });
        }
        const wait = backoffMs(attempt, floor);
        const late = deadline !== undefined && Date.now() + wait > deadline;
        if (!err.retryable || attempt >= maxRetries || late || !d.retryBudget.tryWithdraw()) {
          d.metrics.upstreamRequests.inc({ outcome: err.rateLimited ? 'rate_limited' : 'failed' });
          throw err;
        }
        d.metrics.retries.inc();
        await sleep(wait, signal);
      }
    }
  }

  static refusalOf(err: UpstreamError): BrokerRefusal {
    if (err.rateLimited) return new BrokerRefusal('upstream_rate_limited', 'the upstream LLM is rate limiting: try again shortly', err.retryAfterMs);
    if (err.status >= 400 && err.status < 500) return new BrokerRefusal('upstream_rejected', err.message);
    return new BrokerRefusal('upstream_error', err.message);
  }
}
