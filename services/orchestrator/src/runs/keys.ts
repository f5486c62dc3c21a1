// Redis key names of runs. Every key carries the one hash tag `{runs}`, so on a Redis Cluster they
// are all in one slot: the registry's scripts (start, append, claim, release) touch a run's keys
// together with its conversation's, its message's and the takeover set's, atomically. The cost: a
// cluster holds all runs on one primary (and its replica), and spreads the other services' keys
// (caches, quotas, budgets, rate limits) over the rest. A run's notices are published by the append
// script, on a channel with the same tag: in a Cluster, with SPUBLISH, on that one node (a classic
// PUBLISH would reach every node); the cancels' channel is classic.
const TAG = 'mesh:{runs}';
/** What a run's notices channel starts with; the run id follows. */
export const NOTIFY_PREFIX = `${TAG}:runlog:`;

export const keys = {
  log: (runId: string) => `${TAG}:run:${runId}:log`,
  seq: (runId: string) => `${TAG}:run:${runId}:seq`,
  lease: (runId: string) => `${TAG}:run:${runId}:lease`,
  meta: (runId: string) => `${TAG}:run:${runId}:meta`,
  checkpoint: (runId: string) => `${TAG}:run:${runId}:ckpt`,
  cancel: (runId: string) => `${TAG}:run:${runId}:cancel`,
  convActive: (conversationId: string) => `${TAG}:conv:${conversationId}:active`,
  convRun: (conversationId: string) => `${TAG}:conv:${conversationId}:run`,
  messageRun: (messageId: string) => `${TAG}:msg:${messageId}:run`,
  /** Sorted set of active runs scored by lease expiry (ms): the takeover scan reads it. */
  leases: `${TAG}:leases`,
  /** Pub/Sub channel of a run's "new events" notices (payload: its last seq). */
  notify: (runId: string) => NOTIFY_PREFIX + runId,
  /** Pub/Sub channel of cancel requests (payload: run id). */
  cancelChannel: 'runs:cancel',
};
