// Anthropic's Messages API stream for one answer: message_start, a content block per text or
// tool_use (content_block_start, content_block_delta with text_delta / input_json_delta,
// content_block_stop), message_delta (stop_reason, usage), message_stop; an `error` event for a
// stream that fails. With extended thinking (enabled or adaptive), a thinking block first
// (thinking_delta, then its signature_delta). With context editing asked for, what it cleared
// (`context_management`) on the message and on message_delta. The same answers, pacing and
// misbehaviours as the chat completions.
import { cutAnswer, parallelCalls, textPieces, type AnswerWire, type CompletionJob, type Frame } from './completion';
import { anthropicError } from './messages-request';
import { SeededRandom } from './random';
import { composeThinking, redactThinking, signThinking } from './thinking';
import { countTokens, encode } from './tokens';

const event = (name: string, data: Record<string, unknown>): string => `event: ${name}\ndata: ${JSON.stringify({ type: name, ...data })}\n\n`;

/** `{"query": "x"}` → `{"query": "x background"}`: the second of `parallel_tool_calls`. */
function secondInput(input: Record<string, unknown>): Record<string, unknown> {
  return typeof input.query === 'string' ? { ...input, query: `${input.query} background` } : input;
}

export function messagesWire(job: CompletionJob): AnswerWire {
  const { answer, request } = job;
  const id = `msg_${job.id.replace(/^chatcmpl-/, '')}`;
  const frames: Frame[] = [];
  const content: Record<string, unknown>[] = [];
  let stopReason: 'end_turn' | 'max_tokens' | 'tool_use' | 'stop_sequence' = 'end_turn';
  let stopSequence: string | null = null;
  // The prompt as the cache split it: input_tokens is what was neither read from it nor written to it.
  const { read, creation, creation1h } = job.cache;
  const input = { input_tokens: job.promptTokens - read - creation, cache_creation_input_tokens: creation, cache_read_input_tokens: read };
  const creationByTtl = { cache_creation: { ephemeral_5m_input_tokens: creation - creation1h, ephemeral_1h_input_tokens: creation1h } };
  const start = event('message_start', {
    message: {
      id, type: 'message', role: 'assistant', content: [], model: request.model, stop_reason: null, stop_sequence: null,
      usage: { ...input, ...creationByTtl, output_tokens: 1 },
    },
  });
  // What opens the answer's first block (message_start, or the end of the thinking block), and its index.
  let head = start;
  let first = 0;
  let thinkingTokens = 0;
  if (request.thinking !== undefined) {
    // Thinking comes first, paced and billed as output like the answer, which gets what is left of max_tokens.
    const pieces = textPieces(composeThinking(request, request.thinking, new SeededRandom(job.rng.seed())));
    const thinking = pieces.map((p) => p.text).join('');
    thinkingTokens = pieces.reduce((n, p) => n + p.tokens, 0);
    first = 1;
    if (job.behaviours.has('redacted_thinking')) {
      // Nothing readable to stream: silence while it thinks, then the whole block at once.
      const block = { type: 'redacted_thinking', data: redactThinking(request.model, thinking) };
      frames.push({ text: start, tokens: 0 }, ...pieces.map((p) => ({ text: '', tokens: p.tokens })));
      head = event('content_block_start', { index: 0, content_block: block }) + event('content_block_stop', { index: 0 });
      content.push(block);
    } else {
      const signature = signThinking(request.model, thinking);
      frames.push({ text: start + event('content_block_start', { index: 0, content_block: { type: 'thinking', thinking: '', signature: '' } }), tokens: 0 });
      for (const p of pieces) frames.push({ text: event('content_block_delta', { index: 0, delta: { type: 'thinking_delta', thinking: p.text } }), tokens: p.tokens });
      head = event('content_block_delta', { index: 0, delta: { type: 'signature_delta', signature } }) + event('content_block_stop', { index: 0 });
      content.push({ type: 'thinking', thinking, signature });
    }
  }
  if (answer.kind === 'tool_call') {
    stopReason = 'tool_use';
    let input: Record<string, unknown> = {};
    try {
      input = JSON.parse(answer.call.arguments) as Record<string, unknown>;
    } catch {
      /* the emulator's own arguments are JSON */
    }
    const calls = [{ id: answer.call.id.replace(/^call_/, 'toolu_'), name: answer.call.name, input }];
    if (parallelCalls(job)) calls.push({ id: `toolu_${job.rng.id(24)}`, name: answer.call.name, input: secondInput(input) });
    calls.forEach((c, i) => {
      const index = first + i;
      const opening = event('content_block_start', { index, content_block: { type: 'tool_use', id: c.id, name: c.name, input: {} } });
      frames.push({ text: (i === 0 ? head : event('content_block_stop', { index: index - 1 })) + opening, tokens: countTokens(c.name) });
      for (const p of textPieces(encode(JSON.stringify(c.input)))) {
        frames.push({ text: event('content_block_delta', { index, delta: { type: 'input_json_delta', partial_json: p.text } }), tokens: p.tokens });
      }
      content.push({ type: 'tool_use', id: c.id, name: c.name, input: c.input });
    });
  } else {
    const maxTokens = request.maxTokens === undefined ? undefined : Math.max(0, request.maxTokens - thinkingTokens);
    const { tokens, cut } = cutAnswer(answer.text, { maxTokens, stop: request.stop });
    if (cut === 'length') stopReason = 'max_tokens';
    if (cut === 'stop_sequence') {
      stopReason = 'stop_sequence';
      const rest = answer.text.slice(textPieces(tokens).map((p) => p.text).join('').length);
      stopSequence = request.stop?.find((s) => rest.startsWith(s)) ?? null;
    }
    const pieces = textPieces(tokens);
    frames.push({ text: head + event('content_block_start', { index: first, content_block: { type: 'text', text: '' } }), tokens: 0 });
    for (const p of pieces) frames.push({ text: event('content_block_delta', { index: first, delta: { type: 'text_delta', text: p.text } }), tokens: p.tokens });
    content.push({ type: 'text', text: pieces.map((p) => p.text).join('') });
  }
  const completionTokens = frames.reduce((n, f) => n + f.tokens, 0);
  const usage = { ...input, ...creationByTtl, output_tokens: completionTokens };
  // `{"applied_edits": [...]}` when the request had `context_management`, as Anthropic reports it.
  const management = request.contextManagement === undefined ? {} : { context_management: request.contextManagement };
  return {
    frames,
    completionTokens,
    end: (withUsage) =>
      event('content_block_stop', { index: content.length - 1 }) +
      // The usage is cumulative, and repeats the input's counts (as the API does since 2025).
      event('message_delta', { delta: { stop_reason: stopReason, stop_sequence: stopSequence }, ...(withUsage ? { usage: { ...input, output_tokens: completionTokens } } : {}), ...management }) +
      event('message_stop', {}),
    // Anthropic's in-stream error (what a 529 is once the stream has begun); nothing follows it.
    error: event('error', { error: { type: 'overloaded_error', message: 'Overloaded' } }),
    afterError: '',
    body: () => ({ id, type: 'message', role: 'assistant', model: request.model, content, stop_reason: stopReason, stop_sequence: stopSequence, usage, ...management }),
    failure: (status) =>
      status === 500
        ? { status: 500, body: anthropicError('api_error', 'Internal server error') }
        : { status: 529, body: anthropicError('overloaded_error', 'Overloaded') },
  };
}
