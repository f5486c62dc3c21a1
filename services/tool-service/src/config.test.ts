import { loadConfig } from './config';

describe('loadConfig: the tool limits while Redis is away', () => {
  it('divides by one replica and keeps a departed share free for a minute by default', () => {
    expect(loadConfig({})).toMatchObject({ fallbackReplicas: 1, departedHoldMs: 60_000 });
  });

  it('reads TOOL_FALLBACK_REPLICAS and TOOL_QUOTA_DEPARTED_HOLD_MS, naming a bad value', () => {
    expect(loadConfig({ TOOL_FALLBACK_REPLICAS: '8', TOOL_QUOTA_DEPARTED_HOLD_MS: '0' })).toMatchObject({ fallbackReplicas: 8, departedHoldMs: 0 });
    expect(() => loadConfig({ TOOL_QUOTA_DEPARTED_HOLD_MS: '-1' })).toThrow(/TOOL_QUOTA_DEPARTED_HOLD_MS/);
    expect(() => loadConfig({ TOOL_FALLBACK_REPLICAS: '0' })).toThrow(/TOOL_FALLBACK_REPLICAS/);
  });
});
