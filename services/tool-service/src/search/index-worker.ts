// The local search index lives in a worker thread: reading the corpus (~120,000 documents) and
// indexing it take seconds of CPU, and each search scores many postings. Off the main thread,
// neither delays a health check, another tool's call or a starting replica's readiness.
// Protocol (build.ts is the other side): one `ready` (or `failed`) message once the index is
// built, then one `hits` (or `error`) answer per `{ id, query, limit }` request.
import { parentPort, workerData } from 'node:worker_threads';
import { loadCorpus, type CorpusOptions } from './corpus';
import { LocalSearchIndex, type SearchHit } from './local-index';

export interface SearchRequest {
  id: number;
  query: string;
  limit: number;
}

export type WorkerMessage =
  | { type: 'ready'; counts: Record<string, number>; ms: number }
  | { type: 'failed'; message: string }
  | { type: 'hits'; id: number; hits: SearchHit[] }
  | { type: 'error'; id: number; message: string };

const port = parentPort;
if (!port) throw new Error('index-worker.js runs as a worker thread (see search/build.ts)');
const post = (m: WorkerMessage) => port.postMessage(m);

async function build(opts: CorpusOptions): Promise<void> {
  const started = Date.now();
  const { documents, counts } = loadCorpus(opts);
  const index = new LocalSearchIndex();
  await index.addAll(documents);
  port!.on('message', (r: SearchRequest) => {
    try {
      post({ type: 'hits', id: r.id, hits: index.search(r.query, r.limit) });
    } catch (err) {
      post({ type: 'error', id: r.id, message: (err as Error).message });
    }
  });
  post({ type: 'ready', counts, ms: Date.now() - started });
}

build(workerData as CorpusOptions).catch((err: Error) => post({ type: 'failed', message: err.message }));
