// Boundary checks: every id, text and size is validated here before it can reach a query, and a
// refusal names the field so that the caller knows what to fix.
import { invalidArgument, isId, isUserId, type EnumCodec } from '@agent-mesh/common';

export const LIMITS = {
  contentChars: 100_000,
  titleChars: 500,
  shortTextChars: 64,
  errorChars: 4_000,
  checkpointChars: 2_000_000,
  messagesPerAppend: 100,
  planSteps: 200,
  planStepChars: 10_000,
  /** A kept answer of the Responses API: its response and its conversation (images included) together, below MongoDB's 16 MB document. */
  storedResponseChars: 12 * 1024 * 1024,
} as const;

const RESPONSE_ID = /^resp_[0-9a-f]{32}$/;

export function isResponseId(value: unknown): value is string {
  return typeof value === 'string' && RESPONSE_ID.test(value);
}

export function requireResponseId(field: string, value: unknown): string {
  if (!isResponseId(value)) throw invalidArgument('invalid_id', `${field} must be resp_ and 32 hex digits`);
  return value;
}

export function requireId(field: string, value: unknown): string {
  if (!isId(value)) throw invalidArgument('invalid_id', `${field} must be a UUID`);
  return value;
}

/** An optional id: empty means absent. */
export function optionalId(field: string, value: unknown): string | undefined {
  if (value === undefined || value === '') return undefined;
  return requireId(field, value);
}

export function requireUserId(value: unknown, field = 'user_id'): string {
  if (!isUserId(value)) throw invalidArgument('invalid_user_id', `${field} must be 1-128 characters of [A-Za-z0-9_-@.|:]`);
  return value;
}

/** A string without NUL characters (FerretDB cannot store them) and at most `max` characters. */
export function text(field: string, value: unknown, max: number, opts: { required?: boolean } = {}): string {
  if (typeof value !== 'string') throw invalidArgument('invalid_text', `${field} must be a string`);
  if (opts.required && value.length === 0) throw invalidArgument('invalid_text', `${field} must not be empty`);
  if (value.length > max) throw invalidArgument('too_long', `${field} must be at most ${max} characters`);
  if (value.includes('\u0000')) throw invalidArgument('invalid_text', `${field} must not contain NUL characters`);
  return value;
}

/** A proto enum's value as its name (what the documents store); UNSPECIFIED gives the default when there is one. */
export function enumName<N extends string>(field: string, value: number, codec: EnumCodec<number, N>, fallback?: N): N {
  const name = codec.fromWire(value);
  if (name !== undefined) return name;
  if (value === 0 && fallback !== undefined) return fallback;
  throw invalidArgument('invalid_enum', `${field} must be one of ${codec.wireNames.join(', ')}`);
}

/** A page size: 0 means the default; above the maximum is refused rather than silently cut. */
export function pageSize(field: string, value: number | undefined, def: number, max: number): number {
  if (value === undefined || value === 0) return def;
  if (!Number.isInteger(value) || value < 1 || value > max) throw invalidArgument('invalid_page_size', `${field} must be between 1 and ${max}`);
  return value;
}

/** A Unix-ms timestamp: 0 means "now". */
export function timestamp(field: string, value: number | undefined, now: number): number {
  if (value === undefined || value === 0) return now;
  // Between 2001 and 2286: anything else is a unit mistake (seconds, µs) rather than a time.
  if (!Number.isSafeInteger(value) || value < 1e12 || value > 1e13) throw invalidArgument('invalid_timestamp', `${field} must be a Unix time in milliseconds`);
  return value;
}

export function count(field: string, value: number | undefined): number {
  const v = value ?? 0;
  if (!Number.isSafeInteger(v) || v < 0) throw invalidArgument('invalid_count', `${field} must be a non-negative integer`);
  return v;
}
