import { createHash } from 'node:crypto';
import type { Redis } from '@agent-mesh/common';
import type { ProviderRequest } from '../upstream/provider';
import { ResponseCache } from './response-cache';

const cache = () => new ResponseCache({} as Redis, { prefix: 'p', ttlMs: 1000, staleMs: 1000, lockMs: 1000, waitMs: 1000 });
const UPSTREAM = 'openai https://llm.example/v1';
const req = (over: Partial<ProviderRequest> = {}): ProviderRequest => ({
  model: 'm',
  messages: [{ role: 'system', content: 'You are the Planner.' }, { role: 'user', content: 'q' }],
  maxTokens: 100,
  tools: [{ name: 'search_web', description: '', parametersJsonSchema: '{"type":"object"}' }],
  temperature: 0,
  ...over,
});

describe('response cache keys', () => {
  it('are equal for the same request, whatever the order of keys in its objects', () => {
    const reordered = req({ messages: [{ content: 'You are the Planner.', role: 'system' }, { content: 'q', role: 'user' }] });
    expect(cache().keyOf(UPSTREAM, req())).toBe(cache().keyOf(UPSTREAM, reordered));
    expect(cache().keyOf(UPSTREAM, req())).toMatch(/^p:[0-9a-f]{64}$/);
  });

  it('of a call without a tool choice are what they were before tool_choice existed (no entry is lost to it)', () => {
    // sha256 of the canonical JSON of { upstream, model, messages, tools, maxTokens, temperature }.
    expect(cache().keyOf(UPSTREAM, req())).toBe('p:' + createHash('sha256').update(JSON.stringify({
      maxTokens: 100, messages: [{ content: 'You are the Planner.', role: 'system' }, { content: 'q', role: 'user' }], model: 'm', temperature: 0,
      tools: [{ description: '', name: 'search_web', parametersJsonSchema: '{"type":"object"}' }], upstream: UPSTREAM,
    })).digest('hex'));
  });

  it('differ by everything that decides the answer: upstream, model, messages, images, tools, tool_choice, max_tokens, temperature, stop, top_p, seed, penalties, response_format, parallel_tool_calls, logprobs, reasoning_effort, logit_bias, verbosity; not by the end user\'s name (users share answers)', () => {
    const base = cache().keyOf(UPSTREAM, req());
    const variants = [
      cache().keyOf('anthropic https://llm.example/v1', req()),
      cache().keyOf(UPSTREAM, req({ model: 'm2' })),
      cache().keyOf(UPSTREAM, req({ messages: [{ role: 'system', content: 'You are the Planner.' }, { role: 'user', content: 'q?' }] })),
      cache().keyOf(UPSTREAM, req({ messages: [{ role: 'user', content: 'You are the Planner.' }, { role: 'user', content: 'q' }] })),
      cache().keyOf(UPSTREAM, req({ tools: [] })),
      cache().keyOf(UPSTREAM, req({ maxTokens: 101 })),
      cache().keyOf(UPSTREAM, req({ temperature: 0.5 })),
      cache().keyOf(UPSTREAM, req({ temperature: undefined })),
      cache().keyOf(UPSTREAM, req({ toolChoice: 'none' })),
      cache().keyOf(UPSTREAM, req({ toolChoice: 'required' })),
      cache().keyOf(UPSTREAM, req({ toolChoice: { name: 'search_web' } })),
      cache().keyOf(UPSTREAM, req({ stop: ['END'] })),
      cache().keyOf(UPSTREAM, req({ topP: 0.9 })),
      cache().keyOf(UPSTREAM, req({ seed: 42 })),
      cache().keyOf(UPSTREAM, req({ presencePenalty: 0.5 })),
      cache().keyOf(UPSTREAM, req({ frequencyPenalty: 0.5 })),
      cache().keyOf(UPSTREAM, req({ responseFormat: { type: 'json_object' } })),
      cache().keyOf(UPSTREAM, req({ parallelToolCalls: false })),
      cache().keyOf(UPSTREAM, req({ logprobs: true })),
      cache().keyOf(UPSTREAM, req({ logprobs: true, topLogprobs: 2 })),
      cache().keyOf(UPSTREAM, req({ reasoningEffort: 'high' })),
      cache().keyOf(UPSTREAM, req({ logitBias: { '50256': -100 } })),
      cache().keyOf(UPSTREAM, req({ verbosity: 'low' })),
      cache().keyOf(UPSTREAM, req({ messages: [{ role: 'user', content: 'q', parts: [{ text: 'q', imageUrl: '', imageDetail: '' }, { text: '', imageUrl: 'https://example.com/a.png', imageDetail: '' }] }] })),
    ];
    expect(new Set([base, ...variants]).size).toBe(variants.length + 1);
    expect(cache().keyOf(UPSTREAM, req({ endUser: 'user-42' }))).toBe(base);
    // A hint of where the provider caches the prompt changes no answer.
    expect(cache().keyOf(UPSTREAM, req({ promptCacheKey: 'conversation-7' }))).toBe(base);
  });
});

describe('embeddings in the response cache', () => {
  it('key each input by upstream, model, size and the input itself (a text and its token ids apart)', () => {
    const c = cache();
    const base = c.embeddingKeyOf(UPSTREAM, 'e', 0, 'a text');
    expect(base).toMatch(/^p:emb:[0-9a-f]{64}$/);
    const variants = [
      c.embeddingKeyOf('anthropic https://llm.example/v1', 'e', 0, 'a text'),
      c.embeddingKeyOf(UPSTREAM, 'e2', 0, 'a text'),
      c.embeddingKeyOf(UPSTREAM, 'e', 64, 'a text'),
      c.embeddingKeyOf(UPSTREAM, 'e', 0, 'a text.'),
      c.embeddingKeyOf(UPSTREAM, 'e', 0, [64, 1495]),
      c.embeddingKeyOf(UPSTREAM, 'e', 0, [1495, 64]),
    ];
    expect(new Set([base, ...variants]).size).toBe(variants.length + 1);
    expect(c.embeddingKeyOf(UPSTREAM, 'e', 0, 'a text')).toBe(base);
  });

  it('store a vector with its input\'s tokens and give back the same 32-bit floats; what is not a stored vector is not found', async () => {
    const kept = new Map<string, Buffer>();
    const redis = {
      set: async (k: string, v: Buffer) => void kept.set(k, v),
      getBuffer: async (k: string) => kept.get(k) ?? null,
    } as unknown as Redis;
    const c = new ResponseCache(redis, { prefix: 'p', ttlMs: 1000, staleMs: 1000, lockMs: 1000, waitMs: 1000 });
    const vector = Float32Array.from([0.1, -0.25, 3e-8, 1]);
    await c.putVectors([{ key: 'k1', vector, tokens: 7 }]);
    kept.set('odd', Buffer.from('not a vector, by its length')); // 27 bytes: no whole float32s after the header
    const [found, missing, odd] = await c.getVectors(['k1', 'k2', 'odd']);
    expect(found).toMatchObject({ vector, tokens: 7, fresh: true });
    expect(found!.ageMs).toBeLessThan(1000);
    expect([missing, odd]).toEqual([undefined, undefined]);
  });
});
