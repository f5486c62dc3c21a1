// Client-side helpers: call unary methods as promises with a deadline that is always set, and
// bound to the call they are made for (`scopeOf(call)`: its deadline and its cancellation), so that
// a caller that gives up ends every call made on its behalf, hop by hop. The clients themselves
// come from one factory per callee (peers.ts).
import {
  credentials,
  Metadata,
  type CallOptions,
  type Client,
  type ClientOptions,
  type ClientUnaryCall,
  type ServerUnaryCall,
  type ServiceError,
} from '@grpc/grpc-js';
import { CLIENT_CHANNEL_OPTIONS, DEFAULT_UNARY_DEADLINE_MS, grpcTarget } from './channel';
import { keepDrainingConnectionsAlive } from './keepalive';
import { channelCredentials } from './tls';
import { tracingInterceptor } from '../telemetry/grpc';

/** What every server call has (grpc-js does not export this type from its index). */
type ServerCall = Pick<ServerUnaryCall<unknown, unknown>, 'cancelled' | 'getDeadline' | 'once'>;

type ClientCtor<C> = new (address: string, creds: ReturnType<typeof credentials.createInsecure>, options?: Partial<ClientOptions>) => C;

/**
 * A client of `address` with the shared channel options (keepalive, retries, reconnect backoff):
 * one `host:port`, or a comma-separated list of replicas (see grpcTarget). It connects at once
 * rather than at its first call: a channel that connects lazily queues its first calls until one
 * replica answers and hands them all to that one (round_robin picks among connected replicas only),
 * so a burst right after a start would land on a single replica (the channel options keep it from
 * going idle later).
 */
export function createClient<C extends Client>(Ctor: ClientCtor<C>, address: string): C {
  keepDrainingConnectionsAlive();
  const client = new Ctor(grpcTarget(address), channelCredentials(), { ...CLIENT_CHANNEL_OPTIONS, interceptors: [tracingInterceptor] });
  client.getChannel().getConnectivityState(true);
  return client;
}

/** What a downstream call inherits from the call it is made for. */
export interface CallScope {
  /** Aborts when the caller cancels or its deadline passes. */
  signal?: AbortSignal;
  /** The caller's deadline (ms since the epoch): a downstream call ends no later. */
  deadline?: number;
}

export interface CallOpts extends CallScope {
  /** This call's own deadline from now (capped by `deadline`). @default 5000 (DEFAULT_UNARY_DEADLINE_MS) */
  timeoutMs?: number;
  metadata?: Metadata;
}

/**
 * The scope of a server call, for the calls its handler makes: its deadline, and a signal that
 * aborts when the call is cancelled or its deadline passes (grpc-js reports both as `cancelled`).
 */
export function scopeOf(call: ServerCall): Required<CallScope> {
  const abort = new AbortController();
  if (call.cancelled) abort.abort();
  else call.once('cancelled', () => abort.abort());
  const d = call.getDeadline();
  const deadline = d instanceof Date ? d.getTime() : d;
  return { signal: abort.signal, deadline: Number.isFinite(deadline) ? deadline : Number.POSITIVE_INFINITY };
}

/** The deadline of a call: its own (or the default) from now, never later than its caller's. */
export function callOptions(opts: CallOpts = {}, now = Date.now()): Partial<CallOptions> {
  const own = now + (opts.timeoutMs ?? DEFAULT_UNARY_DEADLINE_MS);
  return { deadline: new Date(Math.min(own, opts.deadline ?? Number.POSITIVE_INFINITY)) };
}

type UnaryMethod<Req, Res> = (
  request: Req,
  metadata: Metadata,
  options: Partial<CallOptions>,
  callback: (error: ServiceError | null, response: Res) => void,
) => ClientUnaryCall;

/** Calls a unary method as a promise: `await unary(client.getRun.bind(client), req, { timeoutMs })`. */
export function unary<Req, Res>(method: UnaryMethod<Req, Res>, request: Req, opts: CallOpts = {}): Promise<Res> {
  return new Promise<Res>((resolve, reject) => {
    const { signal } = opts;
    const onAbort = () => call.cancel();
    const call = method(request, opts.metadata ?? new Metadata(), callOptions(opts), (err, res) => {
      signal?.removeEventListener('abort', onAbort);
      if (err) reject(err);
      else resolve(res);
    });
    if (signal?.aborted) call.cancel();
    else signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** Closes a client's channel. */
export function closeClient(client: Client): void {
  client.close();
}
