// SingleFlight: one run per key at a time, shared by its callers, aborted only once every caller has gone.
import { SingleFlight } from './single-flight';

/** A run that ends when told to, or rejects when its signal aborts; records whether it was aborted. */
function controllable() {
  const state = { runs: 0, aborted: false, finish: (_v: string) => {} };
  const fn = (signal: AbortSignal) => {
    state.runs += 1;
    return new Promise<string>((resolve, reject) => {
      state.finish = resolve;
      signal.addEventListener('abort', () => { state.aborted = true; reject(new Error('aborted')); }, { once: true });
    });
  };
  return { state, fn };
}

test('identical concurrent calls run once; the leader and the followers get the same value', async () => {
  const f = new SingleFlight<string>();
  const { state, fn } = controllable();
  const a = f.run('k', fn, new AbortController().signal);
  const b = f.run('k', fn, new AbortController().signal);
  state.finish('v');
  expect(await a).toEqual({ value: 'v', role: 'leader' });
  expect(await b).toEqual({ value: 'v', role: 'local_follower' });
  expect(state.runs).toBe(1);
  expect(f.size).toBe(0);
});

test('the run goes on while one caller still waits, and is aborted when the last one leaves', async () => {
  const f = new SingleFlight<string>();
  const { state, fn } = controllable();
  const [c1, c2] = [new AbortController(), new AbortController()];
  const a = f.run('k', fn, c1.signal).catch((e: Error) => e.message);
  const b = f.run('k', fn, c2.signal).catch((e: Error) => e.message);
  c1.abort();
  await Promise.resolve();
  expect(state.aborted).toBe(false);
  c2.abort();
  expect(state.aborted).toBe(true);
  expect([await a, await b]).toEqual(['aborted', 'aborted']);
  // The next identical call runs afresh.
  const { state: next, fn: fn2 } = controllable();
  const c = f.run('k', fn2, new AbortController().signal);
  next.finish('w');
  expect((await c).value).toBe('w');
});

test('a caller without a signal (pre-warming) keeps the run going whoever else leaves', async () => {
  const f = new SingleFlight<string>();
  const { state, fn } = controllable();
  const c1 = new AbortController();
  const a = f.run('k', fn, c1.signal).catch((e: Error) => e.message);
  const warm = f.run('k', fn);
  c1.abort();
  expect(state.aborted).toBe(false);
  state.finish('v');
  expect((await warm).value).toBe('v');
  expect(await a).toEqual({ value: 'v', role: 'leader' });
});
