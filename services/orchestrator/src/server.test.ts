import { newId, reasonOf } from '@agent-mesh/common';
import { checkConversation, checkStart, checkWatch, MAX_CONTENT_CHARS } from './server';

const reason = (f: () => void) => {
  try {
    f();
    return 'accepted';
  } catch (err) {
    return reasonOf(err);
  }
};

describe('request validation (before the run manager)', () => {
  const ok = { userId: 'alice', conversationId: newId() };
  const start = { ...ok, messageId: newId(), content: 'hello' };

  test('StartRun: each malformed field refused with its reason', () => {
    expect(reason(() => checkStart(start))).toBe('accepted');
    expect(reason(() => checkStart({ ...start, userId: '' }))).toBe('invalid_user_id');
    expect(reason(() => checkStart({ ...start, conversationId: 'c1' }))).toBe('invalid_conversation_id');
    expect(reason(() => checkStart({ ...start, messageId: 'm1' }))).toBe('invalid_message_id');
    expect(reason(() => checkStart({ ...start, content: ' \n ' }))).toBe('empty_content');
    expect(reason(() => checkStart({ ...start, content: 'x'.repeat(MAX_CONTENT_CHARS) }))).toBe('accepted');
    expect(reason(() => checkStart({ ...start, content: 'x'.repeat(MAX_CONTENT_CHARS + 1) }))).toBe('content_too_long');
  });

  test('WatchRun: a run id, when given, is a UUID; after_seq is a non-negative integer', () => {
    expect(reason(() => checkWatch({ ...ok, runId: '', afterSeq: 0 }))).toBe('accepted');
    expect(reason(() => checkWatch({ ...ok, runId: newId(), afterSeq: 7 }))).toBe('accepted');
    expect(reason(() => checkWatch({ ...ok, runId: 'r1', afterSeq: 0 }))).toBe('invalid_run_id');
    expect(reason(() => checkWatch({ ...ok, runId: '', afterSeq: -1 }))).toBe('invalid_after_seq');
    expect(reason(() => checkWatch({ ...ok, userId: 'a b', runId: '', afterSeq: 0 }))).toBe('invalid_user_id');
  });

  test('CancelRun, export and erase: the user and the conversation', () => {
    expect(reason(() => checkConversation(ok))).toBe('accepted');
    expect(reason(() => checkConversation({ ...ok, userId: 'x'.repeat(129) }))).toBe('invalid_user_id');
    expect(reason(() => checkConversation({ ...ok, conversationId: '' }))).toBe('invalid_conversation_id');
  });
});
