import { anthropicError, anthropicLimits, anthropicProtocol, messageAnswer, messagesRequestBody, MessagesStreamParser, minCachedTokens } from './anthropic';
import { ANTHROPIC_MAX_IMAGE_TOKENS } from './images';
import type { ProviderRequest, StreamEvent } from './provider';

/** A stream fed to a new parser `size` characters at a time (split anywhere): the parser, and the events it gave. */
function inPieces(text: string, size: number): { p: MessagesStreamParser; events: StreamEvent[] } {
  const p = new MessagesStreamParser();
  const events: StreamEvent[] = [];
  for (let i = 0; i < text.length; i += size) events.push(...p.push(text.slice(i, i + size)));
  return { p, events };
}

const ev = (name: string, data: unknown) => `event: ${name}\ndata: ${JSON.stringify({ type: name, ...(data as object) })}\n\n`;

describe('Anthropic Messages request', () => {
  const req: ProviderRequest = {
    model: 'claude-x',
    messages: [
      { role: 'system', content: 'You are the Host.' },
      { role: 'system', content: 'Round: 1' },
      { role: 'user', content: 'Search the news' },
      { role: 'assistant', content: 'Let me look.', toolCalls: [{ id: 'toolu_1', name: 'search_web', argumentsJson: '{"query":"news"}' }, { id: 'toolu_2', name: 'search_web', argumentsJson: '' }] },
      { role: 'tool', content: '{"hits":1}', toolCallId: 'toolu_1' },
      { role: 'tool', content: '{"hits":2}', toolCallId: 'toolu_2' },
      { role: 'user', content: 'and then?' },
    ],
    tools: [{ name: 'search_web', description: 'Search', parametersJsonSchema: '{"type":"object","properties":{"query":{"type":"string"}}}' }, { name: 'now', description: '', parametersJsonSchema: '' }],
    maxTokens: 64,
    temperature: 1.5,
  };

  it('puts system messages in `system`, tool traffic in blocks, merges turns of one role, caps the temperature at 1', () => {
    const { path, headers, body } = anthropicProtocol.request(req, 'sk-ant-1', true);
    expect(path).toBe('/messages');
    expect(headers).toMatchObject({ 'x-api-key': 'sk-ant-1', 'anthropic-version': '2023-06-01' });
    expect(headers.authorization).toBeUndefined();
    expect(JSON.parse(body)).toEqual({
      model: 'claude-x',
      max_tokens: 64,
      system: 'You are the Host.\n\nRound: 1',
      messages: [
        { role: 'user', content: [{ type: 'text', text: 'Search the news' }] },
        {
          role: 'assistant',
          content: [
            { type: 'text', text: 'Let me look.' },
            { type: 'tool_use', id: 'toolu_1', name: 'search_web', input: { query: 'news' } },
            { type: 'tool_use', id: 'toolu_2', name: 'search_web', input: {} },
          ],
        },
        {
          role: 'user',
          content: [
            { type: 'tool_result', tool_use_id: 'toolu_1', content: '{"hits":1}' },
            { type: 'tool_result', tool_use_id: 'toolu_2', content: '{"hits":2}' },
            { type: 'text', text: 'and then?' },
          ],
        },
      ],
      tools: [
        { name: 'search_web', description: 'Search', input_schema: { type: 'object', properties: { query: { type: 'string' } } } },
        { name: 'now', input_schema: { type: 'object' } },
      ],
      temperature: 1,
      stream: true,
    });
  });

  it('extended thinking: its budget as thinking.budget_tokens; an assistant\'s thinking blocks first in its turn, as they were written (a redacted one by its data)', () => {
    const thought: ProviderRequest = {
      model: 'claude-x',
      thinkingBudgetTokens: 2048,
      maxTokens: 4096,
      tools: [{ name: 'search_web', description: 'Search', parametersJsonSchema: '' }],
      messages: [
        { role: 'user', content: 'Search the news' },
        {
          role: 'assistant', content: 'Let me look.', toolCalls: [{ id: 'toolu_1', name: 'search_web', argumentsJson: '{"query":"news"}' }],
          thinking: [{ text: 'The user wants news.', signature: 'sig-1', redactedData: '' }, { text: '', signature: '', redactedData: 'opaque' }],
        },
        { role: 'tool', content: '{"hits":1}', toolCallId: 'toolu_1' },
      ],
    };
    const body = JSON.parse(anthropicProtocol.request(thought, 'k', true).body) as { thinking: unknown; messages: { content: { type: string }[] }[] };
    expect(body.thinking).toEqual({ type: 'enabled', budget_tokens: 2048 });
    expect(body.messages[1]!.content).toEqual([
      { type: 'thinking', thinking: 'The user wants news.', signature: 'sig-1' },
      { type: 'redacted_thinking', data: 'opaque' },
      { type: 'text', text: 'Let me look.' },
      { type: 'tool_use', id: 'toolu_1', name: 'search_web', input: { query: 'news' } },
    ]);
    expect(JSON.parse(anthropicProtocol.request(req, 'k', true).body)).not.toHaveProperty('thinking');
    // Adaptive (the model decides, guided by the effort), as current Claude Code asks it.
    const adaptive = JSON.parse(anthropicProtocol.request({ ...req, thinkingAdaptive: true, effort: 'high' }, 'k', true).body) as Record<string, unknown>;
    expect([adaptive.thinking, adaptive.output_config]).toEqual([{ type: 'adaptive' }, { effort: 'high' }]);
  });

  it('context editing: `context_management` as asked, with its beta header (without which Anthropic refuses the field); neither without it', () => {
    const edits = { edits: [{ type: 'clear_thinking_20251015', keep: 'all' }] };
    const { headers, body } = anthropicProtocol.request({ ...req, contextManagement: edits }, 'k', true);
    expect(headers['anthropic-beta']).toBe('context-management-2025-06-27');
    expect(JSON.parse(body).context_management).toEqual(edits);
    const plain = anthropicProtocol.request(req, 'k', true);
    expect(plain.headers['anthropic-beta']).toBeUndefined();
    expect(JSON.parse(plain.body)).not.toHaveProperty('context_management');
  });

  it("the caller's betas in `anthropic-beta`, in order, with context editing's added once (not twice when the caller asked for it too); the body unchanged", () => {
    const betas = ['context-1m-2025-08-07', 'interleaved-thinking-2025-05-14'];
    const asked = anthropicProtocol.request({ ...req, anthropicBetas: betas }, 'k', true);
    expect(asked.headers['anthropic-beta']).toBe('context-1m-2025-08-07,interleaved-thinking-2025-05-14');
    expect(asked.body).toBe(anthropicProtocol.request(req, 'k', true).body);
    const edits = { edits: [{ type: 'clear_tool_uses_20250919' }] };
    expect(anthropicProtocol.request({ ...req, anthropicBetas: betas, contextManagement: edits }, 'k', true).headers['anthropic-beta'])
      .toBe('context-1m-2025-08-07,interleaved-thinking-2025-05-14,context-management-2025-06-27');
    expect(anthropicProtocol.request({ ...req, anthropicBetas: ['context-management-2025-06-27'], contextManagement: edits }, 'k', true).headers['anthropic-beta'])
      .toBe('context-management-2025-06-27');
  });

  it('writes tool_choice in Anthropic\'s names: none, any (required), tool (a named one); absent for auto', () => {
    const choiceOf = (toolChoice: ProviderRequest['toolChoice']) => (JSON.parse(anthropicProtocol.request({ ...req, toolChoice }, 'k', true).body) as { tool_choice?: unknown }).tool_choice;
    expect(choiceOf(undefined)).toBeUndefined();
    expect(choiceOf('none')).toEqual({ type: 'none' });
    expect(choiceOf('required')).toEqual({ type: 'any' });
    expect(choiceOf({ name: 'now' })).toEqual({ type: 'tool', name: 'now' });
  });

  it('writes at most one tool call (OpenAI\'s parallel_tool_calls: false) as disable_parallel_tool_use on the choice, auto when none is made', () => {
    const choiceOf = (toolChoice: ProviderRequest['toolChoice']) =>
      (JSON.parse(anthropicProtocol.request({ ...req, toolChoice, parallelToolCalls: false }, 'k', true).body) as { tool_choice?: unknown }).tool_choice;
    expect(choiceOf(undefined)).toEqual({ type: 'auto', disable_parallel_tool_use: true });
    expect(choiceOf('required')).toEqual({ type: 'any', disable_parallel_tool_use: true });
    expect(choiceOf({ name: 'now' })).toEqual({ type: 'tool', name: 'now', disable_parallel_tool_use: true });
    // None makes no call: there is nothing to limit.
    expect(choiceOf('none')).toEqual({ type: 'none' });
    expect(anthropicProtocol.unsupported?.({ ...req, parallelToolCalls: false })).toBeUndefined();
  });

  it('writes stop as stop_sequences and top_p; a seed, penalties, response_format, logprobs, logit_bias or verbosity it cannot send, and says so', () => {
    const body = JSON.parse(anthropicProtocol.request({ ...req, stop: ['END'], topP: 0.9, endUser: 'user-42', promptCacheKey: 'conversation-7' }, 'k', true).body) as Record<string, unknown>;
    expect(body).toMatchObject({ stop_sequences: ['END'], top_p: 0.9, metadata: { user_id: 'user-42' } });
    // Its cache is keyed by the prefix alone: OpenAI's hint is not sent, nor refused.
    expect(body).not.toHaveProperty('prompt_cache_key');
    expect(anthropicProtocol.unsupported?.({ ...req, promptCacheKey: 'conversation-7' })).toBeUndefined();
    expect(JSON.parse(anthropicProtocol.request(req, 'k', true).body)).not.toHaveProperty('metadata');
    expect(body).not.toHaveProperty('stop');
    expect(anthropicProtocol.unsupported?.(req)).toBeUndefined();
    expect(anthropicProtocol.unsupported?.({ ...req, seed: 7 })).toBe('seed');
    expect(anthropicProtocol.unsupported?.({ ...req, presencePenalty: 0.5 })).toBe('presence_penalty');
    expect(anthropicProtocol.unsupported?.({ ...req, frequencyPenalty: 0.5 })).toBe('frequency_penalty');
    expect(anthropicProtocol.unsupported?.({ ...req, responseFormat: { type: 'json_object' } })).toBe('response_format');
    expect(anthropicProtocol.unsupported?.({ ...req, logprobs: true })).toBe('logprobs');
    expect(anthropicProtocol.unsupported?.({ ...req, logitBias: { '1': 5 } })).toBe('logit_bias');
    expect(anthropicProtocol.unsupported?.({ ...req, verbosity: 'low' })).toBe('verbosity');
  });

  it('writes OpenAI\'s reasoning_effort as adaptive thinking at that effort, minimal as no thinking at low effort, none as no thinking', () => {
    const bodyOf = (reasoningEffort: string) => JSON.parse(anthropicProtocol.request({ ...req, reasoningEffort }, 'k', true).body) as Record<string, unknown>;
    expect(bodyOf('none')).not.toHaveProperty('thinking');
    expect(bodyOf('none')).not.toHaveProperty('output_config');
    for (const effort of ['low', 'medium', 'high', 'xhigh']) {
      expect(bodyOf(effort)).toMatchObject({ thinking: { type: 'adaptive' }, output_config: { effort } });
      expect(anthropicProtocol.unsupported?.({ ...req, temperature: 1, reasoningEffort: effort })).toBeUndefined();
    }
    expect(bodyOf('minimal')).toMatchObject({ output_config: { effort: 'low' } });
    expect(bodyOf('minimal')).not.toHaveProperty('thinking');
    expect(bodyOf('high')).not.toHaveProperty('reasoning_effort');
  });

  it('refuses what Anthropic refuses beside thinking when reasoning_effort thinks (sampling, a forced tool call), and takes it at none and minimal, which do not', () => {
    const tool = { name: 'lookup', description: '', parametersJsonSchema: '{"type":"object"}' };
    const { temperature: _, ...unsampled } = req;
    const clashes: [Partial<ProviderRequest>, string][] = [
      [{ temperature: 0.2 }, 'temperature may only be 1'],
      [{ topK: 5 }, 'top_k may not be set'],
      [{ topP: 0.5 }, 'top_p may only be between 0.95 and 1'],
      [{ tools: [tool], toolChoice: 'required' }, 'tool_choice may not force a tool call'],
      [{ tools: [tool], toolChoice: { name: 'lookup' } }, 'tool_choice may not force a tool call'],
    ];
    for (const [over, said] of clashes) {
      expect(anthropicProtocol.unsupported?.({ ...unsampled, ...over, reasoningEffort: 'medium' })).toBe(`reasoning_effort medium (adaptive thinking), where ${said},`);
      for (const effort of ['none', 'minimal']) expect(anthropicProtocol.unsupported?.({ ...unsampled, ...over, reasoningEffort: effort })).toBeUndefined();
    }
    // What thinking allows beside it.
    expect(anthropicProtocol.unsupported?.({ ...req, temperature: 1, topP: 0.97, tools: [tool], toolChoice: 'none', reasoningEffort: 'high' })).toBeUndefined();
  });

  it('writes OpenAI\'s structured output (response_format json_schema) as output_config.format beside the effort; JSON mode, which it has not, is unsupported', () => {
    const schema = { type: 'object', properties: { city: { type: 'string' } }, required: ['city'], additionalProperties: false };
    const responseFormat = { type: 'json_schema', json_schema: { name: 'place', schema, strict: true } };
    const bodyOf = (over: Partial<ProviderRequest>) => JSON.parse(anthropicProtocol.request({ ...req, ...over }, 'k', true).body) as Record<string, unknown>;
    expect(bodyOf({ responseFormat })).toMatchObject({ output_config: { format: { type: 'json_schema', schema } } });
    expect(bodyOf({ responseFormat })).not.toHaveProperty('response_format');
    expect(bodyOf({ responseFormat, effort: 'low' })['output_config']).toEqual({ effort: 'low', format: { type: 'json_schema', schema } });
    expect(bodyOf({ responseFormat, reasoningEffort: 'minimal' })['output_config']).toEqual({ effort: 'low', format: { type: 'json_schema', schema } });
    expect(anthropicProtocol.unsupported?.({ ...req, responseFormat })).toBeUndefined();
    expect(anthropicProtocol.unsupported?.({ ...req, responseFormat: { type: 'json_object' } })).toBe('response_format');
    expect(bodyOf({})).not.toHaveProperty('output_config');
  });

  it('writes a user\'s images as image blocks (a data: URL as base64, any other by URL) among its text, counts them as Anthropic bills them, and refuses a detail it has not', () => {
    const png = `data:image/png;base64,${Buffer.from('89504e470d0a1a0a0000000d494844520000012c000000c80806000000', 'hex').toString('base64')}`;
    const parts = [
      { text: 'What is in ', imageUrl: '', imageDetail: '' },
      { text: '', imageUrl: png, imageDetail: '' },
      { text: '', imageUrl: '', imageDetail: '' },
      { text: '', imageUrl: 'https://example.com/cat.jpg', imageDetail: '' },
    ];
    const withImages: ProviderRequest = { ...req, messages: [{ role: 'user', content: 'What is in ', parts }], tools: [] };
    const body = JSON.parse(anthropicProtocol.request(withImages, 'k', true).body) as { messages: unknown[] };
    expect(body.messages).toEqual([{
      role: 'user',
      content: [
        { type: 'text', text: 'What is in ' },
        { type: 'image', source: { type: 'base64', media_type: 'image/png', data: png.slice('data:image/png;base64,'.length) } },
        { type: 'image', source: { type: 'url', url: 'https://example.com/cat.jpg' } },
      ],
    }]);
    // 300 × 200 → 80 tokens; the downloaded one at the most an image costs.
    const text = anthropicProtocol.countPromptTokens({ ...withImages, messages: [{ role: 'user', content: 'What is in ' }] });
    expect(anthropicProtocol.countPromptTokens(withImages)).toBe(text + 80 + ANTHROPIC_MAX_IMAGE_TOKENS);
    expect(anthropicProtocol.unsupported?.(withImages)).toBeUndefined();
    const low = { ...withImages, messages: [{ role: 'user', content: '', parts: [{ text: '', imageUrl: png, imageDetail: 'low' }] }] };
    expect(anthropicProtocol.unsupported?.(low)).toBe('image_url.detail');
  });

  it('counts more prompt tokens for a longer prompt (an estimate: the reservation is settled with the billed usage)', () => {
    const short = anthropicProtocol.countPromptTokens({ ...req, messages: [{ role: 'user', content: 'hi' }], tools: [] });
    expect(short).toBeGreaterThan(0);
    expect(anthropicProtocol.countPromptTokens(req)).toBeGreaterThan(short + 20);
  });
});

describe('Anthropic prompt caching', () => {
  const system = 'You are the Host. '.repeat(300);
  const req: ProviderRequest = {
    model: 'claude-x',
    messages: [
      { role: 'system', content: system, cacheTtl: '1h' },
      { role: 'system', content: 'Round: 1' },
      { role: 'user', content: 'Search the news', parts: [{ text: 'Search ', imageUrl: '', imageDetail: '', cacheTtl: '5m' }, { text: 'the news', imageUrl: '', imageDetail: '' }] },
      { role: 'assistant', content: 'Let me look.', toolCalls: [{ id: 'toolu_1', name: 'search_web', argumentsJson: '{}' }], cacheTtl: '5m' },
      { role: 'tool', content: '{"hits":1}', toolCallId: 'toolu_1' },
    ],
    tools: [{ name: 'search_web', description: 'Search', parametersJsonSchema: '', cacheTtl: '5m' }, { name: 'now', description: '', parametersJsonSchema: '' }],
    maxTokens: 64,
  };
  const prefixes = (r: ProviderRequest) => anthropicProtocol.cachePrefixes!(r);

  it('writes each breakpoint as cache_control on its block: system messages as blocks, a message\'s on its last block, a part\'s and a tool\'s on theirs; 5m is the default, 1h said', () => {
    const body = JSON.parse(anthropicProtocol.request(req, '', true).body);
    expect(body.system).toEqual([{ type: 'text', text: system, cache_control: { type: 'ephemeral', ttl: '1h' } }, { type: 'text', text: 'Round: 1' }]);
    expect(body.messages[0].content).toEqual([{ type: 'text', text: 'Search ', cache_control: { type: 'ephemeral' } }, { type: 'text', text: 'the news' }]);
    expect(body.messages[1].content).toEqual([{ type: 'text', text: 'Let me look.' }, { type: 'tool_use', id: 'toolu_1', name: 'search_web', input: {}, cache_control: { type: 'ephemeral' } }]);
    expect(body.tools[0]).toMatchObject({ name: 'search_web', cache_control: { type: 'ephemeral' } });
    expect(body.tools[1].cache_control).toBeUndefined();
    // Without a breakpoint, the system messages stay one string, and the prompt counts the same.
    const plain = { ...req, messages: req.messages.map(({ cacheTtl: _, ...m }) => m) };
    expect(JSON.parse(anthropicProtocol.request(plain, '', true).body).system).toBe(`${system}\n\nRound: 1`);
    expect(anthropicProtocol.countPromptTokens(req)).toBe(anthropicProtocol.countPromptTokens(plain));
  });

  it('keys each breakpoint\'s prefix in the order Anthropic caches (tools, system, messages), by what precedes it alone; counts its tokens on the call cut there', () => {
    const p = prefixes(req);
    expect(p.map((x) => x.ttlMs)).toEqual([300_000, 3_600_000, 300_000, 300_000]);
    expect(new Set(p.map((x) => x.key)).size).toBe(4);
    const tokens = p.map((x) => x.tokens());
    expect(tokens[0]).toBeLessThan(tokens[1]!);
    expect(tokens[1]).toBeGreaterThan(900);
    expect(tokens[1]).toBeLessThan(tokens[2]!);
    expect(tokens[3]).toBeLessThanOrEqual(anthropicProtocol.countPromptTokens(req));
    // A later turn, another breakpoint, another ttl: the earlier prefixes keep their keys.
    const later: ProviderRequest = { ...req, messages: [...req.messages.slice(0, 3).map((m, i) => (i === 0 ? { ...m, cacheTtl: '5m' } : m)), { role: 'user', content: 'more', cacheTtl: '5m' }] };
    expect(prefixes(later).slice(0, 3).map((x) => x.key)).toEqual(p.slice(0, 3).map((x) => x.key));
    // Another model, or another system prompt: other keys.
    expect(prefixes({ ...req, model: 'claude-y' })[1]!.key).not.toBe(p[1]!.key);
    expect(prefixes({ ...req, messages: [{ ...req.messages[0]!, content: `${system}!` }, ...req.messages.slice(1)] })[1]!.key).not.toBe(p[1]!.key);
    expect(prefixes({ ...req, messages: [{ role: 'user', content: 'hi' }], tools: [] })).toEqual([]);
    expect(anthropicProtocol.cacheReadsLimited).toBe(false);
  });

  it('gives each breakpoint the keys of the 20 block boundaries before it, as the blocks go on the wire: a conversation that marks its last turn finds the turn before', () => {
    const turn = (n: number): ProviderRequest['messages'] =>
      Array.from({ length: n }, (_, i) => [{ role: 'user', content: `question ${i}` }, { role: 'assistant', content: `answer ${i}` }]).flat() as ProviderRequest['messages'];
    const at = (messages: ProviderRequest['messages']) => prefixes({ ...req, tools: [], messages: [{ role: 'system', content: system }, ...messages.slice(0, -1), { ...messages.at(-1)!, cacheTtl: '5m' }] });
    const first = at([...turn(2), { role: 'user', content: 'question 2' }]);
    const second = at([...turn(3), { role: 'user', content: 'question 3' }]);
    expect(first).toHaveLength(1);
    // The previous turn's breakpoint is the second boundary back from this one's (after its answer).
    expect(second[0]!.lookback.slice(0, 2)).toEqual([expect.any(String), first[0]!.key]);
    // One key per block sent (the system string, then each message's block), nearest first; at most 20.
    expect(second[0]!.lookback).toHaveLength(7);
    expect(at([...turn(15), { role: 'user', content: 'q' }])[0]!.lookback).toHaveLength(20);
    // Merged into one turn, a tool call and its results are blocks each.
    const calls: ProviderRequest = { ...req, tools: [], messages: [{ role: 'user', content: 'go' }, { role: 'assistant', content: '', toolCalls: [{ id: 'a', name: 'x', argumentsJson: '{}' }, { id: 'b', name: 'y', argumentsJson: '{}' }] }, { role: 'tool', content: '1', toolCallId: 'a' }, { role: 'tool', content: '2', toolCallId: 'b', cacheTtl: '5m' }] };
    const tools = prefixes(calls);
    const body = messagesRequestBody(calls);
    expect(body.messages.map((t) => t.content.length)).toEqual([1, 2, 2]);
    expect(tools[0]!.lookback).toHaveLength(body.messages.flatMap((t) => t.content).length - 1);
  });

  it('knows each model\'s shortest cached prefix (the larger where sources differ)', () => {
    expect(minCachedTokens('claude-sonnet-4-5-20250929')).toBe(1024);
    expect(minCachedTokens('claude-3-5-haiku-20241022')).toBe(2048);
    expect(minCachedTokens('claude-haiku-4-5')).toBe(4096);
    expect(minCachedTokens('claude-opus-4-5')).toBe(4096);
    expect(prefixes({ ...req, model: 'claude-3-haiku-20240307' })[0]!.minTokens).toBe(2048);
  });
});

describe('Anthropic Messages answer, not streamed', () => {
  const ask: ProviderRequest = { model: 'claude-x', messages: [{ role: 'user', content: 'hi' }], tools: [], maxTokens: 64, stream: false };

  it('asks for one `message` (stream: false, JSON accepted) when the caller does not stream', () => {
    const { headers, body } = anthropicProtocol.request(ask, 'sk-ant-1', false);
    expect(headers.accept).toBe('application/json');
    expect(JSON.parse(body)).toMatchObject({ model: 'claude-x', stream: false });
    expect(anthropicProtocol.answer).toBeDefined();
  });

  it('thinking blocks come first, their text then their signature, a redacted one whole; text blocks become one content event, then stop_reason and usage (cache reads and writes are input, and said apart, the hour\'s writes too)', () => {
    const answer = messageAnswer(JSON.stringify({
      id: 'msg_1', type: 'message', role: 'assistant', model: 'claude-x',
      content: [{ type: 'thinking', thinking: 'hmm', signature: 's' }, { type: 'text', text: 'Hello ' }, { type: 'text', text: 'there.' }],
      stop_reason: 'max_tokens', stop_sequence: null,
      usage: { input_tokens: 10, cache_creation_input_tokens: 2, cache_read_input_tokens: 3, cache_creation: { ephemeral_5m_input_tokens: 1, ephemeral_1h_input_tokens: 1 }, output_tokens: 7 },
    }));
    expect(answer.events).toEqual<StreamEvent[]>([
      { type: 'model', model: 'claude-x' },
      { type: 'thinking', text: 'hmm' },
      { type: 'thinking', signature: 's' },
      { type: 'content', text: 'Hello there.' },
      { type: 'finish', reason: 'length' },
      { type: 'usage', usage: { promptTokens: 15, completionTokens: 7, totalTokens: 22, cacheReadTokens: 3, cacheWriteTokens: 2, cacheWrite1hTokens: 1 } },
    ]);
    expect(answer.toolCalls).toEqual([]);
  });

  it('tool_use blocks become tool calls, their input as JSON arguments; stop_reason tool_use → tool_calls', () => {
    const answer = messageAnswer(JSON.stringify({
      type: 'message', model: 'claude-x', stop_reason: 'tool_use', usage: { input_tokens: 4, output_tokens: 9 },
      content: [
        { type: 'text', text: 'Looking.' },
        { type: 'tool_use', id: 'toolu_1', name: 'search_web', input: { query: 'solar' } },
        { type: 'tool_use', id: 'toolu_2', name: 'now', input: {} },
      ],
    }));
    expect(answer.events).toContainEqual({ type: 'finish', reason: 'tool_calls' });
    expect(answer.events).toContainEqual({ type: 'content', text: 'Looking.' });
    expect(answer.toolCalls).toEqual([
      { id: 'toolu_1', name: 'search_web', argumentsJson: '{"query":"solar"}' },
      { id: 'toolu_2', name: 'now', argumentsJson: '{}' },
    ]);
  });

  it('the stop sequence that ended the answer is kept with the finish, whole or streamed', () => {
    const whole = messageAnswer(JSON.stringify({ type: 'message', content: [{ type: 'text', text: 'x' }], stop_reason: 'stop_sequence', stop_sequence: 'END' }));
    expect(whole.events).toContainEqual({ type: 'finish', reason: 'stop', stopSequence: 'END' });
    const events = new MessagesStreamParser().push(
      ev('message_start', { message: { id: 'msg_1', type: 'message', role: 'assistant', content: [], model: 'claude-x', stop_reason: null, usage: { input_tokens: 2, output_tokens: 1 } } }) +
      ev('message_delta', { delta: { stop_reason: 'stop_sequence', stop_sequence: 'END' }, usage: { output_tokens: 3 } }),
    );
    expect(events).toContainEqual({ type: 'finish', reason: 'stop', stopSequence: 'END' });
    const natural = messageAnswer(JSON.stringify({ type: 'message', content: [{ type: 'text', text: 'x' }], stop_reason: 'end_turn', stop_sequence: null }));
    expect(natural.events).toContainEqual({ type: 'finish', reason: 'stop' });
  });

  it('a body that is not JSON, an error object, or a message without stop_reason is an UpstreamError; no usage: no usage event', () => {
    expect(() => messageAnswer('<html>502</html>')).toThrow(expect.objectContaining({ code: 'invalid_response', status: 0 }));
    expect(() => messageAnswer(JSON.stringify({ type: 'error', error: { type: 'overloaded_error', message: 'Overloaded' } }))).toThrow(
      expect.objectContaining({ message: 'upstream error in the answer: Overloaded', code: 'overloaded' }),
    );
    expect(() => messageAnswer(JSON.stringify({ type: 'message', content: [{ type: 'text', text: 'x' }], stop_reason: null }))).toThrow('upstream answer has no stop_reason');
    const bare = messageAnswer(JSON.stringify({ type: 'message', content: [{ type: 'text', text: 'x' }], stop_reason: 'end_turn' }));
    expect(bare.events).toEqual([{ type: 'content', text: 'x' }, { type: 'finish', reason: 'stop' }]);
  });
});

describe('Anthropic Messages stream', () => {
  const start = ev('message_start', { message: { id: 'msg_1', type: 'message', role: 'assistant', content: [], model: 'claude-x-2025', stop_reason: null, usage: { input_tokens: 20, cache_read_input_tokens: 5, output_tokens: 1 } } });

  it('text deltas become content, stop_reason and usage the end, split anywhere; complete at message_stop', () => {
    const text =
      start +
      ev('content_block_start', { index: 0, content_block: { type: 'text', text: '' } }) +
      ev('ping', {}) +
      ev('content_block_delta', { index: 0, delta: { type: 'text_delta', text: 'Hel' } }) +
      ev('content_block_delta', { index: 0, delta: { type: 'text_delta', text: 'lo' } }) +
      ev('content_block_stop', { index: 0 }) +
      ev('message_delta', { delta: { stop_reason: 'max_tokens', stop_sequence: null }, usage: { output_tokens: 7 } }) +
      ev('message_stop', {});
    const { p, events } = inPieces(text, 9);
    expect(events).toEqual([
      { type: 'model', model: 'claude-x-2025' },
      { type: 'content', text: 'Hel' },
      { type: 'content', text: 'lo' },
      { type: 'finish', reason: 'length' },
      { type: 'usage', usage: { promptTokens: 25, completionTokens: 7, totalTokens: 32, cacheReadTokens: 5 } },
    ]);
    expect(p.complete).toBe(true);
    expect(() => p.end()).not.toThrow();
  });

  it('extended thinking: thinking_delta as thinking text, signature_delta ending its block, a redacted block whole, before the answer\'s text', () => {
    const text =
      start +
      ev('content_block_start', { index: 0, content_block: { type: 'thinking', thinking: '', signature: '' } }) +
      ev('content_block_delta', { index: 0, delta: { type: 'thinking_delta', thinking: 'Weigh the ' } }) +
      ev('content_block_delta', { index: 0, delta: { type: 'thinking_delta', thinking: 'options.' } }) +
      ev('content_block_delta', { index: 0, delta: { type: 'signature_delta', signature: 'EqQBCgIYAhIM' } }) +
      ev('content_block_stop', { index: 0 }) +
      ev('content_block_start', { index: 1, content_block: { type: 'redacted_thinking', data: 'EmwKAhgBEgy3va' } }) +
      ev('content_block_stop', { index: 1 }) +
      ev('content_block_start', { index: 2, content_block: { type: 'text', text: '' } }) +
      ev('content_block_delta', { index: 2, delta: { type: 'text_delta', text: 'Plant trees.' } }) +
      ev('content_block_stop', { index: 2 }) +
      ev('message_delta', { delta: { stop_reason: 'end_turn', stop_sequence: null }, usage: { output_tokens: 40 } }) +
      ev('message_stop', {});
    const { p, events } = inPieces(text, 7);
    expect(events.filter((e) => e.type === 'thinking' || e.type === 'content')).toEqual([
      { type: 'thinking', text: 'Weigh the ' },
      { type: 'thinking', text: 'options.' },
      { type: 'thinking', signature: 'EqQBCgIYAhIM' },
      { type: 'thinking', redactedData: 'EmwKAhgBEgy3va' },
      { type: 'content', text: 'Plant trees.' },
    ]);
    expect(() => p.end()).not.toThrow();
  });

  it('what the provider cleared from the prompt (context_management on message_delta, or on the whole message) is passed on', () => {
    const applied = { applied_edits: [{ type: 'clear_tool_uses_20250919', cleared_tool_uses: 2, cleared_input_tokens: 900 }] };
    const p = new MessagesStreamParser();
    const events = p.push(start + ev('message_delta', { delta: { stop_reason: 'end_turn', stop_sequence: null }, usage: { output_tokens: 3 }, context_management: applied }) + ev('message_stop', {}));
    expect(events).toContainEqual({ type: 'context_management', applied });
    const whole = messageAnswer(JSON.stringify({ type: 'message', model: 'claude-x', content: [{ type: 'text', text: 'ok' }], stop_reason: 'end_turn', usage: { input_tokens: 4, output_tokens: 1 }, context_management: applied }));
    expect(whole.events).toContainEqual({ type: 'context_management', applied });
  });

  it('the writes kept an hour, said in message_start, outlive a message_delta that repeats the input counts without them', () => {
    const usage = { input_tokens: 20, cache_creation_input_tokens: 1_500, cache_read_input_tokens: 0 };
    const events = new MessagesStreamParser().push(
      ev('message_start', { message: { id: 'msg_1', type: 'message', role: 'assistant', content: [], model: 'claude-x', stop_reason: null, usage: { ...usage, cache_creation: { ephemeral_5m_input_tokens: 500, ephemeral_1h_input_tokens: 1_000 }, output_tokens: 1 } } }) +
      ev('message_delta', { delta: { stop_reason: 'end_turn', stop_sequence: null }, usage: { ...usage, output_tokens: 4 } }),
    );
    expect(events).toContainEqual({ type: 'usage', usage: { promptTokens: 1_520, completionTokens: 4, totalTokens: 1_524, cacheReadTokens: 0, cacheWriteTokens: 1_500, cacheWrite1hTokens: 1_000 } });
  });

  it('assembles tool_use blocks from input_json_delta; an empty input is {}', () => {
    const p = new MessagesStreamParser();
    const events = p.push(
      start +
        ev('content_block_start', { index: 0, content_block: { type: 'text', text: '' } }) +
        ev('content_block_delta', { index: 0, delta: { type: 'text_delta', text: 'Searching.' } }) +
        ev('content_block_stop', { index: 0 }) +
        ev('content_block_start', { index: 1, content_block: { type: 'tool_use', id: 'toolu_1', name: 'search_web', input: {} } }) +
        ev('content_block_delta', { index: 1, delta: { type: 'input_json_delta', partial_json: '' } }) +
        ev('content_block_delta', { index: 1, delta: { type: 'input_json_delta', partial_json: '{"query": "so' } }) +
        ev('content_block_delta', { index: 1, delta: { type: 'input_json_delta', partial_json: 'lar"}' } }) +
        ev('content_block_stop', { index: 1 }) +
        ev('content_block_start', { index: 2, content_block: { type: 'tool_use', id: 'toolu_2', name: 'now', input: {} } }) +
        ev('content_block_stop', { index: 2 }) +
        ev('message_delta', { delta: { stop_reason: 'tool_use' }, usage: { output_tokens: 30 } }) +
        ev('message_stop', {}),
    );
    expect(events.filter((e) => e.type === 'finish')).toEqual([{ type: 'finish', reason: 'tool_calls' }]);
    // Passed on as they come, numbered among the calls (the text block is not one).
    expect(events.filter((e) => e.type === 'tool_call')).toEqual([
      { type: 'tool_call', index: 0, id: 'toolu_1', name: 'search_web', arguments: '' },
      { type: 'tool_call', index: 0, arguments: '{"query": "so' },
      { type: 'tool_call', index: 0, arguments: 'lar"}' },
      { type: 'tool_call', index: 1, id: 'toolu_2', name: 'now', arguments: '' },
    ]);
    expect(p.toolCalls()).toEqual([
      { id: 'toolu_1', name: 'search_web', argumentsJson: '{"query": "solar"}' },
      { id: 'toolu_2', name: 'now', argumentsJson: '{}' },
    ]);
  });

  it('an `error` event throws, in the broker\'s codes (overloaded_error → overloaded)', () => {
    const p = new MessagesStreamParser();
    p.push(start + ev('content_block_start', { index: 0, content_block: { type: 'text', text: '' } }));
    expect(() => p.push(ev('error', { error: { type: 'overloaded_error', message: 'Overloaded' } }))).toThrow(
      expect.objectContaining({ message: 'upstream error inside the stream: Overloaded', code: 'overloaded', status: 0 }),
    );
  });

  it('a stream cut before message_stop, or without a stop_reason, is incomplete', () => {
    const cut = new MessagesStreamParser();
    cut.push(start + ev('content_block_delta', { index: 0, delta: { type: 'text_delta', text: 'Hi' } }));
    expect(() => cut.end()).toThrow('upstream stream ended before message_stop');
    const noReason = new MessagesStreamParser();
    noReason.push(start + ev('message_stop', {}));
    expect(() => noReason.end()).toThrow('upstream stream ended without a stop_reason');
  });
});

describe('Anthropic errors and limits', () => {
  const body = (type: string, message: string) => JSON.stringify({ type: 'error', error: { type, message }, request_id: 'req_1' });

  it('429 rate_limit_error: a rate limit with retry-after (s) and anthropic-ratelimit-* limits', () => {
    const e = anthropicError(429, {
      'retry-after': '3',
      'anthropic-ratelimit-requests-limit': '50',
      'anthropic-ratelimit-requests-remaining': '0',
      'anthropic-ratelimit-input-tokens-limit': '40000',
      'anthropic-ratelimit-input-tokens-remaining': '39000',
    }, body('rate_limit_error', 'Number of requests has exceeded your per-minute rate limit'));
    expect(e).toMatchObject({ status: 429, rateLimited: true, retryable: true, retryAfterMs: 3000, code: 'rate_limited' });
    expect(e.limits).toEqual({ limitRequests: 50, remainingRequests: 0, limitTokens: 40000, remainingTokens: 39000, limitInputTokens: 40000, remainingInputTokens: 39000 });
  });

  it('the most restrictive token limit (tokens-*) wins over input-tokens-*', () => {
    expect(anthropicLimits({ 'anthropic-ratelimit-tokens-limit': '10', 'anthropic-ratelimit-input-tokens-limit': '99' }).limitTokens).toBe(10);
  });

  it('the input and output token limits (ITPM, OTPM) each on their own', () => {
    const l = anthropicLimits({
      'anthropic-ratelimit-tokens-limit': '8000',
      'anthropic-ratelimit-tokens-remaining': '150',
      'anthropic-ratelimit-input-tokens-limit': '40000',
      'anthropic-ratelimit-input-tokens-remaining': '31000',
      'anthropic-ratelimit-output-tokens-limit': '8000',
      'anthropic-ratelimit-output-tokens-remaining': '150',
    });
    expect(l).toMatchObject({ limitTokens: 8000, remainingTokens: 150, limitInputTokens: 40000, remainingInputTokens: 31000, limitOutputTokens: 8000, remainingOutputTokens: 150 });
  });

  it('529 overloaded is retried; 401/403 and billing are account problems; 404 is an unknown model; 400 is the request', () => {
    expect(anthropicError(529, { 'retry-after': '1' }, body('overloaded_error', 'Overloaded'))).toMatchObject({ retryable: true, rateLimited: false, code: 'overloaded', retryAfterMs: 1000 });
    expect(anthropicError(401, {}, body('authentication_error', 'invalid x-api-key'))).toMatchObject({ accountProblem: 'invalid_api_key', retryable: false });
    expect(anthropicError(402, {}, body('billing_error', 'payment required'))).toMatchObject({ accountProblem: 'insufficient_quota' });
    expect(anthropicError(400, {}, body('invalid_request_error', 'Your credit balance is too low to access the Anthropic API.'))).toMatchObject({ accountProblem: 'insufficient_quota' });
    expect(anthropicError(404, {}, body('not_found_error', 'model: claude-nope'))).toMatchObject({ code: 'model_not_found', message: 'upstream 404: model: claude-nope' });
    expect(anthropicError(400, {}, body('invalid_request_error', 'max_tokens: required'))).toMatchObject({ retryable: false, accountProblem: undefined, code: 'invalid_request_error' });
  });
});
