// Client-side helpers: create a client with the shared channel options, and call unary methods as
// promises with a deadline that is always set and a parent call whose deadline and cancellation
// propagate.
import {
  credentials,
  Metadata,
  type CallOptions,
  type Client,
  type ClientOptions,
  type ClientUnaryCall,
  type ServiceError,
} from '@grpc/grpc-js';
type ParentCall = NonNullable<CallOptions['parent']>;
import { CLIENT_CHANNEL_OPTIONS, DEFAULT_UNARY_DEADLINE_MS, grpcTarget } from './channel';
import { channelCredentials } from './tls';

type ClientCtor<C> = new (address: string, creds: ReturnType<typeof credentials.createInsecure>, options?: Partial<ClientOptions>) => C;

/** A client of `address`: one `host:port`, or a comma-separated list of replicas (see grpcTarget). */
export function createClient<C extends Client>(Ctor: ClientCtor<C>, address: string): C {
  return new Ctor(grpcTarget(address), channelCredentials(), CLIENT_CHANNEL_OPTIONS);
}

export interface CallOpts {
  /** Deadline from now; default 5 s. */
  timeoutMs?: number;
  /** A server call whose deadline and cancellation propagate to this one. */
  parent?: ParentCall;
  /** Cancels the call when aborted. */
  signal?: AbortSignal;
  metadata?: Metadata;
}

export function callOptions(opts: CallOpts = {}): Partial<CallOptions> {
  const deadline = new Date(Date.now() + (opts.timeoutMs ?? DEFAULT_UNARY_DEADLINE_MS));
  // With a parent, grpc-js takes the earlier of the two deadlines and cancels with the parent.
  return opts.parent ? { deadline, parent: opts.parent } : { deadline };
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
    const call = method(request, opts.metadata ?? new Metadata(), callOptions(opts), (err, res) =>
      err ? reject(err) : resolve(res),
    );
    if (opts.signal) {
      if (opts.signal.aborted) call.cancel();
      else opts.signal.addEventListener('abort', () => call.cancel(), { once: true });
    }
  });
}

/** Closes a client's channel. */
export function closeClient(client: Client): void {
  client.close();
}
