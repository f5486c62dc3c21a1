// What tool factories may use from their process: configuration and shared resources.
import type { LocalSearch } from '../search/build';

export interface ToolDeps {
  /** SearxNG-compatible API; empty = local corpus. */
  searchUrl: string;
  /** The local search index, built once in the background (a worker thread). */
  localIndex: () => Promise<LocalSearch>;
}
