// The HTTP face of the emulator: routes, authentication, validation, admission, admin endpoints,
// for both protocols it speaks (dialects.ts) and OpenAI's embeddings (embeddings.ts).
import { createHash, randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Socket } from 'node:net';
import { composeAnswer, formatted } from './answers';
import { BEHAVIOUR_HEADER, chooseBehaviours, paretoFactor, parseBehaviourList, splitModel, UnknownBehaviourError, type Behaviour } from './behaviours';
import { deliverCompletion, type Fate } from './completion';
import { ConfigError, validateConfigPatch, type EmulatorConfig, type LiveConfig } from './config';
import { deliverEmbeddings, parseEmbeddingsRequest } from './embeddings';
import { BodyTooLargeError, openAiError, pathOf, readBody, sendJson } from './http';
import { ProviderLimits, type LimitTicket, type TokenUse } from './limits';
import { betasOf } from './messages-request';
import { anthropicCachePlan, NO_CACHE, openAiCachePlan, PromptCaches, type CachePlan } from './prompt-cache';
import { SeededRandom } from './random';
import { ANTHROPIC, DialectInvalid, OPENAI, type Dialect } from './dialects';
import { InvalidRequestError, type ChatCompletionRequest, type ReasoningEffort, type Verbosity } from './request';
import { StatsRecorder, type EmulatorStats } from './stats';
import { countPromptTokens, tokenizer } from './tokens';

export const MODEL_ID = 'emulator-1';
const MODEL_CREATED = 1_700_000_000;
const MAX_BODY_BYTES = 16 * 1024 * 1024;
const MINUTE_MS = 60_000;
/** Reasoning tokens per `reasoning_effort`, as a share of the configured answer length. */
const REASONING_SHARE: Record<ReasoningEffort, number> = { none: 0, minimal: 0, low: 1, medium: 3, high: 8, xhigh: 16 };
/** The answer's length per `verbosity`, as a share of the configured one (medium, the default: all of it). */
const VERBOSITY_SHARE: Record<Verbosity, number> = { low: 0.5, medium: 1, high: 2 };

function requestId(): string {
  return `req_${randomBytes(16).toString('hex')}`;
}

/** A seed from what the model is asked (model, messages, tools): the same prompt, the same seed. */
const promptSeed = (r: ChatCompletionRequest): number =>
  createHash('sha256').update(JSON.stringify([r.model, r.messages, r.tools ?? null])).digest().readUInt32BE(0);

export class ProviderEmulator {
  private config: EmulatorConfig;
  private rng: SeededRandom;
  private readonly limits: ProviderLimits;
  private readonly recorder = new StatsRecorder();
  private readonly caches = new PromptCaches();
  private readonly server: Server;
  /** `idle_close`: sockets to close when their idle time runs out, unless another request comes. */
  private readonly idleTimers = new WeakMap<Socket, NodeJS.Timeout>();

  constructor(config: EmulatorConfig) {
    this.config = { ...config };
    this.rng = new SeededRandom(config.seed);
    this.limits = new ProviderLimits(() => ({
      rpm: this.config.rpm,
      tpm: this.config.tpm,
      otpm: this.config.otpm,
      maxConcurrent: this.config.maxConcurrent,
      windowMs: MINUTE_MS * this.config.timeScale,
      quantumMs: this.config.limitQuantumMs * this.config.timeScale,
    }));
    tokenizer(); // load the ranks now rather than on the first request
    this.server = createServer({ keepAlive: true, noDelay: true }, (req, res) => {
      const idle = this.idleTimers.get(req.socket);
      if (idle !== undefined) {
        clearTimeout(idle);
        this.idleTimers.delete(req.socket);
      }
      this.route(req, res).catch((err: unknown) => {
        const message = err instanceof Error ? err.message : String(err);
        sendJson(res, 500, openAiError(`emulator error: ${message}`, 'server_error', 'internal_error'));
      });
    });
    // Clients (undici, the OpenAI SDKs) keep connections open between calls; outlive their idle timeouts.
    this.server.keepAliveTimeout = 65_000;
    this.server.headersTimeout = 66_000;
  }

  listen(): Promise<{ host: string; port: number }> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.config.port, this.config.host, () => {
        this.server.off('error', reject);
        const address = this.server.address() as AddressInfo;
        resolve({ host: this.config.host, port: address.port });
      });
    });
  }

  /** Stops listening and drops every connection, hung and streaming ones included. */
  close(): Promise<void> {
    return new Promise((resolve, reject) => {
      if (!this.server.listening) {
        resolve();
        return;
      }
      this.server.close((err) => (err === undefined ? resolve() : reject(err)));
      this.server.closeAllConnections();
    });
  }

  stats(): EmulatorStats {
    return this.recorder.snapshot(MINUTE_MS * this.config.timeScale);
  }

  currentConfig(): EmulatorConfig {
    return { ...this.config };
  }

  /** Applies a partial configuration live; a new seed restarts the random sequence. */
  configure(patch: Partial<LiveConfig>): EmulatorConfig {
    const checked = validateConfigPatch(patch, false);
    this.config = { ...this.config, ...checked };
    if (checked.seed !== undefined) this.rng = new SeededRandom(checked.seed);
    return this.currentConfig();
  }

  /** Clears the statistics, the rate-limit windows and the prompt caches. */
  reset(): void {
    this.recorder.reset();
    this.limits.reset();
    this.caches.clear();
  }

  private async route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = pathOf(req);
    const method = req.method ?? 'GET';
    const key = `${method} ${path}`;
    switch (key) {
      case 'POST /v1/chat/completions':
        return this.complete(req, res, OPENAI);
      case 'POST /v1/messages':
        return this.complete(req, res, ANTHROPIC);
      case 'POST /v1/embeddings':
        return this.embed(req, res);
      case 'GET /v1/models':
        if (!this.authorized(req, res)) return;
        return sendJson(res, 200, { object: 'list', data: this.servedModels().map((id) => this.model(id)) });
      case 'GET /health':
        return sendJson(res, 200, { status: 'ok' });
      case 'GET /_emulator/stats':
        return sendJson(res, 200, this.stats());
      case 'GET /_emulator/config':
        return sendJson(res, 200, this.currentConfig());
      case 'POST /_emulator/config':
        return this.configureFromRequest(req, res);
      case 'POST /_emulator/reset':
        this.reset();
        return sendJson(res, 200, { reset: true });
      default:
        req.resume();
        if (method === 'GET' && path.startsWith('/v1/models/')) return this.retrieveModel(req, res, decodeURIComponent(path.slice('/v1/models/'.length)));
        return sendJson(res, 404, openAiError(`Invalid URL (${method} ${path})`, 'invalid_request_error', 'unknown_url'));
    }
  }

  private model(id: string): Record<string, unknown> {
    return { id, object: 'model', created: MODEL_CREATED, owned_by: 'emulator' };
  }

  /** The models listed: the configured ones, or `emulator-1` when any name is served. */
  private servedModels(): string[] {
    return this.config.models.length > 0 ? this.config.models : [MODEL_ID];
  }

  /** Whether a completion for `model` is served (any name, when no list is configured). */
  private serves(model: string): boolean {
    return this.config.models.length === 0 || this.config.models.includes(model);
  }

  /** GET /v1/models/{id}: the model, or OpenAI's 404 model_not_found. */
  private retrieveModel(req: IncomingMessage, res: ServerResponse, id: string): void {
    if (!this.authorized(req, res)) return;
    if (!this.servedModels().includes(id)) {
      const refusal = OPENAI.modelNotFound(id);
      return sendJson(res, refusal.status, refusal.body);
    }
    sendJson(res, 200, this.model(id));
  }

  /** OpenAI's refusal of a missing or wrong bearer key (for the model list). */
  private authorized(req: IncomingMessage, res: ServerResponse): boolean {
    const refusal = OPENAI.authorize(req, this.config.apiKey, false);
    if (refusal) sendJson(res, refusal.status, refusal.body);
    return refusal === undefined;
  }

  private async configureFromRequest(req: IncomingMessage, res: ServerResponse): Promise<void> {
    try {
      const patch: unknown = JSON.parse(await readBody(req, MAX_BODY_BYTES));
      sendJson(res, 200, this.configure(patch as Partial<LiveConfig>));
    } catch (err) {
      const message = err instanceof ConfigError || err instanceof SyntaxError ? err.message : String(err);
      sendJson(res, 400, openAiError(message, 'invalid_request_error', 'invalid_config'));
    }
  }

  /**
   * The door every model call goes through, whatever its endpoint: the body read, the behaviour
   * header, the key, the JSON, the endpoint's own validation (`parse`, which also strips a
   * `+behaviour` suffix from the model), then the behaviours that refuse before admission. Returns
   * the call past the door, or undefined when it was answered here.
   */
  private async receive<T extends { model: string }>(
    req: IncomingMessage,
    res: ServerResponse,
    dialect: Dialect,
    parse: (body: unknown) => { request: T; asked: Behaviour[] },
  ): Promise<Call<T> | undefined> {
    this.recorder.received();
    const headers = dialect.headers(requestId());
    const refuse = (status: number, message: string, code: string | null, param: string | null = null, type?: string): undefined => {
      this.recorder.invalid();
      sendJson(res, status, dialect.invalid(message, code, param, type), { ...headers, ...dialect.limitHeaders(this.limits.headers()) });
      return undefined;
    };
    const refuseWith = (r: { status: number; body: unknown }, extra: Record<string, string>): undefined => {
      sendJson(res, r.status, r.body, { ...headers, ...extra });
      return undefined;
    };

    let raw: string;
    try {
      raw = await readBody(req, MAX_BODY_BYTES);
    } catch (err) {
      if (err instanceof BodyTooLargeError) return refuse(413, 'Request body too large.', 'request_too_large');
      return undefined; // the client is gone
    }
    let asked: Behaviour[];
    try {
      asked = parseBehaviourList(String(req.headers[BEHAVIOUR_HEADER] ?? ''));
    } catch (err) {
      if (err instanceof UnknownBehaviourError) return refuse(400, err.message, 'invalid_behaviour', BEHAVIOUR_HEADER);
      throw err;
    }
    const unauthorized = dialect.authorize(req, this.config.apiKey, asked.includes('wrong_key'));
    if (unauthorized) {
      this.recorder.invalid();
      return refuseWith(unauthorized, dialect.limitHeaders(this.limits.headers()));
    }
    let body: unknown;
    try {
      body = JSON.parse(raw);
    } catch {
      return refuse(
        400,
        dialect === OPENAI
          ? "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)"
          : 'There was an error parsing the body of your request: it is not valid JSON.',
        'invalid_json',
      );
    }
    let request: T;
    try {
      const parsed = parse(body);
      request = parsed.request;
      asked.push(...parsed.asked);
    } catch (err) {
      if (err instanceof DialectInvalid || err instanceof InvalidRequestError) return refuse(400, err.message, err.code, err.param, err.type);
      if (err instanceof UnknownBehaviourError) return refuse(400, err.message, 'invalid_behaviour', 'model');
      throw err;
    }

    const config = this.config;
    const behaviours = chooseBehaviours(asked, config.behaviours, config.armed, () => this.rng.next());
    for (const b of behaviours) this.recorder.behaved(b);
    const limitHeaders = (): Record<string, string> => (behaviours.has('no_ratelimit_headers') ? {} : dialect.limitHeaders(this.limits.headers()));
    if (behaviours.has('wrong_key')) {
      // Asked for by the instance (a key revoked while running): the request's own header said nothing.
      this.recorder.invalid();
      return refuseWith(dialect.authorize(req, this.config.apiKey, true)!, limitHeaders());
    }
    if (behaviours.has('reset')) {
      // The connection dies before the first byte, as when a server or load balancer closes an
      // idle keep-alive socket the client has just written to.
      this.recorder.refused();
      req.socket.destroy();
      return undefined;
    }
    if (behaviours.has('model_not_found') || !this.serves(request.model)) {
      this.recorder.refused();
      return refuseWith(dialect.modelNotFound(request.model), limitHeaders());
    }
    if (behaviours.has('insufficient_quota')) {
      this.recorder.refused();
      return refuseWith(dialect.insufficientQuota(), limitHeaders());
    }
    if (behaviours.has('overloaded')) {
      this.recorder.refused();
      const retryMs = Math.max(1, Math.round(2_000 * config.timeScale));
      return refuseWith(dialect.overloaded(), {
        ...limitHeaders(),
        ...(dialect.overloadedRetryAfter ? { 'retry-after': String(Math.max(1, Math.ceil(retryMs / 1000))), 'retry-after-ms': String(retryMs) } : {}),
      });
    }
    if (behaviours.has('idle_close')) {
      // Keep-Alive still announces 65 s; the socket is closed much earlier once idle.
      const socket = req.socket;
      res.once('finish', () => {
        const timer = setTimeout(() => socket.destroy(), config.idleCloseMs * config.timeScale);
        timer.unref();
        this.idleTimers.set(socket, timer);
      });
    }
    return { request, behaviours, headers, limitHeaders };
  }

  /**
   * Admits a call under the RPM, TPM (or ITPM and OTPM) and concurrency limits (charging `cost`
   * tokens now), or answers it 429 with the provider's headers and returns undefined.
   */
  private admit(res: ServerResponse, dialect: Dialect, call: Call<unknown>, cost: number | TokenUse | (() => TokenUse), expectedMs: number): LimitTicket | undefined {
    const admission = this.limits.admit(cost, expectedMs);
    if (admission.admitted) return admission.ticket;
    this.recorder.rateLimited();
    sendJson(res, 429, dialect.rateLimited(admission), {
      ...call.headers,
      ...call.limitHeaders(),
      'retry-after': String(Math.max(1, Math.ceil(admission.retryAfterMs / 1000))),
      // OpenAI's finer hint; Anthropic sends whole seconds only.
      ...(dialect === OPENAI ? { 'retry-after-ms': String(admission.retryAfterMs) } : {}),
    });
    return undefined;
  }

  /** What becomes of an admitted call, from one draw: fails, hangs, is cut, or is answered. */
  private fate(draw: number): Fate {
    const { failureRate, hangRate, cutRate } = this.config;
    return draw < failureRate ? 'fail' : draw < failureRate + hangRate ? 'hang' : draw < failureRate + hangRate + cutRate ? 'cut' : 'answer';
  }

  /**
   * Time to first token, scaled: the configured one ±15 %, plus the prompt's share under
   * `slow_prefill`, times a Pareto draw under `heavy_tail`.
   */
  private firstTokenMs(rng: SeededRandom, behaviours: ReadonlySet<Behaviour>, promptTokens: number): number {
    const config = this.config;
    return (
      (config.ttftMs * (0.85 + 0.3 * rng.next()) + (behaviours.has('slow_prefill') ? promptTokens * config.ttftPerPromptTokenMs : 0)) *
      config.timeScale *
      (behaviours.has('heavy_tail') ? paretoFactor(rng.next(), config.tailAlpha) : 1)
    );
  }

  /** One chat call in either protocol (`dialect`): checked, admitted under the limits, answered. */
  private async complete(req: IncomingMessage, res: ServerResponse, dialect: Dialect): Promise<void> {
    const call = await this.receive(req, res, dialect, (body) => {
      const request = dialect.parse(body, req.headers);
      const split = splitModel(request.model);
      return { request: { ...request, model: split.model }, asked: split.behaviours };
    });
    if (call === undefined) return;
    const { request, behaviours, headers } = call;

    const config = this.config;
    const scale = config.timeScale;
    const expectedCompletion = request.maxTokens ?? config.completionTokens;
    const msPerToken = (1000 / config.tokensPerSec) * scale;
    let promptTokens = 0;
    let inputCharged = 0;
    let cache: CachePlan = NO_CACHE;
    // The cache is looked up on arrival, for the input limit to charge what it counts: Anthropic's
    // leaves out the tokens read from the cache (unless `cacheReadsLimited`); OpenAI's counts all.
    // The output is reserved at max_tokens, else at the configured answer length, until the end.
    const cost = (): TokenUse => {
      promptTokens = countPromptTokens(request);
      cache = this.cachePlan(dialect, request, promptTokens);
      inputCharged = dialect === ANTHROPIC && !config.cacheReadsLimited ? promptTokens - cache.read : promptTokens;
      return { input: inputCharged, output: expectedCompletion };
    };
    const ticket = this.admit(res, dialect, call, cost, config.ttftMs * scale + expectedCompletion * msPerToken);
    if (ticket === undefined) return;
    cache.commit();
    this.recorder.cached(cache.read, cache.creation);
    const rateHeaders = call.limitHeaders();

    // Everything random about this request comes from its own generator, seeded in arrival order,
    // or by the request's `seed`: the same request and seed, the same answer.
    const rng = new SeededRandom(request.seed !== undefined ? request.seed : this.rng.seed());
    const fate = this.fate(rng.next());
    const length = request.verbosity ? { ...config, completionTokens: Math.round(config.completionTokens * VERBOSITY_SHARE[request.verbosity]) } : config;
    // Greedy sampling (top_k 1): the same prompt, the same answer (its fate still its own).
    const answer = formatted(composeAnswer(request, request.topK === 1 ? new SeededRandom(promptSeed(request)) : rng, length), request.responseFormat);
    const images = request.messages.reduce((n, m) => n + (m.images?.length ?? 0), 0);
    this.recorder.admitted(Date.now(), dialect === OPENAI ? 'chat' : 'messages', answer.role, promptTokens, request.stream, images, request.endUser !== undefined, [...betasOf(req.headers['anthropic-beta'])]);
    if (fate === 'hang') this.recorder.hung();
    else if (fate !== 'fail') this.recorder.answered(answer.kind, answer.kind === 'text' ? answer.verdict : undefined);

    // A reasoning model thinks before its first token: for longer the more effort is asked.
    // It stops at max_completion_tokens, as the answer does (which then has no room left).
    const reasoningTokens = request.reasoningEffort
      ? Math.min(Math.round(REASONING_SHARE[request.reasoningEffort] * config.completionTokens * (0.75 + 0.5 * rng.next())), request.maxTokens ?? Infinity)
      : 0;
    deliverCompletion(
      res,
      {
        id: `chatcmpl-${randomBytes(15).toString('base64url')}`,
        created: Math.floor(Date.now() / 1000),
        request,
        answer,
        promptTokens,
        cache,
        fate,
        rng,
        // A prefix read from the cache is not computed again.
        ttftMs: this.firstTokenMs(rng, behaviours, promptTokens - cache.read) + reasoningTokens * msPerToken,
        reasoningTokens,
        behaviours,
        stallMs: config.stallMs * scale,
        msPerToken,
        headers: { ...headers, ...rateHeaders },
        wire: dialect.wire,
      },
      (outcome, completionTokens) => {
        // `no_refund`: what was charged on arrival (prompt + max_tokens) stays charged.
        const charged = { input: inputCharged, output: behaviours.has('no_refund') ? expectedCompletion : completionTokens };
        ticket.settle(charged);
        this.recorder.finished(outcome, completionTokens, charged);
      },
    );
  }

  /**
   * How the provider's prompt cache splits the prompt: Anthropic's by the request's breakpoints,
   * OpenAI's by its own steps. Looked up only; stored once the call is admitted (`commit`).
   */
  private cachePlan(dialect: Dialect, request: ChatCompletionRequest, promptTokens: number): CachePlan {
    const settings = { minTokens: this.config.cacheMinTokens, timeScale: this.config.timeScale };
    if (dialect === OPENAI) return openAiCachePlan(request, request.model, promptTokens, this.caches.openAi, settings);
    return request.cacheBoundaries === undefined ? NO_CACHE : anthropicCachePlan(request.cacheBoundaries, request.model, promptTokens, this.caches.anthropic, settings);
  }

  /**
   * `POST /v1/embeddings`: through the same door, limits and misbehaviours as a chat call. It
   * charges one request and its prompt tokens on arrival, which is all it ever uses (nothing to
   * refund, `no_refund` changes nothing), and holds its concurrency slot for a time to first token.
   */
  private async embed(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const call = await this.receive(req, res, OPENAI, parseEmbeddingsRequest);
    if (call === undefined) return;
    const { request, behaviours, headers } = call;
    const ticket = this.admit(res, OPENAI, call, request.promptTokens, this.config.ttftMs * this.config.timeScale);
    if (ticket === undefined) return;
    const rateHeaders = call.limitHeaders();

    const rng = new SeededRandom(this.rng.seed());
    const fate = this.fate(rng.next());
    this.recorder.admitted(Date.now(), 'embeddings', 'other', request.promptTokens, false, 0, request.endUser !== undefined);
    if (fate === 'hang') this.recorder.hung();
    deliverEmbeddings(
      res,
      { request, fate, rng, latencyMs: this.firstTokenMs(rng, behaviours, request.promptTokens), headers: { ...headers, ...rateHeaders } },
      (outcome) => {
        const charged = { input: request.promptTokens, output: 0 };
        ticket.settle(charged);
        this.recorder.finished(outcome, 0, charged);
      },
    );
  }
}

/** A model call past the door (ProviderEmulator.receive). */
interface Call<T> {
  request: T;
  behaviours: ReadonlySet<Behaviour>;
  /** The dialect's headers of every response (request id, version). */
  headers: Record<string, string>;
  /** The rate-limit headers as they stand now; none under `no_ratelimit_headers`. */
  limitHeaders: () => Record<string, string>;
}
