// Redis key names of runs. The `{runId}` hash tag keeps one run's keys in one cluster slot.
export const keys = {
  log: (runId: string) => `run:{${runId}}:log`,
  seq: (runId: string) => `run:{${runId}}:seq`,
  lease: (runId: string) => `run:{${runId}}:lease`,
  meta: (runId: string) => `run:{${runId}}:meta`,
  checkpoint: (runId: string) => `run:{${runId}}:ckpt`,
  cancel: (runId: string) => `run:{${runId}}:cancel`,
  notify: (runId: string) => `runlog:{${runId}}`,
  convActive: (conversationId: string) => `conv:{${conversationId}}:active`,
  convRun: (conversationId: string) => `conv:{${conversationId}}:run`,
  messageRun: (messageId: string) => `msg:{${messageId}}:run`,
  /** Sorted set of active runs scored by lease expiry (ms): the takeover scan reads it. */
  leases: 'runs:leases',
  /** Pub/Sub channel of cancel requests (payload: run id). */
  cancelChannel: 'runs:cancel',
};

