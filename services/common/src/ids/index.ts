// Ids are client-generated UUIDs. Anything else (objects, operators, over-long strings) is refused
// at the boundary so that it never reaches a query.
import { randomUUID } from 'node:crypto';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export function newId(): string {
  return randomUUID();
}

export function isId(value: unknown): value is string {
  return typeof value === 'string' && UUID.test(value);
}

/** A user id comes from a verified token's `sub`: printable, bounded, no operator characters. */
const USER_ID = /^[A-Za-z0-9_\-@.|:]{1,128}$/;

export function isUserId(value: unknown): value is string {
  return typeof value === 'string' && USER_ID.test(value) && !value.startsWith('$');
}
