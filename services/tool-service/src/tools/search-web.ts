// search_web: a SearxNG-compatible API when SEARCH_URL is set, otherwise full-text search over the
// local corpus. With the API, the local corpus is also the degraded fallback.
import type { SearchHit } from '../search/local-index';
import { searchSearxng } from '../search/searxng';
import { definePlugin } from './contract';
import type { ToolDeps } from './deps';

interface SearchArgs {
  query: string;
  limit: number;
}

export const SEARCH_WEB = 'search_web';

export function searchWeb(deps: ToolDeps) {
  const local = async (args: SearchArgs): Promise<{ backend: string; query: string; results: SearchHit[] }> => {
    const index = await deps.localIndex();
    return { backend: 'local', query: args.query, results: await index.search(args.query, args.limit) };
  };
  return definePlugin<SearchArgs>({
    name: SEARCH_WEB,
    description:
      'Search the web (or, offline, the local reference corpus) and return the best matching pages with a title, URL, snippet and relevance score.',
    parameters: {
      type: 'object',
      properties: {
        query: { type: 'string', minLength: 1, maxLength: 300, description: 'What to search for, in a few keywords.' },
        limit: { type: 'integer', minimum: 1, maximum: 20, default: 5, description: 'How many results to return.' },
      },
      required: ['query'],
      additionalProperties: false,
    },
    rateLimit: { maxConcurrent: 100, maxPerMinute: 300, timeoutMs: 10_000 },
    cache: { enabled: true, ttlSeconds: 600, keyStrategy: 'params' },
    async execute(args, ctx) {
      if (!deps.searchUrl) return local(args);
      const results = await searchSearxng(deps.searchUrl, args.query, args.limit, ctx.signal);
      return { backend: 'web', query: args.query, results };
    },
    prewarm: {
      // Only default-sized searches are pre-warmed: their cache key is what most calls use.
      key: (args) => (args.limit === 5 ? args.query.trim() || undefined : undefined),
      args: (query) => ({ query, limit: 5 }),
    },
    async fallback(args) {
      // Offline search is all there is when the local corpus is the primary backend.
      return deps.searchUrl ? local(args) : undefined;
    },
  });
}
