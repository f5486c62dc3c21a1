// The run events: every event a run's stream can carry, its payload type, and whether it ends the
// run. The one catalogue: the orchestrator's emitter is typed by it, the edge's relay and the
// OpenAPI description of the streams read it, and the web UI imports it from the edge
// (GET /run-events.js). On the wire an event is a RunEvent (type + JSON data, orchestrator.proto).

export type AgentName = 'planner' | 'critic' | 'host' | 'reporter';

interface AgentStep {
  agent: AgentName;
  round: number;
}

export interface TokenUsage {
  promptTokens: number;
  completionTokens: number;
  totalTokens: number;
  /** Of promptTokens, those the provider read from its prompt cache (absent: none). */
  cacheReadTokens?: number;
  /** Of promptTokens, those the provider wrote to its prompt cache (Anthropic's; absent: none). */
  cacheWriteTokens?: number;
  /** Of cacheWriteTokens, those written to be kept an hour (Anthropic's `ttl: 1h`, billed at twice the prompt's price; absent: none). */
  cacheWrite1hTokens?: number;
}

/** Event name → its JSON payload. */
export interface RunEventPayloads {
  /** `traceId`: the run's trace in the tracing backend (32 hex digits; absent when tracing is off). */
  'run.started': { runId: string; conversationId: string; messageId: string; traceId?: string };
  queued: AgentStep & { position: number; estimatedWaitMs: number };
  'agent.started': AgentStep;
  'agent.restarted': AgentStep & { reason: 'takeover' };
  token: AgentStep & { text: string };
  'agent.completed': AgentStep & { tokens: number; content: string };
  'agent.failed': AgentStep & { code: string; message: string; partial: string };
  'tool.called': AgentStep & { callId: string; tool: string; arguments: unknown };
  'tool.result': AgentStep & {
    callId: string;
    tool: string;
    ok: boolean;
    result?: unknown;
    error?: { code: string; message: string };
    cached: boolean;
    degraded: boolean;
  };
  'round.completed': { round: number; verdict: 'approve' | 'revise' };
  'run.completed': { runId: string; answer: string; rounds: number; usage: TokenUsage; cost: { usd: number } };
  'run.failed': { code: string; message: string; retryable: boolean };
  'run.cancelled': { reason: string; partial: string };
  degraded: { reason: string; message: string; retryable: true; retryAfterMs?: number };
  // Not in a run's log: written into one watch (events.lost) or one stream (the edge's).
  'events.lost': { afterSeq: number; firstAvailableSeq: number };
  reconnect: { reason: string; retryMs: number; lastEventId: string | null };
  'stream.overflow': { reason: string; message: string; lastEventId: string | null };
}

export type RunEventType = keyof RunEventPayloads;

export interface RunEventSpec {
  /** Ends the run: exactly one terminal event per run, its last. */
  terminal: boolean;
  /** Who writes it: the orchestrator (into the run's log, or a watch: events.lost) or the edge (into one stream). */
  from: 'orchestrator' | 'edge';
  doc: string;
}

export const RUN_EVENTS: Record<RunEventType, RunEventSpec> = {
  'run.started': { terminal: false, from: 'orchestrator', doc: 'the run began (its id, conversation and message, and its trace id when traced)' },
  queued: { terminal: false, from: 'orchestrator', doc: "an agent's LLM call waits in the broker's queue (position, estimated wait)" },
  'agent.started': { terminal: false, from: 'orchestrator', doc: 'an agent began its turn' },
  'agent.restarted': { terminal: false, from: 'orchestrator', doc: 'another replica took the run over and repeats the interrupted agent' },
  token: { terminal: false, from: 'orchestrator', doc: "a piece of an agent's answer" },
  'agent.completed': { terminal: false, from: 'orchestrator', doc: "an agent's whole answer" },
  'agent.failed': { terminal: false, from: 'orchestrator', doc: 'the model failed mid-answer: code, message and the partial text' },
  'tool.called': { terminal: false, from: 'orchestrator', doc: 'an agent called a tool' },
  'tool.result': { terminal: false, from: 'orchestrator', doc: "the tool's result or error (cached, degraded)" },
  'round.completed': { terminal: false, from: 'orchestrator', doc: "the Critic's verdict on the round's plan" },
  'run.completed': { terminal: true, from: 'orchestrator', doc: "the Reporter's answer, rounds, usage and cost" },
  'run.failed': { terminal: true, from: 'orchestrator', doc: 'the run failed: code, message, whether a retry may help' },
  'run.cancelled': { terminal: true, from: 'orchestrator', doc: 'the run was cancelled: the partial answer' },
  degraded: { terminal: true, from: 'orchestrator', doc: 'the upstream could not serve in time: a clear, retryable answer' },
  'events.lost': { terminal: false, from: 'orchestrator', doc: 'a resume asked for events no longer retained' },
  reconnect: { terminal: false, from: 'edge', doc: 'come back (with Last-Event-ID): the edge is draining or lost its source' },
  'stream.overflow': { terminal: false, from: 'edge', doc: 'the client read too slowly: resume with Last-Event-ID' },
};

export const TERMINAL_EVENTS: ReadonlySet<string> = new Set(Object.entries(RUN_EVENTS).filter(([, e]) => e.terminal).map(([t]) => t));

export function isTerminalEvent(type: string): boolean {
  return TERMINAL_EVENTS.has(type);
}

/** Writes one event of a run; typed by the catalogue. */
export type EmitRunEvent = <T extends RunEventType>(type: T, data: RunEventPayloads[T]) => Promise<void>;

/** The catalogue as an ES module, for browsers (the edge serves it as /run-events.js). */
export function runEventsModule(): string {
  return [
    '// Generated by the edge from services/common/src/events (the run event catalogue).',
    `export const RUN_EVENTS = ${JSON.stringify(RUN_EVENTS, null, 2)};`,
    `export const TERMINAL = new Set(${JSON.stringify([...TERMINAL_EVENTS])});`,
    '',
  ].join('\n');
}
