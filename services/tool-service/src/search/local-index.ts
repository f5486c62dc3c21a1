// Full-text search over the local corpus with MiniSearch (BM25-like ranking, title boost, fuzzy
// and prefix matching for longer terms). Built and queried in a worker thread
// (index-worker.ts), so neither blocks the service's event loop.
import MiniSearch, { type Options } from 'minisearch';
import type { CorpusDocument } from './corpus';

export interface SearchHit {
  title: string;
  url: string;
  snippet: string;
  score: number;
}

const OPTIONS: Options<CorpusDocument> = {
  fields: ['title', 'text'],
  storeFields: ['title', 'url', 'text'],
  searchOptions: {
    boost: { title: 3 },
    combineWith: 'OR',
    // Typos in longer words still match; short words must match exactly or as a prefix.
    fuzzy: (term: string) => (term.length > 5 ? 0.2 : false),
    prefix: (term: string) => term.length > 3,
  },
};

/** Changes whenever a saved index would no longer fit this code (part of the cache key). */
export const INDEX_FORMAT = 'minisearch-7/title,text/1';

export class LocalSearchIndex {
  private constructor(private readonly index: MiniSearch<CorpusDocument>, private size = 0) {}

  static empty(): LocalSearchIndex {
    return new LocalSearchIndex(new MiniSearch<CorpusDocument>(OPTIONS));
  }

  /** An index saved by toJSON (no tokenizing: a fraction of a build's CPU). */
  static load(json: string): LocalSearchIndex {
    const index = MiniSearch.loadJSON<CorpusDocument>(json, OPTIONS);
    return new LocalSearchIndex(index, index.documentCount);
  }

  toJSON(): string {
    return JSON.stringify(this.index);
  }

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
