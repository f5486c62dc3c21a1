// The pipeline's view of its surroundings: the peers it calls and the event sink it writes to.
// No gRPC here: gateways adapt the generated clients to these shapes, tests fake them.
import type { ChatMessage, GenerateRequest, GenerateResponse } from '@agent-mesh/common/gen/llmbroker/v1/llm_broker';
import type { InvokeResponse, ToolDefinition } from '@agent-mesh/common/gen/tools/v1/tools';
import type { EmitRunEvent, TokenUsage } from '@agent-mesh/common';

export type { ChatMessage, GenerateRequest, GenerateResponse, InvokeResponse, ToolDefinition };

export const AGENT_ROLES = ['planner', 'critic', 'host', 'reporter'] as const;
export type AgentRole = (typeof AGENT_ROLES)[number];

/** How one role's LLM calls are made: sampling temperature (undefined: the provider's default) and the response cache. */
export interface AgentCallPolicy {
  temperature?: number;
  cache: boolean;
}
export type Verdict = 'approve' | 'revise';

export interface CallOptions {
  signal: AbortSignal;
  /** The call's deadline from now. @default 5000 (the shared unary deadline) */
  timeoutMs?: number;
  /** The run's deadline (ms since the epoch): the call ends no later, whatever `timeoutMs` says. */
  deadline?: number;
}

export interface LlmGateway {
  /** Streams queue updates, deltas and the final `done` of one completion. */
  generate(request: GenerateRequest, opts: CallOptions): AsyncIterable<GenerateResponse>;
}

export interface ToolGateway {
  listTools(opts: CallOptions): Promise<ToolDefinition[]>;
  invoke(
    req: { userId: string; runId: string; callId: string; toolName: string; argumentsJson: string },
    opts: CallOptions,
  ): Promise<InvokeResponse>;
}

/** A run's or a call's tokens: the prompt's, of them those the provider's prompt cache read or wrote (when any), and the completion's. */
export type Usage = TokenUsage;

export const emptyUsage = (): Usage => ({ promptTokens: 0, completionTokens: 0, totalTokens: 0 });

/** The sum of two usages (a missing total counts as prompt + completion; the cache's counts only where there were some). */
export function plusUsage(a: Usage, u: Partial<Usage> | undefined): Usage {
  if (!u) return a;
  const reads = (a.cacheReadTokens ?? 0) + (u.cacheReadTokens ?? 0);
  const writes = (a.cacheWriteTokens ?? 0) + (u.cacheWriteTokens ?? 0);
  const writes1h = (a.cacheWrite1hTokens ?? 0) + (u.cacheWrite1hTokens ?? 0);
  return {
    promptTokens: a.promptTokens + (u.promptTokens ?? 0),
    completionTokens: a.completionTokens + (u.completionTokens ?? 0),
    totalTokens: a.totalTokens + (u.totalTokens ?? (u.promptTokens ?? 0) + (u.completionTokens ?? 0)),
    ...(reads > 0 ? { cacheReadTokens: reads } : {}),
    ...(writes > 0 ? { cacheWriteTokens: writes } : {}),
    ...(writes1h > 0 ? { cacheWrite1hTokens: writes1h } : {}),
  };
}

/** Writes one event (typed by the run event catalogue) to the run's log; resolves when it is durable. */
export type Emit = EmitRunEvent;

/** A completed round: what the Critic said about which plan. */
export interface RoundRecord {
  round: number;
  plan: string;
  critique: string;
  verdict: Verdict;
}

/** The run's state after its last completed agent step: enough to resume it elsewhere. */
export interface Checkpoint {
  round: number;
  rounds: RoundRecord[];
  /** This round's completed outputs. */
  plan?: string;
  critique?: string;
  host?: string;
  reporter?: string;
  usage: Usage;
}

export const initialCheckpoint = (): Checkpoint => ({ round: 1, rounds: [], usage: emptyUsage() });

/** A stored message of the conversation, as much of it as the history needs. */
export interface StoredMessage {
  runId: string;
  role: 'user' | 'agent';
  agent?: AgentRole;
  content: string;
}

/** A previous turn of the conversation, as the agents see it. */
export interface HistoryTurn {
  role: 'user' | 'assistant';
  content: string;
}
