// Cache keys: the tool's name plus a SHA-256 of the arguments as canonical JSON (object keys
// sorted at every level), and of the user when the tool's results are per user.
import { createHash } from 'node:crypto';
import type { CacheKeyStrategy } from '../tools/contract';

/** JSON with object keys sorted recursively, so that {a,b} and {b,a} hash alike. */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value) ?? 'null';
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  const obj = value as Record<string, unknown>;
  const keys = Object.keys(obj).filter((k) => obj[k] !== undefined).sort();
  return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(obj[k])}`).join(',')}}`;
}

const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');

export function cacheKey(prefix: string, tool: string, strategy: CacheKeyStrategy, args: Record<string, unknown>, userId: string): string {
  let part: string;
  if (strategy === 'params') part = sha256(canonicalJson(args));
  else if (strategy === 'params+user') part = `${sha256(canonicalJson(args))}:${sha256(`user:${userId}`)}`;
  else part = sha256(`custom:${strategy(args, { userId })}`);
  return `${prefix}:cache:${tool}:${part}`;
}
