// Builds the local search index once, in the background, and hands out the same promise to
// every search (the first searches wait for it).
import type { Logger } from '@agent-mesh/common';
import { loadCorpus, type CorpusOptions } from './corpus';
import { LocalSearchIndex } from './local-index';

export function lazyLocalIndex(opts: CorpusOptions, logger: Logger, onCounts?: (counts: Record<string, number>) => void): () => Promise<LocalSearchIndex> {
  let building: Promise<LocalSearchIndex> | undefined;
  return () => {
    building ??= (async () => {
      const started = Date.now();
      // Let the server finish starting before the corpus is read.
      await new Promise((r) => setImmediate(r));
      const { documents, counts } = loadCorpus(opts);
      const index = new LocalSearchIndex();
      await index.addAll(documents);
      onCounts?.(counts);
      logger.info({ counts, ms: Date.now() - started }, 'local search index built');
      return index;
    })();
    return building;
  };
}
