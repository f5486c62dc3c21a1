import { parseVerdict } from './verdict';
import { historyWithinBudget } from './history';
import { outputMessageId } from '../runs/ids';
import type { StoredMessage } from './types';

describe('parseVerdict', () => {
  it.each([
    ['Looks fine.\nVERDICT: APPROVE', 'approve', true],
    ['Missing a step.\nVERDICT: REVISE', 'revise', true],
    ['**Verdict:** revise', 'revise', true],
    ['verdict - approved', 'approve', true],
    ['VERDICT: REVISE\n...on reflection\nVERDICT: APPROVE', 'approve', true],
    ['no verdict at all', 'approve', false],
    ['', 'approve', false],
  ])('%j → %s', (text, verdict, explicit) => {
    expect(parseVerdict(text)).toEqual({ verdict, explicit });
  });
});

describe('historyWithinBudget', () => {
  const m = (runId: string, role: StoredMessage['role'], agent: StoredMessage['agent'] | '', content: string): StoredMessage =>
    ({ runId, role, ...(agent ? { agent } : {}), content });
  it('keeps user turns and reporter answers of other runs, newest first within the budget', () => {
    const msgs = [
      m('r1', 'user', '', 'a'.repeat(4000)),
      m('r1', 'agent', 'planner', 'plan'),
      m('r1', 'agent', 'reporter', 'answer one'),
      m('r2', 'user', '', 'second question'),
      m('r2', 'agent', 'reporter', 'answer two'),
      m('r3', 'user', '', 'current'),
    ];
    expect(historyWithinBudget(msgs, 'r3', 100)).toEqual([
      { role: 'assistant', content: 'answer one' },
      { role: 'user', content: 'second question' },
      { role: 'assistant', content: 'answer two' },
    ]);
  });
});

describe('outputMessageId', () => {
  it('is a stable UUID per run, agent and round', () => {
    const a = outputMessageId('run', 'reporter', 1);
    expect(a).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(outputMessageId('run', 'reporter', 1)).toBe(a);
    expect(outputMessageId('run', 'reporter', 2)).not.toBe(a);
  });
});
