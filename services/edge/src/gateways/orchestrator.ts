// The orchestrator peer: StartRun / WatchRun (server streams) and CancelRun.
import { Metadata } from '@grpc/grpc-js';
import { createClient, unary } from '@agent-mesh/common';
import { OrchestratorServiceClient, type RunEvent } from '@agent-mesh/common/dist/gen/orchestrator/v1/orchestrator';
import type { OrchestratorGateway } from './types';
import { iterateCall } from './stream';

/** A run's stream outlives any request/response deadline; this bounds a forgotten one. */
const STREAM_DEADLINE_MS = 30 * 60_000;

export function orchestratorGateway(addr: string): OrchestratorGateway & { close(): void } {
  const client = createClient(OrchestratorServiceClient, addr);
  const streamOpts = () => ({ deadline: new Date(Date.now() + STREAM_DEADLINE_MS) });
  const eventOf = (m: { event?: RunEvent }) => m.event;
  return {
    startRun: (req, signal) => iterateCall(client.startRun(req, new Metadata(), streamOpts()), signal, eventOf),
    watchRun: (req, signal) => iterateCall(client.watchRun(req, new Metadata(), streamOpts()), signal, eventOf),
    cancelRun: (req) => unary(client.cancelRun.bind(client), req, { timeoutMs: 5_000 }),
    close: () => client.close(),
  };
}
