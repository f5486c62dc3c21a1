import type { Redis } from '@agent-mesh/common';
import type { ChatRequestBody } from '../upstream/openai';
import { ResponseCache } from './response-cache';

const cache = (upstream = 'https://llm.example/v1') =>
  new ResponseCache({} as Redis, { prefix: 'p', upstream, ttlMs: 1000, staleMs: 1000, lockMs: 1000, waitMs: 1000 });
const body = (over: Partial<ChatRequestBody> = {}): ChatRequestBody => ({
  model: 'm',
  messages: [{ role: 'system', content: 'You are the Planner.' }, { role: 'user', content: 'q' }],
  max_tokens: 100,
  tools: [{ type: 'function', function: { name: 'search_web', parameters: { type: 'object' } } }],
  temperature: 0,
  ...over,
});

describe('response cache keys', () => {
  it('are equal for the same request, whatever the order of keys in its JSON', () => {
    const reordered = body({ tools: [{ function: { parameters: { type: 'object' }, name: 'search_web' }, type: 'function' }] });
    expect(cache().keyOf(body())).toBe(cache().keyOf(reordered));
    expect(cache().keyOf(body())).toMatch(/^p:[0-9a-f]{64}$/);
  });

  it('differ by everything that decides the answer: upstream, model, messages, tools, max_tokens, temperature', () => {
    const base = cache().keyOf(body());
    const variants = [
      cache('https://other.example/v1').keyOf(body()),
      cache().keyOf(body({ model: 'm2' })),
      cache().keyOf(body({ messages: [{ role: 'system', content: 'You are the Planner.' }, { role: 'user', content: 'q?' }] })),
      cache().keyOf(body({ messages: [{ role: 'user', content: 'You are the Planner.' }, { role: 'user', content: 'q' }] })),
      cache().keyOf(body({ tools: undefined })),
      cache().keyOf(body({ max_tokens: 101 })),
      cache().keyOf(body({ temperature: 0.5 })),
      cache().keyOf(body({ temperature: undefined })),
    ];
    expect(new Set([base, ...variants]).size).toBe(variants.length + 1);
  });
});
