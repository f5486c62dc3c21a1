import { isTerminalEvent } from '@agent-mesh/common';
import { DegradedError, StepFailure, type StopReason } from '../pipeline/errors';
import { classifyEnding, OUTCOMES, type EndingInput } from './ending';

const checkpoint = { round: 2, plan: 'the plan', host: 'the host answer' };
const input = (over: Partial<EndingInput>): EndingInput => ({ err: new Error('x'), progress: { text: '' }, checkpoint, ...over });

describe('classifyEnding', () => {
  test.each([
    // stop reason, error → outcome
    ['lease_lost', new Error('aborted'), 'handed_over'],
    ['shutdown', new DegradedError('queue_full', 'busy'), 'handed_over'],
    ['cancelled', new StepFailure('timeout', 't', true), 'cancelled'],
    [undefined, new DegradedError('breaker_open', 'open'), 'degraded'],
    [undefined, new StepFailure('llm_stream_failed', 'mid-answer', true), 'failed'],
    [undefined, new TypeError('a bug'), 'failed'],
  ] as const)('stopped %s, %p → %s', (stop, err, outcome) => {
    expect(classifyEnding(input({ stop: stop as StopReason | undefined, err })).outcome).toBe(outcome);
  });

  test('a handover keeps its reason, and has neither a terminal event nor a store status of its own', () => {
    expect(classifyEnding(input({ stop: 'lease_lost' }))).toEqual({ outcome: 'handed_over', reason: 'lease_lost' });
    expect(OUTCOMES.handed_over).toEqual({ counted: false });
  });

  test('a cancel keeps what the user saw: the streaming agent\'s text, else the newest completed output', () => {
    expect(classifyEnding(input({ stop: 'cancelled', progress: { agent: 'host', text: 'half an ans' } }))).toEqual({ outcome: 'cancelled', agent: 'host', round: 2, partial: 'half an ans' });
    expect(classifyEnding(input({ stop: 'cancelled' }))).toEqual({ outcome: 'cancelled', agent: 'reporter', round: 2, partial: 'the host answer' });
    expect(classifyEnding(input({ stop: 'cancelled', checkpoint: { round: 1 } }))).toMatchObject({ partial: '' });
  });

  test('degraded: the busy message with the retry time when the broker gave one; shed when admission control ended it', () => {
    expect(classifyEnding(input({ err: new DegradedError('deadline_unreachable', 'x', 4_200) }))).toEqual({
      outcome: 'degraded', reason: 'deadline_unreachable', round: 2, shed: false, retryAfterMs: 4_200, message: 'Service busy, please try again in 5 s.',
    });
    expect(classifyEnding(input({ err: new DegradedError('queue_wait', 'x') }))).toEqual({
      outcome: 'degraded', reason: 'queue_wait', round: 2, shed: true, message: 'Service busy, please try again shortly.',
    });
  });

  test('a named failure is passed on; anything else is an unexpected internal failure, retryable', () => {
    const named = new StepFailure('store_unavailable', 'the answer could not be stored', true);
    expect(classifyEnding(input({ err: named }))).toEqual({ outcome: 'failed', failure: named, unexpected: false });
    const bug = classifyEnding(input({ err: new TypeError('undefined is not a function') }));
    expect(bug).toMatchObject({ outcome: 'failed', unexpected: true, failure: { code: 'internal', retryable: true } });
  });

  test('every outcome but a handover ends with exactly one terminal event and a final store status', () => {
    for (const [outcome, o] of Object.entries(OUTCOMES)) {
      if (outcome === 'handed_over') continue;
      expect({ outcome, terminal: o.event !== undefined && isTerminalEvent(o.event), status: o.runStatus !== undefined, counted: o.counted }).toEqual({ outcome, terminal: true, status: true, counted: true });
    }
  });
});
