import { codeOf, status } from '@agent-mesh/common';
import { isResponseId } from '../validation';
import { decodePageToken, encodePageToken } from './page-token';

const ID = '0b6f3c1e-2a4d-4c8e-9f10-1234567890ab';

describe('page tokens', () => {
  it('round-trips (createdAt, _id) and (createdAt, seq)', () => {
    expect(decodePageToken('page_token', encodePageToken({ t: 1_700_000_000_123, k: ID }), 'string')).toEqual({ t: 1_700_000_000_123, k: ID });
    expect(decodePageToken('message_page_token', encodePageToken({ t: 5, k: 42 }), 'number')).toEqual({ t: 5, k: 42 });
  });

  it('treats an empty token as the first page', () => {
    expect(decodePageToken('page_token', '', 'string')).toBeUndefined();
    expect(decodePageToken('page_token', undefined, 'string')).toBeUndefined();
  });

  const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');
  it.each([
    ['garbage', 'not a token!'],
    ['not JSON', Buffer.from('{nope').toString('base64url')],
    ['an array', b64([1, 2])],
    ['a negative time', b64({ t: -1, k: ID })],
    ['a non-UUID key', b64({ t: 1, k: { $gt: '' } })],
    ['an operator key', b64({ t: 1, k: '$gt' })],
    ['a string time', b64({ t: '1', k: ID })],
    ['over-long', 'a'.repeat(600)],
  ])('refuses %s with INVALID_ARGUMENT naming the field', (_, token) => {
    let err: unknown;
    try {
      decodePageToken('page_token', token, 'string');
    } catch (e) {
      err = e;
    }
    expect(codeOf(err)).toBe(status.INVALID_ARGUMENT);
    expect((err as Error).message).toContain('page_token');
  });

  it('refuses a conversation token used for messages (key type differs)', () => {
    expect(() => decodePageToken('message_page_token', encodePageToken({ t: 1, k: ID }), 'number')).toThrow(/message_page_token/);
  });

  it('takes the key its listing has: a response id where kept responses page, a UUID elsewhere', () => {
    const RESP = `resp_${'0a'.repeat(16)}`;
    expect(decodePageToken('page_token', encodePageToken({ t: 7, k: RESP }), 'string', isResponseId)).toEqual({ t: 7, k: RESP });
    expect(() => decodePageToken('page_token', encodePageToken({ t: 7, k: ID }), 'string', isResponseId)).toThrow(/page_token/);
    expect(() => decodePageToken('page_token', encodePageToken({ t: 7, k: RESP }), 'string')).toThrow(/page_token/);
  });
});
