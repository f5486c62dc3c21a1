// Full-text search over the local corpus with MiniSearch (BM25-like ranking, title boost, fuzzy
// and prefix matching for longer terms). Built and queried in a worker thread
// (index-worker.ts), so neither blocks the service's event loop.
import MiniSearch from 'minisearch';
import type { CorpusDocument } from './corpus';

export interface SearchHit {
  title: string;
  url: string;
  snippet: string;
  score: number;
}

export class LocalSearchIndex {
  private readonly index = new MiniSearch<CorpusDocument>({
    fields: ['title', 'text'],
    storeFields: ['title', 'url', 'text'],
    searchOptions: {
      boost: { title: 3 },
      combineWith: 'OR',
      // Typos in longer words still match; short words must match exactly or as a prefix.
      fuzzy: (term) => (term.length > 5 ? 0.2 : false),
      prefix: (term) => term.length > 3,
    },
  });
  private size = 0;

  async addAll(documents: CorpusDocument[]): Promise<void> {
    await this.index.addAllAsync(documents, { chunkSize: 2_000 });
    this.size += documents.length;
  }

  get documentCount(): number {
    return this.size;
  }

  search(query: string, limit: number): SearchHit[] {
    const terms = query.toLowerCase().split(/\W+/).filter(Boolean);
    return this.index.search(query).slice(0, limit).map((r) => ({
      title: String(r.title),
      url: String(r.url),
      snippet: snippet(String(r.text), terms),
      score: Math.round(r.score * 1000) / 1000,
    }));
  }
}

/** About 240 characters of the text around the first query term it contains. */
export function snippet(text: string, terms: string[], width = 240): string {
  const flat = text.replace(/\s+/g, ' ').trim();
  if (flat.length <= width) return flat;
  const lower = flat.toLowerCase();
  const at = terms.map((t) => lower.indexOf(t)).filter((i) => i >= 0).sort((a, b) => a - b)[0] ?? 0;
  const start = Math.max(0, at - width / 3);
  const cut = flat.slice(start, start + width);
  return `${start > 0 ? '…' : ''}${cut}${start + width < flat.length ? '…' : ''}`;
}
