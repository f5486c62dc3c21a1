// Errors cross the wire as gRPC status codes with a machine-readable reason in the trailers
// (`x-mesh-reason`), so callers can tell "busy" from "not found" from "bad input". The reasons and
// their status codes are catalogued in ./reasons.ts.
import { Metadata, status, type ServiceError } from '@grpc/grpc-js';
import { REASONS, type Reason, type ReasonWith } from './reasons';

export { status };

export const REASON_KEY = 'x-mesh-reason';
export const RETRY_AFTER_KEY = 'x-mesh-retry-after-ms';

export class MeshError extends Error {
  override name = 'MeshError';
  /** The reason's status (REASONS). */
  readonly code: status;
  constructor(
    readonly reason: Reason,
    message: string,
    readonly retryAfterMs?: number,
  ) {
    super(message);
    this.code = REASONS[reason].code;
  }

  toServiceError(): Partial<ServiceError> {
    const metadata = new Metadata();
    metadata.set(REASON_KEY, this.reason);
    if (this.retryAfterMs !== undefined) metadata.set(RETRY_AFTER_KEY, String(Math.ceil(this.retryAfterMs)));
    // A MeshError is the service's considered answer (e.g. the broker's UNAVAILABLE after its own
    // retries, or breaker_open): a negative pushback tells grpc-js not to retry it transparently,
    // so the channel's retry policy only covers calls that never reached a handler.
    metadata.set('grpc-retry-pushback-ms', '-1');
    return { code: this.code, details: this.message, metadata };
  }
}

export const invalidArgument = (reason: ReasonWith<status.INVALID_ARGUMENT>, message: string) => new MeshError(reason, message);
export const notFound = (what: string) => new MeshError('not_found', `${what} not found`);

export function isServiceError(err: unknown): err is ServiceError {
  return typeof err === 'object' && err !== null && 'code' in err && 'metadata' in err;
}

/** The machine-readable reason of an error received from a peer (or raised here). */
export function reasonOf(err: unknown): string | undefined {
  if (err instanceof MeshError) return err.reason;
  if (isServiceError(err)) {
    const v = err.metadata?.get(REASON_KEY)[0];
    return typeof v === 'string' ? v : undefined;
  }
  return undefined;
}

/** Redis lost for a moment (a restart, a failover): the caller may try again once it reconnects (~2 s). */
export function redisUnavailable(): MeshError {
  return new MeshError('redis_unavailable', 'a dependency is unavailable, try again shortly', 2_000);
}

export function retryAfterOf(err: unknown): number | undefined {
  if (err instanceof MeshError) return err.retryAfterMs;
  if (isServiceError(err)) {
    const v = err.metadata?.get(RETRY_AFTER_KEY)[0];
    return typeof v === 'string' ? Number(v) : undefined;
  }
  return undefined;
}

export function codeOf(err: unknown): status | undefined {
  if (err instanceof MeshError) return err.code;
  if (isServiceError(err)) return err.code;
  return undefined;
}

/** The message a peer sent with its status (`details`), without grpc-js's "N CODE: " prefix. */
export function detailsOf(err: unknown): string {
  if (isServiceError(err)) return err.details || err.message;
  return err instanceof Error ? err.message : String(err);
}
