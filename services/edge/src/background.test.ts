import { EventEmitter } from 'node:events';
import { createLogger, SUBSCRIBE_RETRY_MS, SUBSCRIBERS_SETTLE_MS, type Redis } from '@agent-mesh/common';
import { BackgroundCalls, EventFeed, FEED_WINDOW, LOG_END_CHECK_MS, redisLogNotices, type CancelBroadcast, type Emit, type LogNotices, type ResponseEvent, type ResponseEventLog } from './background';

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

const collect = async <T>(it: AsyncGenerator<T>, n = Infinity): Promise<T[]> => {
  const got: T[] = [];
  for await (const x of it) if (got.push(x) >= n) break;
  return got;
};

test("a running response's events: numbered in order, followed after a given one as they come, to the last; the feed is ended if the task did not end it", async () => {
  const calls = new BackgroundCalls(logger);
  const call = pendingCall();
  let emit!: Emit;
  calls.run('resp_a', call.abort, (e) => ((emit = e), call.task()));
  const feed = calls.feed('resp_a')!;
  emit('response.created', { response: { id: 'resp_a' } });
  emit('response.queued', { response: { id: 'resp_a' } });
  const follower = collect(feed.follow(0, new AbortController().signal, 60_000));
  emit('response.output_text.delta', { delta: 'Hi' });
  call.finish();
  const events = await follower;
  expect(events.map((e) => e!.seq)).toEqual([1, 2, 3]);
  expect(events[0]!.frame).toBe('event: response.queued\ndata: {"type":"response.queued","sequence_number":1,"response":{"id":"resp_a"}}\n\n');
  expect(events.at(-1)).toMatchObject({ last: true, frame: expect.stringMatching(/^event: error\n.*"sequence_number":3/) });
  expect(calls.feed('resp_a')).toBeUndefined();
  // Nothing after the last.
  expect(feed.push('late', false).seq).toBe(4);
  expect((await collect(feed.follow(-1, new AbortController().signal, 60_000))).map((e) => e!.seq)).toEqual([0, 1, 2, 3]);
});

test('a follower of a feed gets a keep-alive turn after each quiet interval, and stops when its caller leaves', async () => {
  const feed = new EventFeed();
  feed.push('a', false);
  const left = new AbortController();
  const got = collect(feed.follow(-1, left.signal, 20), 3);
  expect((await got).map((e) => e?.seq)).toEqual([0, undefined, undefined]);
  const stopped = collect(feed.follow(0, left.signal, 60_000));
  left.abort();
  expect(await stopped).toEqual([]);
});

/** A log in memory (the Redis one is tested with the edge, test/integration/edge.test.ts). */
function memoryLog(): ResponseEventLog & { events: ResponseEvent[] } {
  const events: ResponseEvent[] = [];
  return { events, append: async (_, e) => events.push(e), read: async (_, after, count) => events.filter((e) => e.seq > after).slice(0, count) };
}

test('a follower of the log reads what comes until the last event; a response ended in the store without its last event in the log is ended by the store\'s', async () => {
  const log = memoryLog();
  const calls = new BackgroundCalls(logger, undefined, log);
  const never = async () => undefined;
  log.events.push({ seq: 0, frame: 'a', last: false }, { seq: 1, frame: 'b', last: false });
  const follower = collect(calls.followLog('resp_a', 0, new AbortController().signal, never, () => false));
  setTimeout(() => log.events.push({ seq: 2, frame: 'c', last: true }), 150);
  expect((await follower).map((e) => e!.frame)).toEqual(['b', 'c']);

  // Its edge died: the store says how it ended; the frame comes at the next number, after one more read of the log.
  const lost = memoryLog();
  lost.events.push({ seq: 0, frame: 'a', last: false });
  const asked: number[] = [];
  const ended = async () => (asked.push(Date.now()), (seq: number) => `end ${seq}`);
  const started = Date.now();
  const events = await collect(new BackgroundCalls(logger, undefined, lost).followLog('resp_b', -1, new AbortController().signal, ended, () => false));
  expect(events.map((e) => e?.frame)).toEqual(['a', 'end 1']);
  expect(events.at(-1)).toMatchObject({ seq: 1, last: true });
  expect(asked).toHaveLength(1);
  expect(asked[0]! - started).toBeGreaterThanOrEqual(LOG_END_CHECK_MS - 10);

  // An edge that drains stops following (the caller resumes elsewhere), without an end.
  let draining = false;
  const stopping = collect(new BackgroundCalls(logger, undefined, memoryLog()).followLog('resp_c', -1, new AbortController().signal, never, () => draining));
  draining = true;
  expect(await stopping).toEqual([]);
});

test('a follower told of appends reads the log when told, not while it is quiet, and stops listening when it ends', async () => {
  const log = memoryLog();
  let reads = 0;
  const counted: ResponseEventLog = { append: log.append, read: (...args) => ((reads += 1), log.read(...args)) };
  // Announcements only: a wait never times out, so the follower reads again only when told.
  let announce = () => undefined as void;
  const closed: string[] = [];
  const notices: LogNotices = {
    watch: (id) => ({
      live: true,
      next: () => new Promise<boolean>((resolve) => (announce = () => resolve(true))),
      close: () => void closed.push(id),
    }),
  };
  const calls = new BackgroundCalls(logger, undefined, counted, notices);
  const got: (ResponseEvent | undefined)[] = [];
  const following = (async () => {
    for await (const e of calls.followLog('resp_n', -1, new AbortController().signal, async () => undefined, () => false)) got.push(e);
  })();
  await new Promise((resolve) => setTimeout(resolve, 50));
  expect(reads).toBe(1);
  expect(got).toEqual([]);
  log.events.push({ seq: 0, frame: 'a', last: false });
  announce();
  await new Promise((resolve) => setTimeout(resolve, 50));
  expect(got.map((e) => e?.frame)).toEqual(['a']);
  expect(reads).toBe(3); // the announced event, then the next read finds none and waits again
  log.events.push({ seq: 1, frame: 'b', last: true });
  announce();
  await following;
  expect(got.map((e) => e?.frame)).toEqual(['a', 'b']);
  expect(closed).toEqual(['resp_n']);
});

test('a feed holds its latest events only (its window to twice that): a follower behind it is told so at once', async () => {
  const feed = new EventFeed(4);
  for (let i = 0; i < 10; i++) feed.push(`e${i}`, false);
  const open = new AbortController().signal;
  expect(await collect(feed.follow(-1, open, 60_000))).toEqual([]);
  expect((await collect(feed.follow(3, open, 60_000), 6)).map((e) => e?.seq)).toEqual([4, 5, 6, 7, 8, 9]);
  expect(feed.size).toBe(10);
});

test('a follower where the call runs, behind the feed\'s window, reads on from the log to the end: every event once, in order', async () => {
  const log = memoryLog();
  const calls = new BackgroundCalls(logger, undefined, log);
  const call = pendingCall();
  let emit!: Emit;
  calls.run('resp_w', call.abort, (e) => ((emit = e), call.task()));
  const pushed = 2 * FEED_WINDOW + 100;
  for (let i = 0; i < pushed; i++) emit('response.output_text.delta', { delta: String(i) });
  const follower = collect(calls.follow('resp_w', -1, new AbortController().signal, 60_000, async () => undefined, () => false));
  setTimeout(() => call.finish(), 50);
  const seqs = (await follower).map((e) => e?.seq);
  expect(seqs).toEqual(Array.from({ length: pushed + 1 }, (_, i) => i));
});

/** A Pub/Sub connection whose subscriptions fail while `refusing` (a Cluster's, with `cluster`: sharded ones). */
function fakeSubscriber(cluster: boolean) {
  const state = { refusing: true, asked: 0 };
  const subscribe = async () => {
    state.asked += 1;
    if (state.refusing) throw new Error('Connection is closed.');
    return 1;
  };
  const subscriber = Object.assign(new EventEmitter(), cluster ? { isCluster: true, ssubscribe: subscribe, sunsubscribe: async () => 1 } : { subscribe, unsubscribe: async () => 1 });
  return { subscriber: subscriber as unknown as Redis & EventEmitter, state };
}

describe('a response\'s subscription (fake timers)', () => {
  beforeEach(() => jest.useFakeTimers());
  afterEach(() => jest.useRealTimers());

  test('refused, it is asked again a second later; its watchers go live once it is granted', async () => {
    const { subscriber, state } = fakeSubscriber(false);
    const watch = redisLogNotices(subscriber, logger).watch('resp_r');
    await jest.advanceTimersByTimeAsync(0);
    expect([state.asked, watch.live]).toEqual([1, false]);
    state.refusing = false;
    // Back after a reconnect: a subscription never granted does not go live.
    subscriber.emit('ready');
    expect(watch.live).toBe(false);
    await jest.advanceTimersByTimeAsync(SUBSCRIBE_RETRY_MS);
    expect([state.asked, watch.live]).toEqual([2, true]);
    expect(await watch.next(0, new AbortController().signal)).toBe(true); // told to read the log again
    watch.close();
  });

  test('in a Cluster, the watchers go live once the shard subscribers have settled, not at each of their resets', async () => {
    const { subscriber, state } = fakeSubscriber(true);
    state.refusing = false;
    const notices = redisLogNotices(subscriber, logger);
    const watch = notices.watch('resp_c');
    await jest.advanceTimersByTimeAsync(0);
    /** Whether the watcher was told to read the log since it last asked. */
    const told = async () => {
      const news = watch.next(0, new AbortController().signal);
      await jest.advanceTimersByTimeAsync(0);
      return news;
    };
    expect(watch.live).toBe(true);
    expect(await told()).toBe(true); // the news of going live
    // A shard's primary lost: ioredis resets its subscribers every few ms until a replica is promoted.
    subscriber.emit('-subscriber');
    expect(watch.live).toBe(false);
    let wakes = 0;
    for (let i = 0; i < 100; i++) {
      subscriber.emit('subscribersReady');
      await jest.advanceTimersByTimeAsync(10);
      if (await told()) wakes += 1;
    }
    expect([wakes, watch.live]).toEqual([0, false]);
    await jest.advanceTimersByTimeAsync(SUBSCRIBERS_SETTLE_MS);
    expect(watch.live).toBe(true);
    expect(await told()).toBe(true);
    watch.close();
  });
});
