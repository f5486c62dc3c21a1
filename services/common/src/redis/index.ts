// One way to open Redis: commands fail fast while disconnected (callers decide the fallback)
// and the client reconnects on its own. Three topologies, one client type for the callers:
// a single server (REDIS_URL), a Sentinel-managed primary (REDIS_SENTINELS + REDIS_SENTINEL_NAME:
// ioredis asks the sentinels where the primary is, and again after a failover), or a Cluster
// (REDIS_CLUSTER_NODES: ioredis routes each command to the primary of its key's slot and follows
// MOVED/ASK after a failover). Scripts and MULTI must keep their keys in one slot: see ./slots.ts.
import Redis, { Cluster, type ClusterOptions, type RedisOptions } from 'ioredis';
import type { Logger } from '../logging';

export type { Redis };

/** Where Redis is, as the configuration says (see readRedisTarget in ../config). */
export type RedisTarget =
  | { mode: 'single'; url: string }
  | { mode: 'sentinel'; sentinels: HostPort[]; name: string; url: string }
  | { mode: 'cluster'; nodes: HostPort[]; url: string };

export interface HostPort {
  host: string;
  port: number;
}

/** `host:port,host:port` → HostPort[] (IPv6 in brackets). */
export function parseHostPorts(list: string): HostPort[] {
  return list.split(',').map((s) => s.trim()).filter(Boolean).map((a) => {
    const i = a.lastIndexOf(':');
    return { host: a.slice(0, i).replace(/^\[|\]$/g, ''), port: Number(a.slice(i + 1)) };
  });
}

/** Credentials, database and TLS of a `redis://` / `rediss://` URL (what the nodes of a sentinel or cluster setup share). */
function urlOptions(url: string): Pick<RedisOptions, 'username' | 'password' | 'db' | 'tls'> {
  const u = new URL(url);
  const o: Pick<RedisOptions, 'username' | 'password' | 'db' | 'tls'> = {};
  if (u.username) o.username = decodeURIComponent(u.username);
  if (u.password) o.password = decodeURIComponent(u.password);
  const db = Number(u.pathname.slice(1));
  if (u.pathname.length > 1 && Number.isInteger(db)) o.db = db;
  if (u.protocol === 'rediss:') o.tls = {};
  return o;
}

const retryStrategy = (times: number) => Math.min(50 * 2 ** times, 2_000);

/** createRedis's own options, beside ioredis'. */
export interface ClientOptions extends RedisOptions {
  /**
   * The commands issued in one turn of the event loop leave in one write (see coalesceWrites); on
   * one Redis or under sentinels, not on a Cluster (one connection per node, made by ioredis).
   */
  coalesceWrites?: boolean;
  /** On a Cluster: SSUBSCRIBE goes to the node of each channel's slot (see subscribeSpread). Ignored elsewhere. */
  shardedSubscribers?: boolean;
}

/**
 * Makes every command the client writes in one turn of the event loop leave in one write system
 * call: the socket is corked at the turn's first command and uncorked when the turn ends
 * (`setImmediate`, after the turn's I/O callbacks), on each connection the client opens (again
 * after a reconnect or a failover). Unlike ioredis' auto-pipelining, which also batches per turn,
 * a batch never waits for the previous one's answer: auto-pipelining holds a turn's commands back
 * while an earlier batch is unanswered (one pipeline in flight per connection), and at saturation
 * 40–60 % of an inline edge's batches waited so — a call's admission behind other calls'
 * settlements. The commands are in ioredis' queue at once, in order, as without batching.
 */
export function coalesceWrites(client: Redis): void {
  client.on('connect', () => {
    const socket = (client as unknown as { stream: NodeJS.WritableStream & { cork(): void; uncork(): void; writableCorked: number } }).stream;
    const write = socket.write;
    const uncork = () => socket.uncork();
    socket.write = function (this: typeof socket, ...args: Parameters<typeof write>) {
      if (socket.writableCorked === 0) {
        socket.cork();
        setImmediate(uncork);
      }
      return write.apply(this, args);
    } as typeof write;
  });
}

/**
 * A client of the target. `options.enableOfflineQueue` / `maxRetriesPerRequest` as ioredis' (a
 * Pub/Sub connection queues and retries without bound: see createSubscriber). In cluster mode the
 * result is an ioredis Cluster typed as Redis: the commands the services use (scripts, MULTI on one
 * slot, streams, Pub/Sub, status and its events, quit) behave the same on both.
 */
export function createRedis(target: RedisTarget | string, logger: Logger, { coalesceWrites: coalesce, shardedSubscribers, ...options }: ClientOptions = {}): Redis {
  const t: RedisTarget = typeof target === 'string' ? { mode: 'single', url: target } : target;
  const base: RedisOptions = {
    // A command issued while Redis is down fails at once instead of queueing without bound.
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    retryStrategy,
    lazyConnect: false,
    ...options,
  };
  let client: Redis;
  if (t.mode === 'single') {
    client = new Redis(t.url, base);
  } else if (t.mode === 'sentinel') {
    client = new Redis({
      ...urlOptions(t.url),
      ...base,
      sentinels: t.sentinels,
      name: t.name,
      sentinelRetryStrategy: retryStrategy,
      // Subscribe to the sentinels' +switch-master: reconnect to the new primary at once instead
      // of when the old one's connection times out.
      failoverDetector: true,
    });
  } else {
    // No auto-pipelining on a cluster: ioredis batches the commands per node, and a MOVED answer
    // while the cluster promotes a replica then fails the batch's commands instead of redirecting
    // them (redis/ioredis#2075): runs failed with `MOVED …` as an internal error during failover
    // (test/e2e/redis-ha.test.ts, "Redis cluster").
    const { enableOfflineQueue, retryStrategy: _r, lazyConnect, enableAutoPipelining: _p, ...redisOptions } = base;
    const clusterOptions: ClusterOptions = {
      enableOfflineQueue,
      lazyConnect,
      clusterRetryStrategy: retryStrategy,
      // A failover takes the cluster a few seconds (cluster-node-timeout + election): commands to
      // the lost slots are retried meanwhile (bounded by the callers' own timeouts).
      retryDelayOnClusterDown: 200,
      retryDelayOnFailover: 200,
      retryDelayOnTryAgain: 200,
      slotsRefreshTimeout: 2_000,
      shardedSubscribers: shardedSubscribers ?? false,
      redisOptions: { ...urlOptions(t.url), ...redisOptions },
    };
    client = new Cluster(t.nodes, clusterOptions) as unknown as Redis;
  }
  if (coalesce && t.mode !== 'cluster') coalesceWrites(client);
  if (t.mode === 'sentinel') reconnectWhenGivenUp(client, logger);
  // Once per outage, and once a minute while errors go on without the client being ready again in
  // between (a Cluster stays ready while the subscriber of one shard reconnects, erring every time).
  let down = false;
  let warnedAt = 0;
  client.on('error', (err: Error) => {
    if (down && Date.now() - warnedAt < 60_000) return;
    logger.warn({ err: err.message, mode: t.mode }, 'redis unavailable');
    down = true;
    warnedAt = Date.now();
  });
  client.on('ready', () => {
    if (down) logger.info({ mode: t.mode }, 'redis available again');
    down = false;
  });
  return client;
}

/**
 * ioredis gives a Sentinel client up for good (status `end`: every command then refused with
 * "Connection is closed.") when its failover detector hears the sentinels' `+switch-master` while
 * the client, already reconnecting since its primary died, is asking a sentinel where the primary
 * is: the detector stops the connector mid-connect, and a connect that fails ends the client
 * (ioredis 5.11, unchanged in 6.0). A busy event loop widens that window to most of a reconnect,
 * so a loaded service could lose Redis at a failover until restarted (likely what failed a CI run:
 * every run watch one orchestrator was asked for failed). Here a Sentinel client that ends without
 * its owner closing it (quit, or disconnect without reconnecting) connects again. No-op for other
 * topologies.
 */
export function reconnectWhenGivenUp(client: Redis, logger?: Logger): void {
  if (!(client.options as RedisOptions | undefined)?.sentinels?.length) return;
  let closing = false;
  const { quit, disconnect } = client;
  client.quit = function (this: Redis, ...args: unknown[]) {
    closing = true;
    return (quit as (...a: unknown[]) => Promise<'OK'>).apply(this, args);
  } as Redis['quit'];
  client.disconnect = function (this: Redis, reconnect = false) {
    if (!reconnect) closing = true;
    disconnect.call(this, reconnect);
  };
  client.on('end', () => {
    if (closing) return;
    logger?.warn({ mode: 'sentinel' }, 'redis: the client was given up during a failover: connecting again');
    setTimeout(() => {
      if (!closing && client.status === 'end') client.connect().catch(() => undefined);
    }, 100).unref();
  });
}

/**
 * Closes a client for good: QUIT (the commands already sent are answered first), then every
 * connection it still holds. QUIT alone closes only the connection to the primary: a Sentinel
 * client's failover detector keeps one subscribed connection to each sentinel open (ioredis 5.11),
 * which only disconnect() closes. A client QUIT could not reach is disconnected all the same.
 */
export async function closeRedis(client: Redis): Promise<void> {
  await client.quit().catch(() => undefined);
  client.disconnect();
}

/**
 * A Pub/Sub connection of the target. It queues commands while disconnected and retries without
 * bound, and ioredis subscribes again to every channel after a reconnect (to the new primary after
 * a Sentinel failover; in a Cluster, to another node when its node is lost: classic PUBLISH reaches
 * every node of a cluster, so any node will do). In a Cluster it also holds one connection per
 * shard for the channels subscribed with subscribeSpread, each to its slot's node (moved to the
 * promoted replica after a failover, by ioredis). Opened from the target rather than with
 * `duplicate()`, whose options differ between Redis and Cluster (a Cluster's take `redisOptions`
 * for the per-node settings), so that the three modes get the same subscriber.
 */
export function createSubscriber(target: RedisTarget | string, logger: Logger): Redis {
  return createRedis(target, logger, { enableOfflineQueue: true, maxRetriesPerRequest: null, shardedSubscribers: true });
}

/** Whether the client is a Redis Cluster's (ioredis' Cluster). */
export function isCluster(client: Redis): boolean {
  return (client as unknown as { isCluster?: boolean }).isCluster === true;
}

// Pub/Sub for the many short-lived channels of one run or one response ("spread" channels). In a
// Redis Cluster a classic PUBLISH goes to every node (over the cluster bus), so the cluster's
// Pub/Sub traffic grows with its node count instead of spreading; sharded Pub/Sub (SPUBLISH,
// SSUBSCRIBE: Redis 7.0 or later) keeps each message on the node of its channel's slot. On one
// Redis, or under Sentinel, the classic commands: there is one primary anyway. A channel with a
// hash tag lives on the node of the keys with the same tag, and only there may a script on those
// keys publish to it (spreadPublishCommand). The few fleet-wide channels (cancels, cache releases)
// stay classic: every replica listens to them, wherever they are.

/** The command a script uses to publish on a channel of subscribeSpread: SPUBLISH on a Cluster, PUBLISH elsewhere. */
export function spreadPublishCommand(client: Redis): 'SPUBLISH' | 'PUBLISH' {
  return isCluster(client) ? 'SPUBLISH' : 'PUBLISH';
}

/** Publishes on a channel of subscribeSpread. */
export function publishSpread(client: Redis, channel: string, message: string): Promise<unknown> {
  return isCluster(client) ? client.spublish(channel, message) : client.publish(channel, message);
}

/** Subscribes a subscriber (createSubscriber) to a channel of its own slot's node in a Cluster (see above). */
export function subscribeSpread(subscriber: Redis, channel: string): Promise<unknown> {
  return isCluster(subscriber) ? subscriber.ssubscribe(channel) : subscriber.subscribe(channel);
}

export function unsubscribeSpread(subscriber: Redis, channel: string): Promise<unknown> {
  return isCluster(subscriber) ? subscriber.sunsubscribe(channel) : subscriber.unsubscribe(channel);
}

/** Calls `handler` with each message of the channels subscribed with subscribeSpread. */
export function onSpreadMessage(subscriber: Redis, handler: (channel: string, message: string) => void): void {
  subscriber.on(isCluster(subscriber) ? 'smessage' : 'message', handler);
}

/** When a refused subscription to a channel of subscribeSpread is asked again, at the latest (see onShardSubscribersSettled for the soonest). */
export const SUBSCRIBE_RETRY_MS = 1_000;

/** How long a Cluster's shard subscribers must be left alone before they count as settled (see onShardSubscribersSettled). */
export const SUBSCRIBERS_SETTLE_MS = 250;

/**
 * Calls `handler` once a Cluster's shard subscribers have settled after a change: `settleMs` after
 * the last `subscribersReady` of ioredis, which it emits after each reset of its shard subscribers
 * (a new one started, every channel of the shard subscribed again), whether or not the new one
 * connected. While a shard's primary is down and not yet replaced, ioredis starts a subscriber to
 * it, fails, and resets again every few milliseconds (~90 times a second here, for the ~4 s of a
 * failover): a handler that reads the log on each of those would read it ~90 times a second.
 * Nothing on a single Redis or under Sentinel (no shard subscribers).
 */
export function onShardSubscribersSettled(subscriber: Redis, handler: () => void, settleMs = SUBSCRIBERS_SETTLE_MS): void {
  if (!isCluster(subscriber)) return;
  let timer: NodeJS.Timeout | undefined;
  subscriber.on('subscribersReady', () => {
    clearTimeout(timer);
    timer = setTimeout(handler, settleMs).unref();
  });
}

/** True for ioredis' errors that mean Redis cannot be reached right now (not a command's own error). */
export function isRedisConnectionError(err: unknown): boolean {
  const m = err instanceof Error ? err.message : '';
  return /Connection is closed|Stream isn't writeable|ECONNREFUSED|ECONNRESET|EPIPE|ETIMEDOUT|max retries|enableOfflineQueue|CLUSTERDOWN|TRYAGAIN|READONLY|LOADING|Failed to refresh slots|None of startup nodes|Too many Cluster redirections/i.test(m);
}

/** Resolves once the client is ready (or rejects after timeoutMs). */
export async function redisReady(client: Redis, timeoutMs = 10_000): Promise<void> {
  if (client.status === 'ready') return;
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`redis not ready after ${timeoutMs} ms`)), timeoutMs);
    client.once('ready', () => {
      clearTimeout(t);
      resolve();
    });
  });
}

export { slotOf, sameSlot } from './slots';
export { keyRecorder, type RecordedCall } from './key-recorder';
