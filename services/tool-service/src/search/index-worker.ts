// The local search index lives in a worker thread: reading the corpus (~120,000 documents) and
// indexing it take seconds of CPU, and each search scores many postings. Off the main thread,
// neither delays a health check, another tool's call or a starting replica's readiness.
// With a cache folder (TOOL_INDEX_CACHE_DIR) the built index is saved there under the SHA-256 of
// the corpus' content (and the index format), and a start whose corpus hashes the same loads it
// instead of building: reading and hashing the corpus stay, tokenizing and indexing go. The image
// ships one built at image build time (Dockerfile). A changed corpus misses and rebuilds.
// Protocol (build.ts is the other side): one `ready` (or `failed`) message once the index is
// usable, then one `hits` (or `error`) answer per `{ id, query, limit }` request.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { parentPort, workerData } from 'node:worker_threads';
import { loadCorpus, type CorpusDocument, type CorpusOptions } from './corpus';
import { INDEX_FORMAT, LocalSearchIndex, type SearchHit } from './local-index';

export interface IndexOptions extends CorpusOptions {
  /** Folder of saved indexes; empty: always build, save nothing. */
  cacheDir?: string;
}

export interface SearchRequest {
  id: number;
  query: string;
  limit: number;
}

export type WorkerMessage =
  | { type: 'ready'; counts: Record<string, number>; ms: number; source: 'built' | 'cache'; warning?: string }
  | { type: 'failed'; message: string }
  | { type: 'hits'; id: number; hits: SearchHit[] }
  | { type: 'error'; id: number; message: string };

/** The cache key: the corpus' content, in order, and the index format. */
export function corpusHash(documents: readonly CorpusDocument[]): string {
  const h = createHash('sha256').update(INDEX_FORMAT).update('\0');
  for (const d of documents) h.update(d.id).update('\0').update(d.title).update('\0').update(d.url).update('\0').update(d.text).update('\0');
  return h.digest('hex');
}

/** `search-index-<what is indexed>-<content hash>.json`: one file per configured corpus. */
export function cacheFile(opts: IndexOptions, hash: string): string {
  const what = createHash('sha256').update(JSON.stringify([[...opts.sources].sort(), opts.repoRoot, opts.extraDirs, opts.wordnetDir, opts.usrDocDir])).digest('hex').slice(0, 12);
  return path.join(opts.cacheDir!, `search-index-${what}-${hash}.json`);
}

/** Builds the index, or loads the one saved for this corpus; saves what it built (best effort). */
export async function openIndex(opts: IndexOptions): Promise<{ index: LocalSearchIndex; counts: Record<string, number>; source: 'built' | 'cache'; warning?: string }> {
  const { documents, counts } = loadCorpus(opts);
  const file = opts.cacheDir ? cacheFile(opts, corpusHash(documents)) : undefined;
  if (file && fs.existsSync(file)) return { index: LocalSearchIndex.load(fs.readFileSync(file, 'utf8')), counts, source: 'cache' };
  const index = LocalSearchIndex.empty();
  await index.addAll(documents);
  if (!file) return { index, counts, source: 'built' };
  try {
    const dir = path.dirname(file);
    fs.mkdirSync(dir, { recursive: true });
    // Older indexes of the same configured corpus hold content that is gone.
    const prefix = path.basename(file).slice(0, 'search-index-'.length + 13);
    for (const old of fs.readdirSync(dir)) if (old.startsWith(prefix) && old.endsWith('.json')) fs.rmSync(path.join(dir, old), { force: true });
    const tmp = `${file}.${process.pid}.tmp`;
    fs.writeFileSync(tmp, index.toJSON());
    fs.renameSync(tmp, file);
    return { index, counts, source: 'built' };
  } catch (err) {
    return { index, counts, source: 'built', warning: `not saved to ${opts.cacheDir}: ${(err as Error).message}` };
  }
}

const port = parentPort;
if (port) {
  const post = (m: WorkerMessage) => port.postMessage(m);
  const started = Date.now();
  openIndex(workerData as IndexOptions).then(({ index, counts, source, warning }) => {
    port.on('message', (r: SearchRequest) => {
      try {
        post({ type: 'hits', id: r.id, hits: index.search(r.query, r.limit) });
      } catch (err) {
        post({ type: 'error', id: r.id, message: (err as Error).message });
      }
    });
    post({ type: 'ready', counts, ms: Date.now() - started, source, warning });
  }).catch((err: Error) => post({ type: 'failed', message: err.message }));
}
