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
interface Node { port: number; kill(): Promise<void>; proc: { exitCode: number | null; signalCode: string | null } }

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

test('a background response\'s announcements: sharded on its log\'s node, and woken again after that node\'s primary is killed', async () => {
  const [redis, subscriber] = await Promise.all([client('edge'), client('subscriber')]);
  const notices = redisLogNotices(subscriber, logger);
  const log = redisEventLog(redis, 60);
  const id = `resp_${Date.now()}`;
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

    const primary = (await cluster.primaryOf(slotOf(appendedChannel(id))))!;
    const killedAt = Date.now();
    await primary.kill();
    await waitFor('the cluster promotes its replica', async () => ((await cluster.primaryOf(slotOf(appendedChannel(id))))?.port ?? primary.port) !== primary.port, { timeoutMs: 30_000, intervalMs: 200 });
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
