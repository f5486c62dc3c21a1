// The conversation's earlier turns that fit the agents' history budget, newest kept first.
import type { HistoryTurn, StoredMessage } from './types';

/** ≈4 characters per token: close enough for a budget, and free (no tokenizer on the hot path). */
export function estimateTokens(text: string): number {
  return Math.ceil(text.length / 4);
}

/**
 * Keeps the user's messages and the Reporter's answers of other runs (the intermediate agents'
 * outputs would spend the budget on drafts), newest first until the budget is spent.
 */
export function historyWithinBudget(messages: readonly StoredMessage[], currentRunId: string, budgetTokens: number): HistoryTurn[] {
  const turns: HistoryTurn[] = [];
  let spent = 0;
  for (let i = messages.length - 1; i >= 0; i--) {
    const m = messages[i];
    if (!m || m.runId === currentRunId) continue;
    const isUser = m.role === 'user';
    if (!isUser && m.agent !== 'reporter') continue;
    const cost = estimateTokens(m.content);
    if (spent + cost > budgetTokens) break;
    spent += cost;
    turns.unshift({ role: isUser ? 'user' : 'assistant', content: m.content });
  }
  return turns;
}
