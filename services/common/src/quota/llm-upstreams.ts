// Where each upstream of the brokers' LLM_UPSTREAMS keeps its quota in Redis: the rule the
// broker names its keys by, and what other services (the tool-service, for the pause) read of
// that same list — names and quota key prefixes only, never keys or URLs.
import { ConfigError } from '../config/spec';
import { GlobalLimiter, LLM_QUOTA_KEY_PREFIX } from './limiter';

/**
 * The quota key prefix of the upstream at `index` of LLM_UPSTREAMS: its `quotaKey` when set, else
 * `mesh:llm` for the first (the keys the single upstream always had) and
 * `mesh:llm:upstream:<name>` for the others.
 */
export function llmQuotaKeyPrefix(name: string, index: number, quotaKey?: string): string {
  return quotaKey ?? (index === 0 ? LLM_QUOTA_KEY_PREFIX : `${LLM_QUOTA_KEY_PREFIX}:upstream:${name}`);
}

/** Throws the ConfigError of LLM_UPSTREAMS with `msg`. */
export function llmUpstreamsError(msg: string): never {
  throw new ConfigError(`LLM_UPSTREAMS: ${msg}`);
}

/** LLM_UPSTREAMS' JSON → its entries, each checked to be an object (their fields are the reader's). */
export function llmUpstreamEntries(text: string): Record<string, unknown>[] {
  let list: unknown;
  try {
    list = JSON.parse(text);
  } catch {
    return llmUpstreamsError('must be a JSON list of upstreams');
  }
  if (!Array.isArray(list) || list.length === 0) return llmUpstreamsError('must be a non-empty JSON list of upstreams');
  return list.map((raw: unknown, i) => {
    if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) return llmUpstreamsError(`entry ${i} must be an object`);
    return raw as Record<string, unknown>;
  });
}

/**
 * The quota key prefixes of the upstreams LLM_UPSTREAMS lists, in its order; empty text: the
 * single upstream's (`mesh:llm`). Reads each entry's `name` and `quotaKey` only (the broker checks
 * the rest); throws a ConfigError naming what is wrong with those.
 */
export function llmQuotaKeyPrefixes(text: string): string[] {
  if (text.trim() === '') return [LLM_QUOTA_KEY_PREFIX];
  return llmUpstreamEntries(text).map((entry, i) => {
    const { name, quotaKey } = entry as { name?: unknown; quotaKey?: unknown };
    if (typeof name !== 'string' || name === '') return llmUpstreamsError(`entry ${i}: "name" is required`);
    if (quotaKey !== undefined && (typeof quotaKey !== 'string' || quotaKey === '')) return llmUpstreamsError(`${name}: "quotaKey" must be a non-empty string`);
    return llmQuotaKeyPrefix(name, i, quotaKey);
  });
}

/** The pause keys of the upstreams LLM_UPSTREAMS lists (see GlobalLimiter.pauseKey). */
export function llmPauseKeys(text: string): string[] {
  return llmQuotaKeyPrefixes(text).map((p) => GlobalLimiter.pauseKey(p));
}
