// gRPC handlers of orchestrator.v1.OrchestratorService: translate the wire to the run manager
// and the run log, and back.
import { streamHandler, unaryHandler, type Logger } from '@agent-mesh/common';
import type {
  CancelRunRequest, CancelRunResponse, OrchestratorServiceServer, StartRunRequest, StartRunResponse, WatchRunRequest, WatchRunResponse,
} from '@agent-mesh/common/dist/gen/orchestrator/v1/orchestrator';
import type { RunLog } from './runlog/runlog';
import { watchRun, type RunNotifications } from './runlog/watch';
import type { RunManager } from './runs/manager';

export function orchestratorService(deps: { logger: Logger; runs: RunManager; log: RunLog; notes: RunNotifications }): OrchestratorServiceServer {
  const { logger, runs, log, notes } = deps;
  return {
    startRun: streamHandler<StartRunRequest, StartRunResponse>(logger, 'StartRun', async function* (req, signal) {
      const runId = await runs.start({ userId: req.userId, conversationId: req.conversationId, messageId: req.messageId, content: req.content });
      for await (const event of watchRun(log, notes, runId, 0, signal)) yield { event };
    }),
    watchRun: streamHandler<WatchRunRequest, WatchRunResponse>(logger, 'WatchRun', async function* (req, signal) {
      const runId = await runs.resolveWatch(req.userId, req.conversationId, req.runId, req.afterSeq);
      for await (const event of watchRun(log, notes, runId, req.afterSeq, signal)) yield { event };
    }),
    cancelRun: unaryHandler<CancelRunRequest, CancelRunResponse>(logger, 'CancelRun', async (req) => runs.cancel(req.userId, req.conversationId)),
  };
}
