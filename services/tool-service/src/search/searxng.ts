// A SearxNG-compatible JSON search API (`GET $SEARCH_URL/search?q=…&format=json`).
import { request } from 'undici';
import type { SearchHit } from './local-index';

interface SearxResult {
  title?: unknown;
  url?: unknown;
  content?: unknown;
  score?: unknown;
}

export async function searchSearxng(baseUrl: string, query: string, limit: number, signal: AbortSignal): Promise<SearchHit[]> {
  const url = new URL('search', baseUrl.endsWith('/') ? baseUrl : `${baseUrl}/`);
  url.searchParams.set('q', query);
  url.searchParams.set('format', 'json');
  const res = await request(url, { method: 'GET', signal, headers: { accept: 'application/json' } });
  if (res.statusCode !== 200) {
    await res.body.dump();
    throw new Error(`search backend answered HTTP ${res.statusCode}`);
  }
  const body = (await res.body.json()) as { results?: SearxResult[] };
  if (!Array.isArray(body.results)) throw new Error('search backend answered without a results array');
  return body.results.slice(0, limit).map((r, i) => ({
    title: typeof r.title === 'string' ? r.title : '',
    url: typeof r.url === 'string' ? r.url : '',
    snippet: typeof r.content === 'string' ? r.content.slice(0, 400) : '',
    score: typeof r.score === 'number' ? r.score : 1 / (i + 1),
  }));
}
