// calculator: arithmetic through a parsed, allow-listed expression tree (never eval).
import { calculate, CalculatorError, MAX_EXPRESSION_LENGTH } from '../calculator/safe-math';
import { definePlugin, ToolInputError } from './contract';

export function calculator() {
  return definePlugin<{ expression: string }>({
    name: 'calculator',
    description:
      'Evaluate an arithmetic expression: + - * / ^ % !, parentheses, sqrt, cbrt, abs, exp, log, log10, log2, sin, cos, tan and their inverses, round, floor, ceil, min, max, mean, median, sum, gcd, lcm, and the constants pi, e, tau, phi.',
    parameters: {
      type: 'object',
      properties: {
        expression: { type: 'string', minLength: 1, maxLength: MAX_EXPRESSION_LENGTH, description: 'The expression, e.g. "(2 + 3) * sqrt(16)".' },
      },
      required: ['expression'],
      additionalProperties: false,
    },
    rateLimit: { maxConcurrent: 200, maxPerMinute: 3_000, timeoutMs: 2_000 },
    cache: { enabled: true, ttlSeconds: 3_600, keyStrategy: 'params' },
    async execute({ expression }) {
      try {
        return { expression, value: calculate(expression) };
      } catch (err) {
        if (err instanceof CalculatorError) throw new ToolInputError(err.message);
        throw err;
      }
    },
    async fallback() {
      return undefined;
    },
  });
}
