// The emulator's Anthropic Messages API over HTTP (in-process): with fetch, the stream's events,
// tool use, usage, the errors and rate-limit headers, and the misbehaviours in Anthropic's shapes;
// with Anthropic's own SDK, that its client reads all of it as it reads Anthropic's API.
import Anthropic from '@anthropic-ai/sdk';
import { countTokens, minimalImage, startEmulator, type ImageMediaType, type RunningEmulator } from './index';

const HEADERS = { 'x-api-key': 'test-key', 'anthropic-version': '2023-06-01', 'content-type': 'application/json' };
const SEARCH_TOOL = { name: 'search_web', description: 'Search the web', input_schema: { type: 'object', properties: { query: { type: 'string' } } } };
const ask = (text: string, over: Record<string, unknown> = {}) => ({
  model: 'claude-emulated', max_tokens: 200, stream: true, system: 'You are the Host.', messages: [{ role: 'user', content: text }], ...over,
});

let emulator: RunningEmulator;
beforeEach(async () => {
  emulator = await startEmulator({ port: 0, timeScale: 0.02, seed: 42 });
});
afterEach(async () => {
  await emulator.close();
});

const post = (body: unknown, headers: Record<string, string> = HEADERS) =>
  fetch(`${emulator.url}/v1/messages`, { method: 'POST', headers, body: JSON.stringify(body) });

/** A signature or redacted data: base64. */
const BASE64 = /^[A-Za-z0-9+/]+=*$/;

/**
 * A streamed answer that thought first: an empty signed thinking block at index 0 whose text, of
 * `min`–`max` tokens, is about the question, then the answer, ended normally, the thinking billed
 * as output with the text of block 1. The thinking's text.
 */
function expectThinkingStreamed(ev: Record<string, any>[], min: number, max: number): string {
  expect(ev[1]).toEqual({ type: 'content_block_start', index: 0, content_block: { type: 'thinking', thinking: '', signature: '' } });
  const joined = (index: number, field: string) => ev.filter((e) => e.type === 'content_block_delta' && e.index === index).map((e) => e.delta[field] ?? '').join('');
  const thinking = joined(0, 'thinking');
  expect(thinking).toMatch(/^The user asks about /);
  expect(joined(0, 'signature')).toMatch(BASE64);
  expect(countTokens(thinking)).toBeGreaterThanOrEqual(min);
  expect(countTokens(thinking)).toBeLessThanOrEqual(max);
  const end = ev.find((e) => e.type === 'message_delta')!;
  expect(end.delta.stop_reason).toBe('end_turn');
  expect(end.usage.output_tokens).toBe(countTokens(thinking) + countTokens(joined(1, 'text')));
  return thinking;
}

/** The named events of an SSE body: each `event:` line must match its data's `type`. */
async function events(res: Response): Promise<Record<string, any>[]> {
  const text = await res.text();
  return text.split('\n\n').filter((b) => b.trim() !== '').map((block) => {
    const [eventLine, dataLine] = block.split('\n');
    expect(eventLine).toMatch(/^event: \w+$/);
    const data = JSON.parse(dataLine!.replace(/^data: /, '')) as { type: string };
    expect(data.type).toBe(eventLine!.slice('event: '.length));
    return data;
  });
}

describe('POST /v1/messages', () => {
  it('streams a text answer: message_start, one text block of text_deltas, message_delta with stop_reason and usage, message_stop', async () => {
    const res = await post(ask('How do libraries plan opening hours?'));
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/);
    const ev = await events(res);
    expect(ev.map((e) => e.type).filter((t, i, all) => t !== all[i - 1])).toEqual(['message_start', 'content_block_start', 'content_block_delta', 'content_block_stop', 'message_delta', 'message_stop']);
    const start = ev[0] as { message: { model: string; usage: { input_tokens: number } } };
    expect(start.message.model).toBe('claude-emulated');
    expect(start.message.usage.input_tokens).toBeGreaterThan(5);
    const deltas = ev.filter((e) => e.type === 'content_block_delta') as { delta: { type: string; text: string } }[];
    expect(deltas.every((d) => d.delta.type === 'text_delta')).toBe(true);
    const end = ev.find((e) => e.type === 'message_delta') as { delta: { stop_reason: string }; usage: { output_tokens: number } };
    expect(end.delta.stop_reason).toBe('end_turn');
    expect(end.usage.output_tokens).toBeGreaterThan(0);
    expect(emulator.stats().requests).toBe(1);
  });

  it('asks for a tool as a tool_use block whose input arrives as input_json_delta; stop_reason tool_use', async () => {
    const ev = await events(await post(ask('Search the latest news about solar power', { tools: [SEARCH_TOOL] })));
    const block = ev.find((e) => e.type === 'content_block_start') as { content_block: { type: string; id: string; name: string; input: unknown } };
    expect(block.content_block).toMatchObject({ type: 'tool_use', name: 'search_web', input: {} });
    expect(block.content_block.id).toMatch(/^toolu_/);
    const json = (ev.filter((e) => e.type === 'content_block_delta') as { delta: { type: string; partial_json: string } }[]).map((d) => d.delta.partial_json).join('');
    expect(JSON.parse(json)).toMatchObject({ query: expect.stringContaining('solar') });
    expect((ev.find((e) => e.type === 'message_delta') as { delta: { stop_reason: string } }).delta.stop_reason).toBe('tool_use');
  });

  it('answers a tool_result with a text quoting it', async () => {
    const body = ask('', {
      tools: [SEARCH_TOOL],
      messages: [
        { role: 'user', content: 'Search the latest news about solar power' },
        { role: 'assistant', content: [{ type: 'tool_use', id: 'toolu_1', name: 'search_web', input: { query: 'solar power' } }] },
        { role: 'user', content: [{ type: 'tool_result', tool_use_id: 'toolu_1', content: 'Panels got cheaper again this year.' }] },
      ],
    });
    const ev = await events(await post(body));
    const text = (ev.filter((e) => e.type === 'content_block_delta') as { delta: { text: string } }[]).map((d) => d.delta.text).join('');
    expect(text).toContain('Panels got cheaper');
  });

  it('refuses without x-api-key (401 authentication_error) or without anthropic-version (400), in Anthropic\'s error shape', async () => {
    const { 'x-api-key': _key, ...noKey } = HEADERS;
    const r1 = await post(ask('hi'), noKey);
    expect(r1.status).toBe(401);
    expect(await r1.json()).toMatchObject({ type: 'error', error: { type: 'authentication_error' } });
    const { 'anthropic-version': _v, ...noVersion } = HEADERS;
    const r2 = await post(ask('hi'), noVersion);
    expect(r2.status).toBe(400);
    expect(await r2.json()).toMatchObject({ type: 'error', error: { type: 'invalid_request_error', message: expect.stringContaining('anthropic-version') } });
    const r3 = await post({ ...ask('hi'), max_tokens: undefined });
    expect(r3.status).toBe(400);
    expect(await r3.json()).toMatchObject({ error: { type: 'invalid_request_error', message: 'max_tokens: Field required' } });
  });

  it('over its RPM: 429 rate_limit_error with retry-after (s) and anthropic-ratelimit-* headers', async () => {
    emulator.configure({ rpm: 1 });
    expect((await post(ask('one', { stream: false }))).status).toBe(200);
    const res = await post(ask('two'));
    expect(res.status).toBe(429);
    expect(await res.json()).toMatchObject({ type: 'error', error: { type: 'rate_limit_error' } });
    expect(Number(res.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    expect(res.headers.get('retry-after-ms')).toBeNull();
    expect(res.headers.get('anthropic-ratelimit-requests-limit')).toBe('1');
    expect(res.headers.get('anthropic-ratelimit-requests-remaining')).toBe('0');
    expect(res.headers.get('x-ratelimit-limit-requests')).toBeNull();
  });

  it('with an output limit (otpm): anthropic-ratelimit-input-tokens-*, -output-tokens-*, tokens-* the most restrictive of the two; a 429 in Anthropic\'s words', async () => {
    emulator.configure({ timeScale: 1, ttftMs: 1, tokensPerSec: 100_000, tpm: 10_000 });
    const plain = await post(ask('How do libraries plan opening hours?', { stream: false }));
    expect([plain.headers.get('anthropic-ratelimit-tokens-limit'), plain.headers.get('anthropic-ratelimit-input-tokens-limit')]).toEqual(['10000', null]);
    await plain.text();
    emulator.reset();
    emulator.configure({ otpm: 300 });
    const header = (res: Response, name: string) => [res.headers.get(`anthropic-ratelimit-${name}-limit`), res.headers.get(`anthropic-ratelimit-${name}-remaining`)];
    const first = await post(ask('How do libraries plan opening hours?', { stream: false, max_tokens: 200 }));
    const { usage } = (await first.json()) as { usage: { input_tokens: number; output_tokens: number } };
    // The headers are those of the admission: 200 output tokens reserved.
    expect(header(first, 'input-tokens')).toEqual(['10000', String(10_000 - usage.input_tokens)]);
    expect(header(first, 'output-tokens')).toEqual(['300', '100']);
    expect(header(first, 'tokens')).toEqual(['300', '100']);
    const refused = await post(ask('How do libraries plan opening hours?', { stream: false, max_tokens: 290 }));
    expect(refused.status).toBe(429);
    expect(await refused.json()).toMatchObject({
      type: 'error',
      error: { type: 'rate_limit_error', message: expect.stringMatching(/^This request would exceed the rate limit for your organization of 300 output tokens per minute\./) },
    });
    expect(header(refused, 'output-tokens')).toEqual(['300', String(300 - usage.output_tokens)]);
    expect(emulator.stats()).toMatchObject({ inputTokensCharged: usage.input_tokens, outputTokensCharged: usage.output_tokens, tokensCharged: usage.input_tokens + usage.output_tokens });
    // The input limit the tighter one: tokens-* follow it.
    emulator.reset();
    emulator.configure({ tpm: usage.input_tokens + 50, otpm: 100_000 });
    const second = await post(ask('How do libraries plan opening hours?', { stream: false, max_tokens: 200 }));
    expect(second.status).toBe(200);
    expect(header(second, 'tokens')).toEqual([String(usage.input_tokens + 50), '50']);
    expect(header(second, 'output-tokens')).toEqual(['100000', String(100_000 - 200)]);
    await second.text();
  });

  it('samples greedily with top_k 1 (the same prompt, the same answer), each answer its own otherwise; a negative top_k is a 400', async () => {
    const answer = async (over: Record<string, unknown>) => ((await (await post(ask('How do libraries plan opening hours?', { stream: false, ...over }))).json()) as { content: { text: string }[] }).content[0]!.text;
    const greedy = await answer({ top_k: 1 });
    expect(await answer({ top_k: 1 })).toBe(greedy);
    expect(await answer({ top_k: 40 })).not.toBe(await answer({ top_k: 40 }));
    const bad = await post(ask('hi', { top_k: -1 }));
    expect(bad.status).toBe(400);
    expect(await bad.json()).toMatchObject({ type: 'error', error: { type: 'invalid_request_error', message: 'top_k: Input should be greater than or equal to 0' } });
  });

  it('misbehaves in Anthropic\'s shapes: overloaded is a 529, stream_error an `error` event, wrong_key a 401, model_not_found a 404', async () => {
    const r529 = await post(ask('hi', { model: 'claude-emulated+overloaded' }));
    expect(r529.status).toBe(529);
    expect(await r529.json()).toMatchObject({ error: { type: 'overloaded_error' } });
    const ev = await events(await post(ask('How do libraries plan opening hours?', { model: 'claude-emulated+stream_error' })));
    expect(ev.at(-1)).toMatchObject({ type: 'error', error: { type: 'overloaded_error', message: 'Overloaded' } });
    expect(ev.some((e) => e.type === 'message_stop')).toBe(false);
    expect((await post(ask('hi', { model: 'claude-emulated+wrong_key' }))).status).toBe(401);
    const r404 = await post(ask('hi', { model: 'claude-x+model_not_found' }));
    expect(r404.status).toBe(404);
    expect(await r404.json()).toMatchObject({ error: { type: 'not_found_error', message: 'model: claude-x' } });
  });
});

describe('POST /v1/messages with extended thinking', () => {
  const DOCS = 'https://docs.claude.com/en/docs/build-with-claude/extended-thinking';
  const think = (text: string, over: Record<string, unknown> = {}) => ask(text, { max_tokens: 2048, thinking: { type: 'enabled', budget_tokens: 1024 }, ...over });
  const json = async (body: unknown) => {
    const res = await post(body);
    return { status: res.status, body: (await res.json()) as Record<string, any> };
  };
  const refused = (message: string) => ({ status: 400, body: { type: 'error', error: { type: 'invalid_request_error', message }, request_id: expect.any(String) } });
  const QUESTION = { role: 'user', content: 'Search the latest news about solar power' };
  /** A tool loop continued: the question, the assistant's turn of `blocks`, the result of its tool_use. */
  const loop = (blocks: Record<string, any>[], over: Record<string, unknown> = {}) => {
    const id = blocks.find((b) => b.type === 'tool_use')?.id ?? 'toolu_1';
    return think('', {
      stream: false,
      tools: [SEARCH_TOOL],
      messages: [QUESTION, { role: 'assistant', content: blocks }, { role: 'user', content: [{ type: 'tool_result', tool_use_id: id, content: 'Panels got cheaper again this year.' }] }],
      ...over,
    });
  };
  /** The first call of a tool loop, not streamed: its thinking block and its tool_use block. */
  const firstCall = async () => {
    const { body } = await json(think(QUESTION.content, { stream: false, tools: [SEARCH_TOOL] }));
    expect(body.stop_reason).toBe('tool_use');
    expect(body.content.map((b: { type: string }) => b.type)).toEqual(['thinking', 'tool_use']);
    return body.content as [Record<string, any>, Record<string, any>];
  };
  const toolRule = (found: string) =>
    `messages.1.content.0.type: Expected \`thinking\` or \`redacted_thinking\`, but found \`${found}\`. When \`thinking\` is enabled, a final \`assistant\` message must start with a thinking block (preceeding the lastmost set of \`tool_use\` and \`tool_result\` blocks). We recommend you include thinking blocks from previous turns. To avoid this requirement, disable \`thinking\`. Please consult our documentation at ${DOCS}`;

  it('streams one thinking block first (thinking_delta events, its signature_delta, content_block_stop), the text at index 1; output_tokens counts both', async () => {
    const ev = await events(await post(think('How do libraries plan opening hours?')));
    const steps = ev.map((e) => (e.type === 'content_block_delta' ? `${e.index}:${e.delta.type}` : e.index === undefined ? e.type : `${e.index}:${e.type}`));
    expect(steps.filter((t, i) => t !== steps[i - 1])).toEqual([
      'message_start', '0:content_block_start', '0:thinking_delta', '0:signature_delta', '0:content_block_stop',
      '1:content_block_start', '1:text_delta', '1:content_block_stop', 'message_delta', 'message_stop',
    ]);
    expect(steps.filter((t) => t === '0:signature_delta')).toHaveLength(1);
    expect(ev.find((e) => e.type === 'content_block_start' && e.index === 1)!.content_block).toEqual({ type: 'text', text: '' });
    // 30–60 % of the budget, the budget counted at most 320 tokens.
    expectThinkingStreamed(ev, 90, 200);
  });

  it('answers a non-streamed call with the thinking block first in content; the same seed, the same blocks', async () => {
    const create = () => {
      emulator.configure({ seed: 42 });
      return json(think('How do libraries plan opening hours?', { stream: false }));
    };
    const { status, body } = await create();
    expect(status).toBe(200);
    expect(body.content).toEqual([{ type: 'thinking', thinking: expect.stringMatching(/^The user asks about /), signature: expect.stringMatching(BASE64) }, { type: 'text', text: expect.any(String) }]);
    expect(body.usage.output_tokens).toBe(countTokens(body.content[0].thinking) + countTokens(body.content[1].text));
    expect((await create()).body.content).toEqual(body.content);
  });

  it('refuses as Anthropic does: a budget under 1024 or not under max_tokens, temperature, top_k, top_p under 0.95, a forced tool, another type', async () => {
    const cases: [Record<string, unknown>, string][] = [
      [{ thinking: { type: 'enabled', budget_tokens: 1000 } }, 'thinking.enabled.budget_tokens: Input should be greater than or equal to 1024'],
      [{ thinking: { type: 'enabled' } }, 'thinking.enabled.budget_tokens: Field required'],
      [{ thinking: { type: 'enabled', budget_tokens: 1500.5 } }, 'thinking.enabled.budget_tokens: Input should be a valid integer, got a number with a fractional part'],
      [{ thinking: { type: 'sometimes' } }, "thinking: Input tag 'sometimes' found using 'type' does not match any of the expected tags: 'adaptive', 'disabled', 'enabled'"],
      [{ max_tokens: 1024 }, `\`max_tokens\` must be greater than \`thinking.budget_tokens\`. Please consult our documentation at ${DOCS}#max-tokens-and-context-window-size`],
      [{ temperature: 0.7 }, `\`temperature\` may only be set to 1 when thinking is enabled. Please consult our documentation at ${DOCS}#feature-compatibility`],
      [{ top_k: 40 }, `\`top_k\` must be unset when thinking is enabled. Please consult our documentation at ${DOCS}#feature-compatibility`],
      [{ top_p: 0.9 }, `\`top_p\` must be greater than or equal to 0.95 or unset when thinking is enabled. Please consult our documentation at ${DOCS}#feature-compatibility`],
      [{ tools: [SEARCH_TOOL], tool_choice: { type: 'any' } }, 'Thinking may not be enabled when tool_choice forces tool use.'],
      [{ tools: [SEARCH_TOOL], tool_choice: { type: 'tool', name: 'search_web' } }, 'Thinking may not be enabled when tool_choice forces tool use.'],
    ];
    for (const [over, message] of cases) expect(await json(think('hi', over))).toEqual(refused(message));
    // What goes with thinking: temperature 1, top_p from 0.95, tool_choice auto; and anything without it.
    for (const over of [{ temperature: 1 }, { top_p: 0.95 }, { tools: [SEARCH_TOOL], tool_choice: { type: 'auto' } }, { thinking: { type: 'disabled' }, temperature: 0.2, top_k: 5, max_tokens: 100 }]) {
      expect((await json(think('hi', { stream: false, ...over }))).status).toBe(200);
    }
    expect(emulator.stats()).toMatchObject({ invalid: cases.length, completed: 4 });
  });

  it('continues a tool loop with the thinking block passed back as it came; refuses it altered, made up, for another model, missing, or after the tool_use', async () => {
    const [thinking, call] = await firstCall();
    const ok = await json(loop([thinking, call]));
    expect(ok.status).toBe(200);
    expect(ok.body.content.map((b: { type: string }) => b.type)).toEqual(['thinking', 'text']);
    expect(ok.body.content[1].text).toContain('Panels got cheaper');
    const invalid = refused('messages.1.content.0: Invalid `signature` in `thinking` block');
    expect(await json(loop([{ ...thinking, thinking: `${thinking.thinking} Edited.` }, call]))).toEqual(invalid);
    expect(await json(loop([{ ...thinking, signature: 'c2lnbmF0dXJl' }, call]))).toEqual(invalid);
    expect(await json(loop([thinking, call], { model: 'claude-other' }))).toEqual(invalid);
    expect(await json(loop([call]))).toEqual(refused(toolRule('tool_use')));
    expect(await json(loop([{ type: 'text', text: 'Let me search.' }, call]))).toEqual(refused(toolRule('text')));
    expect(await json(loop([{ type: 'text', text: 'Let me search.' }, thinking, call]))).toEqual(
      refused('messages.1.content.0: If an assistant message contains any thinking blocks, the first block must be `thinking` or `redacted_thinking`. Found `text`.'),
    );
    expect(await json(loop([{ type: 'thinking', thinking: 'Hmm.' }, call]))).toEqual(refused('messages.1.content.0.thinking.signature: Field required'));
    expect(await json(loop([{ ...thinking, cache_control: { type: 'ephemeral' } }, call]))).toEqual(refused('messages.1.content.0.thinking.cache_control: Extra inputs are not permitted'));
    expect(await json(think('', { messages: [{ role: 'user', content: [thinking, { type: 'text', text: 'hi' }] }] }))).toEqual(
      refused('messages.0.content.0: thinking content blocks are only allowed in assistant messages'),
    );
  });

  it('bills as input the thinking of the last assistant turn of a tool loop, not that of earlier turns; disabled, ignores thinking blocks but in a final assistant turn', async () => {
    const [thinking, call] = await firstCall();
    const enabled = await json(loop([thinking, call]));
    // Disabled: passed back blocks are neither checked nor billed.
    const disabled = await json(loop([{ ...thinking, signature: 'made-up' }, call], { thinking: { type: 'disabled' } }));
    expect(disabled.status).toBe(200);
    expect(disabled.body.content.map((b: { type: string }) => b.type)).toEqual(['text']);
    expect(enabled.body.usage.input_tokens - disabled.body.usage.input_tokens).toBe(countTokens(thinking.thinking));
    const earlier = (over: Record<string, unknown>) =>
      json(think('', { stream: false, messages: [QUESTION, { role: 'assistant', content: [thinking, { type: 'text', text: 'Solar got cheaper.' }] }, { role: 'user', content: 'And wind?' }], ...over }));
    const [on, off] = [await earlier({}), await earlier({ thinking: { type: 'disabled' } })];
    expect(on.status).toBe(200);
    expect(on.body.usage.input_tokens).toBe(off.body.usage.input_tokens);
    expect(await json(think('', { thinking: { type: 'disabled' }, messages: [QUESTION, { role: 'assistant', content: [thinking, { type: 'text', text: 'Solar' }] }] }))).toEqual(
      refused('messages.1.content.0: When thinking is disabled, an `assistant` message in the final position cannot contain `thinking`. To use thinking blocks, enable `thinking` in your request.'),
    );
  });

  it('redacted_thinking: the whole block in its content_block_start, no deltas; passed back, it verifies; altered, it is refused', async () => {
    const ev = await events(await post(think(QUESTION.content, { tools: [SEARCH_TOOL] }), { ...HEADERS, 'x-emulator-behaviour': 'redacted_thinking' }));
    expect(ev.filter((e) => e.index === 0).map((e) => e.type)).toEqual(['content_block_start', 'content_block_stop']);
    const block = ev.find((e) => e.type === 'content_block_start' && e.index === 0)!.content_block;
    expect(block).toEqual({ type: 'redacted_thinking', data: expect.stringMatching(BASE64) });
    const opening = ev.find((e) => e.type === 'content_block_start' && e.index === 1)!.content_block;
    const input = ev.filter((e) => e.type === 'content_block_delta' && e.index === 1).map((e) => e.delta.partial_json).join('');
    const call = { ...opening, input: JSON.parse(input) };
    expect(call.type).toBe('tool_use');
    // The thinking is billed although unseen.
    expect(ev.find((e) => e.type === 'message_delta')!.usage.output_tokens).toBeGreaterThan(90 + countTokens(input));
    const ok = await json(loop([block, call]));
    expect(ok.status).toBe(200);
    const flipped = block.data.slice(0, 40) + (block.data[40] === 'A' ? 'B' : 'A') + block.data.slice(41);
    expect(await json(loop([{ ...block, data: flipped }, call]))).toEqual(refused('messages.1.content.0: Invalid `data` in `redacted_thinking` block'));
    // The model suffix selects it too; without thinking, the behaviour changes nothing.
    const suffixed = await json(think('hi', { stream: false, model: 'claude-emulated+redacted_thinking' }));
    expect(suffixed.body.content[0].type).toBe('redacted_thinking');
    const plain = await json(ask('hi', { stream: false, model: 'claude-emulated+redacted_thinking' }));
    expect(plain.body.content.map((b: { type: string }) => b.type)).toEqual(['text']);
  });

  it('caches a tool loop\'s prefix with its thinking block; another budget is another prefix', async () => {
    emulator.configure({ cacheMinTokens: 0 });
    const [thinking, call] = await firstCall();
    const marked = (over: Record<string, unknown> = {}) => {
      const body = loop([thinking, call], over) as { messages: { content: unknown }[] };
      body.messages[2]!.content = [{ type: 'tool_result', tool_use_id: call.id, content: 'Panels got cheaper again this year.', cache_control: { type: 'ephemeral' } }];
      return json(body);
    };
    const written = (await marked()).body.usage;
    expect(written.cache_creation_input_tokens).toBeGreaterThan(countTokens(thinking.thinking));
    expect((await marked()).body.usage).toMatchObject({ cache_read_input_tokens: written.cache_creation_input_tokens, cache_creation_input_tokens: 0 });
    expect((await marked({ thinking: { type: 'enabled', budget_tokens: 1500 } })).body.usage).toMatchObject({ cache_read_input_tokens: 0 });
  });
});

describe('POST /v1/messages with context editing (context_management)', () => {
  const CLEAR_THINKING = 'clear_thinking_20251015';
  const CLEAR_TOOLS = 'clear_tool_uses_20250919';
  /** The beta among others, as Claude Code sends it (any case, any spacing). */
  const BETA = { ...HEADERS, 'anthropic-beta': 'prompt-caching-2024-07-31, Context-Management-2025-06-27 ,interleaved-thinking-2025-05-14' };
  const THINK = { max_tokens: 2048, thinking: { type: 'enabled', budget_tokens: 1024 } };
  const KEEP_ALL = { edits: [{ type: CLEAR_THINKING, keep: 'all' }] };
  const READ_TOOL = { name: 'read_page', description: 'Read a web page', input_schema: { type: 'object', properties: { url: { type: 'string' } } } };
  const QUESTION = { role: 'user', content: 'Search the latest news about solar power' };
  const json = async (body: unknown, headers: Record<string, string> = BETA) => {
    const res = await post(body, headers);
    return { status: res.status, body: (await res.json()) as Record<string, any> };
  };
  const refused = (message: string) => ({ status: 400, body: { type: 'error', error: { type: 'invalid_request_error', message }, request_id: expect.any(String) } });
  /** A finished tool loop of `n` calls, search_web and read_page in turn, each result some 100 tokens. */
  const toolLoop = (n: number, over: Record<string, unknown> = {}) => {
    const messages: unknown[] = [QUESTION];
    for (let i = 1; i <= n; i++) {
      const use = i % 2 === 1 ? { name: 'search_web', input: { query: `solar power, part ${i}` } } : { name: 'read_page', input: { url: `https://news.example.com/solar/${i}` } };
      messages.push({ role: 'assistant', content: [{ type: 'tool_use', id: `toolu_${i}`, ...use }] });
      messages.push({ role: 'user', content: [{ type: 'tool_result', tool_use_id: `toolu_${i}`, content: `Result ${i}. ${'Panels got cheaper again this year, and installs rose. '.repeat(8)}` }] });
    }
    return ask('', { stream: false, tools: [SEARCH_TOOL, READ_TOOL], messages, ...over });
  };

  it('refuses a beta Anthropic does not know, as Anthropic does (400 naming each), and counts those it takes', async () => {
    const body = ask('How do libraries plan opening hours?', { stream: false });
    const unknown = refused('Unexpected value(s) `not-a-beta-2099-01-01`, `context-2m-2099-01-01` for the `anthropic-beta` header. Please consult our documentation at docs.anthropic.com or try again without the header.');
    expect(await json(body, { ...HEADERS, 'anthropic-beta': 'context-1m-2025-08-07, Not-A-Beta-2099-01-01,context-2m-2099-01-01' })).toEqual(unknown);
    expect((await json(body)).status).toBe(200);
    expect((await json(body, { ...HEADERS, 'anthropic-beta': 'context-1m-2025-08-07' })).status).toBe(200);
    expect(emulator.stats()).toMatchObject({
      invalid: 1, completed: 2,
      byBeta: { 'prompt-caching-2024-07-31': 1, 'context-management-2025-06-27': 1, 'interleaved-thinking-2025-05-14': 1, 'context-1m-2025-08-07': 1 },
    });
    expect(Object.keys(emulator.stats().byBeta)).toHaveLength(4);
  });

  it('takes context_management only with its beta in anthropic-beta: else 400 "context_management: Extra inputs are not permitted"', async () => {
    const body = ask('How do libraries plan opening hours?', { ...THINK, stream: false, context_management: KEEP_ALL });
    const extra = refused('context_management: Extra inputs are not permitted');
    expect(await json(body, HEADERS)).toEqual(extra);
    expect(await json(body, { ...HEADERS, 'anthropic-beta': 'prompt-caching-2024-07-31,interleaved-thinking-2025-05-14' })).toEqual(extra);
    const ok = await json(body);
    expect(ok.status).toBe(200);
    expect(ok.body.context_management).toEqual({ applied_edits: [] });
    // Not asked for, nothing is reported, beta or not.
    expect((await json(ask('hi', { stream: false }))).body).not.toHaveProperty('context_management');
    expect(emulator.stats()).toMatchObject({ invalid: 2, completed: 2 });
  });

  it('refuses a malformed context_management in Anthropic\'s words', async () => {
    const at = (edit: string, rest: string) => `context_management.edits.0.${edit}.${rest}`;
    const cases: [unknown, string][] = [
      ['all', 'context_management: Input should be a valid dictionary or object to extract fields from'],
      [{ edits: [], clear: true }, 'context_management.clear: Extra inputs are not permitted'],
      [{ edits: { type: CLEAR_TOOLS } }, 'context_management.edits: Input should be a valid list'],
      [{ edits: [{ type: 'clear_everything' }] }, "context_management.edits.0: Input tag 'clear_everything' found using 'type' does not match any of the expected tags: 'clear_thinking_20251015', 'clear_tool_uses_20250919'"],
      [{ edits: [{ keep: 'all' }] }, "context_management.edits.0: Unable to extract tag using discriminator 'type'"],
      [{ edits: ['clear_thinking_20251015'] }, 'context_management.edits.0: Input should be a valid dictionary or object to extract fields from'],
      [{ edits: [{ type: CLEAR_THINKING, keep: 'some' }] }, `${at(CLEAR_THINKING, 'keep')}: Input should be 'all' or {"type": "thinking_turns", "value": N}`],
      [{ edits: [{ type: CLEAR_THINKING, keep: { type: 'thinking_turns', value: 0 } }] }, `${at(CLEAR_THINKING, 'keep.value')}: Input should be greater than or equal to 1`],
      [{ edits: [{ type: CLEAR_THINKING, keep: { type: 'thinking_turns', value: 1.5 } }] }, `${at(CLEAR_THINKING, 'keep.value')}: Input should be a valid integer`],
      [{ edits: [{ type: CLEAR_THINKING, keep: { type: 'thinking_turns' } }] }, `${at(CLEAR_THINKING, 'keep.value')}: Field required`],
      [{ edits: [{ type: CLEAR_THINKING, keep: 'all', turns: 2 }] }, `${at(CLEAR_THINKING, 'turns')}: Extra inputs are not permitted`],
      [{ edits: [{ type: CLEAR_TOOLS, trigger: { type: 'messages', value: 10 } }] }, `${at(CLEAR_TOOLS, 'trigger.type')}: Input should be 'input_tokens' or 'tool_uses'`],
      [{ edits: [{ type: CLEAR_TOOLS, trigger: { type: 'input_tokens', value: '1000' } }] }, `${at(CLEAR_TOOLS, 'trigger.value')}: Input should be a valid integer`],
      [{ edits: [{ type: CLEAR_TOOLS, keep: { type: 'input_tokens', value: 3 } }] }, `${at(CLEAR_TOOLS, 'keep.type')}: Input should be 'tool_uses'`],
      [{ edits: [{ type: CLEAR_TOOLS, keep: { type: 'tool_uses', value: 3, min: 1 } }] }, `${at(CLEAR_TOOLS, 'keep.min')}: Extra inputs are not permitted`],
      [{ edits: [{ type: CLEAR_TOOLS, clear_at_least: { type: 'input_tokens', value: -1 } }] }, `${at(CLEAR_TOOLS, 'clear_at_least.value')}: Input should be greater than or equal to 0`],
      [{ edits: [{ type: CLEAR_TOOLS, exclude_tools: 'search_web' }] }, `${at(CLEAR_TOOLS, 'exclude_tools')}: Input should be a valid list`],
      [{ edits: [{ type: CLEAR_TOOLS, exclude_tools: [1] }] }, `${at(CLEAR_TOOLS, 'exclude_tools.0')}: Input should be a valid string`],
      [{ edits: [{ type: CLEAR_TOOLS, clear_tool_inputs: 'yes' }] }, `${at(CLEAR_TOOLS, 'clear_tool_inputs')}: Input should be a valid boolean or a list of tool names`],
      [{ edits: [{ type: CLEAR_TOOLS, keep_last: 2 }] }, `${at(CLEAR_TOOLS, 'keep_last')}: Extra inputs are not permitted`],
      [{ edits: [{ type: CLEAR_TOOLS }, { type: CLEAR_THINKING }] }, 'context_management.edits.1: `clear_thinking_20251015` must be the first strategy in `edits` when it is combined with others'],
      [{ edits: [{ type: CLEAR_TOOLS }, { type: CLEAR_TOOLS }] }, 'context_management.edits.1: `clear_tool_uses_20250919` may be given only once'],
    ];
    for (const [context_management, message] of cases) expect(await json(ask('hi', { ...THINK, stream: false, context_management }))).toEqual(refused(message));
    // What they may hold: every option of both strategies, in Anthropic's order; `{"type": "all"}`; no edits.
    const accepted = [
      {
        edits: [
          { type: CLEAR_THINKING, keep: { type: 'thinking_turns', value: 2 } },
          { type: CLEAR_TOOLS, trigger: { type: 'tool_uses', value: 5 }, keep: { type: 'tool_uses', value: 0 }, clear_at_least: { type: 'input_tokens', value: 10 }, exclude_tools: ['search_web'], clear_tool_inputs: ['read_page'] },
        ],
      },
      { edits: [{ type: CLEAR_THINKING, keep: { type: 'all' } }, { type: CLEAR_TOOLS, clear_at_least: null, exclude_tools: null, clear_tool_inputs: true }] },
      { edits: [] },
      {},
    ];
    for (const context_management of accepted) expect((await json(ask('hi', { ...THINK, stream: false, context_management }))).body.context_management).toEqual({ applied_edits: [] });
    expect(emulator.stats()).toMatchObject({ invalid: cases.length, completed: accepted.length });
  });

  it('clear_thinking_20251015 requires thinking enabled; clear_tool_uses_20250919 does not', async () => {
    for (const over of [{}, { thinking: { type: 'disabled' } }]) {
      expect(await json(ask('hi', { stream: false, context_management: KEEP_ALL, ...over }))).toEqual(refused('`clear_thinking_20251015` strategy requires `thinking` to be enabled or adaptive'));
    }
    expect((await json(ask('hi', { stream: false, context_management: { edits: [{ type: CLEAR_TOOLS }] } }))).status).toBe(200);
  });

  /** A tool loop with thinking gone round once: the question, the call (thinking, tool_use), its result, the answer (thinking, text). */
  const thoughtLoop = async (resultOver: Record<string, unknown> = {}) => {
    const think = (messages: unknown[], over: Record<string, unknown> = {}) => json(ask('', { ...THINK, stream: false, tools: [SEARCH_TOOL], messages, context_management: KEEP_ALL, ...over }));
    const first = await think([QUESTION]);
    const [thinking, call] = first.body.content as Record<string, any>[];
    expect([thinking!.type, call!.type]).toEqual(['thinking', 'tool_use']);
    const result = { role: 'user', content: [{ type: 'tool_result', tool_use_id: call!.id, content: 'Panels got cheaper again this year.', ...resultOver }] };
    const history = [QUESTION, { role: 'assistant', content: first.body.content }, result];
    const loop = await think(history);
    expect(loop.body.content.map((b: { type: string }) => b.type)).toEqual(['thinking', 'text']);
    return { thinking: thinking!, history, loop, think };
  };

  it('keep: "all" bills every turn\'s thinking as input; without it (or with the default of 1 turn) a finished turn\'s thinking is stripped, and reported so', async () => {
    const { thinking, history, loop, think } = await thoughtLoop();
    // Within the loop, its own thinking is kept either way: nothing to clear.
    expect(loop.body.context_management).toEqual({ applied_edits: [] });
    const next = [...history, { role: 'assistant', content: loop.body.content }, { role: 'user', content: 'And wind?' }];
    const [all, none, one, two] = [
      await think(next),
      await think(next, { context_management: undefined }),
      await think(next, { context_management: { edits: [{ type: CLEAR_THINKING }] } }),
      await think(next, { context_management: { edits: [{ type: CLEAR_THINKING, keep: { type: 'thinking_turns', value: 2 } }] } }),
    ];
    expect(none.body).not.toHaveProperty('context_management');
    expect(all.body.context_management).toEqual({ applied_edits: [] });
    expect(two.body.context_management).toEqual({ applied_edits: [] });
    expect(two.body.usage.input_tokens).toBe(all.body.usage.input_tokens);
    // The loop's two assistant messages are one turn: its thinking (both blocks) is cleared at once.
    const cleared = all.body.usage.input_tokens - none.body.usage.input_tokens;
    expect(cleared).toBeGreaterThan(countTokens(thinking.thinking));
    expect(one.body.usage.input_tokens).toBe(none.body.usage.input_tokens);
    expect(one.body.context_management).toEqual({ applied_edits: [{ type: CLEAR_THINKING, cleared_thinking_turns: 1, cleared_input_tokens: cleared }] });
  });

  it('keep: "all" keeps the cached prefix readable turn after turn; stripping a turn\'s thinking misses the prefix that held it', async () => {
    emulator.configure({ cacheMinTokens: 0 });
    const marked = { cache_control: { type: 'ephemeral' } };
    const { history, loop, think } = await thoughtLoop(marked);
    const written = loop.body.usage.cache_creation_input_tokens as number;
    expect(written).toBeGreaterThan(0);
    const next = [...history, { role: 'assistant', content: loop.body.content }, { role: 'user', content: [{ type: 'text', text: 'And wind?', ...marked }] }];
    const stripped = await think(next, { context_management: undefined });
    expect(stripped.body.usage.cache_read_input_tokens).toBe(0);
    const kept = await think(next);
    expect(kept.body.usage).toMatchObject({ cache_read_input_tokens: written, cache_creation_input_tokens: expect.any(Number) });
    expect(kept.body.usage.cache_creation_input_tokens).toBeGreaterThan(0);
  });

  it('clear_tool_uses_20250919 past its trigger clears all but the last `keep` tool results (not exclude_tools\'), billing fewer input tokens; clear_at_least out of reach clears nothing', async () => {
    const whole = (await json(toolLoop(4))).body.usage.input_tokens as number;
    const edited = async (edit: Record<string, unknown>) => {
      const { body } = await json(toolLoop(4, { context_management: { edits: [{ type: CLEAR_TOOLS, ...edit }] } }));
      return { input: body.usage.input_tokens as number, applied: body.context_management.applied_edits as Record<string, number>[] };
    };
    const small = { trigger: { type: 'input_tokens', value: 100 }, keep: { type: 'tool_uses', value: 1 } };
    const three = await edited(small);
    expect(three.applied).toEqual([{ type: CLEAR_TOOLS, cleared_tool_uses: 3, cleared_input_tokens: whole - three.input }]);
    // Each result is some 100 tokens; its placeholder a few.
    expect(whole - three.input).toBeGreaterThan(3 * 80);
    const excluded = await edited({ ...small, exclude_tools: ['read_page'] });
    expect(excluded.applied).toEqual([{ type: CLEAR_TOOLS, cleared_tool_uses: 2, cleared_input_tokens: whole - excluded.input }]);
    const inputs = await edited({ ...small, clear_tool_inputs: true });
    expect(inputs.applied).toEqual([{ type: CLEAR_TOOLS, cleared_tool_uses: 3, cleared_input_tokens: whole - inputs.input }]);
    expect(inputs.input).toBeLessThan(three.input);
    expect(await edited({ ...small, clear_at_least: { type: 'input_tokens', value: whole } })).toEqual({ input: whole, applied: [] });
    // A trigger of tool uses: past it at 4 uses over 3, not at 4.
    expect((await edited({ trigger: { type: 'tool_uses', value: 3 } })).applied).toEqual([{ type: CLEAR_TOOLS, cleared_tool_uses: 1, cleared_input_tokens: expect.any(Number) }]);
    expect(await edited({ trigger: { type: 'tool_uses', value: 4 } })).toEqual({ input: whole, applied: [] });
  });

  it('streamed, reports the applied edits on message_delta beside delta and usage; message_start counts the input as cleared', async () => {
    const edit = { type: CLEAR_TOOLS, trigger: { type: 'input_tokens', value: 100 }, keep: { type: 'tool_uses', value: 1 } };
    const whole = await json(toolLoop(4, { context_management: { edits: [edit] } }));
    const ev = await events(await post(toolLoop(4, { stream: true, context_management: { edits: [edit] } }), BETA));
    expect(ev[0]!.message.usage.input_tokens).toBe(whole.body.usage.input_tokens);
    const delta = ev.find((e) => e.type === 'message_delta')!;
    expect(Object.keys(delta).sort()).toEqual(['context_management', 'delta', 'type', 'usage']);
    expect(delta.context_management).toEqual(whole.body.context_management);
    expect(delta.context_management.applied_edits).toEqual([expect.objectContaining({ type: CLEAR_TOOLS, cleared_tool_uses: 3 })]);
  });

  it('the default trigger (100,000 input tokens) clears nothing on a short prompt: applied_edits [], streamed or not', async () => {
    const edits = { edits: [{ type: CLEAR_TOOLS }] };
    const plain = await json(toolLoop(4));
    const whole = await json(toolLoop(4, { context_management: edits }));
    expect(whole.body.context_management).toEqual({ applied_edits: [] });
    expect(whole.body.usage.input_tokens).toBe(plain.body.usage.input_tokens);
    const ev = await events(await post(toolLoop(4, { stream: true, context_management: edits }), BETA));
    expect(ev.find((e) => e.type === 'message_delta')!.context_management).toEqual({ applied_edits: [] });
  });

  it('through Anthropic\'s SDK: client.beta.messages.create with betas, context_management and thinking; the stream\'s final message carries it', async () => {
    const sdk = new Anthropic({ apiKey: 'test-key', baseURL: emulator.url, maxRetries: 0 });
    const params = {
      model: 'claude-emulated', max_tokens: 2048, thinking: { type: 'enabled' as const, budget_tokens: 1024 },
      messages: [{ role: 'user' as const, content: 'How do libraries plan opening hours?' }],
      context_management: { edits: [{ type: 'clear_thinking_20251015' as const, keep: 'all' as const }] },
    };
    const message = await sdk.beta.messages.create({ ...params, betas: ['context-management-2025-06-27'] });
    expect(message.content.map((b) => b.type)).toEqual(['thinking', 'text']);
    expect(message.context_management).toEqual({ applied_edits: [] });
    await expect(sdk.beta.messages.create(params)).rejects.toMatchObject({ status: 400, error: { error: { message: 'context_management: Extra inputs are not permitted' } } });
    const edit = { type: 'clear_tool_uses_20250919' as const, trigger: { type: 'input_tokens' as const, value: 100 }, keep: { type: 'tool_uses' as const, value: 1 } };
    const streamed = await sdk.beta.messages.stream({ ...(toolLoop(4) as any), stream: undefined, betas: ['context-management-2025-06-27'], context_management: { edits: [edit] } }).finalMessage();
    expect(streamed.context_management?.applied_edits).toEqual([expect.objectContaining({ type: 'clear_tool_uses_20250919', cleared_tool_uses: 3 })]);
  });
});

describe('POST /v1/messages with adaptive thinking and output_config.effort', () => {
  const DOCS = 'https://docs.claude.com/en/docs/build-with-claude/extended-thinking';
  /** What Claude Code 2.1 sends by default: adaptive thinking with a budget of 0, effort high. */
  const CLAUDE_CODE = { thinking: { type: 'adaptive', budget_tokens: 0 }, output_config: { effort: 'high' } };
  const adapt = (text: string, over: Record<string, unknown> = {}) => ask(text, { max_tokens: 4096, ...CLAUDE_CODE, ...over });
  const json = async (body: unknown, headers: Record<string, string> = HEADERS) => {
    const res = await post(body, headers);
    return { status: res.status, body: (await res.json()) as Record<string, any> };
  };
  const refused = (message: string) => ({ status: 400, body: { type: 'error', error: { type: 'invalid_request_error', message }, request_id: expect.any(String) } });
  const QUESTION = { role: 'user', content: 'Search the latest news about solar power' };
  /** A call made on the same seed as the one before it (the same prompt, the same draws). */
  const seeded = (body: unknown, headers?: Record<string, string>) => {
    emulator.configure({ seed: 42 });
    return json(body, headers);
  };
  const loop = (blocks: Record<string, any>[], over: Record<string, unknown> = {}) => {
    const id = blocks.find((b) => b.type === 'tool_use')?.id ?? 'toolu_1';
    return adapt('', {
      stream: false,
      tools: [SEARCH_TOOL],
      messages: [QUESTION, { role: 'assistant', content: blocks }, { role: 'user', content: [{ type: 'tool_result', tool_use_id: id, content: 'Panels got cheaper again this year.' }] }],
      ...over,
    });
  };

  it('streams Claude Code\'s {"type":"adaptive","budget_tokens":0} with effort high as enabled thinking streams: the signed thinking block first; output_tokens counts it', async () => {
    const res = await post(adapt('How do libraries plan opening hours?'));
    expect(res.status).toBe(200);
    const ev = await events(res);
    const steps = ev.map((e) => (e.type === 'content_block_delta' ? `${e.index}:${e.delta.type}` : e.index === undefined ? e.type : `${e.index}:${e.type}`));
    expect(steps.filter((t, i) => t !== steps[i - 1])).toEqual([
      'message_start', '0:content_block_start', '0:thinking_delta', '0:signature_delta', '0:content_block_stop',
      '1:content_block_start', '1:text_delta', '1:content_block_stop', 'message_delta', 'message_stop',
    ]);
    // High: 140 tokens ± 25 %.
    expectThinkingStreamed(ev, 100, 190);
  });

  it('answers a non-streamed call with the thinking block first; without budget_tokens or output_config it thinks at high, as with them; the same seed, the same blocks', async () => {
    const { status, body } = await seeded(adapt('How do libraries plan opening hours?', { stream: false }));
    expect(status).toBe(200);
    expect(body.content).toEqual([{ type: 'thinking', thinking: expect.stringMatching(/^The user asks about /), signature: expect.stringMatching(BASE64) }, { type: 'text', text: expect.any(String) }]);
    expect(body.usage.output_tokens).toBe(countTokens(body.content[0].thinking) + countTokens(body.content[1].text));
    const bare = await seeded(ask('How do libraries plan opening hours?', { max_tokens: 4096, stream: false, thinking: { type: 'adaptive' } }));
    expect(bare.body.content).toEqual(body.content);
    expect((await seeded(adapt('How do libraries plan opening hours?', { stream: false }))).body.content).toEqual(body.content);
  });

  it('thinks longer the more effort is asked (low a short paragraph, max at most some 300 tokens), within what max_tokens leaves', async () => {
    const lengths: number[] = [];
    for (const effort of ['low', 'medium', 'high', 'xhigh', 'max']) {
      const { body } = await seeded(adapt('How do libraries plan opening hours?', { stream: false, output_config: { effort } }));
      expect(body.content.map((b: { type: string }) => b.type)).toEqual(['thinking', 'text']);
      lengths.push(countTokens(body.content[0].thinking));
    }
    expect([...lengths].sort((a, b) => a - b)).toEqual(lengths);
    expect(new Set(lengths).size).toBe(5);
    expect(lengths[0]).toBeLessThanOrEqual(60);
    expect(lengths[4]).toBeLessThanOrEqual(320);
    // A small max_tokens: the thinking stops a token short of it, the answer is cut there.
    const { body } = await json(adapt('How do libraries plan opening hours?', { stream: false, max_tokens: 40, output_config: { effort: 'max' } }));
    expect(countTokens(body.content[0].thinking)).toBeLessThanOrEqual(39);
    expect(body.content[1].text).not.toBe('');
    expect(body.usage.output_tokens).toBe(40);
    expect(body.stop_reason).toBe('max_tokens');
  });

  it('with thinking enabled, takes an effort and still thinks by the budget; without thinking, takes low, medium and high (the answer unchanged)', async () => {
    const enabled = { max_tokens: 2048, thinking: { type: 'enabled', budget_tokens: 1024 }, stream: false };
    const plain = await seeded(ask('How do libraries plan opening hours?', enabled));
    for (const effort of ['low', 'max']) {
      expect((await seeded(ask('How do libraries plan opening hours?', { ...enabled, output_config: { effort } }))).body.content).toEqual(plain.body.content);
    }
    const none = await seeded(ask('How do libraries plan opening hours?', { stream: false }));
    for (const output_config of [{ effort: 'low' }, { effort: 'medium' }, { effort: 'high' }, { effort: null }, {}, null]) {
      const { status, body } = await seeded(ask('How do libraries plan opening hours?', { stream: false, output_config }));
      expect(status).toBe(200);
      expect(body.content).toEqual(none.body.content);
    }
    expect((await json(ask('hi', { stream: false, thinking: { type: 'disabled' }, output_config: { effort: 'low' } }))).status).toBe(200);
  });

  it('refuses as Anthropic does: what thinking does not go with, a bad budget_tokens, an unknown effort or key of output_config, xhigh or max without thinking', async () => {
    const withoutThinking = (effort: string) => `output_config.effort '${effort}' is not supported when thinking is disabled on this model. Use effort 'high' or below, or enable thinking.`;
    const cases: [Record<string, unknown>, string][] = [
      [{ temperature: 0.7 }, `\`temperature\` may only be set to 1 when thinking is enabled. Please consult our documentation at ${DOCS}#feature-compatibility`],
      [{ top_k: 40 }, `\`top_k\` must be unset when thinking is enabled. Please consult our documentation at ${DOCS}#feature-compatibility`],
      [{ top_p: 0.9 }, `\`top_p\` must be greater than or equal to 0.95 or unset when thinking is enabled. Please consult our documentation at ${DOCS}#feature-compatibility`],
      [{ tools: [SEARCH_TOOL], tool_choice: { type: 'any' } }, 'Thinking may not be enabled when tool_choice forces tool use.'],
      [{ tools: [SEARCH_TOOL], tool_choice: { type: 'tool', name: 'search_web' } }, 'Thinking may not be enabled when tool_choice forces tool use.'],
      [{ thinking: { type: 'adaptive', budget_tokens: -1 } }, 'thinking.adaptive.budget_tokens: Input should be greater than or equal to 0'],
      [{ thinking: { type: 'adaptive', budget_tokens: 0.5 } }, 'thinking.adaptive.budget_tokens: Input should be a valid integer, got a number with a fractional part'],
      [{ thinking: { type: 'adaptive', budget_tokens: '0' } }, 'thinking.adaptive.budget_tokens: Input should be a valid integer'],
      [{ thinking: { type: 'Adaptive' } }, "thinking: Input tag 'Adaptive' found using 'type' does not match any of the expected tags: 'adaptive', 'disabled', 'enabled'"],
      [{ output_config: { effort: 'extreme' } }, "output_config.effort: Input should be 'low', 'medium', 'high', 'xhigh' or 'max'"],
      [{ output_config: { effort: 3 } }, "output_config.effort: Input should be 'low', 'medium', 'high', 'xhigh' or 'max'"],
      [{ output_config: { effort: 'high', format: { type: 'json_schema' } } }, 'output_config.format.schema: Field required'],
      [{ output_config: { effort: 'high', verbosity: 'low' } }, 'output_config.verbosity: Extra inputs are not permitted'],
      [{ output_config: 'high' }, 'output_config: Input should be a valid dictionary or object to extract fields from'],
      [{ thinking: undefined, output_config: { effort: 'max' } }, withoutThinking('max')],
      [{ thinking: { type: 'disabled' }, output_config: { effort: 'xhigh' } }, withoutThinking('xhigh')],
    ];
    for (const [over, message] of cases) expect(await json(adapt('hi', over))).toEqual(refused(message));
    // What goes with adaptive: temperature 1, top_p from 0.95, tool_choice auto, a max_tokens of any size (no budget to be under), a null budget.
    const accepted = [{ temperature: 1 }, { top_p: 0.95 }, { tools: [SEARCH_TOOL], tool_choice: { type: 'auto' } }, { max_tokens: 100 }, { thinking: { type: 'adaptive', budget_tokens: null } }, { output_config: { effort: 'max' } }];
    for (const over of accepted) expect((await json(adapt('hi', { stream: false, ...over }))).status).toBe(200);
    expect(emulator.stats()).toMatchObject({ invalid: cases.length, completed: accepted.length });
  });

  it('continues a tool loop with its thinking block passed back (one made with thinking enabled too); refuses it altered, or missing before the tool_use', async () => {
    const first = await json(adapt(QUESTION.content, { stream: false, tools: [SEARCH_TOOL] }));
    expect(first.body.content.map((b: { type: string }) => b.type)).toEqual(['thinking', 'tool_use']);
    const [thinking, call] = first.body.content as Record<string, any>[];
    const ok = await json(loop([thinking!, call!]));
    expect(ok.status).toBe(200);
    expect(ok.body.content.map((b: { type: string }) => b.type)).toEqual(['thinking', 'text']);
    expect(ok.body.content[1].text).toContain('Panels got cheaper');
    // The tool result is in: the thinking says so.
    expect(ok.body.content[0].thinking).toMatch(/^The tool result is in/);
    const enabled = await json(ask(QUESTION.content, { stream: false, max_tokens: 2048, thinking: { type: 'enabled', budget_tokens: 1024 }, tools: [SEARCH_TOOL] }));
    expect((await json(loop(enabled.body.content))).status).toBe(200);
    expect(await json(loop([{ ...thinking, thinking: `${thinking!.thinking} Edited.` }, call!]))).toEqual(refused('messages.1.content.0: Invalid `signature` in `thinking` block'));
    expect(await json(loop([call!]))).toEqual(
      refused(`messages.1.content.0.type: Expected \`thinking\` or \`redacted_thinking\`, but found \`tool_use\`. When \`thinking\` is enabled, a final \`assistant\` message must start with a thinking block (preceeding the lastmost set of \`tool_use\` and \`tool_result\` blocks). We recommend you include thinking blocks from previous turns. To avoid this requirement, disable \`thinking\`. Please consult our documentation at ${DOCS}`),
    );
    // The passed-back thinking of the loop is billed as input, as with thinking enabled.
    const off = await json(loop([thinking!, call!], { thinking: { type: 'disabled' }, output_config: undefined }));
    expect(ok.body.usage.input_tokens - off.body.usage.input_tokens).toBe(countTokens(thinking!.thinking));
  });

  it('redacted_thinking: the adaptive thinking comes as one redacted_thinking block, and verifies passed back', async () => {
    const first = await json(adapt(QUESTION.content, { stream: false, tools: [SEARCH_TOOL], model: 'claude-emulated+redacted_thinking' }));
    expect(first.body.content).toEqual([{ type: 'redacted_thinking', data: expect.stringMatching(BASE64) }, expect.objectContaining({ type: 'tool_use' })]);
    expect((await json(loop(first.body.content))).status).toBe(200);
  });

  it('caches by the thinking: the same effort reads the prefix back, another effort or enabled thinking is another prefix', async () => {
    emulator.configure({ cacheMinTokens: 0 });
    const first = await json(adapt(QUESTION.content, { stream: false, tools: [SEARCH_TOOL] }));
    const [thinking, call] = first.body.content as Record<string, any>[];
    const marked = (over: Record<string, unknown> = {}) => {
      const body = loop([thinking!, call!], over) as { messages: { content: unknown }[] };
      body.messages[2]!.content = [{ type: 'tool_result', tool_use_id: call!.id, content: 'Panels got cheaper again this year.', cache_control: { type: 'ephemeral' } }];
      return json(body);
    };
    const written = (await marked()).body.usage;
    expect(written.cache_creation_input_tokens).toBeGreaterThan(countTokens(thinking!.thinking));
    // Absent, the effort is high: the same prefix.
    expect((await marked({ output_config: undefined })).body.usage).toMatchObject({ cache_read_input_tokens: written.cache_creation_input_tokens, cache_creation_input_tokens: 0 });
    expect((await marked({ output_config: { effort: 'low' } })).body.usage).toMatchObject({ cache_read_input_tokens: 0 });
    expect((await marked({ thinking: { type: 'enabled', budget_tokens: 1024 }, output_config: undefined })).body.usage).toMatchObject({ cache_read_input_tokens: 0 });
  });

  it('takes clear_thinking_20251015 with adaptive thinking (its beta asked for)', async () => {
    const beta = { ...HEADERS, 'anthropic-beta': 'context-management-2025-06-27' };
    const { status, body } = await json(adapt('How do libraries plan opening hours?', { stream: false, context_management: { edits: [{ type: 'clear_thinking_20251015', keep: 'all' }] } }), beta);
    expect(status).toBe(200);
    expect(body.content.map((b: { type: string }) => b.type)).toEqual(['thinking', 'text']);
    expect(body.context_management).toEqual({ applied_edits: [] });
  });

  it('through Anthropic\'s SDK: Claude Code\'s adaptive thinking and effort, streamed; effort max without thinking is a BadRequestError', async () => {
    const sdk = new Anthropic({ apiKey: 'test-key', baseURL: emulator.url, maxRetries: 0 });
    const params = {
      model: 'claude-emulated', max_tokens: 4096, messages: [{ role: 'user' as const, content: 'How do libraries plan opening hours?' }],
      // The SDK's adaptive thinking has no budget_tokens: Claude Code sends it anyway.
      thinking: { type: 'adaptive', budget_tokens: 0 } as Anthropic.ThinkingConfigParam,
      output_config: { effort: 'high' as const },
    };
    const stream = sdk.messages.stream(params);
    let thought = '';
    stream.on('thinking', (delta) => (thought += delta));
    const message = await stream.finalMessage();
    expect(message.content.map((b) => b.type)).toEqual(['thinking', 'text']);
    expect(message.content[0]).toEqual({ type: 'thinking', thinking: thought, signature: expect.stringMatching(BASE64) });
    expect(message.usage.output_tokens).toBeGreaterThan(countTokens(thought));
    await expect(sdk.messages.create({ ...params, thinking: { type: 'disabled' }, output_config: { effort: 'max' } })).rejects.toBeInstanceOf(Anthropic.BadRequestError);
  });
});

describe('POST /v1/messages with structured output (output_config.format)', () => {
  const SCHEMA = { type: 'object', properties: { city: { type: 'string' }, population: { type: 'integer' }, coastal: { type: 'boolean' } }, required: ['city', 'population', 'coastal'], additionalProperties: false };
  const shaped = (over: Record<string, unknown> = {}) => ask('Name a large city.', { stream: false, output_config: { format: { type: 'json_schema', schema: SCHEMA } }, ...over });

  it('answers text that is JSON fitting the schema, streamed or not, beside an effort or thinking', async () => {
    for (const over of [{}, { output_config: { effort: 'low', format: { type: 'json_schema', schema: SCHEMA } } }]) {
      const res = await post(shaped(over));
      expect(res.status).toBe(200);
      const body = (await res.json()) as { content: { type: string; text: string }[] };
      const value = JSON.parse(body.content[0]!.text) as Record<string, unknown>;
      expect(Object.keys(value).sort()).toEqual(['city', 'coastal', 'population']);
      expect([typeof value['city'], typeof value['population'], typeof value['coastal']]).toEqual(['string', 'number', 'boolean']);
    }
    const streamed = await events(await post(shaped({ stream: true })));
    const text = streamed.filter((e) => e.type === 'content_block_delta').map((e) => e.delta.text ?? '').join('');
    expect(Object.keys(JSON.parse(text) as object).sort()).toEqual(['city', 'coastal', 'population']);
    const thought = (await (await post(shaped({ max_tokens: 4096, thinking: { type: 'adaptive' } }))).json()) as { content: { type: string; text?: string }[] };
    expect(thought.content.map((b) => b.type)).toEqual(['thinking', 'text']);
    expect(Object.keys(JSON.parse(thought.content[1]!.text!) as object)).toContain('city');
  });

  it('refuses a format that is not a JSON schema, in Anthropic\'s words', async () => {
    const refusal = async (format: unknown) => {
      const res = await post(ask('hi', { stream: false, output_config: { format } }));
      expect(res.status).toBe(400);
      return ((await res.json()) as { error: { message: string } }).error.message;
    };
    expect(await refusal({ type: 'json_object' })).toBe("output_config.format.type: Input should be 'json_schema'");
    expect(await refusal({ type: 'json_schema' })).toBe('output_config.format.schema: Field required');
    expect(await refusal({ type: 'json_schema', schema: 'object' })).toBe('output_config.format.schema: Input should be a valid dictionary or object to extract fields from');
    expect(await refusal({ type: 'json_schema', schema: SCHEMA, name: 'city' })).toBe('output_config.format.name: Extra inputs are not permitted');
    expect(await refusal('json')).toBe('output_config.format: Input should be a valid dictionary or object to extract fields from');
  });
});

describe('POST /v1/messages metadata', () => {
  it('counts a named end user (metadata.user_id) in stats.users; refuses another key or a long id as Anthropic does', async () => {
    const before = emulator.stats().users;
    expect((await post(ask('hi', { stream: false, metadata: { user_id: 'user-42' } }))).status).toBe(200);
    expect((await post(ask('hi', { stream: false, metadata: {} }))).status).toBe(200);
    expect(emulator.stats().users).toBe(before + 1);
    for (const metadata of [{ team: 'x' }, { user_id: 'u'.repeat(257) }]) {
      const res = await post(ask('hi', { stream: false, metadata }));
      expect(res.status).toBe(400);
      expect(((await res.json()) as { error: { type: string } }).error.type).toBe('invalid_request_error');
    }
  });
});

describe('POST /v1/messages with images', () => {
  const base64 = (type: ImageMediaType, width: number, height: number, bytes = minimalImage(type, width, height)) => ({
    type: 'image', source: { type: 'base64', media_type: type, data: bytes.toString('base64') },
  });
  const url = (href: string) => ({ type: 'image', source: { type: 'url', url: href } });
  const question = { type: 'text', text: 'What is in this picture?' };
  const send = async (blocks: unknown[], messages?: unknown[]) => {
    const res = await post(ask('', { stream: false, messages: messages ?? [{ role: 'user', content: [question, ...blocks] }] }));
    return { status: res.status, body: (await res.json()) as { usage: { input_tokens: number }; error: { type: string; message: string } } };
  };

  it('bills each image as Anthropic does (base64 by the size in its header, a URL as 512×512) and counts it in stats.images', async () => {
    const text = await send([]);
    expect(text.status).toBe(200);
    const seen = await send([
      base64('image/png', 1000, 1000), // ceil(1,000,000 / 750) = 1334
      base64('image/jpeg', 2000, 1000), // 1568×784, over 1.15 MP → 1516×758: ceil(1,149,128 / 750) = 1533
      base64('image/gif', 100, 50), // ceil(5,000 / 750) = 7
      base64('image/webp', 800, 600), // ceil(480,000 / 750) = 640
      url('https://images.example.com/cat.png'), // ceil(262,144 / 750) = 350
    ]);
    expect(seen.status).toBe(200);
    expect(seen.body.usage.input_tokens).toBe(text.body.usage.input_tokens + 1334 + 1533 + 7 + 640 + 350);
    // A turn of images alone is a message of its own.
    const alone = await send([], [{ role: 'user', content: [base64('image/png', 1000, 1000)] }]);
    expect(alone.status).toBe(200);
    expect(emulator.stats()).toMatchObject({ completed: 3, images: 6 });
  });

  it('takes images through Anthropic\'s SDK, the answer unchanged by them', async () => {
    const sdk = new Anthropic({ apiKey: 'test-key', baseURL: emulator.url, maxRetries: 0 });
    // The Messages API has no seed: the same emulator seed before each call, the same draw of the answer.
    const create = (content: Anthropic.ContentBlockParam[]) => {
      emulator.configure({ seed: 42 });
      return sdk.messages.create({ model: 'claude-emulated', max_tokens: 200, system: 'You are the Reporter.', messages: [{ role: 'user', content }] });
    };
    const plain = await create([{ type: 'text', text: 'Describe the chart' }]);
    const seen = await create([
      { type: 'text', text: 'Describe the chart' },
      { type: 'image', source: { type: 'base64', media_type: 'image/png', data: minimalImage('image/png', 1000, 1000).toString('base64') } },
      { type: 'image', source: { type: 'url', url: 'https://images.example.com/chart.png' } },
    ]);
    expect(seen.content).toEqual(plain.content);
    expect(seen.usage.input_tokens).toBe(plain.usage.input_tokens + 1334 + 350);
    await expect(create([{ type: 'image', source: { type: 'url', url: 'https://cdn.example.invalid/chart.png' } }])).rejects.toBeInstanceOf(Anthropic.BadRequestError);
  });

  it('refuses as Anthropic does: another media type, bytes of another type than declared or of none, a URL it cannot download, an image outside a user turn', async () => {
    const refused = (message: string) => ({ status: 400, body: { type: 'error', error: { type: 'invalid_request_error', message }, request_id: expect.any(String) } });
    expect(await send([base64('image/bmp' as ImageMediaType, 10, 10, minimalImage('image/png', 10, 10))])).toEqual(
      refused("messages.0.content.1.image.source.base64.media_type: Input should be 'image/jpeg', 'image/png', 'image/gif' or 'image/webp'"),
    );
    expect(await send([base64('image/png', 10, 10, minimalImage('image/jpeg', 10, 10))])).toEqual(
      refused('messages.0.content.1.image.source.base64: The image was specified using the image/png media type, but the image appears to be a image/jpeg image'),
    );
    expect(await send([base64('image/png', 10, 10, Buffer.from('not an image'))])).toEqual(refused('Could not process image'));
    expect(await send([question, base64('image/png', 9000, 100)])).toEqual(
      refused('messages.0.content.2.image.source.base64.data: At least one of the image dimensions exceed max allowed size: 8000 pixels'),
    );
    expect(await send([url('https://images.example.invalid/cat.png')])).toEqual(refused('Unable to download the file. Please verify the URL and try again.'));
    expect(await send([{ type: 'image', source: { type: 'file', file_id: 'file_1' } }])).toEqual(
      refused("messages.0.content.1.image.source: Input tag 'file' found using 'type' does not match any of the expected tags: 'base64', 'url'"),
    );
    expect(await send([], [{ role: 'user', content: 'Draw a cat' }, { role: 'assistant', content: [url('https://images.example.com/cat.png')] }])).toEqual(
      refused('messages.1.content.0: image content blocks are only allowed in user messages'),
    );
    expect(emulator.stats()).toMatchObject({ requests: 7, invalid: 7, images: 0 });
  });
});

describe('POST /v1/messages through the official Anthropic SDK', () => {
  const sdk = () => new Anthropic({ apiKey: 'test-key', baseURL: emulator.url, maxRetries: 0 });
  const params = (text: string, over: Record<string, unknown> = {}) => ({
    model: 'claude-emulated', max_tokens: 200, system: 'You are the Reporter.', messages: [{ role: 'user' as const, content: text }], ...over,
  });

  it('assembles a streamed text answer and its usage', async () => {
    const stream = sdk().messages.stream(params('How do libraries plan opening hours?'));
    let streamed = '';
    stream.on('text', (t) => (streamed += t));
    const message = await stream.finalMessage();
    expect(message.stop_reason).toBe('end_turn');
    expect(message.content).toHaveLength(1);
    const block = message.content[0]!;
    expect(block.type).toBe('text');
    expect(block.type === 'text' && block.text).toBe(streamed);
    expect(streamed).toMatch(/^Final answer:/);
    expect(message.usage.input_tokens).toBeGreaterThan(5);
    expect(message.usage.output_tokens).toBeGreaterThan(0);
  });

  it('assembles a streamed tool_use block with its parsed input, and parallel ones (one with disable_parallel_tool_use)', async () => {
    const tools = [{ name: 'search_web', description: 'Search the web', input_schema: { type: 'object' as const, properties: { query: { type: 'string' } } } }];
    const one = await sdk().messages.stream(params('Search the latest news about solar power', { tools })).finalMessage();
    expect(one.stop_reason).toBe('tool_use');
    expect(one.content).toEqual([{ type: 'tool_use', id: expect.stringMatching(/^toolu_/), name: 'search_web', input: { query: expect.stringMatching(/solar/) } }]);
    const two = await sdk().messages.stream(params('Search the latest news about solar power', { tools, model: 'claude-emulated+parallel_tool_calls' })).finalMessage();
    expect(two.content.map((b) => b.type)).toEqual(['tool_use', 'tool_use']);
    const single = await sdk().messages.stream(params('Search the latest news about solar power', {
      tools, model: 'claude-emulated+parallel_tool_calls', tool_choice: { type: 'auto', disable_parallel_tool_use: true },
    })).finalMessage();
    expect(single.content.map((b) => b.type)).toEqual(['tool_use']);
  });

  it('answers a non-streamed create with one `message`: text or tool_use blocks, stop_reason, usage', async () => {
    const text = await sdk().messages.create(params('How do libraries plan opening hours?'));
    expect(text).toMatchObject({ type: 'message', role: 'assistant', model: 'claude-emulated', stop_reason: 'end_turn', stop_sequence: null });
    expect(text.id).toMatch(/^msg_/);
    expect(text.content).toEqual([{ type: 'text', text: expect.stringMatching(/^Final answer:/) }]);
    expect(text.usage.input_tokens).toBeGreaterThan(5);
    expect(text.usage.output_tokens).toBeGreaterThan(0);
    const tools = [{ name: 'search_web', description: 'Search the web', input_schema: { type: 'object' as const, properties: { query: { type: 'string' } } } }];
    const call = await sdk().messages.create(params('Search the latest news about solar power', { tools }));
    expect(call.stop_reason).toBe('tool_use');
    expect(call.content).toEqual([{ type: 'tool_use', id: expect.stringMatching(/^toolu_/), name: 'search_web', input: { query: expect.stringMatching(/solar/) } }]);
    expect(emulator.stats().byMode).toEqual({ stream: 0, whole: 2 });
  });

  it('streams extended thinking: the final message starts with a thinking block and its signature; passed back as it came, the tool loop goes on', async () => {
    const tools = [{ name: 'search_web', description: 'Search the web', input_schema: { type: 'object' as const, properties: { query: { type: 'string' } } } }];
    const base = { model: 'claude-emulated', max_tokens: 2048, thinking: { type: 'enabled' as const, budget_tokens: 1024 }, tools };
    const question = { role: 'user' as const, content: 'Search the latest news about solar power' };
    const stream = sdk().messages.stream({ ...base, messages: [question] });
    let thought = '';
    stream.on('thinking', (delta) => (thought += delta));
    const call = await stream.finalMessage();
    expect(call.content.map((b) => b.type)).toEqual(['thinking', 'tool_use']);
    const [thinking, use] = call.content;
    expect(thinking).toEqual({ type: 'thinking', thinking: thought, signature: expect.stringMatching(/^[A-Za-z0-9+/]+=*$/) });
    const result = { role: 'user' as const, content: [{ type: 'tool_result' as const, tool_use_id: use!.type === 'tool_use' ? use!.id : '', content: 'Panels got cheaper again this year.' }] };
    const next = await sdk().messages.create({ ...base, messages: [question, { role: 'assistant', content: call.content }, result] });
    expect(next.content.map((b) => b.type)).toEqual(['thinking', 'text']);
    await expect(sdk().messages.create({ ...base, messages: [question, { role: 'assistant', content: [use!] }, result] })).rejects.toBeInstanceOf(Anthropic.BadRequestError);
  });

  it('raises the SDK\'s errors: RateLimitError (429), an APIError of status 529, an error event inside a stream', async () => {
    emulator.configure({ rpm: 1 });
    await sdk().messages.create(params('one'));
    await expect(sdk().messages.create(params('two'))).rejects.toBeInstanceOf(Anthropic.RateLimitError);
    emulator.configure({ rpm: 0 });
    emulator.reset();
    await expect(sdk().messages.create(params('hi', { model: 'claude-emulated+overloaded' }))).rejects.toMatchObject({ status: 529, error: { error: { type: 'overloaded_error' } } });
    const broken = sdk().messages.stream(params('How do libraries plan opening hours?', { model: 'claude-emulated+stream_error' }));
    await expect(broken.finalMessage()).rejects.toThrow(/Overloaded/);
  });
});
