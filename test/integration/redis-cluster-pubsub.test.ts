// Pub/Sub on a Redis Cluster (three primaries with a replica each, as `npm start -- --redis cluster`
// runs them). The channels of one run or one background response are sharded (SPUBLISH,
// SSUBSCRIBE): each is held by the node of its slot only, where a classic channel would be
// published to every node; a run's is published by the append script on its keys' node. Watchers
// are woken through them, and again once the primary holding a response's channel was killed with
// SIGKILL and the cluster promoted its replica (ioredis moves the shard's subscription there, and
// the watchers are told to read the log again: an announcement may have been lost meanwhile).
import { execFileSync } from 'node:child_process';
import pino from 'pino';
import { closeRedis, config, createRedis, createSubscriber, redisReady, slotOf, type Redis } from '@agent-mesh/common';
import { appendedChannel, eventsKey, redisEventLog, redisLogNotices, type ResponseEvent } from '../../services/edge/src/background';
import { edgeRedis } from '../../services/edge/src/redis';
import { RunLog } from '../../services/orchestrator/src/runlog/runlog';
import { RunNotifications } from '../../services/orchestrator/src/runlog/watch';
import { keys } from '../../services/orchestrator/src/runs/keys';
import { testDir, waitFor } from '../support';

// eslint-disable-next-line @typescript-eslint/no-require-imports
const ha = require('../../deploy/local/redis-ha.js') as {
  startCluster(o: { logDir: string }): Promise<{
    url: string; env: Record<string, string>; nodes: Node[];
    primaryOf(slot: number): Promise<Node | undefined>; stop(): Promise<void>;
  }>;
};
interface Node { port: number; kill(): Promise<void>; proc: { exitCode: number | null; signalCode: string | null; kill(signal: NodeJS.Signals): boolean } }

jest.setTimeout(120_000);

let cluster: Awaited<ReturnType<typeof ha.startCluster>>;
const clients: Redis[] = [];
const logger = pino({ level: 'silent' });
const open = new AbortController().signal;

beforeAll(async () => {
  cluster = await ha.startCluster({ logDir: testDir('redis-cluster-pubsub') });
});

afterAll(async () => {
  await Promise.all(clients.map((c) => closeRedis(c)));
  await cluster?.stop();
});

/** A client of the cluster as a service makes it: the orchestrator's, the edge's, or a Pub/Sub connection. */
async function client(kind: 'orchestrator' | 'edge' | 'subscriber'): Promise<Redis> {
  const target = config.readRedisTarget({ REDIS_URL: cluster.url, ...cluster.env });
  const c = kind === 'subscriber' ? createSubscriber(target, logger)
    : kind === 'edge' ? edgeRedis(target, logger) : createRedis(target, logger, { enableOfflineQueue: true, maxRetriesPerRequest: 8 });
  clients.push(c);
  await redisReady(c);
  return c;
}

const live = () => cluster.nodes.filter((n) => n.proc.exitCode === null && n.proc.signalCode === null);
const cli = (n: Node, ...args: string[]) => execFileSync('redis-cli', ['-p', String(n.port), ...args], { encoding: 'utf8' });

/** Subscribers of `channel` on each live node: sharded ones (SHARDNUMSUB), and classic ones (NUMSUB). */
function subscribersByNode(channel: string): { port: number; sharded: number; classic: number }[] {
  return live().map((n) => ({
    port: n.port,
    sharded: Number(cli(n, 'pubsub', 'shardnumsub', channel).trim().split('\n')[1]),
    classic: Number(cli(n, 'pubsub', 'numsub', channel).trim().split('\n')[1]),
  }));
}

/** Classic publishes the nodes have sent each other over the cluster bus (each goes to every other node). */
const busPublishes = () => live().reduce((n, node) => n + Number(/cluster_stats_messages_publish_sent:(\d+)/.exec(cli(node, 'cluster', 'info'))?.[1] ?? 0), 0);

/** Exactly one sharded subscription to `channel`, on the primary of its slot, and no classic one anywhere. */
async function expectShardedOnItsNode(channel: string): Promise<void> {
  const owner = (await cluster.primaryOf(slotOf(channel)))!;
  await waitFor(`the subscription to ${channel}`, () => subscribersByNode(channel).some((s) => s.sharded > 0), { timeoutMs: 10_000, intervalMs: 50 });
  expect(subscribersByNode(channel).filter((s) => s.sharded > 0 || s.classic > 0)).toEqual([{ port: owner.port, sharded: 1, classic: 0 }]);
}

test('a run\'s notices: the append script publishes them sharded on its keys\' node, and they wake its watcher', async () => {
  const [redis, subscriber] = await Promise.all([client('orchestrator'), client('subscriber')]);
  const log = new RunLog(redis, { maxEvents: 1_000, retentionS: 60 });
  const notes = new RunNotifications(subscriber);
  const runId = `run_${Date.now()}`;
  const watch = await notes.listen(runId);
  try {
    // On the node of the runs' keys (one hash tag for all of them).
    expect(slotOf(keys.notify(runId))).toBe(slotOf(keys.log(runId)));
    await expectShardedOnItsNode(keys.notify(runId));
    const woken = watch.wait(30_000, open);
    const published = busPublishes();
    await log.append({ runId, conversationId: 'c', messageId: 'm' }, 'replica-a', 1, [{ type: 'agent.token', dataJson: '{}' }, { type: 'agent.token', dataJson: '{}' }]);
    expect(await woken).toBe(true);
    expect(watch.announced).toBe(2);
    // Not sent to the other nodes (a classic PUBLISH here counts five: one per other node).
    expect(busPublishes() - published).toBe(0);
    expect((await log.read(runId, 0)).map((e) => e.seq)).toEqual([1, 2]);
  } finally {
    watch.close();
  }
  await waitFor('the subscription given up', () => subscribersByNode(keys.notify(runId)).every((s) => s.sharded === 0), { timeoutMs: 5_000, intervalMs: 50 });
});

/** A name made of `prefix` whose channel (`channelOf`) is on a primary that `wanted` accepts. */
async function nameOnShard(prefix: string, channelOf: (name: string) => string, wanted: (port: number) => boolean): Promise<string> {
  for (let i = 0; ; i++) {
    const name = `${prefix}_${Date.now()}_${i}`;
    if (wanted((await cluster.primaryOf(slotOf(channelOf(name))))!.port)) return name;
  }
}

/** The primary of the runs' keys (one hash tag for all of them), killed by the last test only. */
const runsPrimary = async () => (await cluster.primaryOf(slotOf(keys.notify('any'))))!;

/** Kills the primary of `channel`'s slot (SIGKILL); returns a wait until the cluster has promoted its replica. */
async function killPrimaryOf(channel: string): Promise<() => Promise<void>> {
  const primary = (await cluster.primaryOf(slotOf(channel)))!;
  await primary.kill();
  return () => waitFor('the cluster promotes its replica', async () => ((await cluster.primaryOf(slotOf(channel)))?.port ?? primary.port) !== primary.port, { timeoutMs: 30_000, intervalMs: 200 });
}

test('a background response\'s announcements: sharded on its log\'s node, and woken again after that node\'s primary is killed', async () => {
  const [redis, subscriber] = await Promise.all([client('edge'), client('subscriber')]);
  const notices = redisLogNotices(subscriber, logger);
  const log = redisEventLog(redis, 60);
  // Not on the runs' node: the next test kills that one.
  const runsPort = (await runsPrimary()).port;
  const id = await nameOnShard('resp', appendedChannel, (port) => port !== runsPort);
  const event = (seq: number): ResponseEvent => ({ seq, frame: `event ${seq}\n\n`, last: false });
  const watch = notices.watch(id);
  try {
    expect(slotOf(appendedChannel(id))).toBe(slotOf(eventsKey(id)));
    await waitFor('the watch live', () => watch.live, { timeoutMs: 10_000, intervalMs: 20 });
    await expectShardedOnItsNode(appendedChannel(id));
    await watch.next(0, open); // the news of going live
    let woken = watch.next(30_000, open);
    await log.append(id, event(0));
    expect(await woken).toBe(true);

    const killedAt = Date.now();
    await (await killPrimaryOf(appendedChannel(id)))();
    // With no append: once ioredis has subscribed the shard's channels again (on the promoted
    // replica), the watcher is told to read the log again (an announcement may have been lost).
    expect(await watch.next(20_000, open)).toBe(true);
    const backAfterMs = Date.now() - killedAt;
    expect(watch.live).toBe(true);
    await expectShardedOnItsNode(appendedChannel(id));
    // And appends are heard there.
    woken = watch.next(10_000, open);
    await log.append(id, event(1));
    expect(await woken).toBe(true);
    console.log(`sharded subscription back ${backAfterMs} ms after the kill (cluster-node-timeout 2 s)`);
    expect((await log.read(id, -1, 100)).map((e) => e.seq)).toEqual([0, 1]);
  } finally {
    watch.close();
  }
});

test('a watch asked while its shard\'s primary is down goes on, subscribed once a replica is promoted; the watchers already live are not woken meanwhile, and read the log again then', async () => {
  const [redis, runSubscriber, edgeSubscriber] = await Promise.all([client('orchestrator'), client('subscriber'), client('subscriber')]);
  const log = new RunLog(redis, { maxEvents: 1_000, retentionS: 60 });
  const notes = new RunNotifications(runSubscriber);
  const notices = redisLogNotices(edgeSubscriber, logger);
  const runsPort = (await runsPrimary()).port;
  const onRunsNode = (port: number) => port === runsPort;
  // A response followed since before the kill, on the same node as the runs.
  const followed = notices.watch(await nameOnShard('resp', appendedChannel, onRunsNode));
  const late = await nameOnShard('resp', appendedChannel, onRunsNode);
  const runId = `run_${Date.now()}`;
  // A run watched since before the kill (every run's channel is on the runs' node).
  const grantedRun = `run_${Date.now()}_granted`;
  const granted = await notes.listen(grantedRun);
  await expectShardedOnItsNode(keys.notify(grantedRun));
  await waitFor('the followed response live', () => followed.live, { timeoutMs: 10_000, intervalMs: 20 });
  await followed.next(0, open); // the news of going live

  // While the primary is down, ioredis resets its shard subscribers every few ms, each time
  // saying they are ready. Count the followed response's wake-ups from the kill to the promotion.
  let wakes = 0;
  const failingOver = new AbortController();
  const counting = (async () => {
    while (!failingOver.signal.aborted) if (await followed.next(100, failingOver.signal)) wakes++;
  })();
  // The replica is held stopped for a while, so that nothing serves the slot when the watches are
  // asked: ioredis then refuses their subscriptions (after ~3.4 s of redirections).
  const replica = live().find((n) => new RegExp(`role:slave[^]*master_port:${runsPort}\\b`).test(cli(n, 'info', 'replication')))!;
  const killedAt = Date.now();
  const promoted = await killPrimaryOf(keys.notify(runId));
  replica.proc.kill('SIGSTOP');
  const watches: { close(): void }[] = [followed, granted];
  try {
    // The watches are made all the same.
    const lateWatch = notices.watch(late);
    // The followed response is not live while its shard has no subscriber (it reads every 100 ms),
    // from ioredis' first reset of its subscribers (at once here, or after a CLUSTER SLOTS asked of
    // the stopped replica timed out).
    await waitFor('the followed response not live', () => !followed.live, { timeoutMs: 10_000, intervalMs: 10 });
    console.log(`the followed response not live ${Date.now() - killedAt} ms after the kill`);
    const watch = await notes.listen(runId);
    watches.push(watch, lateWatch);
    await new Promise((resolve) => setTimeout(resolve, 500));
    replica.proc.kill('SIGCONT');
    await promoted();
    failingOver.abort();
    await counting;
    expect(wakes).toBeLessThanOrEqual(2);

    // Once the shard subscribers have settled on the promoted replica, the run's subscription is
    // asked again, and its watcher told to read the log (an announcement may have been missed).
    await waitFor('the run watcher told to read again', () => watch.takeStale(), { timeoutMs: 10_000, intervalMs: 20 });
    expect(await watch.wait(0, open)).toBe(true); // the news of it
    // So is the watcher of the run subscribed before: ioredis subscribed its channel again on the
    // promoted replica, and an announcement made while there was none was not heard.
    await waitFor('the granted run watcher told to read again', () => granted.takeStale(), { timeoutMs: 10_000, intervalMs: 20 });
    await expectShardedOnItsNode(keys.notify(grantedRun));
    await expectShardedOnItsNode(keys.notify(runId));
    await waitFor('the late response live', () => lateWatch.live, { timeoutMs: 10_000, intervalMs: 20 });
    await expectShardedOnItsNode(appendedChannel(late));
    await log.append({ runId, conversationId: 'c', messageId: 'm' }, 'replica-a', 1, [{ type: 'agent.token', dataJson: '{}' }]);
    // Heard (a later settling of the shard subscribers may tell it to read again first).
    while (watch.announced < 1 && (await watch.wait(10_000, open)));
    expect(watch.announced).toBe(1);
  } finally {
    replica.proc.kill('SIGCONT');
    failingOver.abort();
    watches.forEach((w) => w.close());
  }
});
