// Cursor page tokens: the sort key of the last item of a page, `(createdAt, tiebreak)`, as
// base64url JSON. The next page continues strictly after it, so paging never skips or repeats an
// item even while new ones are written (unlike skip/offset).
import { invalidArgument, isId } from '@agent-mesh/common';

export interface Cursor<K extends string | number> {
  /** createdAt (Unix ms) of the last item returned. */
  t: number;
  /** The tie-break key of the last item (its `_id`, a UUID or a response id, or its `seq` for messages). */
  k: K;
}

export function encodePageToken<K extends string | number>(c: Cursor<K>): string {
  return Buffer.from(JSON.stringify({ t: c.t, k: c.k }), 'utf8').toString('base64url');
}

/** Decodes a token; empty means "first page". Anything malformed is INVALID_ARGUMENT naming the field. */
export function decodePageToken<K extends 'string' | 'number'>(
  field: string,
  token: string | undefined,
  keyType: K,
  /** What a string key must be: a UUID unless said otherwise. */
  isKey: (k: unknown) => boolean = isId,
): Cursor<K extends 'string' ? string : number> | undefined {
  if (!token) return undefined;
  const bad = () => invalidArgument('invalid_page_token', `${field} is not a valid page token`);
  if (token.length > 512 || !/^[A-Za-z0-9_-]+$/.test(token)) throw bad();
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(token, 'base64url').toString('utf8'));
  } catch {
    throw bad();
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw bad();
  const { t, k } = parsed as { t?: unknown; k?: unknown };
  if (typeof t !== 'number' || !Number.isSafeInteger(t) || t < 0) throw bad();
  if (keyType === 'number' ? typeof k !== 'number' || !Number.isSafeInteger(k) : !isKey(k)) {
    throw bad();
  }
  return { t, k: k as K extends 'string' ? string : number };
}
