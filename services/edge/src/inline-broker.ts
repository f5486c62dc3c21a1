// The llm-broker run inside the edge (EDGE_INLINE_BROKER), loaded only then: an edge without it
// does not pay for its modules (the tokenizer's ranks). The edge image carries it; an install of
// the edge's workspace alone does not.
import { config } from '@agent-mesh/common';

type BrokerModule = typeof import('@agent-mesh/llm-broker/inline');

/** The broker's inline module; a clear configuration error where this build of the edge has none. */
export function brokerModule(): BrokerModule {
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports -- loaded on demand (above)
    return require('@agent-mesh/llm-broker/inline') as BrokerModule;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'MODULE_NOT_FOUND') throw err;
    throw new config.ConfigError('EDGE_INLINE_BROKER: this edge was installed without the llm-broker (@agent-mesh/llm-broker): install that workspace beside it, or use the edge image, which carries it');
  }
}
