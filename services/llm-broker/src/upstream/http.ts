// Any WireProtocol over HTTP: one POST per call (streamed, or whole for a caller that does not
// stream, when the protocol can) on a keep-alive undici pool, the
// protocol's errors for non-200 answers, and every way a 200 stream can go wrong (cut, stalled,
// unfinished) as an UpstreamError saying which — never a short answer that looks complete.
import { Agent, request, errors as undiciErrors } from 'undici';
import { traceHttpCall, type HttpCallSpan } from '@agent-mesh/common';
import { UpstreamError, type CachePrefix, type OpenStream, type Provider, type ProviderRequest, type StreamEvent, type WireProtocol } from './provider';
import { CONNECT_FAILED, isConnectError } from './requests';

export interface HttpProviderOptions {
  /** The API's base URL, without the protocol's path (`…/v1`). */
  baseUrl: string;
  /** Never logged. Empty: no key header. */
  apiKey: string;
  /** Longest wait for the response headers. */
  requestTimeoutMs: number;
  /** Whether the provider counts the tokens read from its prompt cache against its input limit; absent: the protocol's rule. */
  cacheReadsLimited?: boolean;
  /** The callers' Anthropic betas this provider is sent (the others left out); absent: all. */
  anthropicBetas?: ReadonlySet<string>;
  /** Longest silence inside a response body (undici's bodyTimeout, reset by every chunk) before the call is aborted as stalled. */
  streamIdleTimeoutMs?: number;
  /**
   * Most connections open to the provider at once: the concurrency limit (0: none). Every call
   * holds a lease of that limit while it waits, so a smaller pool was a queue of the broker's own,
   * out of sight of the admission queue and its estimates (a pool of 256 kept calls admitted under a
   * limit of 1,000 waiting for a connection, long enough to fail).
   */
  maxConnections?: number;
}

export class HttpProvider implements Provider {
  private readonly agent: Agent;
  private readonly idleMs: number;
  private readonly urls = new Map<string, URL>();

  constructor(
    private readonly wire: WireProtocol,
    private readonly o: HttpProviderOptions,
  ) {
    this.idleMs = o.streamIdleTimeoutMs ?? o.requestTimeoutMs;
    this.agent = new Agent({
      keepAliveTimeout: 30_000, connections: o.maxConnections ? o.maxConnections : null, headersTimeout: o.requestTimeoutMs, bodyTimeout: this.idleMs,
    });
  }

  get protocol(): string {
    return this.wire.name;
  }

  unsupported(req: ProviderRequest): string | undefined {
    return this.wire.unsupported?.(req);
  }

  countPromptTokens(req: ProviderRequest): number {
    return this.wire.countPromptTokens(req);
  }

  cachePrefixes(req: ProviderRequest): CachePrefix[] {
    return this.wire.cachePrefixes?.(req) ?? [];
  }

  get cacheReadsLimited(): boolean {
    return this.o.cacheReadsLimited ?? this.wire.cacheReadsLimited;
  }

  async open(asked: ProviderRequest, signal: AbortSignal): Promise<OpenStream> {
    const { wire } = this;
    const allowed = this.o.anthropicBetas;
    const req = allowed && asked.anthropicBetas ? { ...asked, anthropicBetas: asked.anthropicBetas.filter((b) => allowed.has(b)) } : asked;
    const answer = req.stream === false && wire.answer ? (text: string) => wire.answer!(text, req) : undefined;
    const { path, headers, body } = this.wire.request(req, this.o.apiKey, answer === undefined);
    const url = this.urlOf(path);
    // The span lasts until the answer is read, or given up (streamed: the stream's end).
    const span = traceHttpCall('POST', url, headers);
    try {
      return await this.call(url, headers, body, signal, answer, span);
    } catch (err) {
      span.end(err);
      throw err;
    }
  }

  private async call(url: URL, headers: Record<string, string>, body: string, signal: AbortSignal, answer: ((text: string) => ReturnType<NonNullable<WireProtocol['answer']>>) | undefined, span: HttpCallSpan): Promise<OpenStream> {
    let res: Awaited<ReturnType<typeof request>>;
    try {
      res = await request(url, { method: 'POST', headers, body, signal, dispatcher: this.agent });
    } catch (err) {
      if (signal.aborted) throw err;
      // Not connected at all: the provider never saw the request (it does not count it).
      throw new UpstreamError(`upstream connection failed: ${(err as Error).message}`, 0, undefined, {}, isConnectError(err) ? CONNECT_FAILED : undefined);
    }
    span.status(res.statusCode);
    if (res.statusCode !== 200) {
      const text = await res.body.text().catch(() => '');
      throw this.wire.error(res.statusCode, res.headers, text);
    }
    const limits = this.wire.limits(res.headers);
    const idleMs = this.idleMs;
    if (answer) {
      // The whole answer is read here (bodyTimeout still bounds a silence), then replayed as events.
      const text = await res.body.text().catch((err: unknown) => {
        if (signal.aborted) throw err;
        if ((err as { code?: string }).code === 'UND_ERR_BODY_TIMEOUT') {
          throw new UpstreamError(`upstream answer stalled: no data for ${idleMs} ms (LLM_STREAM_IDLE_TIMEOUT_MS)`, 0, undefined, {}, 'stream_stalled');
        }
        throw new UpstreamError(`upstream answer failed: ${(err as Error).message}`, 0);
      });
      span.end();
      const whole = answer(text);
      return { limits, events: (async function* () { yield* whole.events; })(), toolCalls: () => whole.toolCalls };
    }
    const parser = this.wire.parser();
    const stream = res.body;
    // Failed (cut, stalled), or read to its end or given up: 'error' comes before 'close'.
    stream.once('error', (err) => span.end(err)).once('close', () => span.end());
    async function* events(): AsyncIterable<StreamEvent> {
      const decoder = new TextDecoder();
      try {
        for await (const bytes of stream as AsyncIterable<Buffer>) {
          yield* joinContent(parser.push(decoder.decode(bytes, { stream: true })));
        }
      } catch (err) {
        span.end(err);
        if (signal.aborted || err instanceof UpstreamError) throw err;
        if ((err as { code?: string }).code === 'UND_ERR_BODY_TIMEOUT') {
          throw new UpstreamError(`upstream stream stalled: no data for ${idleMs} ms (LLM_STREAM_IDLE_TIMEOUT_MS)`, 0, undefined, {}, 'stream_stalled');
        }
        if (err instanceof undiciErrors.UndiciError || (err as NodeJS.ErrnoException).code) {
          throw new UpstreamError(`upstream stream failed: ${(err as Error).message}`, 0);
        }
        throw err;
      } finally {
        if (!parser.complete) stream.destroy();
      }
      parser.end();
    }
    return { limits, events: events(), toolCalls: () => parser.toolCalls() };
  }

  /** The URL of a protocol's path (a few per provider), parsed once. */
  private urlOf(path: string): URL {
    let url = this.urls.get(path);
    if (!url) this.urls.set(path, (url = new URL(`${this.o.baseUrl}${path}`)));
    return url;
  }

  close(): Promise<void> {
    return this.agent.close();
  }
}

/**
 * The content events of one read from the provider, each run of adjacent ones joined into one
 * (their log probabilities, when asked, kept in order). They arrived together, so joining them
 * delays no token; the answer then crosses the mesh in fewer messages (gRPC to the edge, SSE to
 * the client) when the broker reads several tokens at once, which is when it is busy.
 */
export function joinContent(events: StreamEvent[]): StreamEvent[] {
  if (events.length < 2) return events;
  const out: StreamEvent[] = [];
  for (const e of events) {
    const last = out.at(-1);
    if (e.type === 'content' && last?.type === 'content' && !e.logprobs === !last.logprobs) {
      out[out.length - 1] = { type: 'content', text: last.text + e.text, ...(last.logprobs ? { logprobs: [...last.logprobs, ...e.logprobs!] } : {}) };
    } else out.push(e);
  }
  return out;
}
