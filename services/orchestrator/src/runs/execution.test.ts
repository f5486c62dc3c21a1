import { plusUsage, emptyUsage } from '../pipeline/types';
import { runCost } from './execution';

const prices = { pricePer1kPrompt: 0.5, pricePer1kCompletion: 1.5, pricePer1kCacheRead: 0.05, pricePer1kCacheWrite: 0.625, pricePer1kCacheWrite1h: 1 };

describe('runCost', () => {
  it('prices the prompt tokens the provider\'s cache read or wrote at their own prices, the rest of the prompt and the completion at theirs', () => {
    // 10,000 prompt tokens of which 8,000 read and 1,000 written, 500 completion tokens.
    expect(runCost(prices, { promptTokens: 10_000, completionTokens: 500, totalTokens: 10_500, cacheReadTokens: 8_000, cacheWriteTokens: 1_000 })).toBe(0.5 + 0.4 + 0.625 + 0.75);
    expect(runCost(prices, { promptTokens: 10_000, completionTokens: 500, totalTokens: 10_500 })).toBe(5 + 0.75);
    // Of the 1,000 written, 400 to be kept an hour: at the hour's price.
    expect(runCost(prices, { promptTokens: 10_000, completionTokens: 500, totalTokens: 10_500, cacheReadTokens: 8_000, cacheWriteTokens: 1_000, cacheWrite1hTokens: 400 })).toBe(0.5 + 0.4 + 0.375 + 0.4 + 0.75);
  });

  it('sums the calls\' cache counts into the run\'s usage, and adds none where no call had any', () => {
    const calls = [
      { promptTokens: 2_000, completionTokens: 100, totalTokens: 2_100, cacheWriteTokens: 1_500, cacheWrite1hTokens: 1_000 },
      { promptTokens: 2_100, completionTokens: 100, totalTokens: 2_200, cacheReadTokens: 1_500 },
      { promptTokens: 300, completionTokens: 50, totalTokens: 350 },
    ];
    const run = calls.reduce(plusUsage, emptyUsage());
    expect(run).toEqual({ promptTokens: 4_400, completionTokens: 250, totalTokens: 4_650, cacheReadTokens: 1_500, cacheWriteTokens: 1_500, cacheWrite1hTokens: 1_000 });
    expect(runCost(prices, run)).toBe((1_400 * 0.5 + 1_500 * 0.05 + 500 * 0.625 + 1_000 * 1 + 250 * 1.5) / 1000);
    expect([calls[2]!].reduce(plusUsage, emptyUsage())).toEqual({ promptTokens: 300, completionTokens: 50, totalTokens: 350 });
  });
});
