// One chat completion through the broker: wait in the fair queue for a global lease, call the
// provider behind the breaker (retrying only before the first token), stream the deltas, and
// settle the token reservation with the provider's usage — or refund it on cancel or failure.
import type CircuitBreaker from 'opossum';
import type { GlobalLimiter, Logger, TokenBudgets } from '@agent-mesh/common';
import type { CachedAnswer, Found, ResponseCache } from './cache/response-cache';
import { Channel } from './channel';
import type { BrokerMetrics } from './metrics';
import { AdaptiveLimits, limitKindOf } from './queue/adaptive';
import type { AdmissionQueue, Admitted } from './queue/admission';
import { countPromptTokens, countText } from './tokens';
import type { ChatRequestBody, OpenStream } from './upstream/openai';
import { UpstreamError, type AccountProblem } from './upstream/openai';
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
  /** Answer from (and store into) the response cache. */
  cache: boolean;
}

export type CacheOutcome = 'miss' | 'hit' | 'stale';

export type GenerateEvent =
  | { type: 'queued'; position: number; estimatedWaitMs: number }
  /** The answer is replayed from the response cache (before its deltas). */
  | { type: 'cached'; stale: boolean; ageMs: number }
  | { type: 'delta'; content: string }
  | {
      type: 'done';
      finishReason: string;
      /** What the upstream billed for this call (nothing for an answer from the cache). */
      usage: UsageOut;
      toolCalls: ToolCallOut[];
      model: string;
      queueWaitMs: number;
      /** Set when the call asked for the cache. */
      cache?: CacheOutcome;
      /** For an answer from the cache: the usage of the call that produced it (what this one saved). */
      cachedUsage?: UsageOut;
    };

const NOTHING_BILLED: UsageOut = { promptTokens: 0, completionTokens: 0, totalTokens: 0 };

/** A validated call: the upstream request and what it reserves of the TPM quota. */
interface PreparedCall {
  body: ChatRequestBody;
  promptTokens: number;
  reserved: number;
}

export type BrokerRefusalReason =
  | 'breaker_open'
  | 'upstream_rate_limited'
  | 'upstream_error'
  | 'upstream_rejected'
  | 'upstream_stream_failed'
  | 'model_not_found'
  | 'invalid_request';

/** What an operator reads in the alert (log and the breaker's refusals). */
const ALERTS: Record<AccountProblem, string> = {
  invalid_api_key: 'the provider refuses the API key (401/403): fix LLM_API_KEY',
  insufficient_quota: "the provider account is out of quota (insufficient_quota): check the account's billing",
};

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
  /**
   * How the provider counts TPM: `settle` (usage replaces the reservation when the call ends, the
   * rest is refunded) or `reserve` (prompt + max_tokens count at admission and stay counted).
   * @default 'settle'
   */
  tpmAccounting?: 'settle' | 'reserve';
  breakerResetMs: number;
  /** Charges what each call cost to its user's token budgets (common/src/quota/budget.ts). */
  budgets?: Pick<TokenBudgets, 'charge'>;
  /** The response cache for calls that ask for it (absent: they go to the upstream). */
  cache?: ResponseCache;
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
  /** The account problem that opened the breaker, until a call succeeds again. */
  private alert?: string;

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
    const call = this.prepare(input);
    const cache = input.cache ? this.d.cache : undefined;
    if (cache) yield* this.throughCache(cache, input, call, signal, deadline);
    else yield* this.fromUpstream(input, call, signal, deadline);
  }

  /** Validates the input and builds the upstream request and its token reservation. */
  private prepare(input: GenerateInput): PreparedCall {
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
    const wire = LlmBroker.wireMessages(input.messages);
    const maxTokens = input.maxTokens > 0 ? input.maxTokens : d.defaultMaxTokens;
    const promptTokens = countPromptTokens(
      input.messages.map((m, i) => ({ role: m.role, content: m.content, name: m.name, toolCalls: (wire[i] as { tool_calls?: unknown[] }).tool_calls })),
      tools && tools.length > 0 ? JSON.stringify(tools) : '',
    );
    const body: ChatRequestBody = {
      model: input.model || d.defaultModel,
      messages: wire,
      max_tokens: maxTokens,
      ...(tools && tools.length > 0 ? { tools } : {}),
      ...(input.temperature !== undefined ? { temperature: input.temperature } : {}),
    };
    return { body, promptTokens, reserved: promptTokens + maxTokens };
  }

  /**
   * A call that asked for the cache: a fresh answer is replayed; an expired one too while the
   * upstream refuses (stale); otherwise one caller per key across replicas calls the upstream and
   * stores the answer, and the others replay it.
   */
  private async *throughCache(cache: ResponseCache, input: GenerateInput, call: PreparedCall, signal: AbortSignal, deadline?: number): AsyncGenerator<GenerateEvent> {
    const { d } = this;
    const key = cache.keyOf(call.body);
    let found: Found | undefined;
    try {
      found = await cache.get(key);
    } catch (err) {
      d.metrics.cacheLookups.inc({ result: 'error' });
      d.logger.warn({ err: (err as Error).message }, 'response cache unavailable: calling the upstream');
      yield* this.fromUpstream(input, call, signal, deadline);
      return;
    }
    if (found?.fresh) return yield* this.replay(found, 'hit');
    if (found && (await this.upstreamRefusing())) return yield* this.replay(found, 'stale');
    const turn = await cache.turn(key, signal, deadline);
    if (turn.role === 'follower') {
      d.metrics.cacheFlights.inc({ outcome: 'followed' });
      return yield* this.replay(turn.value, 'hit');
    }
    d.metrics.cacheFlights.inc({ outcome: turn.role === 'alone' ? turn.reason : turn.tookOver ? 'took_over' : 'led' });
    const deltas: string[] = [];
    try {
      for await (const e of this.fromUpstream(input, call, signal, deadline)) {
        if (e.type === 'delta') deltas.push(e.content);
        if (e.type !== 'done') {
          yield e;
          continue;
        }
        // Stored before the caller hears `done`, so that the followers find it as soon as possible.
        const answer: CachedAnswer = { deltas, finishReason: e.finishReason, toolCalls: e.toolCalls, model: e.model, usage: e.usage, storedAt: Date.now() };
        await cache.put(key, answer).catch((err: unknown) => d.logger.warn({ err: (err as Error).message }, 'response cache: answer not stored'));
        d.metrics.cacheLookups.inc({ result: 'miss' });
        yield { ...e, cache: 'miss' };
      }
    } catch (err) {
      // Refused before any token while an expired answer exists: it beats no answer.
      const refusing = err instanceof BrokerRefusal && (err.reason === 'breaker_open' || err.reason === 'upstream_rate_limited');
      if (found && refusing && deltas.length === 0 && !signal.aborted) return yield* this.replay(found, 'stale');
      d.metrics.cacheLookups.inc({ result: 'miss' }); // a miss that failed upstream
      throw err;
    } finally {
      if (turn.role === 'leader') await turn.release();
    }
  }

  /** A stored answer as a stream: announced, its deltas, and a `done` that billed nothing. */
  private async *replay(found: Found, outcome: 'hit' | 'stale'): AsyncGenerator<GenerateEvent> {
    const { d } = this;
    const a = found.answer;
    d.metrics.cacheLookups.inc({ result: outcome });
    d.metrics.cacheTokensSaved.inc(a.usage.totalTokens);
    yield { type: 'cached', stale: outcome === 'stale', ageMs: found.ageMs };
    for (const content of a.deltas) yield { type: 'delta', content };
    yield { type: 'done', finishReason: a.finishReason, usage: NOTHING_BILLED, toolCalls: a.toolCalls, model: a.model, queueWaitMs: 0, cache: outcome, cachedUsage: a.usage };
  }

  /** The upstream refuses for now: its breaker is open or a 429 paused admission (on any replica). */
  private async upstreamRefusing(): Promise<boolean> {
    return this.d.breaker.opened || (await this.d.limiter.pausedForMs()) > 0;
  }

  /** The call itself: queue, lease, upstream, settlement. */
  private async *fromUpstream(input: GenerateInput, call: PreparedCall, signal: AbortSignal, deadline?: number): AsyncGenerator<GenerateEvent> {
    const { d } = this;
    const { body, promptTokens, reserved } = call;
    if (d.breaker.opened) throw this.breakerRefusal();

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
      // `reserve`: the provider charged prompt + max_tokens when the request reached it, for good.
      const actual = d.tpmAccounting === 'reserve' && reachedProvider ? reserved : Math.max(0, Math.ceil(billed));
      if (actual > 0 && input.userId) void d.budgets?.charge(input.userId, actual);
      d.metrics.tokens.inc({ kind: 'settled' }, actual);
      if (actual < reserved) d.metrics.tokens.inc({ kind: 'refunded' }, reserved - actual);
      await (actual === 0 ? lease.refund() : lease.release({ actualTokens: actual })).catch((err: unknown) =>
        d.logger.warn({ err }, 'could not settle the lease'),
      );
    };
    let opened = false;
    let delivered = 0;
    try {
      const { stream, iterator, buffered, ended } = await this.open(body, signal, deadline, () => (reachedProvider = true));
      opened = true;
      let finishReason = 'stop';
      let usage: UsageOut | undefined;
      let model = body.model;
      const handle = (e: ChunkEvent): GenerateEvent | undefined => {
        if (e.type === 'content') {
          completionText += e.text;
          delivered += 1;
          return { type: 'delta', content: e.text };
        }
        if (e.type === 'finish') finishReason = e.reason;
        else if (e.type === 'usage') usage = e.usage;
        else if (e.type === 'model') model = e.model;
        return undefined;
      };
      for (const e of buffered) {
        const out = handle(e);
        if (out) yield out;
      }
      if (!ended) {
        for (let r = await iterator.next(); !r.done; r = await iterator.next()) {
          const out = handle(r.value);
          if (out) yield out;
        }
      }
      d.metrics.upstreamRequests.inc({ outcome: 'completed' });
      this.alert = undefined;
      const toolCalls = stream.toolCalls();
      // A provider that sends no usage chunk: count what it generated, tool calls included.
      const generated = countText(completionText) + toolCalls.reduce((n, c) => n + countText(c.name) + countText(c.argumentsJson), 0);
      const finalUsage = usage ?? { promptTokens, completionTokens: generated, totalTokens: promptTokens + generated };
      await settle(finalUsage.totalTokens);
      yield { type: 'done', finishReason, usage: finalUsage, toolCalls, model, queueWaitMs: waitedMs };
    } catch (err) {
      if (!signal.aborted && err instanceof UpstreamError) {
        if (!opened) throw LlmBroker.refusalOf(err);
        // Tokens already reached the caller: a retry would repeat them, so the call fails, saying so.
        d.metrics.upstreamErrors.inc({ kind: 'mid_stream' });
        d.metrics.upstreamRequests.inc({ outcome: 'failed' });
        d.logger.warn({ err: err.message, delivered }, 'upstream failed mid-stream');
        throw new BrokerRefusal('upstream_stream_failed', `the upstream LLM failed after ${delivered} streamed pieces of its answer: ${err.message}`);
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

  /** A refusal about the account (bad key, no quota): open the breaker, raise the alert, say why. */
  private raiseAlert(problem: AccountProblem, err: UpstreamError): void {
    const { d } = this;
    this.alert = ALERTS[problem];
    d.metrics.alerts.inc({ reason: problem });
    d.logger.error({ reason: problem, status: err.status, upstream: err.message }, `upstream alert: ${this.alert}`);
    if (!d.breaker.opened) d.breaker.open();
  }

  private breakerRefusal(): BrokerRefusal {
    this.d.metrics.refusals.inc({ reason: 'breaker_open' });
    const why = this.alert ? ` (${this.alert})` : '';
    return new BrokerRefusal('breaker_open', `the upstream LLM is failing: circuit open${why}`, this.d.breakerResetMs);
  }

  /**
   * Opens the stream and reads it up to its first content (or to its end, for an answer made of
   * tool calls only), retrying — nothing has reached the caller yet — what may succeed.
   */
  private async open(
    body: ChatRequestBody,
    signal: AbortSignal,
    deadline: number | undefined,
    onSent: () => void,
  ): Promise<{ stream: OpenStream; iterator: AsyncIterator<ChunkEvent>; buffered: ChunkEvent[]; ended: boolean }> {
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
        const iterator = stream.events[Symbol.asyncIterator]();
        const buffered: ChunkEvent[] = [];
        for (;;) {
          const r = await iterator.next();
          if (r.done) return { stream, iterator, buffered, ended: true };
          buffered.push(r.value);
          if (r.value.type === 'content') return { stream, iterator, buffered, ended: false };
        }
      } catch (raw) {
        signal.removeEventListener('abort', onAbort);
        attemptAbort.abort();
        if (signal.aborted) throw raw;
        const code = (raw as { code?: string }).code;
        if (code === 'EOPENBREAKER') throw this.breakerRefusal();
        const err = raw instanceof UpstreamError ? raw : code === 'ETIMEDOUT' ? new UpstreamError('upstream timed out', 0) : undefined;
        if (!err) throw raw;
        const problem = err.accountProblem;
        if (problem) {
          d.metrics.upstreamErrors.inc({ kind: String(err.status) });
          d.metrics.upstreamRequests.inc({ outcome: 'failed' });
          this.raiseAlert(problem, err);
          throw this.breakerRefusal();
        }
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
          // A 503 with Retry-After: the provider says when to come back.
          floor = err.retryAfterMs ?? 0;
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
    if (err.status === 404 && err.code === 'model_not_found') return new BrokerRefusal('model_not_found', err.message.replace(/^upstream 404: /, ''));
    if (err.status >= 400 && err.status < 500) return new BrokerRefusal('upstream_rejected', err.message);
    return new BrokerRefusal('upstream_error', err.message);
  }
}
