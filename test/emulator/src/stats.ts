// What the emulator saw, for tests and benchmarks (`GET /_emulator/stats`).
import type { AgentRole } from './answers';
import type { Behaviour } from './behaviours';
import type { TokenUse } from './limits';

/** The model endpoints: OpenAI's chat completions, Anthropic's Messages, OpenAI's embeddings. */
export type Endpoint = 'chat' | 'messages' | 'embeddings';

export interface EmulatorStats {
  /** Every call to a model endpoint (chat completions, messages, embeddings), whatever became of it. */
  requests: number;
  /** Answered in full (200, stream ended with `[DONE]`). */
  completed: number;
  /** Answered 429 by the RPM, TPM (or ITPM), OTPM or concurrency limit. */
  rateLimited: number;
  /** Injected failures: 5xx answers and cut responses. */
  failed: number;
  /** The client closed the connection before the response ended (hung requests included). */
  aborted: number;
  /** Refused with 400 or 401. */
  invalid: number;
  /** Refused before admission by an injected behaviour (404, 429 insufficient_quota, 503, reset). */
  refused: number;
  /** Requests that each behaviour applied to. */
  behaviours: Partial<Record<Behaviour, number>>;
  /** Of `failed`, the responses cut midway. */
  cut: number;
  /** Requests chosen to never be answered. */
  hung: number;
  /** Answers that were tool calls. */
  toolCalls: number;
  /** Admitted requests not yet finished. */
  inFlight: number;
  maxInFlight: number;
  /** Billed prompt tokens of admitted requests. */
  promptTokens: number;
  /** Images in admitted requests (OpenAI `image_url` parts, Anthropic `image` blocks): they reached the provider. */
  images: number;
  /** Admitted requests that named their end user (OpenAI's `user`, Anthropic's `metadata.user_id`). */
  users: number;
  /** Completion tokens generated (in full, or up to the abort or cut). */
  completionTokens: number;
  /**
   * TPM tokens charged for finished requests, as the TPM limit counts them: prompt + completion
   * (the charge on arrival corrected at the end), or prompt + max_tokens under `no_refund`. With
   * `otpm` set, the TPM counts the input alone, and this is still their sum:
   * `inputTokensCharged + outputTokensCharged`.
   */
  tokensCharged: number;
  /**
   * Of `tokensCharged`, the prompt tokens: what the ITPM (`tpm` with `otpm` set) counts, charged on
   * arrival, never refunded. Over the Messages API, the tokens read from the prompt cache are left
   * out (unless `cacheReadsLimited`): the uncached input and the tokens written to the cache.
   */
  inputTokensCharged: number;
  /** Prompt tokens of admitted requests read from the prompt cache (Anthropic's `cache_read_input_tokens`, OpenAI's `cached_tokens`). */
  cacheReadTokens: number;
  /** Prompt tokens of admitted requests written to the prompt cache (Anthropic's `cache_creation_input_tokens`). */
  cacheCreationTokens: number;
  /**
   * Of `tokensCharged`, the output tokens, as the OTPM counts them: those generated (the charge of
   * max_tokens on arrival corrected at the end), or max_tokens under `no_refund`. Counted whether
   * `otpm` is set or not.
   */
  outputTokensCharged: number;
  /** Admission times (ms since the epoch), oldest first, the last 100,000 at most. */
  admissions: number[];
  /** The most requests admitted within any one rate window (60 s × time scale), over `admissions`. */
  maxPerWindow: number;
  /** Admitted requests by the agent that sent them (embeddings, which have no system prompt: `other`). */
  byRole: Record<AgentRole, number>;
  /** Admitted requests that asked for a stream (`stream: true`) and those that asked for the whole answer (embeddings too). */
  byMode: { stream: number; whole: number };
  /** Admitted requests by endpoint (`POST /v1/chat/completions`, `/v1/messages`, `/v1/embeddings`). */
  byEndpoint: Record<Endpoint, number>;
  /** Admitted chat requests by each Anthropic beta their `anthropic-beta` header named (on either API: OpenAI's ignores the header). */
  byBeta: Record<string, number>;
  /** `VERDICT:` lines written by the Critic. */
  verdicts: { approve: number; revise: number };
}

export type Outcome = 'completed' | 'failed' | 'cut' | 'aborted' | 'hung';

const MAX_ADMISSIONS = 100_000;

function emptyStats(inFlight: number): EmulatorStats {
  return {
    requests: 0,
    completed: 0,
    rateLimited: 0,
    failed: 0,
    aborted: 0,
    invalid: 0,
    refused: 0,
    behaviours: {},
    cut: 0,
    hung: 0,
    toolCalls: 0,
    inFlight,
    maxInFlight: inFlight,
    promptTokens: 0,
    images: 0,
    users: 0,
    completionTokens: 0,
    tokensCharged: 0,
    inputTokensCharged: 0,
    cacheReadTokens: 0,
    cacheCreationTokens: 0,
    outputTokensCharged: 0,
    admissions: [],
    maxPerWindow: 0,
    byRole: { planner: 0, critic: 0, host: 0, reporter: 0, other: 0 },
    byMode: { stream: 0, whole: 0 },
    byBeta: {},
    byEndpoint: { chat: 0, messages: 0, embeddings: 0 },
    verdicts: { approve: 0, revise: 0 },
  };
}

export class StatsRecorder {
  private stats = emptyStats(0);

  received(): void {
    this.stats.requests++;
  }

  invalid(): void {
    this.stats.invalid++;
  }

  refused(): void {
    this.stats.refused++;
  }

  behaved(b: Behaviour): void {
    this.stats.behaviours[b] = (this.stats.behaviours[b] ?? 0) + 1;
  }

  rateLimited(): void {
    this.stats.rateLimited++;
  }

  admitted(at: number, endpoint: Endpoint, role: AgentRole, promptTokens: number, stream: boolean, images: number, namedUser: boolean, betas: readonly string[] = []): void {
    const s = this.stats;
    for (const b of betas) s.byBeta[b] = (s.byBeta[b] ?? 0) + 1;
    s.byEndpoint[endpoint]++;
    s.images += images;
    if (namedUser) s.users++;
    s.byMode[stream ? 'stream' : 'whole']++;
    s.inFlight++;
    s.maxInFlight = Math.max(s.maxInFlight, s.inFlight);
    s.promptTokens += promptTokens;
    s.byRole[role]++;
    s.admissions.push(at);
    // Trim in batches so that the cap costs O(1) amortised.
    if (s.admissions.length > MAX_ADMISSIONS * 1.1) s.admissions = s.admissions.slice(-MAX_ADMISSIONS);
  }

  /** An admitted request's prompt as the cache split it. */
  cached(read: number, creation: number): void {
    this.stats.cacheReadTokens += read;
    this.stats.cacheCreationTokens += creation;
  }

  answered(kind: 'text' | 'tool_call', verdict: 'APPROVE' | 'REVISE' | undefined): void {
    if (kind === 'tool_call') this.stats.toolCalls++;
    if (verdict === 'APPROVE') this.stats.verdicts.approve++;
    if (verdict === 'REVISE') this.stats.verdicts.revise++;
  }

  /** A request chosen to hang; it still ends, as `aborted`, when the client gives up. */
  hung(): void {
    this.stats.hung++;
  }

  /** `charged`: the tokens the limits keep charged for the request once it is settled. */
  finished(outcome: Exclude<Outcome, 'hung'>, completionTokens: number, charged: TokenUse): void {
    const s = this.stats;
    s.inFlight = Math.max(0, s.inFlight - 1);
    s.completionTokens += completionTokens;
    s.tokensCharged += charged.input + charged.output;
    s.inputTokensCharged += charged.input;
    s.outputTokensCharged += charged.output;
    if (outcome === 'completed') s.completed++;
    else if (outcome === 'aborted') s.aborted++;
    else {
      s.failed++;
      if (outcome === 'cut') s.cut++;
    }
  }

  snapshot(windowMs: number): EmulatorStats {
    const s = this.stats;
    const admissions = s.admissions.slice(-MAX_ADMISSIONS);
    let maxPerWindow = 0;
    for (let lo = 0, hi = 0; hi < admissions.length; hi++) {
      while ((admissions[hi] as number) - (admissions[lo] as number) >= windowMs) lo++;
      maxPerWindow = Math.max(maxPerWindow, hi - lo + 1);
    }
    return {
      ...s,
      admissions,
      maxPerWindow,
      behaviours: { ...s.behaviours },
      byRole: { ...s.byRole },
      byMode: { ...s.byMode },
      byBeta: { ...s.byBeta },
      byEndpoint: { ...s.byEndpoint },
      verdicts: { ...s.verdicts },
    };
  }

  /** Zeroes the counters; requests still in flight stay counted in `inFlight`. */
  reset(): void {
    this.stats = emptyStats(this.stats.inFlight);
  }
}
