// What tool factories may use from their process: configuration and shared resources.
import type { LocalSearchIndex } from '../search/local-index';

export interface ToolDeps {
  /** SearxNG-compatible API; empty = local corpus. */
  searchUrl: string;
  /** The local search index, built once in the background. */
  localIndex: () => Promise<LocalSearchIndex>;
}
