// Single-flight within a process: identical concurrent calls run once, the followers await the
// leader's promise. Across replicas: ReplicaLock (services/common/src/cache).
//
// The shared run is not any one caller's: it goes on while at least one caller still waits for it
// (or one came without a signal, like pre-warming), and is aborted once every caller has gone.

export type FlightRole = 'leader' | 'local_follower' | 'remote_follower';

interface Flight<T> {
  promise: Promise<T>;
  abort: AbortController;
  /** Callers still waiting; Infinity once a caller without a signal joined. */
  waiting: number;
}

export class SingleFlight<T> {
  private readonly inFlight = new Map<string, Flight<T>>();

  /**
   * Runs `fn` once per key at a time in this process; `role` says how this caller was served.
   * `signal`: this caller's; `fn`'s signal aborts when every caller's has (never, while a caller
   * without one waits).
   */
  async run(key: string, fn: (signal: AbortSignal) => Promise<T>, signal?: AbortSignal): Promise<{ value: T; role: FlightRole }> {
    let flight = this.inFlight.get(key);
    const role: FlightRole = flight ? 'local_follower' : 'leader';
    if (!flight) {
      const abort = new AbortController();
      const f: Flight<T> = { abort, waiting: 0, promise: undefined as unknown as Promise<T> };
      f.promise = fn(abort.signal).finally(() => {
        if (this.inFlight.get(key) === f) this.inFlight.delete(key);
      });
      this.inFlight.set(key, f);
      flight = f;
    }
    const f = flight;
    if (!signal) f.waiting = Number.POSITIVE_INFINITY;
    else {
      f.waiting += 1;
      const leave = () => {
        f.waiting -= 1;
        if (f.waiting <= 0) {
          // Nobody waits any more: a later identical call starts afresh.
          if (this.inFlight.get(key) === f) this.inFlight.delete(key);
          f.abort.abort(signal.reason);
        }
      };
      if (signal.aborted) leave();
      else {
        signal.addEventListener('abort', leave, { once: true });
        void f.promise.then(() => signal.removeEventListener('abort', leave), () => signal.removeEventListener('abort', leave));
      }
    }
    return { value: await f.promise, role };
  }

  get size(): number {
    return this.inFlight.size;
  }
}
