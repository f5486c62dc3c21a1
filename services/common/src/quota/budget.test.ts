import { parseBudgetOverrides, windows } from './budget';

describe('token budget windows and overrides', () => {
  test('a UTC day and a minute', () => {
    const now = Date.UTC(2026, 10, 30, 15, 47, 12, 345);
    const w = windows(now);
    expect(w.day).toEqual({ start: Date.UTC(2026, 10, 30), end: Date.UTC(2026, 11, 1) });
    expect(w.minute).toEqual({ start: Date.UTC(2026, 10, 30, 15, 47), end: Date.UTC(2026, 10, 30, 15, 48) });
  });

  test('USER_BUDGETS parsing: per-user fields, refusing anything else', () => {
    expect(parseBudgetOverrides('')).toEqual({});
    expect(parseBudgetOverrides('{"alice":{"perDay":5000},"bob":{"perDay":0,"perMinute":100}}')).toEqual({ alice: { perDay: 5000 }, bob: { perDay: 0, perMinute: 100 } });
    expect(() => parseBudgetOverrides('[]')).toThrow(/JSON object/);
    expect(() => parseBudgetOverrides('{"alice":5}')).toThrow(/alice/);
    expect(() => parseBudgetOverrides('{"alice":{"perWeek":5}}')).toThrow(/unknown field perWeek/);
    expect(() => parseBudgetOverrides('{"alice":{"perDay":-1}}')).toThrow(/integer >= 0/);
    expect(() => parseBudgetOverrides('{"alice":{"perDay":1.5}}')).toThrow(/integer >= 0/);
  });
});
