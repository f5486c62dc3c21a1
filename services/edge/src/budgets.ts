// Per-user token budgets as the edge applies them: checked before a run or a /v1 call starts
// (routes marked `spends`), refused with 429 naming the budget and its reset time; the broker
// charges what each upstream call cost (common/src/quota/budget.ts).
import type { BudgetDecision, BudgetWindow } from '@agent-mesh/common';
import { HttpError } from './errors';

export interface UserBudgets {
  check(userId: string): Promise<BudgetDecision>;
  usage(userId: string): Promise<BudgetWindow[]>;
  /** Today's largest per-user totals (amounts only), for the metrics. */
  topSpenders?(count: number): Promise<number[]>;
}

/** No budgets (tests of other parts, or an edge without Redis). */
export const unlimitedBudgets: UserBudgets = {
  check: async () => ({ ok: true }),
  usage: async () => [],
};

const NAMES = { day: 'daily', minute: 'per-minute' } as const;

/** The 429 of a refused check: which budget, how much, and when it resets. */
export function overBudget(d: Extract<BudgetDecision, { ok: false }>): HttpError {
  const w = d.window;
  const resetsAt = new Date(w.resetsAtMs).toISOString();
  return new HttpError(
    429,
    'budget_exceeded',
    `your ${NAMES[w.budget]} token budget is used up (${w.used} of ${w.limit} tokens); it resets at ${resetsAt}`,
    Math.max(1, Math.ceil(d.retryAfterMs / 1000)),
    { budget: { name: w.budget, limit: w.limit, used: w.used, resetsAt } },
  );
}
