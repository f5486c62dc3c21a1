// A watcher's reads of the run log, with the log and the Redis subscriber as in-memory fakes: the
// events this process appends reach its watchers without a read, and what it was told of but does
// not hold (another replica's appends, a dropped local delivery) is read, each event once, in order.
import { EventEmitter } from 'node:events';
import type { Redis } from '@agent-mesh/common';
import type { RunEvent } from '@agent-mesh/common/gen/orchestrator/v1/orchestrator';
import { keys } from '../runs/keys';
import { RunNotifications, watchRun } from './watch';

const RUN = '6f1d1c9e-8a43-4b8e-9d0c-2b7f0a9e1c55';

/** A run log in memory that counts its reads; `write` appends as another replica would (log + publish). */
class FakeLog {
  events: RunEvent[] = [];
  reads = 0;
  constructor(private readonly subscriber: EventEmitter) {}

  async read(runId: string, afterSeq: number, count = 500): Promise<RunEvent[]> {
    this.reads += 1;
    return this.events.filter((e) => e.seq > afterSeq).slice(0, count);
  }

  add(types: string[]): { type: string; dataJson: string }[] {
    const first = this.events.length + 1;
    const written = types.map((type) => ({ type, dataJson: '{}' }));
    this.events.push(...written.map((e, i) => ({ runId: RUN, seq: first + i, ...e })));
    return written;
  }

  /** The notification of the write, as Redis publishes it (the log's last seq). */
  publish(): void {
    this.subscriber.emit('message', keys.notify(RUN), String(this.events.length));
  }
}

function setup() {
  const subscriber = Object.assign(new EventEmitter(), { subscribe: async () => 1, unsubscribe: async () => 1 });
  const notes = new RunNotifications(subscriber as unknown as Redis);
  const log = new FakeLog(subscriber);
  /** This process appends: in the log, handed to its watchers, then notified (as RunLog + main wire them). */
  const appendHere = (types: string[]) => {
    const first = log.events.length + 1;
    notes.appended(RUN, first, log.add(types));
    log.publish();
  };
  /** A watch from the run's start, to its terminal event (`act` once the first event is read). */
  const watchAll = (act: () => Promise<void> | void) => collect(watchRun(log, notes, RUN, 0, new AbortController().signal), act);
  return { notes, log, appendHere, watchAll };
}

/** Seqs 1 … n. */
const upTo = (n: number) => Array.from({ length: n }, (_, i) => i + 1);

/** Collects a watch until its terminal event; `act` runs once the first event has been read. */
async function collect(it: AsyncGenerator<RunEvent>, act: () => Promise<void> | void): Promise<number[]> {
  const seqs: number[] = [];
  let acted = false;
  for await (const e of it) {
    seqs.push(e.seq);
    if (!acted) {
      acted = true;
      await act();
    }
  }
  return seqs;
}

const tick = () => new Promise((r) => setImmediate(r));

test("a run appended in this process reaches its watcher from memory: the log is read once, at the watcher's start", async () => {
  const { log, appendHere, watchAll } = setup();
  log.add(['run.started']);
  const seqs = await watchAll(async () => {
    for (let i = 0; i < 20; i++) {
      appendHere(['token', 'token']);
      await tick();
    }
    appendHere(['run.completed']);
  });
  expect(seqs).toEqual(upTo(42));
  expect(log.reads).toBe(1);
});

test("another replica's appends (notified only) are read from the log", async () => {
  const { log, watchAll } = setup();
  log.add(['run.started']);
  const seqs = await watchAll(async () => {
    await tick();
    log.add(['token', 'run.completed']);
    log.publish();
  });
  expect(seqs).toEqual([1, 2, 3]);
  expect(log.reads).toBe(2);
});

test('a full page read is followed by the next at once, not after the poll fallback', async () => {
  const { notes, log } = setup();
  log.add([...Array.from({ length: 700 }, () => 'token'), 'run.completed']);
  const abort = new AbortController();
  const watching = collect(watchRun(log, notes, RUN, 0, abort.signal), () => undefined);
  // Nothing is published: only the page rule can read the rest before the 2 s fallback poll.
  const first = await Promise.race([watching, new Promise<'late'>((r) => setTimeout(r, 1_000, 'late'))]);
  abort.abort();
  expect(first).toEqual(upTo(701));
  expect(log.reads).toBe(2);
});

test('a notification that arrives before the local delivery of the same write does not cost a read', async () => {
  const { notes, log, watchAll } = setup();
  log.add(['run.started']);
  const seqs = await watchAll(async () => {
    await tick();
    const written = log.add(['token', 'run.completed']);
    log.publish();
    // The write's answer lands in the same turn of the event loop, after its notification.
    await Promise.resolve();
    notes.appended(RUN, 2, written);
  });
  expect(seqs).toEqual([1, 2, 3]);
  expect(log.reads).toBe(1);
});

test('a watcher that is told of events it does not hold reads them; one that falls behind drops its memory and reads', async () => {
  const { notes, log, appendHere } = setup();
  log.add(['run.started']);
  const abort = new AbortController();
  const it = watchRun(log, notes, RUN, 0, abort.signal);
  expect((await it.next()).value?.seq).toBe(1);
  // Written and notified, never delivered here (as by a replica that took the run over).
  log.add(['token']);
  log.publish();
  expect((await it.next()).value?.seq).toBe(2);
  expect(log.reads).toBe(2);
  // 1,500 events appended here while the watcher is not reading: more than it holds in memory.
  for (let i = 0; i < 3; i++) appendHere(Array.from({ length: 500 }, () => 'token'));
  appendHere(['run.completed']);
  const rest: number[] = [];
  for await (const e of it) rest.push(e.seq);
  expect(rest).toEqual(upTo(1503).slice(2));
  expect(log.reads).toBeGreaterThan(2);
});

/** A Pub/Sub connection that refuses its first `refusals` subscriptions; `status` as ioredis' ('end': closed for good). */
function refusingSubscriber(refusals: number, status = 'ready') {
  const state = { asked: 0 };
  const subscriber = Object.assign(new EventEmitter(), {
    status,
    subscribe: async () => {
      state.asked += 1;
      if (state.asked <= refusals) throw new Error('Connection is closed.');
      return 1;
    },
    unsubscribe: async () => 1,
  });
  return { subscriber, state, notes: new RunNotifications(subscriber as unknown as Redis) };
}

describe('a subscription refused, or lost and back (fake timers)', () => {
  beforeEach(() => jest.useFakeTimers());
  afterEach(() => jest.useRealTimers());

  /**
   * A watch (its subscription refused `refusals` times) that has read the run's first event; the
   * run then ends unannounced (written while the watcher was not subscribed). `last` is its next event.
   */
  async function watchMissingTheEnd(refusals: number) {
    const { subscriber, state, notes } = refusingSubscriber(refusals);
    const log = new FakeLog(subscriber);
    log.add(['run.started']);
    const abort = new AbortController();
    const it = watchRun(log, notes, RUN, 0, abort.signal);
    expect((await it.next()).value?.seq).toBe(1);
    log.add(['run.completed']);
    return { subscriber, state, log, abort, last: it.next() };
  }

  test('refused at the start: the watch goes on, and reads the log again once it is granted (a second later), not at the poll fallback', async () => {
    const { state, log, abort, last } = await watchMissingTheEnd(1);
    await jest.advanceTimersByTimeAsync(999);
    expect(state.asked).toBe(1);
    await jest.advanceTimersByTimeAsync(1);
    expect(state.asked).toBe(2);
    expect((await last).value?.seq).toBe(2);
    expect(log.reads).toBe(2);
    abort.abort();
  });

  test('granted, then the connection is lost and back: the watcher reads the log again at once, not at the poll fallback', async () => {
    const { subscriber, state, log, abort, last } = await watchMissingTheEnd(0);
    await jest.advanceTimersByTimeAsync(100);
    expect(log.reads).toBe(1);
    subscriber.emit('ready');
    await jest.advanceTimersByTimeAsync(0);
    expect((await last).value?.seq).toBe(2);
    expect(log.reads).toBe(2);
    expect(state.asked).toBe(1);
    abort.abort();
  });

  test('refused because the connection was closed for good: not asked again', async () => {
    const { state, notes } = refusingSubscriber(Infinity, 'end');
    const watch = await notes.listen(RUN);
    await jest.advanceTimersByTimeAsync(10_000);
    expect(state.asked).toBe(1);
    watch.close();
  });
});
