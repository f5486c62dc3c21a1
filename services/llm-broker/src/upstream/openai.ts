// The OpenAI-compatible chat-completions dialect (OpenAI, Volcengine Ark, vLLM, the emulator):
// one streamed POST to `${baseUrl}/chat/completions` over a keep-alive undici pool.
import { Agent, request, errors as undiciErrors } from 'undici';
import { ChunkParser, type ChunkEvent, type ToolCallOut } from './sse';

export interface ChatRequestBody {
  model: string;
  messages: unknown[];
  max_tokens: number;
  tools?: unknown[];
  temperature?: number;
}

/** What the provider says about its limits (`x-ratelimit-*`), when it says it. */
export interface ProviderLimitHeaders {
  limitRequests?: number;
  remainingRequests?: number;
  limitTokens?: number;
  remainingTokens?: number;
}

/** Refusals about the account, not the moment: no wait or retry fixes them; an operator must. */
export type AccountProblem = 'invalid_api_key' | 'insufficient_quota';

/** A refusal or failure from the provider, or the connection to it. */
export class UpstreamError extends Error {
  override name = 'UpstreamError';
  constructor(
    message: string,
    /** HTTP status; 0 for connection errors, cut streams and errors inside a stream. */
    readonly status: number,
    readonly retryAfterMs?: number,
    readonly limits: ProviderLimitHeaders = {},
    /** The provider's error code (`insufficient_quota`, `model_not_found`, …), when it sent one. */
    readonly code?: string,
  ) {
    super(message);
  }

  /** A rate limit that passes with time (a billing `insufficient_quota` 429 does not). */
  get rateLimited(): boolean {
    return this.status === 429 && this.code !== 'insufficient_quota';
  }

  get accountProblem(): AccountProblem | undefined {
    if (this.status === 401 || this.status === 403) return 'invalid_api_key';
    if (this.code === 'insufficient_quota') return 'insufficient_quota';
    return undefined;
  }

  /** 429, 5xx and connection or stream errors may succeed on a retry; other 4xx and account problems never will. */
  get retryable(): boolean {
    return this.accountProblem === undefined && (this.status === 0 || this.status === 429 || this.status >= 500);
  }
}

export interface OpenStream {
  limits: ProviderLimitHeaders;
  events: AsyncIterable<ChunkEvent>;
  toolCalls(): ToolCallOut[];
}

function num(v: string | string[] | undefined): number | undefined {
  const s = Array.isArray(v) ? v[0] : v;
  if (s === undefined || s === '') return undefined;
  const n = Number(s);
  return Number.isFinite(n) ? n : undefined;
}

export function limitHeaders(h: Record<string, string | string[] | undefined>): ProviderLimitHeaders {
  return {
    limitRequests: num(h['x-ratelimit-limit-requests']),
    remainingRequests: num(h['x-ratelimit-remaining-requests']),
    limitTokens: num(h['x-ratelimit-limit-tokens']),
    remainingTokens: num(h['x-ratelimit-remaining-tokens']),
  };
}

/** `retry-after-ms` (OpenAI), else `retry-after` in seconds or as an HTTP date. */
export function retryAfterMs(h: Record<string, string | string[] | undefined>, now = Date.now()): number | undefined {
  const ms = num(h['retry-after-ms']);
  if (ms !== undefined) return Math.max(0, ms);
  const raw = h['retry-after'];
  const s = Array.isArray(raw) ? raw[0] : raw;
  if (!s) return undefined;
  const secs = Number(s);
  if (Number.isFinite(secs)) return Math.max(0, secs * 1000);
  const date = Date.parse(s);
  return Number.isNaN(date) ? undefined : Math.max(0, date - now);
}

export class OpenAiCompatibleClient {
  private readonly agent: Agent;

  /**
   * `streamIdleTimeoutMs`: the longest silence inside a response body (undici's bodyTimeout, reset
   * by every chunk) before the call is aborted as stalled.
   */
  constructor(
    private readonly baseUrl: string,
    private readonly apiKey: string,
    requestTimeoutMs: number,
    private readonly streamIdleTimeoutMs = requestTimeoutMs,
  ) {
    this.agent = new Agent({
      keepAliveTimeout: 30_000,
      connections: 256,
      headersTimeout: requestTimeoutMs,
      bodyTimeout: streamIdleTimeoutMs,
    });
  }

  /** Sends the request and resolves once the provider answered 200 (the body streams after). */
  async open(body: ChatRequestBody, signal: AbortSignal): Promise<OpenStream> {
    const headers: Record<string, string> = { 'content-type': 'application/json', accept: 'text/event-stream' };
    if (this.apiKey) headers.authorization = `Bearer ${this.apiKey}`;
    let res: Awaited<ReturnType<typeof request>>;
    try {
      res = await request(`${this.baseUrl}/chat/completions`, {
        method: 'POST',
        headers,
        body: JSON.stringify({ ...body, stream: true, stream_options: { include_usage: true } }),
        signal,
        dispatcher: this.agent,
      });
    } catch (err) {
      if (signal.aborted) throw err;
      throw new UpstreamError(`upstream connection failed: ${(err as Error).message}`, 0);
    }
    const limits = limitHeaders(res.headers);
    if (res.statusCode !== 200) {
      const text = await res.body.text().catch(() => '');
      let message = text.slice(0, 300);
      let code: string | undefined;
      try {
        const error = (JSON.parse(text) as { error?: { message?: string; code?: string | null; type?: string } }).error;
        message = error?.message ?? message;
        code = error?.code ?? error?.type ?? undefined;
      } catch {
        /* not JSON */
      }
      throw new UpstreamError(`upstream ${res.statusCode}: ${message}`, res.statusCode, retryAfterMs(res.headers), limits, code);
    }
    const parser = new ChunkParser();
    const stream = res.body;
    const idleMs = this.streamIdleTimeoutMs;
    // Every way a 200 stream can go wrong ends in an UpstreamError saying which: never a short
    // answer that looks complete.
    async function* events(): AsyncIterable<ChunkEvent> {
      const decoder = new TextDecoder();
      let finished = false;
      let finishReason = false;
      try {
        for await (const bytes of stream as AsyncIterable<Buffer>) {
          for (const e of parser.push(decoder.decode(bytes, { stream: true }))) {
            if (e.type === 'error') throw new UpstreamError(`upstream error inside the stream: ${e.message}`, 0, undefined, {}, e.code);
            if (e.type === 'finish') finishReason = true;
            if (e.type === 'done') finished = true;
            yield e;
          }
        }
      } catch (err) {
        if (signal.aborted || err instanceof UpstreamError) throw err;
        if ((err as { code?: string }).code === 'UND_ERR_BODY_TIMEOUT') {
          throw new UpstreamError(`upstream stream stalled: no data for ${idleMs} ms (LLM_STREAM_IDLE_TIMEOUT_MS)`, 0, undefined, {}, 'stream_stalled');
        }
        if (err instanceof undiciErrors.UndiciError || (err as NodeJS.ErrnoException).code) {
          throw new UpstreamError(`upstream stream failed: ${(err as Error).message}`, 0);
        }
        throw err;
      } finally {
        if (!finished) stream.destroy();
      }
      if (!finished) throw new UpstreamError('upstream stream ended before [DONE]', 0);
      if (!finishReason) throw new UpstreamError('upstream stream ended without a finish_reason', 0);
    }
    return { limits, events: events(), toolCalls: () => parser.toolCalls() };
  }

  close(): Promise<void> {
    return this.agent.close();
  }
}
