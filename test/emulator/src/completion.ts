// Delivers one admitted completion over HTTP: paced like a real model (time to first token, then
// tokens per second), streamed as OpenAI's SSE chunks or answered in one JSON body, with the
// injected failures (5xx, hang, cut) and client aborts handled.
import type { ServerResponse } from 'node:http';
import type { Answer } from './answers';
import { openAiError, sendJson } from './http';
import type { SeededRandom } from './random';
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
  promptTokens: number;
  fate: Fate;
  rng: SeededRandom;
  /** Already scaled by the time scale. */
  ttftMs: number;
  /** Already scaled by the time scale. */
  msPerToken: number;
  /** Rate-limit and request-id headers decided at admission. */
  headers: Record<string, string>;
}

type FinishReason = 'stop' | 'length' | 'tool_calls';

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

const SYSTEM_FINGERPRINT = 'fp_emulator';
/** Shortest pause between two writes of a stream. */
const MIN_TICK_MS = 10;

/**
 * Splits token ids into text pieces, one token each, except that tokens holding part of a
 * multi-byte character are joined with the next so that every piece is valid text.
 */
function textPieces(tokens: readonly number[]): { text: string; tokens: number }[] {
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

function render(answer: Answer, maxTokens: number | undefined): RenderedAnswer {
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
  let tokens = encode(answer.text);
  let finishReason: FinishReason = 'stop';
  if (maxTokens !== undefined && tokens.length > maxTokens) {
    tokens = tokens.slice(0, maxTokens);
    finishReason = 'length';
  }
  const pieces = textPieces(tokens);
  return {
    pieces: [{ delta: { role: 'assistant', content: '', refusal: null }, tokens: 0 }, ...pieces.map((p) => ({ delta: { content: p.text }, tokens: p.tokens }))],
    message: { role: 'assistant', content: pieces.map((p) => p.text).join(''), refusal: null },
    finishReason,
    completionTokens: tokens.length,
  };
}

function usage(promptTokens: number, completionTokens: number): Record<string, unknown> {
  return {
    prompt_tokens: promptTokens,
    completion_tokens: completionTokens,
    total_tokens: promptTokens + completionTokens,
    prompt_tokens_details: { cached_tokens: 0 },
    completion_tokens_details: { reasoning_tokens: 0 },
  };
}

/**
 * Runs the job on `res` and calls `onEnd` exactly once, when the request is over for good:
 * answered, failed, cut, or abandoned by the client (a hung request ends only that way).
 */
export function deliverCompletion(res: ServerResponse, job: CompletionJob, onEnd: (outcome: CompletionOutcome, completionTokens: number) => void): void {
  const startedAt = performance.now();
  const rendered = render(job.answer, job.request.maxTokens);
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
    const t = elapsed() - job.ttftMs;
    return t < 0 ? 0 : 2 + Math.floor(t / job.msPerToken);
  };
  /** Tokens a non-streamed generation has produced by now. */
  const tokensGenerated = (): number => {
    const t = elapsed() - job.ttftMs;
    return t < 0 ? 0 : Math.min(rendered.completionTokens, 1 + Math.floor(t / job.msPerToken));
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
      const status = job.rng.chance(0.5) ? 500 : 503;
      at(job.ttftMs * (0.2 + 0.8 * job.rng.next()), () => {
        const body =
          status === 500
            ? openAiError('The server had an error while processing your request. Sorry about that!', 'server_error', 'internal_error')
            : openAiError('The engine is currently overloaded, please try again later.', 'server_error', 'service_unavailable');
        end('failed', 0);
        sendJson(res, status, body, job.headers);
      });
      return;
    }
    default:
      break;
  }

  const cutAfterPieces = job.fate === 'cut' ? job.rng.int(2, Math.max(2, Math.floor(rendered.pieces.length / 2))) : Infinity;

  if (!job.request.stream) {
    const doneAt = job.ttftMs + Math.max(0, rendered.completionTokens - 1) * job.msPerToken;
    if (job.fate === 'cut') {
      // The connection drops halfway through generation, before any byte of the answer.
      at(job.ttftMs + (doneAt - job.ttftMs) / 2, () => {
        end('cut', tokensGenerated());
        res.socket?.destroy();
      });
      return;
    }
    at(doneAt, () => {
      const body = {
        id: job.id,
        object: 'chat.completion',
        created: job.created,
        model: job.request.model,
        choices: [{ index: 0, message: rendered.message, logprobs: null, finish_reason: rendered.finishReason }],
        usage: usage(job.promptTokens, rendered.completionTokens),
        service_tier: 'default',
        system_fingerprint: SYSTEM_FINGERPRINT,
      };
      end('completed', rendered.completionTokens);
      sendJson(res, 200, body, { ...job.headers, 'openai-processing-ms': String(Math.round(elapsed())) });
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

  // Every chunk shares all but its choices (and usage): serialise that part once.
  const head = `data: {"id":${JSON.stringify(job.id)},"object":"chat.completion.chunk","created":${job.created},"model":${JSON.stringify(job.request.model)},"service_tier":"default","system_fingerprint":"${SYSTEM_FINGERPRINT}","choices":`;
  const tail = job.request.includeUsage ? ',"usage":null}\n\n' : '}\n\n';
  const deltaChunk = (delta: Record<string, unknown>, finishReason: FinishReason | null): string =>
    `${head}[{"index":0,"delta":${JSON.stringify(delta)},"logprobs":null,"finish_reason":${finishReason === null ? 'null' : `"${finishReason}"`}}]${tail}`;

  const pump = (): void => {
    if (ended) return;
    const due = Math.min(piecesDue(), rendered.pieces.length, cutAfterPieces);
    // One chunk per token, as OpenAI sends them; chunks due together leave in one write.
    let out = '';
    while (emittedPieces < due) {
      const piece = rendered.pieces[emittedPieces] as Piece;
      out += deltaChunk(piece.delta, null);
      emittedPieces++;
      emittedTokens += piece.tokens;
    }
    if (emittedPieces >= cutAfterPieces) {
      end('cut', emittedTokens);
      // No finish_reason, no [DONE]: the stream breaks once what was sent has left.
      res.write(out, () => res.socket?.destroy());
      return;
    }
    if (emittedPieces >= rendered.pieces.length) {
      out += deltaChunk({}, rendered.finishReason);
      if (job.request.includeUsage) out += `${head}[],"usage":${JSON.stringify(usage(job.promptTokens, rendered.completionTokens))}}\n\n`;
      end('completed', rendered.completionTokens);
      res.end(`${out}data: [DONE]\n\n`);
      return;
    }
    if (out !== '') res.write(out);
    // The next piece is due one token interval after the last one emitted; at fast time scales,
    // a floor on the tick keeps thousands of streams from flooding the event loop with timers.
    const nextAt = job.ttftMs + Math.max(0, emittedPieces - 1) * job.msPerToken;
    at(Math.max(nextAt, elapsed() + MIN_TICK_MS), pump);
  };
  at(job.ttftMs, pump);
}
