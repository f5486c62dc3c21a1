// Turns a grpc-js server stream into an async iterable that cancels the call when the consumer
// stops early or the signal aborts. Reading pulls from the call, so gRPC flow control applies.
import type { ClientReadableStream } from '@grpc/grpc-js';
import type { CancelSignal } from './types';

export async function* iterateCall<T, U>(
  call: ClientReadableStream<T>,
  signal: CancelSignal,
  pick: (msg: T) => U | undefined,
): AsyncGenerator<U> {
  const onAbort = () => call.cancel();
  if (signal.aborted) call.cancel();
  else signal.addEventListener('abort', onAbort, { once: true });
  let done = false;
  try {
    for await (const msg of call as AsyncIterable<T>) {
      const v = pick(msg);
      if (v !== undefined) yield v;
    }
    done = true;
  } finally {
    signal.removeEventListener('abort', onAbort);
    if (!done) call.cancel();
  }
}
