import { codeOf, planStatuses, reasonOf, status } from '@agent-mesh/common';
import { PlanStatus } from '@agent-mesh/common/gen/store/v1/store';
import { enumName, LIMITS, optionalId, pageSize, requireId, requireUserId, text, timestamp } from './validation';

const ID = '0b6f3c1e-2a4d-4c8e-9f10-1234567890ab';

function refusal(fn: () => unknown): { code?: number; reason?: string; message: string } {
  try {
    fn();
  } catch (err) {
    return { code: codeOf(err), reason: reasonOf(err), message: (err as Error).message };
  }
  throw new Error('expected a refusal');
}

describe('requireId', () => {
  it('accepts a UUID', () => expect(requireId('conversation_id', ID)).toBe(ID));
  it.each([
    ['empty', ''],
    ['operator object as string', '{"$ne":null}'],
    ['operator', '$gt'],
    ['over-long', `${ID}${'a'.repeat(1000)}`],
    ['upper-case UUID', ID.toUpperCase()],
    ['object', { $ne: null }],
    ['number', 42],
  ])('refuses %s with INVALID_ARGUMENT naming the field', (_, value) => {
    const r = refusal(() => requireId('conversation_id', value));
    expect(r.code).toBe(status.INVALID_ARGUMENT);
    expect(r.message).toContain('conversation_id');
  });
  it('treats an empty optional id as absent', () => {
    expect(optionalId('run_id', '')).toBeUndefined();
    expect(refusal(() => optionalId('run_id', 'nope')).message).toContain('run_id');
  });
});

describe('requireUserId', () => {
  it('accepts token subjects', () => expect(requireUserId('user-1@example.com')).toBe('user-1@example.com'));
  it.each(['', '$where', '{"$ne":null}', 'a'.repeat(129), 'a b'])('refuses %j', (v) => {
    const r = refusal(() => requireUserId(v));
    expect(r.code).toBe(status.INVALID_ARGUMENT);
    expect(r.message).toContain('user_id');
  });
});

describe('text', () => {
  it('refuses NUL characters', () => {
    const r = refusal(() => text('messages[0].content', 'a\u0000b', 10));
    expect(r.code).toBe(status.INVALID_ARGUMENT);
    expect(r.message).toContain('messages[0].content');
  });
  it('bounds the length', () => {
    expect(text('content', 'x'.repeat(LIMITS.contentChars), LIMITS.contentChars)).toHaveLength(LIMITS.contentChars);
    expect(refusal(() => text('content', 'x'.repeat(LIMITS.contentChars + 1), LIMITS.contentChars)).reason).toBe('too_long');
  });
  it('refuses empty when required', () => {
    expect(refusal(() => text('title', '', 5, { required: true })).message).toContain('title');
  });
});

describe('enumName / pageSize / timestamp', () => {
  it('names enum values, falls back on UNSPECIFIED and refuses unknown values', () => {
    expect(enumName('plan.status', PlanStatus.PLAN_STATUS_ACTIVE, planStatuses, 'draft')).toBe('active');
    expect(enumName('plan.status', PlanStatus.PLAN_STATUS_UNSPECIFIED, planStatuses, 'draft')).toBe('draft');
    const unknown = refusal(() => enumName('plan.status', 7 as PlanStatus, planStatuses, 'draft'));
    expect(unknown).toMatchObject({ code: status.INVALID_ARGUMENT, reason: 'invalid_enum' });
    expect(unknown.message).toContain('plan.status must be one of PLAN_STATUS_DRAFT, PLAN_STATUS_ACTIVE, PLAN_STATUS_DONE');
    expect(refusal(() => enumName('plan.status', PlanStatus.PLAN_STATUS_UNSPECIFIED, planStatuses)).reason).toBe('invalid_enum');
  });
  it('defaults and bounds page sizes', () => {
    expect(pageSize('page_size', 0, 20, 100)).toBe(20);
    expect(pageSize('page_size', 100, 20, 100)).toBe(100);
    expect(refusal(() => pageSize('page_size', 101, 20, 100)).message).toContain('page_size');
    expect(refusal(() => pageSize('page_size', -1, 20, 100)).code).toBe(status.INVALID_ARGUMENT);
  });
  it('takes 0 as now and refuses seconds', () => {
    expect(timestamp('created_at_ms', 0, 1_700_000_000_000)).toBe(1_700_000_000_000);
    expect(refusal(() => timestamp('created_at_ms', 1_700_000_000, 0)).message).toContain('created_at_ms');
  });
});
