// What the edge needs from its peers, as interfaces: the app is built against these so tests can
// inject fakes; the gRPC implementations live beside this file, one module per peer.
import type { CallScope, Reason } from '@agent-mesh/common';
import type {
  RunEvent, StartRunRequest, WatchRunRequest, CancelRunRequest, CancelRunResponse,
  EraseConversationRequest, EraseConversationResponse, ExportConversationRequest, ExportConversationResponse,
} from '@agent-mesh/common/gen/orchestrator/v1/orchestrator';
import type {
  CreateConversationRequest,
  CreateConversationResponse,
  GetConversationRequest,
  GetConversationResponse,
  DeleteStoredResponseRequest,
  DeleteStoredResponseResponse,
  EraseStoredResponsesRequest,
  EraseStoredResponsesResponse,
  GetRunRequest,
  GetRunResponse,
  GetStoredResponseRequest,
  GetStoredResponseResponse,
  ListConversationsRequest,
  ListConversationsResponse,
  ListStoredResponsesRequest,
  ListStoredResponsesResponse,
  SaveStoredResponseRequest,
  SaveStoredResponseResponse,
} from '@agent-mesh/common/gen/store/v1/store';
import type { CountTokensResponse, EmbedRequest, EmbedResponse, GenerateRequest, GenerateResponse, ServedModel } from '@agent-mesh/common/gen/llmbroker/v1/llm_broker';
import type { JaegerReader } from '../ops/jaeger';
import type { PrometheusReader } from '../ops/prometheus';

export type { RunEvent };

/** The reason (REASON_KEY) a watch fails with when its consumer fell too far behind. */
export const SLOW_CONSUMER: Reason = 'slow_consumer';

/**
 * What a stream of events needs to learn that its consumer stopped: the part of AbortSignal the
 * gateways use. An AbortSignal is one; so is the much lighter `Cancel` (cancel.ts), which each
 * SSE stream uses (an AbortController with its signal and listener table cost ~0.45 KB a stream).
 */
export interface CancelSignal {
  readonly aborted: boolean;
  addEventListener(type: 'abort', listener: AbortListener, options?: { once?: boolean }): void;
  removeEventListener(type: 'abort', listener: AbortListener): void;
}

/**
 * A function, or (as EventTarget allows) an object whose `handleEvent` is called: a long-lived
 * listener (a watch) is then the object itself rather than a closure per stream.
 */
export type AbortListener = (() => void) | { handleEvent(): void };

/** Receives the events of a `PushSource` as they arrive. */
export interface RunEventSink {
  onEvent(ev: RunEvent): void;
  /** The source ended: `err` undefined after its last event, else what iterating would have thrown. */
  onEnd(err?: Error): void;
}

/**
 * An event iterator that can also push its events to one sink (`pipe`) instead of being pulled:
 * no promise, resolving functions and reactions per event. At 20,000 streams and 2,000 events/s a
 * stream waits ~10 s for its next event, so each pending `next()` outlived young-generation
 * collections, was promoted, and died in the old generation (1.5–2.7 MB/s of old-space garbage,
 * besides ~0.5 KB per stream live). The relay pipes sources that offer it and pulls the others.
 */
export interface PushSource extends AsyncIterator<RunEvent> {
  /** From now on hands every event (those already queued first) and the end to `sink`. */
  pipe(sink: RunEventSink): void;
}

export function isPushSource(it: AsyncIterator<RunEvent>): it is PushSource {
  return typeof (it as Partial<PushSource>).pipe === 'function';
}

/** A stream of a run's events; abort the signal to cancel the watch (never the run). */
export interface OrchestratorGateway {
  startRun(req: StartRunRequest, signal: CancelSignal): AsyncIterable<RunEvent>;
  watchRun(req: WatchRunRequest, signal: CancelSignal): AsyncIterable<RunEvent>;
  /** `scope` (every unary call here): the HTTP request's, see scope.ts. */
  cancelRun(req: CancelRunRequest, scope?: CallScope): Promise<CancelRunResponse>;
  /** Everything kept about a conversation (stored documents and retained run logs). */
  exportConversation(req: ExportConversationRequest, scope?: CallScope): Promise<ExportConversationResponse>;
  /** Cancels the active run, then erases the conversation everywhere; idempotent for its owner. */
  eraseConversation(req: EraseConversationRequest, scope?: CallScope): Promise<EraseConversationResponse>;
}

export interface StoreGateway {
  createConversation(req: CreateConversationRequest, scope?: CallScope): Promise<CreateConversationResponse>;
  listConversations(req: ListConversationsRequest, scope?: CallScope): Promise<ListConversationsResponse>;
  getConversation(req: GetConversationRequest, scope?: CallScope): Promise<GetConversationResponse>;
  /** The user's run (NOT_FOUND when it is not theirs). */
  getRun(req: GetRunRequest, scope?: CallScope): Promise<GetRunResponse>;
  /** Keeps an answer of the Responses API (upsert by id). */
  saveStoredResponse(req: SaveStoredResponseRequest, scope?: CallScope): Promise<SaveStoredResponseResponse>;
  /** The user's kept answer (NOT_FOUND when it is not theirs). */
  getStoredResponse(req: GetStoredResponseRequest, scope?: CallScope): Promise<GetStoredResponseResponse>;
  /** Deletes the user's kept answer (NOT_FOUND when there is none). */
  deleteStoredResponse(req: DeleteStoredResponseRequest, scope?: CallScope): Promise<DeleteStoredResponseResponse>;
  /** The user's kept answers, newest first (ids and times only). */
  listStoredResponses(req: ListStoredResponsesRequest, scope?: CallScope): Promise<ListStoredResponsesResponse>;
  /** Deletes every kept answer of the user. */
  eraseStoredResponses(req: EraseStoredResponsesRequest, scope?: CallScope): Promise<EraseStoredResponsesResponse>;
}

export interface BrokerGateway {
  /**
   * One Generate call. `gate`: a check that must pass before the upstream is called (the user's
   * budget); its error is thrown as it is. The inline broker awaits it beside the quota's admission,
   * the gRPC gateway before the call.
   */
  generate(req: GenerateRequest, signal: AbortSignal, gate?: Promise<unknown>): AsyncIterable<GenerateResponse>;
  /** The prompt tokens the call would be billed, as the upstream that would serve it counts them (no upstream call). */
  countTokens(req: GenerateRequest, scope?: CallScope): Promise<CountTokensResponse>;
  /** The models the upstreams serve, in fallback order. */
  listModels(scope?: CallScope): Promise<ServedModel[]>;
  /** One Embed call; `gate` as for generate. */
  embed(req: EmbedRequest, signal: AbortSignal, gate?: Promise<unknown>): Promise<EmbedResponse>;
  /** The gate's Redis commands leave with the admission's, in one write (the inline broker). */
  readonly gateBeside?: boolean;
}

export type DependencyName = 'llm' | 'database' | 'cache' | 'orchestrator' | 'toolService';

export interface DependencyCheck {
  status: 'up' | 'down';
  latencyMs: number;
  detail?: string;
}

/** Checks one dependency (gRPC health, Redis PING) within a short timeout. */
export type HealthProbe = () => Promise<DependencyCheck>;

/** A peer's prom-client metrics as JSON (`/metrics.json`), or why it could not be read. */
export interface PeerMetric {
  name: string;
  help?: string;
  type: string;
  values: { value: number; labels: Record<string, string | number>; metricName?: string }[];
}
export type PeerMetricsReader = () => Promise<PeerMetric[]>;

export interface Gateways {
  orchestrator: OrchestratorGateway;
  store: StoreGateway;
  broker: BrokerGateway;
  health: Record<DependencyName, HealthProbe>;
  metrics: Partial<Record<'orchestrator' | 'store' | 'broker' | 'tools', PeerMetricsReader>>;
  /** Prometheus, for the operations figures (undefined: PROMETHEUS_URL not set). */
  prometheus?: PrometheusReader;
  /** Jaeger's query API, for runs' traces (undefined: JAEGER_QUERY_URL not set). */
  jaeger?: JaegerReader;
  /** Closes channels and connections. */
  close(): Promise<void>;
}
