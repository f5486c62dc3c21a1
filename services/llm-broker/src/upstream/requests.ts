// The requests one call sends to the provider, as its RPM window counts them. The provider counts
// every request it receives, retries included; the admission counted one. So each retry takes
// one more place in the global RPM window (waiting for it, like an admission), except after an
// attempt that never reached the provider (the connection was refused, the breaker refused it):
// that attempt's place serves the next one, and when no attempt of the call reached the provider
// the admission's place is given back.
import type { Lease } from '@agent-mesh/common';
import { UpstreamError } from './provider';

/** The code of an UpstreamError for a connection that could not be opened: nothing was sent. */
export const CONNECT_FAILED = 'connect_failed';

/** Errors of opening a connection (undici's and the socket's): the request was never written. */
const CONNECT_ERRORS: ReadonlySet<string> = new Set([
  'ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'UND_ERR_CONNECT_TIMEOUT',
]);

export function isConnectError(err: unknown): boolean {
  return CONNECT_ERRORS.has((err as { code?: string } | undefined)?.code ?? '');
}

/**
 * Whether a failed attempt reached the provider: anything the provider answered (any status), a
 * connection that broke or timed out after the request was written, a cancel; not a connection
 * that could not be opened, nor a call the open breaker refused (opossum's EOPENBREAKER). When in
 * doubt, it did (counting one request too many only slows the pace a little).
 */
export function reachedProvider(err: unknown): boolean {
  if (err instanceof UpstreamError) return err.code !== CONNECT_FAILED;
  const code = (err as { code?: string } | undefined)?.code;
  return code !== 'EOPENBREAKER' && !isConnectError(err);
}

export interface SentRequestsOptions {
  now: () => number;
  sleep: (ms: number, signal: AbortSignal) => Promise<void>;
}

/** The requests of one call under its lease: see the file's head. */
export class SentRequests {
  /** A place in the RPM window is held for the next attempt (the admission's, at first). */
  private held = true;

  constructor(
    private readonly lease: Pick<Lease, 'chargeRequest' | 'refundRequest'>,
    private readonly o: SentRequestsOptions,
  ) {}

  /** An attempt is sent: it uses the place held. */
  sending(): void {
    this.held = false;
  }

  /** An attempt failed; one that never reached the provider leaves its place for the next. */
  failed(err: unknown): void {
    if (!reachedProvider(err)) this.held = true;
  }

  /**
   * Before a retry: the place held, else one more taken from the RPM window, waiting until it has
   * room. False when it has none before `deadline` (nothing is taken then).
   */
  async beforeRetry(signal: AbortSignal, deadline: number | undefined): Promise<boolean> {
    while (!this.held) {
      const r = await this.lease.chargeRequest();
      if (r.ok) {
        this.held = true;
        break;
      }
      if (deadline !== undefined && this.o.now() + r.retryAfterMs > deadline) return false;
      await this.o.sleep(r.retryAfterMs, signal);
    }
    return true;
  }

  /** The call is done with the provider: a place still held (no attempt used it) goes back. */
  async end(): Promise<void> {
    if (!this.held) return;
    this.held = false;
    await this.lease.refundRequest();
  }
}
