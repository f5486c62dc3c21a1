// The faults of `npm run bench -- seed --chaos`: on the replicated fleet (two replicas of every
// service behind nginx), while the load runs, `kill -9` one replica of each service in turn, then
// restart Redis (append-only file, fsync every second: the run logs survive) and PostgreSQL
// (FerretDB's backend, durable). What each fault cost is read from the clients' own records
// (`faultImpact`): runs failed, events lost or duplicated, and how long errors went on.
import fs from 'node:fs';
import path from 'node:path';
import { startFerret, startPostgres, startRedis, type FerretProc, type PostgresProc, type Proc, type RedisProc } from '../support';

export interface Fault {
  label: string;
  run(): Promise<void>;
}

export interface FaultRecord {
  label: string;
  /** Wall ms since the load started. */
  atMs: number;
  /** How long the fault's own action took (a restart: until the process accepts connections). */
  tookMs: number;
  error?: string;
}

/** Redis and PostgreSQL that can be restarted on the same port and data, and FerretDB on top. */
export interface ChaosInfra {
  redisUrl: string;
  mongoUri: string;
  restartRedis(): Promise<void>;
  restartPostgres(): Promise<void>;
  /** Everything, for the caller's clean-up list. */
  procs: Proc[];
}

export async function startChaosInfra(logDir: string): Promise<ChaosInfra> {
  const redisDir = path.join(logDir, 'redis-data');
  const pgDir = path.join(logDir, 'postgres-data');
  fs.mkdirSync(redisDir, { recursive: true });
  let redis: RedisProc = await startRedis({ logDir, appendOnly: true, dataDir: redisDir });
  let postgres: PostgresProc = await startPostgres({ logDir, dataDir: pgDir, durable: true });
  const ferret: FerretProc = await startFerret({ logDir, postgres });
  // The clean-up list holds these wrappers, so that it stops whichever process runs at the end.
  const current = (get: () => Proc): Proc => ({
    get name() { return get().name; },
    get proc() { return get().proc; },
    get logFile() { return get().logFile; },
    log: () => get().log(),
    stop: (graceMs?: number) => get().stop(graceMs),
    kill: () => get().kill(),
  });
  return {
    redisUrl: redis.url,
    mongoUri: ferret.uri,
    restartRedis: async () => {
      await redis.stop();
      redis = await startRedis({ logDir, port: redis.port, appendOnly: true, dataDir: redisDir });
    },
    restartPostgres: async () => {
      await postgres.stop();
      postgres = await startPostgres({ logDir, port: postgres.port, dataDir: pgDir, durable: true });
    },
    procs: [current(() => redis), current(() => postgres), ferret],
  };
}

/** `kill -9` of the first replica of each service, then a Redis and a PostgreSQL restart. */
export function chaosFaults(replicas: { service: string; replica: string; kill(): Promise<unknown> }[], infra: ChaosInfra): Fault[] {
  const order = ['edge', 'orchestrator', 'llm-broker', 'tool-service', 'store'];
  const kills = order.map((s) => replicas.find((r) => r.service === s)).filter((r): r is NonNullable<typeof r> => r !== undefined)
    .map((r) => ({ label: `kill -9 ${r.replica}`, run: async () => { await r.kill(); } }));
  return [...kills, { label: 'restart Redis', run: infra.restartRedis }, { label: 'restart PostgreSQL', run: infra.restartPostgres }];
}

/**
 * Runs the faults one after another, evenly spread over `windowMs` from `startMs` (wall ms since
 * the load started, `now()` telling the time), the first at one step in.
 */
export async function runFaults(faults: Fault[], o: { now: () => number; startMs: number; windowMs: number; signal: AbortSignal; log?: (line: string) => void }): Promise<FaultRecord[]> {
  const records: FaultRecord[] = [];
  const step = o.windowMs / (faults.length + 1);
  for (const [i, f] of faults.entries()) {
    const due = o.startMs + step * (i + 1);
    const wait = due - o.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    if (o.signal.aborted) break;
    const atMs = o.now();
    try {
      await f.run();
      records.push({ label: f.label, atMs, tookMs: o.now() - atMs });
    } catch (err) {
      records.push({ label: f.label, atMs, tookMs: o.now() - atMs, error: (err as Error).message });
    }
    o.log?.(`  fault: ${f.label} at ${(atMs / 1000).toFixed(1)} s wall${records.at(-1)!.error ? ` FAILED: ${records.at(-1)!.error}` : ''}`);
  }
  return records;
}

/** What the benchmark's clients recorded of one message (wall ms since the load started). */
export interface ArrivalRecord {
  scheduledMs: number;
  /** When it ended (undefined: still going at the end). */
  endedMs?: number;
  outcome: string;
  lost: number;
  duplicated: number;
}

export interface FaultImpact {
  label: string;
  atMs: number;
  /** Runs in flight at the fault or sent before the next one. */
  runs: number;
  runsFailed: number;
  eventsLost: number;
  eventsDuplicated: number;
  /** From the fault to the end of the last failed run among them (0: none failed). */
  errorsForMs: number;
}

const FAILED = new Set(['failed', 'http_error', 'stream_error']);

/**
 * Each fault's share of the outcome: the messages in flight when it struck or sent before the
 * next fault (a message counts once, for the first fault it met).
 */
export function faultImpact(arrivals: ArrivalRecord[], faults: { label: string; atMs: number }[]): FaultImpact[] {
  const sorted = [...faults].sort((a, b) => a.atMs - b.atMs);
  const taken = new Set<ArrivalRecord>();
  return sorted.map((f, i) => {
    const next = sorted[i + 1]?.atMs ?? Infinity;
    const mine = arrivals.filter((a) => !taken.has(a) && a.scheduledMs < next && (a.endedMs === undefined || a.endedMs >= f.atMs));
    for (const a of mine) taken.add(a);
    const failed = mine.filter((a) => FAILED.has(a.outcome));
    return {
      label: f.label,
      atMs: f.atMs,
      runs: mine.length,
      runsFailed: failed.length,
      eventsLost: mine.reduce((s, a) => s + a.lost, 0),
      eventsDuplicated: mine.reduce((s, a) => s + a.duplicated, 0),
      errorsForMs: failed.length ? Math.max(0, ...failed.map((a) => (a.endedMs ?? a.scheduledMs) - f.atMs)) : 0,
    };
  });
}
