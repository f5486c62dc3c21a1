// Store benchmark: the store service (gRPC) on FerretDB over PostgreSQL and over SQLite, side by
// side. For each backend: a database seeded like a busy one (USERS users × CONVERSATIONS each ×
// MESSAGES each), then
//   - writes: closed loop, CALLERS concurrent callers each appending 2 messages to one of their
//     conversations (the run's write path: a seq reservation, then an insert);
//   - paged reads: closed loop, callers alternating a page of their conversations
//     (ListConversations), a conversation with its first page of messages (GetConversation) and an
//     agent's history (ListMessages, the newest 20);
//   - the goal: open loop, runs arriving as a Poisson process at TARGET_FACTOR × the brief's
//     500-user rate (500 × 2.5 messages a minute), each making a run's store calls (history, the
//     user's message, the run record, the agents' messages, the run's end); latency from each
//     call's scheduled time (no coordinated omission). Goal: p99 < 100 ms.
// Run: npm run bench -- store   env, with defaults:
//   BACKENDS postgresql,sqlite · CALLERS 50,200 · PHASE_S 8 · USERS 500 · CONVERSATIONS 4 ·
//   MESSAGES 10 · TARGET_FACTOR 5 · TARGET_S 10
// Prints a human summary; the last line is one JSON object of the figures.
import { createClient, newId, unary } from '@agent-mesh/common';
import { AgentRole, MessageRole, MessageStatus, RunStatus, StoreServiceClient, type Message } from '@agent-mesh/common/gen/store/v1/store';
import fs from 'node:fs';
import { MongoClient } from 'mongodb';
import { percentile } from './stats';
import { startFerret, startService, testDir, type FerretProc, type ServiceProc } from '../support';

const num = (name: string, def: number) => {
  const v = Number(process.env[name] ?? def);
  if (!Number.isFinite(v) || v <= 0) throw new Error(`${name} must be a positive number`);
  return v;
};
const BACKENDS = (process.env.BACKENDS ?? 'postgresql,sqlite').split(',').map((s) => s.trim()).filter(Boolean);
const CALLERS = (process.env.CALLERS ?? '50,200').split(',').map(Number).filter((n) => n > 0);
const PHASE_S = num('PHASE_S', 8);
const USERS = Math.floor(num('USERS', 500));
const CONVERSATIONS = Math.floor(num('CONVERSATIONS', 4));
const MESSAGES = Math.floor(num('MESSAGES', 10));
const TARGET_FACTOR = num('TARGET_FACTOR', 5);
const TARGET_S = num('TARGET_S', 10);
/** The brief: 500 users, 2.5 messages a minute each; one message = one run. */
const BRIEF_RUNS_PER_S = (500 * 2.5) / 60;
const GOAL_P99_MS = 100;
const CALL_TIMEOUT_MS = 10_000;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const round = (x: number, d = 1) => Math.round(x * 10 ** d) / 10 ** d;
const pick = <T>(xs: readonly T[]) => xs[Math.floor(Math.random() * xs.length)]!;

interface Conv { userId: string; id: string }
interface PhaseResult {
  calls: number; errors: number; perS: number; p50Ms: number; p99Ms: number; maxMs: number; errorKinds: Record<string, number>;
  /** CPU seconds each process used per 1,000 calls (where the time goes on a shared machine). */
  cpuMsPerCall?: Record<string, number>;
}

/** An error's kind: the gRPC status and the first clause of its details (no timings). */
function errorKind(err: unknown): string {
  const e = err as { code?: number; details?: string; message?: string };
  const text = String(e.details ?? e.message ?? err).split(',')[0]!.replace(/[\d.]+ ?m?s\b/g, 'N s');
  return `${e.code ?? ''} ${text}`.trim().slice(0, 80);
}

/** CPU time (ms) a process and its reaped children used, plus its live children (PostgreSQL's backends). */
function cpuMs(pid: number | undefined, withChildren = false): number {
  if (!pid) return 0;
  const ticks = (stat: string, fields: number[]) => {
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return fields.reduce((sum, i) => sum + Number(f[i - 3]), 0);
  };
  try {
    let t = ticks(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'), withChildren ? [14, 15, 16, 17] : [14, 15]);
    if (withChildren) {
      for (const d of fs.readdirSync('/proc')) {
        if (!/^\d+$/.test(d)) continue;
        try {
          const st = fs.readFileSync(`/proc/${d}/stat`, 'utf8');
          if (Number(st.slice(st.lastIndexOf(')') + 2).split(' ')[1]) === pid) t += ticks(st, [14, 15]);
        } catch { /* gone */ }
      }
    }
    return t * 10; // USER_HZ = 100
  } catch {
    return 0;
  }
}

function message(role: 'user' | 'agent', content: string, runId = ''): Message {
  return {
    id: newId(), conversationId: '', runId, role: role === 'agent' ? MessageRole.MESSAGE_ROLE_AGENT : MessageRole.MESSAGE_ROLE_USER,
    agent: role === 'agent' ? AgentRole.AGENT_ROLE_REPORTER : AgentRole.AGENT_ROLE_UNSPECIFIED, round: role === 'agent' ? 1 : 0, content,
    status: MessageStatus.MESSAGE_STATUS_COMPLETE, createdAtMs: 0,
  };
}
const TEXT = 'A plan in three steps: gather what is known, compare the options, write down the decision. '.repeat(3);

class Calls {
  constructor(private readonly c: StoreServiceClient) {}
  create = (userId: string, conversationId: string) => unary(this.c.createConversation.bind(this.c), { userId, conversationId, title: 'bench' }, { timeoutMs: CALL_TIMEOUT_MS });
  append = (v: Conv, messages: Message[]) => unary(this.c.appendMessages.bind(this.c), { userId: v.userId, conversationId: v.id, messages }, { timeoutMs: CALL_TIMEOUT_MS });
  listConversations = (userId: string) => unary(this.c.listConversations.bind(this.c), { userId, pageSize: 20, pageToken: '' }, { timeoutMs: CALL_TIMEOUT_MS });
  get = (v: Conv) => unary(this.c.getConversation.bind(this.c), { userId: v.userId, conversationId: v.id, messagePageSize: 20, messagePageToken: '' }, { timeoutMs: CALL_TIMEOUT_MS });
  history = (v: Conv) => unary(this.c.listMessages.bind(this.c), { userId: v.userId, conversationId: v.id, limit: 20 }, { timeoutMs: CALL_TIMEOUT_MS });
  saveRun = (v: Conv, id: string, status: 'running' | 'completed', messageId: string) => unary(this.c.saveRun.bind(this.c), {
    userId: v.userId,
    run: {
      id, conversationId: v.id, userId: v.userId, messageId, status: status === 'completed' ? RunStatus.RUN_STATUS_COMPLETED : RunStatus.RUN_STATUS_RUNNING, checkpointJson: '',
      usage: { promptTokens: 900, completionTokens: 400, totalTokens: 1300 }, costUsd: 0.001,
      createdAtMs: 0, updatedAtMs: 0, completedAtMs: status === 'completed' ? Date.now() : 0, error: '',
    },
  }, { timeoutMs: CALL_TIMEOUT_MS });
}

function summarize(latencies: number[], errors: string[], wallMs: number): PhaseResult {
  const errorKinds: Record<string, number> = {};
  for (const e of errors) errorKinds[e] = (errorKinds[e] ?? 0) + 1;
  return {
    calls: latencies.length, errors: errors.length, perS: round((latencies.length / wallMs) * 1000, 0),
    p50Ms: round(percentile(latencies, 50)), p99Ms: round(percentile(latencies, 99)), maxMs: round(Math.max(0, ...latencies)), errorKinds,
  };
}

/** `callers` loops calling `op` until `seconds` pass; latency of each successful call. */
async function closedLoop(callers: number, seconds: number, op: (i: number) => Promise<unknown>): Promise<PhaseResult> {
  const latencies: number[] = [];
  const errors: string[] = [];
  const start = performance.now();
  const end = start + seconds * 1000;
  await Promise.all(Array.from({ length: callers }, async (_, w) => {
    for (let i = w; performance.now() < end; i += callers) {
      const t = performance.now();
      try {
        await op(i);
        latencies.push(performance.now() - t);
      } catch (err) {
        errors.push(errorKind(err));
      }
    }
  }));
  return summarize(latencies, errors, performance.now() - start);
}

/**
 * Runs arriving as a Poisson process at `perS` for `seconds`, each making a run's store calls in
 * order; every call's latency counts from when it was due (the run's arrival for its first call),
 * so a slow store cannot hide its queue by slowing the arrivals down.
 */
async function openLoopRuns(calls: Calls, convs: Conv[], perS: number, seconds: number): Promise<PhaseResult & { runs: number; offeredPerS: number }> {
  const latencies: number[] = [];
  const errors: string[] = [];
  const runs: Promise<void>[] = [];
  const start = performance.now();
  let due = start;
  const end = start + seconds * 1000;
  for (;;) {
    due += (-Math.log(1 - Math.random()) / perS) * 1000;
    if (due >= end) break;
    const wait = due - performance.now();
    if (wait > 0) await sleep(wait);
    const scheduled = due;
    runs.push((async () => {
      const v = pick(convs);
      const runId = newId();
      const user = message('user', 'How do I train for a 10k run?', runId);
      let from = scheduled;
      const step = async (op: () => Promise<unknown>) => {
        try {
          await op();
          const now = performance.now();
          latencies.push(now - from);
          from = now;
        } catch (err) {
          errors.push(errorKind(err));
          throw err;
        }
      };
      try {
        await step(() => calls.history(v));
        await step(() => calls.append(v, [user]));
        await step(() => calls.saveRun(v, runId, 'running', user.id));
        await step(() => calls.append(v, [message('agent', TEXT, runId), message('agent', TEXT, runId), message('agent', TEXT, runId), message('agent', TEXT, runId)]));
        await step(() => calls.saveRun(v, runId, 'completed', user.id));
      } catch { /* counted */ }
    })());
  }
  const offered = runs.length;
  await Promise.all(runs);
  const wallMs = performance.now() - start;
  return { ...summarize(latencies, errors, wallMs), runs: offered, offeredPerS: round(offered / seconds, 1) };
}

async function benchBackend(backend: string) {
  const logDir = testDir(`bench-store-${backend}`);
  let ferret: FerretProc | undefined;
  let store: ServiceProc | undefined;
  let client: StoreServiceClient | undefined;
  try {
    // durable: PostgreSQL fsyncs its WAL at each commit, as under npm start (SQLite: synchronous(normal), no fsync per commit).
    ferret = await startFerret({ logDir, backend: backend as 'postgresql' | 'sqlite', durable: true });
    store = await startService('store', { logDir, env: { MONGODB_URI: ferret.uri, OTEL_SDK_DISABLED: 'true', LOG_LEVEL: 'warn', SLOW_QUERY_MS: '1000' } });
    client = createClient(StoreServiceClient, store.addr);
    const calls = new Calls(client);

    // Seed: USERS × CONVERSATIONS conversations of MESSAGES messages, in the store's document
    // shapes, with the driver's bulk inserts (setup, not measured; through the service it took
    // minutes on SQLite).
    const seedStart = performance.now();
    const convs: Conv[] = Array.from({ length: USERS * CONVERSATIONS }, (_, i) => ({ userId: `bench-user-${i % USERS}`, id: newId() }));
    const mongo = new MongoClient(ferret.uri, { serverSelectionTimeoutMS: 10_000 });
    try {
      const db = mongo.db();
      const t0 = Date.now() - 86_400_000;
      for (let i = 0; i < convs.length; i += 500) {
        const batch = convs.slice(i, i + 500);
        await db.collection<{ _id: string }>('conversations').insertMany(batch.map((v, k) => (
          { _id: v.id, userId: v.userId, title: 'bench', createdAt: t0 + i + k, updatedAt: t0 + i + k, messageSeq: MESSAGES })));
        await db.collection<{ _id: string }>('messages').insertMany(batch.flatMap((v, k) => Array.from({ length: MESSAGES }, (_, m) => (
          { _id: newId(), conversationId: v.id, role: m % 2 ? 'agent' : 'user', round: 0, content: TEXT, status: 'complete', createdAt: t0 + i + k + m, seq: m + 1 }))));
      }
    } finally {
      await mongo.close().catch(() => undefined);
    }
    const seedS = round((performance.now() - seedStart) / 1000);

    const procs = { store: () => cpuMs(store?.proc.pid), ferretdb: () => cpuMs(ferret?.proc.pid), postgres: () => cpuMs(ferret?.postgres?.proc.pid, true) };
    const withCpu = async <R extends PhaseResult>(phase: () => Promise<R>): Promise<R> => {
      const before = Object.fromEntries(Object.entries(procs).map(([k, f]) => [k, f()]));
      const r = await phase();
      r.cpuMsPerCall = Object.fromEntries(Object.entries(procs).filter(([k]) => k !== 'postgres' || backend === 'postgresql')
        .map(([k, f]) => [k, round((f() - before[k]!) / Math.max(1, r.calls), 2)]));
      return r;
    };
    const byCallers: Record<string, { writes: PhaseResult; pagedReads: PhaseResult }> = {};
    for (const c of CALLERS) {
      const writes = await withCpu(() => closedLoop(c, PHASE_S, (i) => calls.append(convs[i % convs.length]!, [message('user', 'one more question'), message('agent', TEXT)])));
      const reads = [(v: Conv) => calls.listConversations(v.userId), (v: Conv) => calls.get(v), (v: Conv) => calls.history(v)];
      const pagedReads = await withCpu(() => closedLoop(c, PHASE_S, (i) => reads[i % 3]!(convs[(i * 7919) % convs.length]!)));
      byCallers[c] = { writes, pagedReads };
    }
    const targetRunsPerS = round(TARGET_FACTOR * BRIEF_RUNS_PER_S, 1);
    const target = await withCpu(() => openLoopRuns(calls, convs, targetRunsPerS, TARGET_S));
    return { backend, seed: { conversations: convs.length, messages: convs.length * MESSAGES, seconds: seedS }, byCallers, target: { runsPerS: targetRunsPerS, callsPerRun: 5, ...target, goalP99Ms: GOAL_P99_MS, met: target.p99Ms < GOAL_P99_MS && target.errors === 0 }, logDir };
  } finally {
    client?.close();
    await store?.stop();
    await ferret?.stop();
  }
}

async function main() {
  const results = [];
  for (const b of BACKENDS) results.push(await benchBackend(b));
  console.log(`store benchmark: the store service on FerretDB 1.24, ${USERS} users × ${CONVERSATIONS} conversations × ${MESSAGES} messages seeded; closed loops of ${PHASE_S} s at ${CALLERS.join(' and ')} callers`);
  for (const r of results) {
    console.log(`  ${r.backend}: seeded ${r.seed.conversations} conversations / ${r.seed.messages} messages in ${r.seed.seconds} s`);
    for (const [c, x] of Object.entries(r.byCallers)) {
      console.log(`    ${c.padStart(3)} callers  writes ${x.writes.perS}/s p50 ${x.writes.p50Ms} ms p99 ${x.writes.p99Ms} ms (${x.writes.errors} errors) · paged reads ${x.pagedReads.perS}/s p50 ${x.pagedReads.p50Ms} ms p99 ${x.pagedReads.p99Ms} ms (${x.pagedReads.errors} errors)`);
      console.log(`                 CPU ms per call, writes ${JSON.stringify(x.writes.cpuMsPerCall)}, reads ${JSON.stringify(x.pagedReads.cpuMsPerCall)}`);
    }
    const t = r.target;
    console.log(`    open loop at ${TARGET_FACTOR}× the brief's 500-user rate (${t.runsPerS} runs/s × ${t.callsPerRun} calls; offered ${t.offeredPerS} runs/s): ${t.perS} calls/s, p50 ${t.p50Ms} ms, p99 ${t.p99Ms} ms, max ${t.maxMs} ms, ${t.errors} errors — goal p99 < ${GOAL_P99_MS} ms ${t.met ? 'met' : 'MISSED'}`);
    console.log(`                 CPU ms per call ${JSON.stringify(t.cpuMsPerCall)}`);
    const kinds = Object.entries([t, ...Object.values(r.byCallers).flatMap((x) => [x.writes, x.pagedReads])].reduce<Record<string, number>>((acc, x) => {
      for (const [k, n] of Object.entries(x.errorKinds)) acc[k] = (acc[k] ?? 0) + n;
      return acc;
    }, {}));
    if (kinds.length) console.log(`    errors: ${kinds.map(([k, n]) => `${n}× ${k}`).join(' | ')}`);
  }
  console.log(JSON.stringify({ scenario: 'store', users: USERS, conversationsPerUser: CONVERSATIONS, messagesPerConversation: MESSAGES, phaseS: PHASE_S, targetFactor: TARGET_FACTOR, results }));
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
