// A background response's events followed from another edge, on a real Redis: each append to the
// response's stream is announced on its Pub/Sub channel, the followers of that response (and only
// those) are woken by it and read the stream then, not while it is quiet; one subscription per
// response and edge, given up with its last follower, and taken up again after the subscriber's
// connection was cut.
import pino from 'pino';
import { createSubscriber, redisReady, type Redis } from '@agent-mesh/common';
import { appendedChannel, BackgroundCalls, redisEventLog, redisLogNotices, type LogWatch, type ResponseEvent } from '../../services/edge/src/background';
import { edgeRedis } from '../../services/edge/src/redis';
import { redisForFile, waitFor } from '../support';

jest.setTimeout(60_000);

const logger = pino({ level: 'silent' });
// The edge's client (appends, reads), a subscriber connection (announcements), and one for the test's own looks.
const redis = redisForFile('response-events', async (url) => {
  const made = [edgeRedis({ mode: 'single', url }, logger), createSubscriber(url, logger), edgeRedis({ mode: 'single', url }, logger)];
  await Promise.all(made.map((c) => redisReady(c)));
  return made;
});
let client: Redis;
let subscriber: Redis;
let admin: Redis;
beforeAll(() => void ([client, subscriber, admin] = redis.clients as [Redis, Redis, Redis]));

const subscribers = async (responseId: string) => Number(((await admin.pubsub('NUMSUB', appendedChannel(responseId))) as [string, number])[1]);
/** XRANGE calls Redis has answered so far. */
const reads = async () => Number(/cmdstat_xrange:calls=(\d+)/.exec(await admin.info('commandstats'))?.[1] ?? 0);
const event = (seq: number, last = false): ResponseEvent => ({ seq, frame: `event ${seq}\n\n`, last });
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** A watch once live, any news of its going live taken (a follower reads the stream again then: an append announced before was not heard). */
async function liveWatch(watch: LogWatch, news: boolean): Promise<LogWatch> {
  await waitFor('the subscription', async () => watch.live, { timeoutMs: 5_000, intervalMs: 10 });
  expect(await watch.next(0, new AbortController().signal)).toBe(news);
  return watch;
}

test('an append wakes the watchers of its response only; one subscription per response, given up with its last watcher, taken up again after the connection was cut', async () => {
  const notices = redisLogNotices(subscriber, logger);
  const log = redisEventLog(client, 60);
  const open = new AbortController().signal;
  const first = await liveWatch(notices.watch('resp_w'), true);
  // Joins the subscription in place: nothing to read again.
  const second = await liveWatch(notices.watch('resp_w'), false);
  const elsewhere = await liveWatch(notices.watch('resp_x'), true);
  expect(await subscribers('resp_w')).toBe(1);

  // Woken by the append (a wait of 30 s answers false only if no announcement came).
  const waits = [first.next(30_000, open), second.next(30_000, open)];
  const other = elsewhere.next(500, open);
  await log.append('resp_w', event(0));
  expect(await Promise.all(waits)).toEqual([true, true]);
  expect(await other).toBe(false);
  expect(await log.read('resp_w', -1, 10)).toEqual([event(0)]);

  // The subscriber's connection cut: the watch goes live again once it is back, and is woken again.
  await admin.client('KILL', 'TYPE', 'pubsub');
  await waitFor('subscribed again', async () => (await subscribers('resp_w')) === 1 && first.live, { timeoutMs: 10_000, intervalMs: 20 });
  await first.next(0, open); // the news of going live again, if it came
  const again = first.next(30_000, open);
  await log.append('resp_w', event(1, true));
  expect(await again).toBe(true);

  first.close();
  expect(await subscribers('resp_w')).toBe(1);
  second.close();
  elsewhere.close();
  await waitFor('given up', async () => (await subscribers('resp_w')) === 0 && (await subscribers('resp_x')) === 0, { timeoutMs: 5_000, intervalMs: 20 });
});

test('followers on another edge read the stream when an append is announced, not while it is quiet: every event once, in order, to the last', async () => {
  const log = redisEventLog(client, 60);
  const calls = new BackgroundCalls(logger, undefined, log, redisLogNotices(subscriber, logger));
  const follow = async () => {
    const got: number[] = [];
    for await (const e of calls.followLog('resp_f', -1, new AbortController().signal, async () => undefined, () => false)) if (e) got.push(e.seq);
    return got;
  };
  const followers = [follow(), follow()];
  await waitFor('the followers listening', async () => (await subscribers('resp_f')) === 1, { timeoutMs: 5_000, intervalMs: 10 });
  await sleep(200); // each has read once more after going live

  // Quiet: no read of the stream (a follower without announcements reads it every 100 ms).
  const before = await reads();
  await sleep(500);
  expect((await reads()) - before).toBe(0);

  for (let seq = 0; seq < 20; seq++) await log.append('resp_f', event(seq, seq === 19));
  const everyEvent = Array.from({ length: 20 }, (_, i) => i);
  expect(await Promise.all(followers)).toEqual([everyEvent, everyEvent]);
  await waitFor('given up', async () => (await subscribers('resp_f')) === 0, { timeoutMs: 5_000, intervalMs: 20 });
});

test('without announcements (no subscription) a follower reads the stream every 100 ms', async () => {
  const calls = new BackgroundCalls(logger, undefined, redisEventLog(client, 60));
  const left = new AbortController();
  const following = (async () => {
    for await (const _ of calls.followLog('resp_p', -1, left.signal, async () => undefined, () => false));
  })();
  await sleep(100);
  const before = await reads();
  await sleep(500);
  expect((await reads()) - before).toBeGreaterThanOrEqual(3);
  left.abort();
  await following;
});
