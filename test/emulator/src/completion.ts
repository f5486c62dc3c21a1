// Delivers one admitted completion over HTTP: paced like a real model (time to first token, then
// tokens per second), streamed as SSE or answered in one JSON body, with the injected failures
// (5xx, hang, cut) and client aborts handled. What the bytes look like is the job's AnswerWire:
// OpenAI's chat completion chunks (here) or Anthropic's Messages events (messages.ts).
import type { ServerResponse } from 'node:http';
import type { Answer } from './answers';
import type { Behaviour } from './behaviours';
import { openAiError, sendJson } from './http';
import type { CacheUse } from './prompt-cache';
import { SeededRandom } from './random';
import type { ChatCompletionRequest } from './request';
import { countTokens, encode, tokenizer } from './tokens';

/** What happens to an admitted request, drawn once at admission. */
export type Fate = 'answer' | 'fail' | 'hang' | 'cut';

/** How a request ended, with the completion tokens generated until then. */
export type CompletionOutcome = 'completed' | 'failed' | 'cut' | 'aborted';

export interface CompletionJob {
  /** `chatcmpl-…` */
  id: string;
  /** Seconds since the epoch. */
  created: number;
  request: ChatCompletionRequest;
  answer: Answer;
  /** The whole prompt, cached or not. */
  promptTokens: number;
  /** How the prompt cache split it (prompt-cache.ts): read from it, written to it. */
  cache: CacheUse;
  fate: Fate;
  rng: SeededRandom;
  /** Already scaled by the time scale. */
  ttftMs: number;
  /** Already scaled by the time scale. */
  msPerToken: number;
  /** Rate-limit and request-id headers decided at admission. */
  headers: Record<string, string>;
  /** Misbehaviours chosen for this request (see behaviours.ts). */
  behaviours: ReadonlySet<Behaviour>;
  /** `stall`: silence mid-stream, already scaled. */
  stallMs: number;
  /** Tokens a reasoning model thinks before it answers (`reasoning_effort`): already in `ttftMs`, billed as completion tokens. */
  reasoningTokens: number;
  /** The protocol's bytes: OpenAI's unless set (messages.ts makes Anthropic's). */
  wire?: (job: CompletionJob) => AnswerWire;
}

export type FinishReason = 'stop' | 'length' | 'tool_calls';

/** One streamed delta and the completion tokens it carries. */
interface Piece {
  delta: Record<string, unknown>;
  tokens: number;
}

interface RenderedAnswer {
  /** pieces[0] opens the message (role, and the function name for a tool call). */
  pieces: Piece[];
  message: Record<string, unknown>;
  finishReason: FinishReason;
  completionTokens: number;
}

/** One streamed frame (SSE text, possibly several events) and the completion tokens it carries. */
export interface Frame {
  text: string;
  tokens: number;
}

/** A protocol's rendering of one answer: its stream frames, its ending, its errors, its JSON body. */
export interface AnswerWire {
  /** frames[0] opens the answer; every frame is due one token interval after the previous. */
  frames: Frame[];
  completionTokens: number;
  /** What ends a complete stream (finish reason, usage unless `no_usage`, terminator). */
  end(withUsage: boolean): string;
  /** The provider's in-stream error, and what follows it when the stream is then ended, not cut. */
  error: string;
  afterError: string;
  /** The answer not streamed. */
  body(): unknown;
  /** An injected failure before the answer (500 or 503), and the non-streamed form of a stream error. */
  failure(status: 500 | 503): { status: number; body: unknown };
}

const SYSTEM_FINGERPRINT = 'fp_emulator';
const SERVER_ERROR = openAiError('The server had an error while processing your request. Sorry about that!', 'server_error', null);
/** `bad_json`: what a proxy in front of a provider sends when its backend fails mid-stream. */
const BAD_DATA_LINE = 'data: <html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center></body></html>\n\n';
/** Shortest pause between two writes of a stream. */
const MIN_TICK_MS = 10;

/**
 * Splits token ids into text pieces, one token each, except that tokens holding part of a
 * multi-byte character are joined with the next so that every piece is valid text.
 */
/**
 * An answer's text as the provider sends it: cut at the first stop sequence (which is left out) or
 * at max_tokens, whichever comes first.
 */
export function cutAnswer(text: string, request: Pick<ChatCompletionRequest, 'maxTokens' | 'stop'>): { tokens: number[]; cut?: 'stop_sequence' | 'length' } {
  let tokens = encode(text);
  let cut: 'stop_sequence' | 'length' | undefined;
  if (request.maxTokens !== undefined && tokens.length > request.maxTokens) {
    tokens = tokens.slice(0, request.maxTokens);
    cut = 'length';
  }
  const sent = tokenizer().decode(tokens);
  const at = Math.min(...(request.stop ?? []).map((s) => sent.indexOf(s)).filter((i) => i >= 0));
  if (Number.isFinite(at)) return { tokens: encode(sent.slice(0, at)), cut: 'stop_sequence' };
  return { tokens, cut };
}

export function textPieces(tokens: readonly number[]): { text: string; tokens: number }[] {
  const out: { text: string; tokens: number }[] = [];
  let pending: number[] = [];
  tokens.forEach((token, i) => {
    pending.push(token);
    const text = tokenizer().decode(pending);
    if (!text.endsWith('\uFFFD') || i === tokens.length - 1) {
      out.push({ text, tokens: pending.length });
      pending = [];
    }
  });
  return out;
}

/** The same call asked a second way: `{"query": "x"}` → `{"query": "x background"}`. */
function secondArguments(args: string): string {
  try {
    const parsed = JSON.parse(args) as Record<string, unknown>;
    if (typeof parsed['query'] === 'string') return JSON.stringify({ ...parsed, query: `${parsed['query']} background` });
  } catch {
    /* not JSON: send it twice */
  }
  return args;
}

/**
 * `parallel_tool_calls`: two calls; each opens with its index and empty arguments only, its id
 * and name arrive in later chunks, and the argument fragments of both interleave.
 */
function renderParallel(call: { id: string; name: string; arguments: string }, rng: SeededRandom): RenderedAnswer {
  const calls = [call, { id: `call_${rng.id(24)}`, name: call.name, arguments: secondArguments(call.arguments) }];
  const tc = (index: number, fields: Record<string, unknown>) => ({ tool_calls: [{ index, ...fields }] });
  const nameTokens = countTokens(call.name);
  const args = calls.map((c) => textPieces(encode(c.arguments)));
  const pieces: Piece[] = [
    { delta: { role: 'assistant', content: null, refusal: null, ...tc(0, { type: 'function', function: { arguments: '' } }) }, tokens: 0 },
    { delta: tc(1, { type: 'function', function: { arguments: '' } }), tokens: 0 },
    { delta: tc(0, { id: calls[0]!.id }), tokens: 0 },
    { delta: tc(1, { id: calls[1]!.id, function: { name: calls[1]!.name } }), tokens: nameTokens },
    { delta: tc(0, { function: { name: calls[0]!.name } }), tokens: nameTokens },
  ];
  for (let i = 0; i < Math.max(args[0]!.length, args[1]!.length); i++) {
    for (const index of [0, 1]) {
      const p = args[index]![i];
      if (p !== undefined) pieces.push({ delta: tc(index, { function: { arguments: p.text } }), tokens: p.tokens });
    }
  }
  return {
    pieces,
    message: {
      role: 'assistant',
      content: null,
      tool_calls: calls.map((c) => ({ id: c.id, type: 'function', function: { name: c.name, arguments: c.arguments } })),
      refusal: null,
    },
    finishReason: 'tool_calls',
    completionTokens: pieces.reduce((sum, p) => sum + p.tokens, 0),
  };
}

function render(answer: Answer, maxTokens: number | undefined, stop: string[] | undefined, parallel: boolean, rng: SeededRandom): RenderedAnswer {
  if (answer.kind === 'tool_call' && parallel) return renderParallel(answer.call, rng);
  if (answer.kind === 'tool_call') {
    const { id, name, arguments: args } = answer.call;
    const nameTokens = countTokens(name);
    const argPieces = textPieces(encode(args));
    const opening: Piece = {
      delta: {
        role: 'assistant',
        content: null,
        tool_calls: [{ index: 0, id, type: 'function', function: { name, arguments: '' } }],
        refusal: null,
      },
      tokens: nameTokens,
    };
    return {
      pieces: [opening, ...argPieces.map((p) => ({ delta: { tool_calls: [{ index: 0, function: { arguments: p.text } }] }, tokens: p.tokens }))],
      message: { role: 'assistant', content: null, tool_calls: [{ id, type: 'function', function: { name, arguments: args } }], refusal: null },
      finishReason: 'tool_calls',
      completionTokens: nameTokens + argPieces.reduce((sum, p) => sum + p.tokens, 0),
    };
  }
  const { tokens, cut } = cutAnswer(answer.text, { maxTokens, stop });
  const finishReason: FinishReason = cut === 'length' ? 'length' : 'stop';
  const pieces = textPieces(tokens);
  return {
    pieces: [{ delta: { role: 'assistant', content: '', refusal: null }, tokens: 0 }, ...pieces.map((p) => ({ delta: { content: p.text }, tokens: p.tokens }))],
    message: { role: 'assistant', content: pieces.map((p) => p.text).join(''), refusal: null },
    finishReason,
    completionTokens: tokens.length,
  };
}

/** `completionTokens` includes `reasoningTokens`, as OpenAI bills them; `cachedTokens` are part of `promptTokens`. */
function usage(promptTokens: number, cachedTokens: number, completionTokens: number, reasoningTokens: number): Record<string, unknown> {
  return {
    prompt_tokens: promptTokens,
    completion_tokens: completionTokens,
    total_tokens: promptTokens + completionTokens,
    prompt_tokens_details: { cached_tokens: cachedTokens },
    completion_tokens_details: { reasoning_tokens: reasoningTokens },
  };
}

/** One token's log probability as OpenAI writes it in `logprobs.content` (alternatives without their own). */
interface TokenLogprob {
  token: string;
  logprob: number;
  bytes: number[];
  top_logprobs?: TokenLogprob[];
}

/** Tokens that stand in as a token's less likely alternatives, beside the answer's own. */
const COMMON_TOKENS = [' the', ' a', ' and', ' of', ' to', ' in', ' is', ' that', ' for', ' it', ',', '.', ' with', ' as', ' on', ' be', ' this', ' are', ' or', ' by', ' an'];

const entry = (token: string, logprob: number): TokenLogprob => ({ token, logprob, bytes: [...Buffer.from(token, 'utf8')] });

/**
 * `logprobs`: the figures of each text piece (undefined for the others): the piece's log
 * probability, mostly near 0, and `top` alternatives sharing what probability is left, the
 * likeliest first (the piece itself among them, not always first). Drawn from a generator seeded
 * by the answer's text, so that the same answer has the same figures.
 */
function pieceLogprobs(pieces: readonly Piece[], top: number): (TokenLogprob[] | undefined)[] {
  const texts = pieces.map((p) => (typeof p.delta['content'] === 'string' && p.delta['content'] !== '' ? (p.delta['content'] as string) : undefined));
  let hash = 0x811c9dc5;
  for (const t of texts.join('')) hash = Math.imul(hash ^ t.charCodeAt(0), 0x01000193);
  const rng = new SeededRandom(hash);
  const vocabulary = [...new Set([...texts.filter((t): t is string => t !== undefined), ...COMMON_TOKENS])];
  return texts.map((token) => {
    if (token === undefined) return undefined;
    const p = 1 - 0.6 * rng.next() ** 3;
    const own = entry(token, Math.log(p));
    if (top === 0) return [{ ...own, top_logprobs: [] }];
    const others = vocabulary.filter((t) => t !== token);
    const alternatives: TokenLogprob[] = [];
    let left = 1 - p;
    for (let i = 0; i < top - 1 && others.length > 0; i++) {
      const share = left * (0.3 + 0.5 * rng.next());
      left -= share;
      alternatives.push(entry(others.splice(Math.floor(rng.next() * others.length), 1)[0]!, Math.log(share)));
    }
    return [{ ...own, top_logprobs: [own, ...alternatives].sort((a, b) => b.logprob - a.logprob) }];
  });
}

/** Whether a tool call comes with a second one: the behaviour, unless the request allows only one. */
export const parallelCalls = (job: CompletionJob): boolean => job.behaviours.has('parallel_tool_calls') && job.request.parallelToolCalls;

/** OpenAI's chat completion: `chat.completion.chunk` events, a usage chunk, `data: [DONE]`. */
export function openAiWire(job: CompletionJob): AnswerWire {
  // The reasoning counts against max_completion_tokens first: what is left is the answer's.
  const reasoning = job.reasoningTokens;
  const maxTokens = job.request.maxTokens === undefined ? undefined : Math.max(0, job.request.maxTokens - reasoning);
  const rendered = render(job.answer, maxTokens, job.request.stop, parallelCalls(job), job.rng);
  const completionTokens = rendered.completionTokens + reasoning;
  // Every chunk shares all but its choices (and usage): serialise that part once.
  const head = `data: {"id":${JSON.stringify(job.id)},"object":"chat.completion.chunk","created":${job.created},"model":${JSON.stringify(job.request.model)},"service_tier":"default","system_fingerprint":"${SYSTEM_FINGERPRINT}","choices":`;
  const tail = job.request.includeUsage ? ',"usage":null}\n\n' : '}\n\n';
  // `logprobs`: each text piece's figures, in the chunk that carries it and in the whole answer.
  const figures = job.request.logprobs ? pieceLogprobs(rendered.pieces, job.request.topLogprobs) : undefined;
  const deltaChunk = (delta: Record<string, unknown>, finishReason: FinishReason | null, logprobs?: TokenLogprob[]): string =>
    `${head}[{"index":0,"delta":${JSON.stringify(delta)},"logprobs":${logprobs ? JSON.stringify({ content: logprobs, refusal: null }) : 'null'},"finish_reason":${finishReason === null ? 'null' : `"${finishReason}"`}}]${tail}`;
  return {
    frames: rendered.pieces.map((p, i) => ({ text: deltaChunk(p.delta, null, figures?.[i]), tokens: p.tokens })),
    completionTokens,
    end: (withUsage) =>
      deltaChunk({}, rendered.finishReason) +
      (job.request.includeUsage && withUsage ? `${head}[],"usage":${JSON.stringify(usage(job.promptTokens, job.cache.read, completionTokens, reasoning))}}\n\n` : '') +
      'data: [DONE]\n\n',
    // OpenAI's in-stream error: a data line holding only `error`, then [DONE] or nothing at all.
    error: `data: ${JSON.stringify(SERVER_ERROR)}\n\n`,
    afterError: 'data: [DONE]\n\n',
    body: () => ({
      id: job.id,
      object: 'chat.completion',
      created: job.created,
      model: job.request.model,
      choices: [{
        index: 0,
        message: rendered.message,
        logprobs: figures ? { content: rendered.message['content'] === null ? null : figures.flatMap((f) => f ?? []), refusal: null } : null,
        finish_reason: rendered.finishReason,
      }],
      usage: usage(job.promptTokens, job.cache.read, completionTokens, reasoning),
      service_tier: 'default',
      system_fingerprint: SYSTEM_FINGERPRINT,
    }),
    failure: openAiFailure,
  };
}

/** OpenAI's answer to a call that fails before its answer: 500 (internal) or 503 (overloaded). */
export function openAiFailure(status: 500 | 503): { status: number; body: unknown } {
  return {
    status,
    body:
      status === 500
        ? openAiError('The server had an error while processing your request. Sorry about that!', 'server_error', 'internal_error')
        : openAiError('The engine is currently overloaded, please try again later.', 'server_error', 'service_unavailable'),
  };
}

/**
 * Runs the job on `res` and calls `onEnd` exactly once, when the request is over for good:
 * answered, failed, cut, or abandoned by the client (a hung request ends only that way).
 */
export function deliverCompletion(res: ServerResponse, job: CompletionJob, onEnd: (outcome: CompletionOutcome, completionTokens: number) => void): void {
  const startedAt = performance.now();
  const b = job.behaviours;
  const wire = (job.wire ?? openAiWire)(job);
  const frames = wire.frames;
  /** Where `stream_error`, `bad_json` and `stall` strike: halfway through the pieces. */
  const faultAt = Math.max(1, Math.floor(frames.length / 2));
  const streamError = b.has('stream_error_close') ? 'close' : b.has('stream_error') ? 'done' : undefined;
  let stalled = !b.has('stall');
  let badLineSent = !b.has('bad_json');
  /** Time the stream stood still (`stall`): the schedule after it shifts by as much. */
  let pausedMs = 0;
  let timer: NodeJS.Timeout | undefined;
  let ended = false;
  let emittedPieces = 0;
  let emittedTokens = 0;

  const end = (outcome: CompletionOutcome, tokens: number): void => {
    if (ended) return;
    ended = true;
    if (timer !== undefined) clearTimeout(timer);
    onEnd(outcome, tokens);
  };
  const elapsed = (): number => performance.now() - startedAt;
  /** Pieces due by now: the first two at the first token, then one per token interval. */
  const piecesDue = (): number => {
    const t = elapsed() - job.ttftMs - pausedMs;
    return t < 0 ? 0 : 2 + Math.floor(t / job.msPerToken);
  };
  /** Tokens a non-streamed generation has produced by now. */
  const tokensGenerated = (): number => {
    const t = elapsed() - job.ttftMs;
    return t < 0 ? 0 : Math.min(wire.completionTokens, 1 + Math.floor(t / job.msPerToken));
  };
  const at = (ms: number, fn: () => void): void => {
    timer = setTimeout(fn, Math.max(0, ms - elapsed()));
  };

  res.on('close', () => {
    if (!ended) end('aborted', job.request.stream ? emittedTokens : tokensGenerated());
  });

  switch (job.fate) {
    case 'hang':
      return; // accepted, never answered: only the client's abort ends it
    case 'fail': {
      const failure = wire.failure(job.rng.chance(0.5) ? 500 : 503);
      at(job.ttftMs * (0.2 + 0.8 * job.rng.next()), () => {
        end('failed', 0);
        sendJson(res, failure.status, failure.body, job.headers);
      });
      return;
    }
    default:
      break;
  }
  if (streamError !== undefined && !job.request.stream) {
    // Not streamed: the same failure is a plain 500.
    const failure = wire.failure(500);
    at(job.ttftMs, () => {
      end('failed', 0);
      sendJson(res, failure.status, failure.body, job.headers);
    });
    return;
  }

  const cutAfterPieces = job.fate === 'cut' ? job.rng.int(2, Math.max(2, Math.floor(frames.length / 2))) : Infinity;

  if (!job.request.stream) {
    const doneAt = job.ttftMs + Math.max(0, wire.completionTokens - 1) * job.msPerToken;
    if (job.fate === 'cut') {
      // The connection drops halfway through generation, before any byte of the answer.
      at(job.ttftMs + (doneAt - job.ttftMs) / 2, () => {
        end('cut', tokensGenerated());
        res.socket?.destroy();
      });
      return;
    }
    at(doneAt, () => {
      end('completed', wire.completionTokens);
      sendJson(res, 200, wire.body(), { ...job.headers, 'openai-processing-ms': String(Math.round(elapsed())) });
    });
    return;
  }

  res.writeHead(200, {
    ...job.headers,
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-cache',
    'openai-processing-ms': String(Math.round(elapsed())),
  });
  res.flushHeaders();

  const pump = (): void => {
    if (ended) return;
    const faultPending = streamError !== undefined || !stalled;
    const due = Math.min(piecesDue(), frames.length, cutAfterPieces, faultPending ? faultAt : Infinity);
    // One chunk per token, as the providers send them; chunks due together leave in one write.
    let out = '';
    while (emittedPieces < due) {
      const frame = frames[emittedPieces] as Frame;
      out += frame.text;
      emittedPieces++;
      emittedTokens += frame.tokens;
    }
    if (emittedPieces >= cutAfterPieces) {
      end('cut', emittedTokens);
      // No ending (finish_reason, [DONE] / message_stop): the stream breaks once what was sent has left.
      res.write(out, () => res.socket?.destroy());
      return;
    }
    if (streamError !== undefined && emittedPieces >= faultAt) {
      out += wire.error;
      end('failed', emittedTokens);
      if (streamError === 'close') res.write(out, () => res.socket?.destroy());
      else res.end(`${out}${wire.afterError}`);
      return;
    }
    if (!badLineSent && emittedPieces >= faultAt) {
      out += BAD_DATA_LINE;
      badLineSent = true;
    }
    if (!stalled && emittedPieces >= faultAt) {
      // Not a byte for stallMs, then the rest at the usual pace.
      stalled = true;
      pausedMs += job.stallMs;
      if (out !== '') res.write(out);
      at(elapsed() + job.stallMs, pump);
      return;
    }
    if (emittedPieces >= frames.length) {
      out += wire.end(!b.has('no_usage'));
      end('completed', wire.completionTokens);
      res.end(out);
      return;
    }
    if (out !== '') res.write(out);
    // The next piece is due one token interval after the last one emitted; at fast time scales,
    // a floor on the tick keeps thousands of streams from flooding the event loop with timers.
    const nextAt = job.ttftMs + pausedMs + Math.max(0, emittedPieces - 1) * job.msPerToken;
    at(Math.max(nextAt, elapsed() + MIN_TICK_MS), pump);
  };
  at(job.ttftMs, pump);
}
