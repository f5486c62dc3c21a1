import { ChunkParser, completionAnswer, openAiError, openAiProtocol } from './openai';
import { OPENAI_MAX_IMAGE_TOKENS } from './images';
import type { ProviderRequest, StreamEvent } from './provider';

const chunk = (o: unknown) => `data: ${JSON.stringify(o)}\n\n`;

describe('OpenAI ChunkParser', () => {
  it('parses content deltas split anywhere, and the usage chunk; complete at [DONE]', () => {
    const text =
      chunk({ model: 'm1', choices: [{ delta: { role: 'assistant', content: 'Hel' } }] }) +
      chunk({ choices: [{ delta: { content: 'lo' } }] }) +
      chunk({ choices: [{ delta: {}, finish_reason: 'stop' }] }) +
      chunk({ choices: [], usage: { prompt_tokens: 5, completion_tokens: 2, total_tokens: 7 } }) +
      'data: [DONE]\n\n';
    const p = new ChunkParser();
    const events: StreamEvent[] = [];
    for (let i = 0; i < text.length; i += 7) events.push(...p.push(text.slice(i, i + 7)));
    expect(events).toEqual([
      { type: 'model', model: 'm1' },
      { type: 'content', text: 'Hel' },
      { type: 'content', text: 'lo' },
      { type: 'finish', reason: 'stop' },
      { type: 'usage', usage: { promptTokens: 5, completionTokens: 2, totalTokens: 7 } },
    ]);
    expect(p.complete).toBe(true);
    expect(() => p.end()).not.toThrow();
  });

  it('reads the log probabilities a chunk carries with its content, and an answer\'s with its message', () => {
    const figure = { token: 'Hel', logprob: -0.5, bytes: [72, 101, 108], top_logprobs: [{ token: 'Hel', logprob: -0.5, bytes: [72, 101, 108] }, { token: 'Hi', logprob: -1.5, bytes: [72, 105] }] };
    const read = { token: 'Hel', logprob: -0.5, bytes: [72, 101, 108], topLogprobs: [{ token: 'Hel', logprob: -0.5, bytes: [72, 101, 108], topLogprobs: [] }, { token: 'Hi', logprob: -1.5, bytes: [72, 105], topLogprobs: [] }] };
    const p = new ChunkParser();
    expect(p.push(chunk({ choices: [{ delta: { content: 'Hel' }, logprobs: { content: [figure], refusal: null } }] }) + chunk({ choices: [{ delta: { content: 'lo' }, logprobs: null }] })))
      .toEqual([{ type: 'content', text: 'Hel', logprobs: [read] }, { type: 'content', text: 'lo' }]);
    expect(completionAnswer(JSON.stringify({ choices: [{ message: { content: 'Hel' }, logprobs: { content: [figure], refusal: null }, finish_reason: 'stop' }] })).events[0])
      .toEqual({ type: 'content', text: 'Hel', logprobs: [read] });
  });

  it('reads a reasoning model\'s reasoning tokens from the usage, when the provider reports them', () => {
    const usage = (u: unknown) => new ChunkParser().push(chunk({ choices: [], usage: u }));
    expect(usage({ prompt_tokens: 5, completion_tokens: 30, total_tokens: 35, completion_tokens_details: { reasoning_tokens: 24 } }))
      .toEqual([{ type: 'usage', usage: { promptTokens: 5, completionTokens: 30, totalTokens: 35, reasoningTokens: 24 } }]);
    expect(usage({ prompt_tokens: 5, completion_tokens: 6, total_tokens: 11 })).toEqual([{ type: 'usage', usage: { promptTokens: 5, completionTokens: 6, totalTokens: 11 } }]);
  });

  it('reads the prompt tokens its prompt cache served (cached_tokens), part of prompt_tokens; they count against the TPM', () => {
    const usage = (u: unknown) => new ChunkParser().push(chunk({ choices: [], usage: u }));
    expect(usage({ prompt_tokens: 1500, completion_tokens: 6, total_tokens: 1506, prompt_tokens_details: { cached_tokens: 1408 } }))
      .toEqual([{ type: 'usage', usage: { promptTokens: 1500, completionTokens: 6, totalTokens: 1506, cacheReadTokens: 1408 } }]);
    expect(completionAnswer(JSON.stringify({ choices: [{ message: { content: 'x' }, finish_reason: 'stop' }], usage: { prompt_tokens: 1500, completion_tokens: 1, total_tokens: 1501, prompt_tokens_details: { cached_tokens: 0 } } })).events.at(-1))
      .toEqual({ type: 'usage', usage: { promptTokens: 1500, completionTokens: 1, totalTokens: 1501, cacheReadTokens: 0 } });
    expect(openAiProtocol.cacheReadsLimited).toBe(true);
    expect(openAiProtocol.cachePrefixes).toBeUndefined();
  });

  it('assembles tool calls split over chunks by index, and passes each on as it comes', () => {
    const p = new ChunkParser();
    expect(p.push(chunk({ choices: [{ delta: { tool_calls: [{ index: 0, id: 'c1', function: { name: 'search', arguments: '{"q":' } }] } }] })))
      .toEqual([{ type: 'tool_call', index: 0, id: 'c1', name: 'search', arguments: '{"q":' }]);
    expect(p.push(chunk({ choices: [{ delta: { tool_calls: [{ index: 1, id: 'c2', function: { name: 'calc', arguments: '{}' } }] } }] })))
      .toEqual([{ type: 'tool_call', index: 1, id: 'c2', name: 'calc', arguments: '{}' }]);
    expect(p.push(chunk({ choices: [{ delta: { tool_calls: [{ index: 0, function: { arguments: '"x"}' } }] } }] }).replace(/\n\n$/, '\r\n\r\n')))
      .toEqual([{ type: 'tool_call', index: 0, arguments: '"x"}' }]);
    expect(p.push(chunk({ choices: [{ delta: {}, finish_reason: 'tool_calls' }] }))).toEqual([{ type: 'finish', reason: 'tool_calls' }]);
    expect(p.toolCalls()).toEqual([
      { id: 'c1', name: 'search', argumentsJson: '{"q":"x"}' },
      { id: 'c2', name: 'calc', argumentsJson: '{}' },
    ]);
  });

  it('passes a call on once its id and name came, with its arguments so far (they may come after its first chunk); one that never got them, at the finish', () => {
    const p = new ChunkParser();
    const tc = (index: number, fields: object) => chunk({ choices: [{ delta: { tool_calls: [{ index, ...fields }] } }] });
    expect(p.push(tc(0, { type: 'function', function: { arguments: '' } }))).toEqual([]);
    expect(p.push(tc(0, { id: 'c1' }))).toEqual([]);
    expect(p.push(tc(1, { function: { arguments: '{"a"' } }))).toEqual([]);
    expect(p.push(tc(0, { function: { name: 'search' } }))).toEqual([{ type: 'tool_call', index: 0, id: 'c1', name: 'search', arguments: '' }]);
    expect(p.push(tc(0, { function: { arguments: '{}' } }))).toEqual([{ type: 'tool_call', index: 0, arguments: '{}' }]);
    expect(p.push(tc(1, { function: { arguments: ':1}' } }))).toEqual([]);
    expect(p.push(chunk({ choices: [{ delta: {}, finish_reason: 'tool_calls' }] }))).toEqual([
      { type: 'tool_call', index: 1, id: '', name: '', arguments: '{"a":1}' },
      { type: 'finish', reason: 'tool_calls' },
    ]);
  });

  it('throws an in-stream error, as data or as an `event: error` block, after what came before', () => {
    const p = new ChunkParser();
    expect(p.push(chunk({ choices: [{ delta: { content: 'Hi' } }] }))).toEqual([{ type: 'content', text: 'Hi' }]);
    expect(() => p.push(chunk({ error: { message: 'The server had an error', type: 'server_error', code: null } }))).toThrow(
      'upstream error inside the stream: The server had an error',
    );
    expect(() => new ChunkParser().push('event: error\ndata: {"message":"overloaded"}\n\n')).toThrow('upstream error inside the stream: overloaded');
  });

  it('reports a data line that is not JSON naming it', () => {
    const p = new ChunkParser();
    expect(() => p.push('data: <html>502 Bad Gateway</html>\n\n')).toThrow(
      expect.objectContaining({ code: 'invalid_stream_data', message: 'upstream error inside the stream: the provider sent a stream line that is not JSON: "<html>502 Bad Gateway</html>"' }),
    );
  });

  it('an answer without [DONE] or without a finish_reason is incomplete', () => {
    const cut = new ChunkParser();
    cut.push(chunk({ choices: [{ delta: { content: 'Hi' }, finish_reason: 'stop' }] }));
    expect(() => cut.end()).toThrow('upstream stream ended before [DONE]');
    const noFinish = new ChunkParser();
    noFinish.push(chunk({ choices: [{ delta: { content: 'Hi' } }] }) + 'data: [DONE]\n\n');
    expect(() => noFinish.end()).toThrow('upstream stream ended without a finish_reason');
  });
});

describe('OpenAI protocol', () => {
  const req: ProviderRequest = {
    model: 'gpt',
    messages: [
      { role: 'system', content: 'You are the Host.' },
      { role: 'assistant', content: '', toolCalls: [{ id: 'c1', name: 'search_web', argumentsJson: '{"query":"x"}' }] },
      { role: 'tool', content: '{"r":1}', toolCallId: 'c1' },
    ],
    tools: [{ name: 'search_web', description: 'Search', parametersJsonSchema: '{"type":"object","properties":{"query":{"type":"string"}}}' }],
    maxTokens: 50,
    temperature: 0,
  };

  it('writes the typed call as a streamed chat completion with a bearer key', () => {
    const { path, headers, body } = openAiProtocol.request(req, 'sk-1', true);
    expect(path).toBe('/chat/completions');
    expect(headers.authorization).toBe('Bearer sk-1');
    expect(JSON.parse(body)).toEqual({
      model: 'gpt',
      messages: [
        { role: 'system', content: 'You are the Host.' },
        { role: 'assistant', content: '', tool_calls: [{ id: 'c1', type: 'function', function: { name: 'search_web', arguments: '{"query":"x"}' } }] },
        { role: 'tool', content: '{"r":1}', tool_call_id: 'c1' },
      ],
      max_tokens: 50,
      tools: [{ type: 'function', function: { name: 'search_web', description: 'Search', parameters: { type: 'object', properties: { query: { type: 'string' } } } } }],
      temperature: 0,
      stream: true,
      stream_options: { include_usage: true },
    });
    expect(openAiProtocol.request({ ...req, tools: [] }, '', true).headers.authorization).toBeUndefined();
  });

  it('writes a user\'s text and images as content parts, with their detail when one was asked for, and counts the images as OpenAI bills them', () => {
    const png = `data:image/png;base64,${Buffer.from('89504e470d0a1a0a0000000d494844520000012c000000c80806000000', 'hex').toString('base64')}`;
    const parts = [
      { text: 'What is in this?', imageUrl: '', imageDetail: '' },
      { text: '', imageUrl: png, imageDetail: 'high' },
      { text: '', imageUrl: 'https://example.com/cat.jpg', imageDetail: '' },
    ];
    const withImages: ProviderRequest = { ...req, messages: [{ role: 'user', content: 'What is in this?', parts }], tools: [] };
    expect((JSON.parse(openAiProtocol.request(withImages, 'sk-1', true).body) as { messages: unknown[] }).messages).toEqual([{
      role: 'user',
      content: [
        { type: 'text', text: 'What is in this?' },
        { type: 'image_url', image_url: { url: png, detail: 'high' } },
        { type: 'image_url', image_url: { url: 'https://example.com/cat.jpg' } },
      ],
    }]);
    // 300 × 200: one tile; the downloaded one at the most an image costs.
    const text = openAiProtocol.countPromptTokens({ ...withImages, messages: [{ role: 'user', content: 'What is in this?' }] });
    expect(openAiProtocol.countPromptTokens(withImages)).toBe(text + 85 + 170 + OPENAI_MAX_IMAGE_TOKENS);
  });

  it('writes tool_choice as OpenAI takes it (absent for auto)', () => {
    const choiceOf = (toolChoice: ProviderRequest['toolChoice']) => (JSON.parse(openAiProtocol.request({ ...req, toolChoice }, 'sk-1', true).body) as { tool_choice?: unknown }).tool_choice;
    expect(choiceOf(undefined)).toBeUndefined();
    expect(choiceOf('none')).toBe('none');
    expect(choiceOf('required')).toBe('required');
    expect(choiceOf({ name: 'search_web' })).toEqual({ type: 'function', function: { name: 'search_web' } });
  });

  it('writes stop, top_p, seed, the penalties, response_format, parallel_tool_calls, logprobs, reasoning_effort, logit_bias, verbosity and prompt_cache_key when set, and nothing for them otherwise', () => {
    const bodyOf = (over: Partial<ProviderRequest>) => JSON.parse(openAiProtocol.request({ ...req, ...over }, 'sk-1', true).body) as Record<string, unknown>;
    const all = { stop: ['END'], topP: 0.9, seed: 42, presencePenalty: 0.5, frequencyPenalty: -0.5, responseFormat: { type: 'json_object' }, parallelToolCalls: false as const, logprobs: true as const, topLogprobs: 3, reasoningEffort: 'low', logitBias: { '50256': -100 }, verbosity: 'high', endUser: 'user-42', promptCacheKey: 'conversation-7' };
    expect(bodyOf(all)).toMatchObject({
      stop: ['END'], top_p: 0.9, seed: 42, presence_penalty: 0.5, frequency_penalty: -0.5, response_format: { type: 'json_object' }, parallel_tool_calls: false, logprobs: true, top_logprobs: 3,
      reasoning_effort: 'low', logit_bias: { '50256': -100 }, verbosity: 'high', user: 'user-42', prompt_cache_key: 'conversation-7',
    });
    for (const key of ['stop', 'top_p', 'seed', 'presence_penalty', 'frequency_penalty', 'response_format', 'parallel_tool_calls', 'logprobs', 'top_logprobs', 'reasoning_effort', 'logit_bias', 'verbosity', 'user', 'prompt_cache_key']) expect(bodyOf({})).not.toHaveProperty(key);
    expect(bodyOf({ logprobs: true })).not.toHaveProperty('top_logprobs');
    expect(openAiProtocol.unsupported?.({ ...req, ...all })).toBeUndefined();
    // Anthropic's alone: a call with them goes to an upstream that takes them, or is refused.
    expect(openAiProtocol.unsupported?.({ ...req, topK: 5 })).toBe('top_k');
    expect(openAiProtocol.unsupported?.({ ...req, maxTokens: 4096, thinkingBudgetTokens: 1024 })).toBe('thinking');
    expect(openAiProtocol.unsupported?.({ ...req, contextManagement: { edits: [] } })).toBe('context_management');
    expect(openAiProtocol.unsupported?.({ ...req, thinkingAdaptive: true })).toBe('thinking');
    expect(openAiProtocol.unsupported?.({ ...req, effort: 'high' })).toBe('output_config');
  });

  it('writes a call for a caller that does not stream as a non-streamed one, and reads its chat.completion as the same events', () => {
    const { headers, body } = openAiProtocol.request(req, 'sk-1', false);
    expect(headers.accept).toBe('application/json');
    const sent = JSON.parse(body) as Record<string, unknown>;
    expect(sent.stream).toBe(false);
    expect(sent).not.toHaveProperty('stream_options');
    const answer = completionAnswer(JSON.stringify({
      object: 'chat.completion', model: 'm1',
      choices: [{ index: 0, message: { role: 'assistant', content: null, tool_calls: [{ id: 'c9', type: 'function', function: { name: 'search_web', arguments: '{"query":"q"}' } }] }, finish_reason: 'tool_calls' }],
      usage: { prompt_tokens: 9, completion_tokens: 4, total_tokens: 13 },
    }));
    expect(answer.events).toEqual([
      { type: 'model', model: 'm1' },
      { type: 'finish', reason: 'tool_calls' },
      { type: 'usage', usage: { promptTokens: 9, completionTokens: 4, totalTokens: 13 } },
    ]);
    expect(answer.toolCalls).toEqual([{ id: 'c9', name: 'search_web', argumentsJson: '{"query":"q"}' }]);
    expect(completionAnswer(JSON.stringify({ model: 'm1', choices: [{ message: { content: 'Hello' }, finish_reason: 'stop' }] })).events).toEqual([
      { type: 'model', model: 'm1' },
      { type: 'content', text: 'Hello' },
      { type: 'finish', reason: 'stop' },
    ]);
    expect(() => completionAnswer('<html>')).toThrow(expect.objectContaining({ code: 'invalid_response', retryable: true }));
    expect(() => completionAnswer('{"error":{"message":"boom","code":"server_error"}}')).toThrow(expect.objectContaining({ code: 'server_error', message: expect.stringContaining('boom') }));
    expect(() => completionAnswer('{"choices":[{"message":{"content":"half"}}]}')).toThrow(expect.objectContaining({ code: 'invalid_response' }));
  });

  it('maps errors: billing 429 is an account problem, rate-limit headers and Retry-After are read', () => {
    const quota = openAiError(429, {}, JSON.stringify({ error: { message: 'You exceeded your current quota', type: 'insufficient_quota', code: 'insufficient_quota' } }));
    expect(quota).toMatchObject({ status: 429, rateLimited: false, retryable: false, accountProblem: 'insufficient_quota' });
    const limited = openAiError(429, { 'retry-after-ms': '1500', 'x-ratelimit-limit-requests': '60', 'x-ratelimit-remaining-requests': '0' }, '{"error":{"message":"Rate limit"}}');
    expect(limited).toMatchObject({ rateLimited: true, retryable: true, retryAfterMs: 1500, limits: { limitRequests: 60, remainingRequests: 0 } });
    expect(openAiError(404, {}, '{"error":{"message":"no such model","code":"model_not_found"}}')).toMatchObject({ code: 'model_not_found', retryable: false });
    expect(openAiError(502, {}, '<html>Bad Gateway</html>')).toMatchObject({ message: 'upstream 502: <html>Bad Gateway</html>', retryable: true });
  });
});
