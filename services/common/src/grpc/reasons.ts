// Every reason a MeshError carries across the wire (`x-mesh-reason`), with its gRPC status and
// what it means. The one catalogue: a MeshError can only be made with a reason listed here, and
// its status comes from here. The edge passes a peer's reason on as the public error `code` of
// its HTTP answers (docs/architecture.md, "The public contract"), so renaming one is a change of
// the public contract.
import { status } from '@grpc/grpc-js';

const INVALID = status.INVALID_ARGUMENT;

export const REASONS = {
  // Requests a service refuses as malformed (INVALID_ARGUMENT).
  invalid_argument: { code: INVALID, doc: 'a field is malformed (the message names it)' },
  invalid_id: { code: INVALID, doc: 'an id is not a UUID' },
  invalid_user_id: { code: INVALID, doc: 'user_id is missing or not 1–128 characters of [A-Za-z0-9_-@.|:]' },
  invalid_conversation_id: { code: INVALID, doc: 'conversation_id is not a UUID' },
  invalid_message_id: { code: INVALID, doc: 'message_id is not a UUID' },
  invalid_run_id: { code: INVALID, doc: 'run_id is not a UUID' },
  invalid_after_seq: { code: INVALID, doc: 'after_seq is negative or not an integer' },
  invalid_tool_name: { code: INVALID, doc: 'tool_name is too long' },
  invalid_text: { code: INVALID, doc: 'a text field is empty when required, or holds NUL characters' },
  invalid_enum: { code: INVALID, doc: 'a field is not one of its allowed values' },
  invalid_page_size: { code: INVALID, doc: 'page_size is out of range' },
  invalid_page_token: { code: INVALID, doc: 'a page token was not issued by this service' },
  invalid_timestamp: { code: INVALID, doc: 'a time is not Unix milliseconds' },
  invalid_count: { code: INVALID, doc: 'a count is negative or not an integer' },
  invalid_request: { code: INVALID, doc: 'an LLM call the broker cannot make (no messages, tools not a JSON array)' },
  empty_content: { code: INVALID, doc: 'a message without content' },
  content_too_long: { code: INVALID, doc: "a message longer than the orchestrator's limit" },
  too_long: { code: INVALID, doc: 'a text field is longer than its limit' },
  too_many: { code: INVALID, doc: 'a list holds more items than its limit' },
  duplicate_subscription: { code: INVALID, doc: 'a WatchRuns subscription id that is already open' },
  // State.
  not_found: { code: status.NOT_FOUND, doc: 'the resource does not exist, or belongs to another user' },
  id_conflict: { code: status.ALREADY_EXISTS, doc: 'an id already used by another resource' },
  run_in_progress: { code: status.FAILED_PRECONDITION, doc: 'the conversation has an active run' },
  response_not_pending: { code: status.FAILED_PRECONDITION, doc: 'a background response has ended (or was cancelled): its end is not written over it' },
  // Capacity: try again later (RESOURCE_EXHAUSTED and UNAVAILABLE carry a retry-after).
  busy: { code: status.RESOURCE_EXHAUSTED, doc: "admission control: a new run's first LLM call would wait too long, or too many runs are starting" },
  queue_full: { code: status.RESOURCE_EXHAUSTED, doc: "the broker's queue is full, or the broker is shutting down" },
  deadline_unreachable: { code: status.RESOURCE_EXHAUSTED, doc: "the broker's queue cannot admit the call before its deadline" },
  upstream_rate_limited: { code: status.RESOURCE_EXHAUSTED, doc: 'the upstream LLM answered 429 and the retries are spent' },
  breaker_open: { code: status.UNAVAILABLE, doc: "the upstream LLM's circuit breaker is open" },
  upstream_error: { code: status.UNAVAILABLE, doc: 'the upstream LLM failed (5xx, connection) and the retries are spent' },
  upstream_stream_failed: { code: status.UNAVAILABLE, doc: 'the upstream LLM failed after part of its answer was streamed' },
  db_unavailable: { code: status.UNAVAILABLE, doc: 'MongoDB is unreachable' },
  db_pool_exhausted: { code: status.UNAVAILABLE, doc: 'no MongoDB connection became free in time' },
  redis_unavailable: { code: status.UNAVAILABLE, doc: 'Redis (run logs, leases, quota) cannot be reached right now' },
  slow_consumer: { code: status.RESOURCE_EXHAUSTED, doc: "the edge's client reads a watched run's events too slowly (edge-internal)" },
  // The upstream's own refusals, passed on.
  upstream_rejected: { code: status.FAILED_PRECONDITION, doc: 'the upstream LLM refused the request (4xx)' },
  model_not_found: { code: status.NOT_FOUND, doc: 'the upstream LLM does not know the model' },
} as const satisfies Record<string, { code: status; doc: string }>;

export type Reason = keyof typeof REASONS;

/** The reasons whose status is `C`. */
export type ReasonWith<C extends status> = { [R in Reason]: (typeof REASONS)[R]['code'] extends C ? R : never }[Reason];

export function isReason(text: string | undefined): text is Reason {
  return text !== undefined && Object.hasOwn(REASONS, text);
}
