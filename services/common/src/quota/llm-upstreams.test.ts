import { GlobalLimiter } from './limiter';
import { llmPauseKeys, llmQuotaKeyPrefixes } from './llm-upstreams';

describe('the quota keys of LLM_UPSTREAMS', () => {
  it('the first upstream on mesh:llm, the others on their own, an explicit quotaKey as given; none listed: the single upstream\'s', () => {
    expect(llmQuotaKeyPrefixes('')).toEqual(['mesh:llm']);
    expect(llmQuotaKeyPrefixes(JSON.stringify([{ name: 'a', baseUrl: 'x', models: ['m'] }, { name: 'b' }, { name: 'c', quotaKey: 'q:c' }]))).toEqual([
      'mesh:llm', 'mesh:llm:upstream:b', 'q:c',
    ]);
    expect(llmPauseKeys(JSON.stringify([{ name: 'a' }, { name: 'b' }]))).toEqual([GlobalLimiter.pauseKey('mesh:llm'), GlobalLimiter.pauseKey('mesh:llm:upstream:b')]);
    expect(llmPauseKeys('')).toEqual(['{mesh:llm}:pause']);
  });

  it('names what it cannot read', () => {
    expect(() => llmQuotaKeyPrefixes('[{')).toThrow('LLM_UPSTREAMS: must be a JSON list of upstreams');
    expect(() => llmQuotaKeyPrefixes('[]')).toThrow('LLM_UPSTREAMS: must be a non-empty JSON list of upstreams');
    expect(() => llmQuotaKeyPrefixes('[1]')).toThrow('LLM_UPSTREAMS: entry 0 must be an object');
    expect(() => llmQuotaKeyPrefixes('[{"models":["m"]}]')).toThrow('LLM_UPSTREAMS: entry 0: "name" is required');
    expect(() => llmQuotaKeyPrefixes('[{"name":"a","quotaKey":""}]')).toThrow('LLM_UPSTREAMS: a: "quotaKey" must be a non-empty string');
  });
});
