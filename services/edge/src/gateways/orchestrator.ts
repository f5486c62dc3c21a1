// The orchestrator peer: StartRun (a server stream per run started here), run watches (many over
// one WatchRuns call, see watch-mux.ts) and CancelRun.
import { Metadata, type Client } from '@grpc/grpc-js';
import { orchestratorClient, unary } from '@agent-mesh/common';
import type { RunEvent } from '@agent-mesh/common/gen/orchestrator/v1/orchestrator';
import type { OrchestratorGateway } from './types';
import { iterateCall } from './stream';
import { WatchMux } from './watch-mux';

/** A run's stream outlives any request/response deadline; this bounds a forgotten one. */
const STREAM_DEADLINE_MS = 30 * 60_000;
/** An export reads every document and run log of a conversation. */
export const EXPORT_TIMEOUT_MS = 20_000;
/** An erase cancels the active run and waits for its end first (up to 10 s). */
export const ERASE_TIMEOUT_MS = 30_000;
/** New watches move to a fresh WatchRuns call this often (the old one ends with its last watch). */
const WATCH_CALL_ROTATE_MS = 5 * 60_000;

export function orchestratorGateway(addr: string, opts: { maxQueuedEvents?: number } = {}): OrchestratorGateway & { client: Client; close(): void } {
  const client = orchestratorClient(addr);
  const streamOpts = () => ({ deadline: new Date(Date.now() + STREAM_DEADLINE_MS) });
  const eventOf = (m: { event?: RunEvent }) => m.event;
  // A shared call's deadline outlasts its rotation by a stream's lifetime; watches still open when
  // it passes are resumed from the run log on a fresh call.
  const mux = new WatchMux(
    () => client.watchRuns(new Metadata(), { deadline: new Date(Date.now() + WATCH_CALL_ROTATE_MS + STREAM_DEADLINE_MS) }),
    { rotateAfterMs: WATCH_CALL_ROTATE_MS, maxQueuedEvents: opts.maxQueuedEvents },
  );
  return {
    client,
    startRun: (req, signal) => iterateCall(client.startRun(req, new Metadata(), streamOpts()), signal, eventOf),
    watchRun: (req, signal) => mux.watch(req, signal),
    cancelRun: (req, scope) => unary(client.cancelRun.bind(client), req, scope),
    exportConversation: (req, scope) => unary(client.exportConversation.bind(client), req, { ...scope, timeoutMs: EXPORT_TIMEOUT_MS }),
    eraseConversation: (req, scope) => unary(client.eraseConversation.bind(client), req, { ...scope, timeoutMs: ERASE_TIMEOUT_MS }),
    close: () => {
      mux.close();
      client.close();
    },
  };
}
