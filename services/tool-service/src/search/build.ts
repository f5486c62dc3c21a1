// The local search index, built once in a worker thread (index-worker.ts) when first asked for;
// every search waits for the same build. If the worker dies, pending searches fail and the next
// one starts a new worker.
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import type { Logger } from '@agent-mesh/common';
import type { IndexOptions, SearchRequest, WorkerMessage } from './index-worker';
import type { SearchHit } from './local-index';

export interface LocalSearch {
  search(query: string, limit: number): Promise<SearchHit[]>;
}

export interface LazyLocalIndex {
  /** The index, once built (starts the build on the first call). */
  (): Promise<LocalSearch>;
  /** Stops the worker (the service's shutdown). */
  close(): Promise<void>;
}

type Pending = { resolve: (hits: SearchHit[]) => void; reject: (err: Error) => void };

export interface IndexReady { counts: Record<string, number>; ms: number; source: 'built' | 'cache' }

export function lazyLocalIndex(opts: IndexOptions, logger: Logger, onReady?: (ready: IndexReady) => void): LazyLocalIndex {
  let worker: Worker | undefined;
  let building: Promise<LocalSearch> | undefined;
  let closed = false;

  const start = (): Promise<LocalSearch> => new Promise((resolve, reject) => {
    const pending = new Map<number, Pending>();
    let nextId = 0;
    // No --require of the telemetry SDK in the worker: it makes no calls worth a trace.
    const w = new Worker(path.join(__dirname, 'index-worker.js'), { workerData: opts, execArgv: [] });
    worker = w;
    const search: LocalSearch = {
      search: (query, limit) => new Promise((res, rej) => {
        const id = ++nextId;
        pending.set(id, { resolve: res, reject: rej });
        w.postMessage({ id, query, limit } satisfies SearchRequest);
      }),
    };
    w.on('message', (m: WorkerMessage) => {
      if (m.type === 'ready') {
        onReady?.({ counts: m.counts, ms: m.ms, source: m.source });
        logger.info({ counts: m.counts, ms: m.ms, source: m.source }, m.source === 'cache' ? 'local search index loaded from its cache' : 'local search index built');
        if (m.warning) logger.warn({ warning: m.warning }, 'local search index');
        resolve(search);
      } else if (m.type === 'failed') {
        reject(new Error(`building the local search index: ${m.message}`));
      } else {
        const p = pending.get(m.id);
        pending.delete(m.id);
        if (m.type === 'hits') p?.resolve(m.hits);
        else p?.reject(new Error(m.message));
      }
    });
    const gone = (err: Error) => {
      if (worker === w) { worker = undefined; building = undefined; }
      reject(err);
      for (const p of pending.values()) p.reject(err);
      pending.clear();
      if (!closed) logger.error({ err: err.message }, 'local search index worker stopped; the next search starts a new one');
    };
    w.on('error', gone);
    w.on('exit', (code) => gone(new Error(`local search index worker exited (code ${code})`)));
  });

  const get = (() => {
    if (closed) return Promise.reject(new Error('the local search index is closed'));
    building ??= start();
    return building;
  }) as LazyLocalIndex;
  get.close = async () => {
    closed = true;
    await worker?.terminate();
  };
  return get;
}
