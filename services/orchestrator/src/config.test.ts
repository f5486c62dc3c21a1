import { loadConfig } from './config';

describe('loadConfig: LLM call policy per role', () => {
  it('by default the Planner and the Critic run at temperature 0 with the response cache, the others at the provider\'s default without', () => {
    expect(loadConfig({}).agentCalls).toEqual({
      planner: { temperature: 0, cache: true },
      critic: { temperature: 0, cache: true },
      host: { cache: false },
      reporter: { cache: false },
    });
  });

  it('the cache follows the temperatures unless AGENT_CACHE_ROLES says otherwise', () => {
    expect(loadConfig({ AGENT_TEMPERATURES: 'host=0,planner=0.7' }).agentCalls).toEqual({
      planner: { temperature: 0.7, cache: false },
      critic: { cache: false },
      host: { temperature: 0, cache: true },
      reporter: { cache: false },
    });
    expect(loadConfig({ AGENT_CACHE_ROLES: 'none' }).agentCalls.planner).toEqual({ temperature: 0, cache: false });
    expect(loadConfig({ AGENT_CACHE_ROLES: 'Reporter, host' }).agentCalls).toMatchObject({ planner: { cache: false }, host: { cache: true }, reporter: { cache: true } });
  });

  it('names a bad value', () => {
    expect(() => loadConfig({ AGENT_TEMPERATURES: 'planner=3' })).toThrow(/AGENT_TEMPERATURES/);
    expect(() => loadConfig({ AGENT_TEMPERATURES: 'judge=0' })).toThrow(/AGENT_TEMPERATURES: unknown role "judge"/);
    expect(() => loadConfig({ AGENT_CACHE_ROLES: 'planner,everyone' })).toThrow(/AGENT_CACHE_ROLES: unknown role "everyone"/);
    expect(() => loadConfig({ AGENT_PROMPT_CACHE_TTL: '10m' })).toThrow(/AGENT_PROMPT_CACHE_TTL/);
  });

  it('the agents mark prompt-cache breakpoints kept 5 minutes by default; 1h, or off', () => {
    expect(loadConfig({}).agentPromptCacheTtl).toBe('5m');
    expect(loadConfig({ AGENT_PROMPT_CACHE_TTL: '1h' }).agentPromptCacheTtl).toBe('1h');
    expect(loadConfig({ AGENT_PROMPT_CACHE_TTL: 'off' }).agentPromptCacheTtl).toBeUndefined();
  });
});
