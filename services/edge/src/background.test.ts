import { createLogger } from '@agent-mesh/common';
import { BackgroundCalls, type CancelBroadcast } from './background';

const logger = createLogger('background-test', 'silent');

/** A call that ends when told, or when stopped (then with the stop's reason). */
function pendingCall() {
  const abort = new AbortController();
  let finish!: () => void;
  const ended: string[] = [];
  const task = () =>
    new Promise<void>((resolve) => {
      finish = resolve;
      abort.signal.addEventListener('abort', () => resolve());
    }).then(() => void ended.push(abort.signal.aborted ? `stopped: ${String(abort.signal.reason)}` : 'ended'));
  return { abort, task, ended, finish: () => finish() };
}

test('a cancel stops the call where it runs; elsewhere it is published, and a published one stops it here', async () => {
  const published: string[] = [];
  let onCancel: (id: string) => void = () => undefined;
  const broadcast: CancelBroadcast = { publish: async (id) => published.push(id), subscribe: async (fn) => (onCancel = fn), close: async () => undefined };
  const calls = new BackgroundCalls(logger, broadcast);
  calls.start();
  const a = pendingCall();
  const b = pendingCall();
  calls.run('resp_a', a.abort, a.task);
  calls.run('resp_b', b.abort, b.task);
  expect(calls.size).toBe(2);
  await calls.cancel('resp_a');
  await calls.cancel('resp_elsewhere');
  expect(published).toEqual(['resp_elsewhere']);
  onCancel('resp_b');
  await new Promise((r) => setImmediate(r));
  expect([a.ended, b.ended]).toEqual([['stopped: cancelled'], ['stopped: cancelled']]);
  expect(calls.size).toBe(0);
});

test('the drain waits for the calls until its phase ends; then the rest are stopped as shut down, their ends awaited', async () => {
  const calls = new BackgroundCalls(logger);
  const quick = pendingCall();
  const slow = pendingCall();
  calls.run('resp_quick', quick.abort, quick.task);
  calls.run('resp_slow', slow.abort, slow.task);
  const phase = new AbortController();
  const drained = calls.drain(phase.signal);
  quick.finish();
  await new Promise((r) => setTimeout(r, 20));
  expect(slow.ended).toEqual([]);
  phase.abort();
  await drained;
  expect([quick.ended, slow.ended]).toEqual([['ended'], []]);
  await calls.stop();
  expect([quick.ended, slow.ended]).toEqual([['ended'], ['stopped: shutdown']]);
});
