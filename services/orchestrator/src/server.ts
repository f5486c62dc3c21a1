// gRPC handlers of orchestrator.v1.OrchestratorService: translate the wire to the run manager
// and the run log, and back.
import { once } from 'node:events';
import type { ServerDuplexStream } from '@grpc/grpc-js';
import { codeOf, detailsOf, invalidArgument, isId, isRedisConnectionError, isUserId, MeshError, reasonOf, redisUnavailable, retryAfterOf, scopeOf, status, streamHandler, unaryHandler, type Logger } from '@agent-mesh/common';
import type {
  CancelRunRequest, CancelRunResponse, EraseConversationRequest, EraseConversationResponse, ExportConversationRequest, ExportConversationResponse,
  OrchestratorServiceServer, RunEvent, StartRunRequest, StartRunResponse, WatchRunRequest, WatchRunResponse,
  WatchRunsEnd, WatchRunsRequest, WatchRunsResponse,
} from '@agent-mesh/common/gen/orchestrator/v1/orchestrator';
import type { RunLog } from './runlog/runlog';
import { watchRun, type RunNotifications } from './runlog/watch';
import type { ConversationData } from './runs/conversation-data';
import type { RunManager } from './runs/manager';

/** The orchestrator's limit on a message's length (the edge's MAX_MESSAGE_CHARS is lower). */
export const MAX_CONTENT_CHARS = 32_000;

// Request validation: a malformed request is refused here, INVALID_ARGUMENT with its reason, so
// the run manager and the conversation data only ever see well-formed ones.
export function checkConversation(req: { userId: string; conversationId: string }): void {
  if (!isUserId(req.userId)) throw invalidArgument('invalid_user_id', 'user_id is not a valid user id');
  if (!isId(req.conversationId)) throw invalidArgument('invalid_conversation_id', 'conversation_id must be a UUID');
}

export function checkStart(req: StartRunRequest): void {
  checkConversation(req);
  if (!isId(req.messageId)) throw invalidArgument('invalid_message_id', 'message_id must be a UUID');
  if (!req.content.trim()) throw invalidArgument('empty_content', 'content must not be empty');
  if (req.content.length > MAX_CONTENT_CHARS) throw invalidArgument('content_too_long', `content is longer than ${MAX_CONTENT_CHARS} characters`);
}

export function checkWatch(req: WatchRunRequest): void {
  checkConversation(req);
  if (req.runId && !isId(req.runId)) throw invalidArgument('invalid_run_id', 'run_id must be a UUID');
  if (!Number.isInteger(req.afterSeq) || req.afterSeq < 0) throw invalidArgument('invalid_after_seq', 'after_seq must be >= 0');
}

export function orchestratorService(deps: { logger: Logger; runs: RunManager; log: RunLog; notes: RunNotifications; data: ConversationData }): OrchestratorServiceServer {
  const { logger, runs, log, notes, data } = deps;
  async function* watchEvents(req: WatchRunRequest, signal: AbortSignal): AsyncGenerator<RunEvent> {
    checkWatch(req);
    const runId = await runs.resolveWatch(req.userId, req.conversationId, req.runId, req.afterSeq);
    yield* watchRun(log, notes, runId, req.afterSeq, signal);
  }
  return {
    startRun: streamHandler<StartRunRequest, StartRunResponse>(logger, 'StartRun', async function* (req, signal, call) {
      checkStart(req);
      const runId = await runs.start({ userId: req.userId, conversationId: req.conversationId, messageId: req.messageId, content: req.content }, scopeOf(call));
      for await (const event of watchRun(log, notes, runId, 0, signal)) yield { event };
    }),
    watchRun: streamHandler<WatchRunRequest, WatchRunResponse>(logger, 'WatchRun', async function* (req, signal) {
      for await (const event of watchEvents(req, signal)) yield { event };
    }),
    watchRuns: (call) => serveWatchRuns(call, watchEvents, logger),
    cancelRun: unaryHandler<CancelRunRequest, CancelRunResponse>(logger, 'CancelRun', async (req, call) => {
      checkConversation(req);
      return runs.cancel(req.userId, req.conversationId, scopeOf(call));
    }),
    exportConversation: unaryHandler<ExportConversationRequest, ExportConversationResponse>(logger, 'ExportConversation',
      async (req, call) => (checkConversation(req), data.export(req.userId, req.conversationId, scopeOf(call)))),
    eraseConversation: unaryHandler<EraseConversationRequest, EraseConversationResponse>(logger, 'EraseConversation',
      async (req, call) => (checkConversation(req), data.erase(req.userId, req.conversationId, scopeOf(call)))),
  };
}

/**
 * WatchRuns: many WatchRun subscriptions over one call. Each subscription runs the same watch as
 * WatchRun; its events are written tagged with its id, and its end carries the status WatchRun
 * would have ended with. Writes share the call's backpressure: while the caller's window is full,
 * every subscription waits for the same 'drain'.
 */
function serveWatchRuns(
  call: ServerDuplexStream<WatchRunsRequest, WatchRunsResponse>,
  watch: (req: WatchRunRequest, signal: AbortSignal) => AsyncIterable<RunEvent>,
  logger: Logger,
): void {
  const subscriptions = new Map<number, AbortController>();
  let closed = false;
  let drained: Promise<unknown> | undefined;
  const closeAll = () => {
    closed = true;
    for (const abort of subscriptions.values()) abort.abort();
    subscriptions.clear();
  };
  call.on('cancelled', closeAll);
  call.on('close', closeAll);
  call.on('error', closeAll);
  // The caller half-closes when it has no subscriptions left on this call.
  call.on('end', () => {
    closeAll();
    call.end();
  });
  const write = async (msg: WatchRunsResponse, aborted: Promise<unknown>) => {
    if (call.write(msg)) return;
    drained ??= once(call, 'drain').finally(() => (drained = undefined));
    await Promise.race([drained, aborted]);
  };
  call.on('data', (req: WatchRunsRequest) => {
    const id = req.subscriptionId;
    const action = req.action;
    if (action?.$case === 'unsubscribe') {
      subscriptions.get(id)?.abort();
      subscriptions.delete(id);
      return;
    }
    if (action?.$case !== 'subscribe' || closed) return;
    if (subscriptions.has(id)) {
      call.write({ subscriptionId: id, item: { $case: 'end', end: endOf(new MeshError('duplicate_subscription', `subscription ${id} is already open`), logger) } });
      return;
    }
    const abort = new AbortController();
    subscriptions.set(id, abort);
    const aborted = once(abort.signal, 'abort');
    void (async () => {
      let end: WatchRunsEnd = { code: status.OK, message: '', reason: '', retryAfterMs: 0 };
      try {
        for await (const event of watch(action.subscribe, abort.signal)) {
          if (abort.signal.aborted) break;
          await write({ subscriptionId: id, item: { $case: 'event', event } }, aborted);
        }
      } catch (err) {
        end = endOf(err, logger);
      }
      // Unsubscribed or the call is gone: nothing more to say for this subscription.
      if (abort.signal.aborted || closed) return;
      subscriptions.delete(id);
      call.write({ subscriptionId: id, item: { $case: 'end', end } });
    })();
  });
}

/** The status a WatchRun call would have ended with (as common's streamHandler maps errors). */
function endOf(err: unknown, logger: Logger): WatchRunsEnd {
  if (isRedisConnectionError(err)) err = redisUnavailable();
  const code = codeOf(err);
  if (code === undefined) {
    logger.error({ err, method: 'WatchRuns' }, 'unhandled error in gRPC handler');
    return { code: status.INTERNAL, message: 'internal error', reason: '', retryAfterMs: 0 };
  }
  return { code, message: detailsOf(err), reason: reasonOf(err) ?? '', retryAfterMs: retryAfterOf(err) ?? 0 };
}
