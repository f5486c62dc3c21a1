// Builds the local search index into TOOL_INDEX_CACHE_DIR ahead of time (the image build runs
// it, so that a replica loads the index at start instead of spending a CPU-minute building it).
// Reads the same configuration as the service: the index is saved under the hash of the corpus
// this machine has, which a start on the same image finds again.
import { loadConfig } from '../config';
import { openIndex } from './index-worker';

async function main(): Promise<void> {
  const cfg = loadConfig();
  if (!cfg.indexCacheDir) throw new Error('TOOL_INDEX_CACHE_DIR is empty: nowhere to save the index');
  const started = Date.now();
  const { counts, source, warning } = await openIndex({ sources: cfg.corpusSources, repoRoot: cfg.repoRoot, extraDirs: cfg.corpusDirs, cacheDir: cfg.indexCacheDir });
  if (warning) throw new Error(warning);
  process.stdout.write(`search index ${source === 'cache' ? 'already saved' : 'built and saved'} in ${cfg.indexCacheDir} (${Date.now() - started} ms): ${JSON.stringify(counts)}\n`);
}

main().catch((err: Error) => {
  process.stderr.write(`${err.message}\n`);
  process.exit(1);
});
