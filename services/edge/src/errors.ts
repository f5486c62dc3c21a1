// Errors as the public API shows them: an HttpError carries its status and a machine-readable
// code; gRPC statuses from the peers are mapped here, in one place.
import { codeOf, detailsOf, isReason, reasonOf, retryAfterOf, status, type Reason } from '@agent-mesh/common';

export class HttpError extends Error {
  override name = 'HttpError';
  constructor(
    readonly statusCode: number,
    readonly code: string,
    message: string,
    /** Seconds for a Retry-After header. */
    readonly retryAfterS?: number,
    /** Extra fields merged into the JSON body (e.g. the SSE limiter's queue token). */
    readonly extra?: Record<string, unknown>,
    /** The request parameter at fault, as OpenAI's errors name it (`messages[0].role`). */
    readonly param?: string,
  ) {
    super(message);
  }
}

export const badRequest = (message: string, code = 'invalid_argument', param?: string) => new HttpError(400, code, message, undefined, undefined, param);
export const unauthorized = (message: string) => new HttpError(401, 'unauthenticated', message);

const GRPC_TO_HTTP: Partial<Record<status, number>> = {
  [status.INVALID_ARGUMENT]: 400,
  [status.OUT_OF_RANGE]: 400,
  [status.NOT_FOUND]: 404,
  [status.FAILED_PRECONDITION]: 409,
  [status.ALREADY_EXISTS]: 409,
  [status.ABORTED]: 409,
  [status.RESOURCE_EXHAUSTED]: 429,
  [status.UNAVAILABLE]: 503,
  [status.DEADLINE_EXCEEDED]: 504,
  [status.UNAUTHENTICATED]: 401,
  [status.PERMISSION_DENIED]: 404, // never tell a user that someone else's resource exists
};

/** Messages users see for reasons the peers send (`x-mesh-reason`). */
const REASON_MESSAGES: Partial<Record<Reason, string>> = {
  run_in_progress: 'a run is already in progress on this conversation: wait for it to finish or cancel it',
  not_found: 'not found',
  breaker_open: 'Service busy, please try again shortly.',
  queue_full: 'Service busy, please try again shortly.',
  deadline_unreachable: 'Service busy, please try again shortly.',
  upstream_rate_limited: 'Service busy, please try again shortly.',
};

/** Whether an error came from a gRPC peer (has a numeric status code). */
export function isGrpcError(err: unknown): boolean {
  return !(err instanceof HttpError) && typeof codeOf(err) === 'number';
}

/** Maps a peer's gRPC error to the HTTP error the client sees. */
export function fromGrpc(err: unknown): HttpError {
  const code = codeOf(err) ?? status.UNKNOWN;
  const reason = reasonOf(err) ?? status[code]?.toLowerCase() ?? 'upstream_error';
  // The orchestrator's admission control: the service is busy (503), not the caller too fast (429).
  if (reason === 'busy') {
    const ms = retryAfterOf(err);
    return new HttpError(503, 'busy', detailsOf(err) || 'Service busy, please try again shortly.', ms !== undefined && Number.isFinite(ms) ? Math.max(1, Math.ceil(ms / 1000)) : 1);
  }
  // The upstream provider refused a request the edge accepted (its own checks, e.g. the context
  // length): the caller's request is what it refused, as OpenAI clients expect.
  if (reason === 'upstream_rejected') return new HttpError(400, reason, detailsOf(err) || 'the upstream provider refused the request');
  const http = GRPC_TO_HTTP[code] ?? 502;
  const retryMs = retryAfterOf(err);
  let message: string;
  if (http === 502) message = 'a backend service failed';
  else if (http === 503) message = (isReason(reason) && REASON_MESSAGES[reason]) || 'a backend service is unavailable, please retry shortly';
  else if (http === 504) message = 'a backend service did not answer in time';
  else message = (isReason(reason) && reason !== 'not_found' && REASON_MESSAGES[reason]) || detailsOf(err) || reason;
  const retryAfterS =
    retryMs !== undefined && Number.isFinite(retryMs) ? Math.max(1, Math.ceil(retryMs / 1000)) : http === 503 || http === 429 ? 1 : undefined;
  return new HttpError(http, reason, message, retryAfterS);
}

/** The `retryable` flag of an SSE run.failed event built from an error. */
export function isRetryable(httpStatus: number): boolean {
  return httpStatus === 429 || httpStatus === 503 || httpStatus === 504 || httpStatus === 502;
}

const ANTHROPIC_TYPES: Record<number, string> = {
  400: 'invalid_request_error', 401: 'authentication_error', 403: 'permission_error', 404: 'not_found_error',
  413: 'request_too_large', 429: 'rate_limit_error', 503: 'overloaded_error', 529: 'overloaded_error',
};

/** Anthropic's error type for a status (its Messages API's errors). */
export const anthropicType = (status: number): string => ANTHROPIC_TYPES[status] ?? (status < 500 ? 'invalid_request_error' : 'api_error');
