// The documents as stored. `_id` is the client-generated UUID; times are Unix ms (numbers rather
// than Dates: they cross the wire as int64 ms and sort the same on MongoDB and FerretDB). Roles, agents
// and statuses are stored by name (`user`, `planner`, `completed`): the protos' enums are mapped in
// server.ts.
import type { AgentRoleName, MessageRoleName, MessageStatusName, PlanStatusName, RunStatusName } from '@agent-mesh/common';

export interface ConversationDoc {
  _id: string;
  userId: string;
  title: string;
  createdAt: number;
  /** Time of the last message: retention deletes conversations idle for RETENTION_DAYS. */
  updatedAt: number;
  lastRunId?: string;
  /** Per-conversation message counter: gives messages of the same millisecond a stable order. */
  messageSeq: number;
}

export interface MessageDoc {
  _id: string;
  conversationId: string;
  runId?: string;
  role: MessageRoleName;
  agent?: AgentRoleName;
  round: number;
  content: string;
  status: MessageStatusName;
  createdAt: number;
  /** Position in the conversation at insert time (tie-break within one millisecond). */
  seq: number;
}

export interface UsageDoc {
  promptTokens: number;
  completionTokens: number;
  totalTokens: number;
  /** Of promptTokens, read from the provider's prompt cache (absent: none). */
  cacheReadTokens?: number;
  /** Of promptTokens, written to it (absent: none). */
  cacheWriteTokens?: number;
  /** Of cacheWriteTokens, written to be kept an hour (absent: none). */
  cacheWrite1hTokens?: number;
}

export type RunStatus = RunStatusName;
export const TERMINAL_RUN_STATUSES: readonly RunStatus[] = ['completed', 'failed', 'cancelled', 'degraded'];

export interface RunDoc {
  _id: string;
  conversationId: string;
  userId: string;
  messageId?: string;
  status: RunStatus;
  /** JSON kept as a string: its keys may contain `.` or `$`, which FerretDB cannot store as fields. */
  checkpoint?: string;
  usage: UsageDoc;
  costUsd: number;
  createdAt: number;
  updatedAt: number;
  completedAt?: number;
  error?: string;
}

export type PlanStatus = PlanStatusName;

export interface PlanDoc {
  _id: string;
  userId: string;
  conversationId?: string;
  title: string;
  steps: string[];
  status: PlanStatus;
  createdAt: number;
  updatedAt: number;
}

/** An answer of the Responses API kept for its user (the JSON is the edge's: the store reads neither). */
export interface ResponseDoc {
  /** `resp_` and 32 hex digits. */
  _id: string;
  userId: string;
  createdAt: number;
  response: string;
  items: string;
  /** A background response not ended yet (absent: false). */
  pending?: boolean;
  /** When it was last written (absent on answers kept before it was). */
  updatedAt?: number;
}

/** What is left of an erased conversation: who erased it and when (nothing the user wrote). */
export interface ErasureDoc {
  /** The conversation's id. */
  _id: string;
  userId: string;
  erasedAt: number;
}

/** A page of items and the token of the next page (undefined on the last page). */
export interface Page<T> {
  items: T[];
  nextPageToken?: string;
}
