// A time limit on a call to another process (Redis, MongoDB, a peer), for calls that must never hang;
// and a wait for a wake-up, bounded in time.

/**
 * `p`, or a rejection once `ms` have passed: `timedOut` (or an Error saying that `timedOut` did not
 * answer within `ms`).
 *
 * The rejection is decided after the event loop's I/O of that turn, not in its timer phase: a
 * process busy for longer than `ms` (starting up, a long collection) has the answer in its socket
 * by then, and a timer that rejected first would report a peer down that answered in time — a false
 * "Redis unavailable" at every start of a process whose start kept the loop busy for 0.4 s.
 */
export function withTimeout<R>(p: Promise<R>, ms: number, timedOut: string | (() => Error)): Promise<R> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      setImmediate(() => reject(typeof timedOut === 'string' ? new Error(`${timedOut} did not answer within ${ms} ms`) : timedOut()));
    }, ms);
  });
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

/**
 * Waits to be woken: true when the `wake` that `arm` is handed is called first, false when `ms`
 * pass or `signal` fires first. `wake` answers whether it ended the wait (false once it had ended:
 * a caller keeping the news for its next wait then knows it is not taken).
 */
export function untilWoken(ms: number, signal: AbortSignal, arm: (wake: () => boolean) => void): Promise<boolean> {
  return new Promise((resolve) => {
    let pending = true;
    const done = (woken: boolean) => {
      if (!pending) return false;
      pending = false;
      clearTimeout(timer);
      signal.removeEventListener('abort', stop);
      resolve(woken);
      return true;
    };
    const stop = () => void done(false);
    const timer = setTimeout(stop, ms);
    signal.addEventListener('abort', stop, { once: true });
    arm(() => done(true));
  });
}
