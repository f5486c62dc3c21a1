import { candidatesFor, passOver } from './routing';

const ups = [
  { name: 'a', models: ['gpt-4o-mini', 'gpt-4o'] },
  { name: 'b', models: ['claude-haiku-4-5'] },
  { name: 'c', models: ['gpt-4o'] },
];
const names = (c: { upstream: { name: string }; model: string }[]) => c.map((x) => `${x.upstream.name}:${x.model}`);

describe('candidatesFor', () => {
  it('a call naming no model may go to every upstream, in order, each with its default model', () => {
    expect(names(candidatesFor(ups, ''))).toEqual(['a:gpt-4o-mini', 'b:claude-haiku-4-5', 'c:gpt-4o']);
  });

  it('a named model goes to the upstreams that list it, in order', () => {
    expect(names(candidatesFor(ups, 'gpt-4o'))).toEqual(['a:gpt-4o', 'c:gpt-4o']);
    expect(names(candidatesFor(ups, 'claude-haiku-4-5'))).toEqual(['b:claude-haiku-4-5']);
  });

  it('a model no upstream lists goes to the first alone, which passes the name on', () => {
    expect(names(candidatesFor(ups, 'emulator-1+stream_error'))).toEqual(['a:emulator-1+stream_error']);
  });
});

describe('passOver', () => {
  const now = 1_000_000;
  it('passes an open breaker over whatever the deadline', () => {
    expect(passOver({ breakerOpen: true, estimatedWaitMs: 0 }, undefined, now)).toBe('breaker_open');
  });
  it('passes a queue over when its estimated wait ends after the deadline, not at or before it', () => {
    expect(passOver({ breakerOpen: false, estimatedWaitMs: 5_001 }, now + 5_000, now)).toBe('queue_wait');
    expect(passOver({ breakerOpen: false, estimatedWaitMs: 5_000 }, now + 5_000, now)).toBeUndefined();
    expect(passOver({ breakerOpen: false, estimatedWaitMs: 60_000 }, undefined, now)).toBeUndefined();
  });
});
