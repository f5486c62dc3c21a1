// Cache keys: the tool's name plus a SHA-256 of the arguments as canonical JSON (object keys
// sorted at every level), and of the user when the tool's results are per user.
import { createHash } from 'node:crypto';
import { canonicalJson } from '@agent-mesh/common';
import type { CacheKeyStrategy } from '../tools/contract';

const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');

export function cacheKey(prefix: string, tool: string, strategy: CacheKeyStrategy, args: Record<string, unknown>, userId: string): string {
  let part: string;
  if (strategy === 'params') part = sha256(canonicalJson(args));
  else if (strategy === 'params+user') part = `${sha256(canonicalJson(args))}:${sha256(`user:${userId}`)}`;
  else part = sha256(`custom:${strategy(args, { userId })}`);
  return `${prefix}:cache:${tool}:${part}`;
}
