// The orchestrator against real Redis, FerretDB, the store, the tool-service, the emulator and a
// broker, each a separate process: event log, resume, takeover after kill -9, cancel, degraded.
import fs from 'node:fs';
import path from 'node:path';
import { createClient, newId, reasonOf, unary, codeOf, status, createLogger, TERMINAL_EVENTS as TERMINAL } from '@agent-mesh/common';
import { OrchestratorServiceClient, type RunEvent } from '@agent-mesh/common/gen/orchestrator/v1/orchestrator';
import { AgentRole, MessageRole, MessageStatus, StoreServiceClient } from '@agent-mesh/common/gen/store/v1/store';
import Redis from 'ioredis';
import {
  startEmulator, startFerret, startRedis, startService, testDir,
  type EmulatorProc, type FerretProc, type RedisProc, type ServiceProc,
} from '../support';
import { Server, ServerCredentials } from '@grpc/grpc-js';
import { LlmBrokerServiceService, type GenerateRequest, type GenerateResponse } from '@agent-mesh/common/gen/llmbroker/v1/llm_broker';

jest.setTimeout(180_000);

const ROOT = path.resolve(__dirname, '../..');
const logDir = testDir('orchestrator');
let redis: RedisProc; let ferret: FerretProc; let emulator: EmulatorProc;
let store: ServiceProc; let tools: ServiceProc; let orchA: ServiceProc; let orchB: ServiceProc;
let broker: { addr: string; stop(): Promise<void> };
let brokerProc: ServiceProc;
let storeClient: StoreServiceClient; let a: OrchestratorServiceClient; let b: OrchestratorServiceClient;
const user = 'user-it-1';

async function configure(patch: Record<string, unknown>) {
  const res = await fetch(`${emulator.url}/_emulator/config`, { method: 'POST', body: JSON.stringify(patch), headers: { 'content-type': 'application/json' } });
  expect(res.ok).toBe(true);
}

async function conversation(): Promise<string> {
  const id = newId();
  await unary(storeClient.createConversation.bind(storeClient), { userId: user, conversationId: id, title: 't' });
  return id;
}

/** Reads a server stream of {event} into events, until a terminal event, `until`, or the end. */
function collect(call: NodeJS.ReadableStream & { cancel(): void }, until?: (e: RunEvent) => boolean): Promise<{ events: RunEvent[]; error?: unknown }> {
  const events: RunEvent[] = [];
  return new Promise((resolve) => {
    call.on('data', (m: { event?: RunEvent }) => {
      if (!m.event) return;
      events.push(m.event);
      if (until?.(m.event)) {
        call.cancel();
        resolve({ events });
      }
    });
    call.on('error', (error) => resolve({ events, error }));
    call.on('end', () => resolve({ events }));
  });
}
let asked = 0;
/** Each run asks its own question by default: the Planner's and Critic's answers are cached (AGENT_CACHE_ROLES), and these tests are about upstream calls. */
const start = (client: OrchestratorServiceClient, conversationId: string, content = `How do I plan a small garden? (${++asked})`, messageId = newId()) =>
  client.startRun({ userId: user, conversationId, messageId, content }, { deadline: Date.now() + 170_000 });
const watch = (client: OrchestratorServiceClient, conversationId: string, runId: string, afterSeq: number) =>
  client.watchRun({ userId: user, conversationId, runId, afterSeq }, { deadline: Date.now() + 170_000 });
const data = (e: RunEvent) => JSON.parse(e.dataJson) as Record<string, any>;

beforeAll(async () => {
  redis = await startRedis({ logDir });
  ferret = await startFerret({ logDir });
  emulator = await startEmulator({ logDir, env: { EMULATOR_TIME_SCALE: '0.25', EMULATOR_REVISE_RATE: '0.3', EMULATOR_SEED: '7' } });
  const common = { REDIS_URL: redis.url, MONGODB_URI: ferret.uri, OTEL_SDK_DISABLED: 'true' };
  store = await startService('store', { logDir, env: common });
  tools = await startService('tool-service', { logDir, env: { ...common, STORE_ADDR: store.addr } });
  brokerProc = await startService('llm-broker', { logDir, env: { ...common, LLM_BASE_URL: `${emulator.url}/v1`, LLM_API_KEY: 'k' } });
  broker = { addr: brokerProc.addr, stop: async () => void (await brokerProc.stop()) };
  const env = { ...common, STORE_ADDR: store.addr, TOOL_SERVICE_ADDR: tools.addr, LLM_BROKER_ADDR: broker.addr, RUN_LEASE_MS: '1500' };
  [orchA, orchB] = await Promise.all([
    startService('orchestrator', { logDir, env, instance: 'A' }),
    startService('orchestrator', { logDir, env, instance: 'B' }),
  ]);
  storeClient = createClient(StoreServiceClient, store.addr);
  a = createClient(OrchestratorServiceClient, orchA.addr);
  b = createClient(OrchestratorServiceClient, orchB.addr);
});

afterAll(async () => {
  a?.close(); b?.close(); storeClient?.close();
  for (const p of [orchA, orchB, tools, store]) await p?.stop();
  await broker?.stop();
  for (const p of [emulator, ferret, redis]) await p?.stop();
});

describe('orchestrator', () => {
  let conv: string; let events: RunEvent[];

  it('streams a run to a terminal event with seqs 1..n without gaps, and stores one answer', async () => {
    conv = await conversation();
    ({ events } = await collect(start(a, conv)));
    expect(events.map((e) => e.seq)).toEqual(events.map((_, i) => i + 1));
    expect(events[0]?.type).toBe('run.started');
    const last = events.at(-1)!;
    expect(last.type).toBe('run.completed');
    const done = data(last);
    expect(done.answer).toMatch(/Final answer/);
    expect(done.usage.totalTokens).toBeGreaterThan(0);
    expect(done.cost.usd).toBeGreaterThan(0);
    for (const agent of ['planner', 'critic', 'host', 'reporter']) expect(events.some((e) => e.type === 'token' && data(e).agent === agent)).toBe(true);
    const msgs = await unary(storeClient.listMessages.bind(storeClient), { userId: user, conversationId: conv, limit: 200 });
    expect(msgs.messages.filter((m) => m.agent === AgentRole.AGENT_ROLE_REPORTER)).toHaveLength(1);
    expect(msgs.messages.filter((m) => m.role === MessageRole.MESSAGE_ROLE_USER)).toHaveLength(1);
  });

  it('WatchRun from a middle seq gives exactly the rest, on any replica', async () => {
    const runId = events[0]!.runId;
    const mid = Math.floor(events.length / 2);
    const rest = await collect(watch(b, conv, runId, mid));
    expect(rest.events.map((e) => e.seq)).toEqual(events.slice(mid).map((e) => e.seq));
    const byConversation = await collect(watch(a, conv, '', events.length - 1));
    expect(byConversation.events.map((e) => e.type)).toEqual(['run.completed']);
    const other = await collect(b.watchRun({ userId: 'someone-else', conversationId: conv, runId, afterSeq: 0 }));
    expect(codeOf(other.error)).toBe(status.NOT_FOUND);
  });

  it('a retried append does not duplicate', async () => {
    const { RunLog } = require(path.join(ROOT, 'services/orchestrator/dist/runlog/runlog')) as typeof import('../../services/orchestrator/src/runlog/runlog');
    const client = new Redis(redis.url);
    try {
      const log = new RunLog(client as never, { maxEvents: 100, retentionS: 60 });
      const ref = { runId: newId(), conversationId: newId(), messageId: newId() };
      const ev = [{ type: 'token', dataJson: '{"text":"a"}' }];
      expect(await log.append(ref, 'me', 1, ev)).toBe(1);
      expect(await log.append(ref, 'me', 1, ev)).toBe(1); // the same write again (lost answer → retry)
      expect(await log.append(ref, 'me', 2, ev)).toBe(2);
      expect((await log.read(ref.runId, 0)).map((e) => e.seq)).toEqual([1, 2]);
    } finally {
      client.disconnect();
    }
  });

  it('a second StartRun during a run is refused with run_in_progress; the same message id joins the run', async () => {
    await configure({ tokensPerSec: 20 });
    const c = await conversation();
    const messageId = newId();
    const first = collect(start(a, c, 'Tell me about tomatoes', messageId));
    await new Promise((r) => setTimeout(r, 500));
    const second = await collect(start(b, c, 'another question'));
    expect(codeOf(second.error)).toBe(status.FAILED_PRECONDITION);
    expect(reasonOf(second.error)).toBe('run_in_progress');
    const retried = await collect(start(b, c, 'Tell me about tomatoes', messageId));
    const firstEvents = (await first).events;
    expect(retried.events.at(-1)?.type).toBe('run.completed');
    expect(retried.events[0]?.runId).toBe(firstEvents[0]?.runId);
    await configure({ tokensPerSec: 40 });
  });

  it('cancel reaches the upstream and ends the run with run.cancelled', async () => {
    await configure({ tokensPerSec: 5 });
    const before = (await (await fetch(`${emulator.url}/_emulator/stats`)).json()) as { aborted: number };
    const c = await conversation();
    const run = collect(start(a, c), (e) => TERMINAL.has(e.type));
    await new Promise((r) => setTimeout(r, 1500));
    const res = await unary(b.cancelRun.bind(b), { userId: user, conversationId: c });
    expect(res.cancelled).toBe(true);
    const { events: ev } = await run;
    expect(ev.at(-1)?.type).toBe('run.cancelled');
    await new Promise((r) => setTimeout(r, 500));
    const after = (await (await fetch(`${emulator.url}/_emulator/stats`)).json()) as { aborted: number };
    expect(after.aborted).toBeGreaterThan(before.aborted);
    const msgs = await unary(storeClient.listMessages.bind(storeClient), { userId: user, conversationId: c, limit: 200 });
    expect(msgs.messages.some((m) => m.status === MessageStatus.MESSAGE_STATUS_CANCELLED)).toBe(true);
    await configure({ tokensPerSec: 40 });
  });

  it('kill -9 of the owner: another replica takes over, the stream shows agent.restarted and one answer is stored', async () => {
    await configure({ tokensPerSec: 20 });
    const victim = await startService('orchestrator', {
      logDir, instance: 'victim',
      env: { REDIS_URL: redis.url, OTEL_SDK_DISABLED: 'true', STORE_ADDR: store.addr, TOOL_SERVICE_ADDR: tools.addr, LLM_BROKER_ADDR: broker.addr, RUN_LEASE_MS: '1500' },
    });
    const vc = createClient(OrchestratorServiceClient, victim.addr);
    const c = await conversation();
    const seen = await collect(start(vc, c), (e) => e.type === 'agent.completed');
    await victim.kill();
    vc.close();
    const lastSeen = seen.events.at(-1)!;
    const resumed = await collect(watch(b, c, lastSeen.runId, lastSeen.seq));
    const types = resumed.events.map((e) => e.type);
    expect(types).toContain('agent.restarted');
    expect(types.at(-1)).toBe('run.completed');
    const all = [...seen.events, ...resumed.events].map((e) => e.seq);
    expect(all).toEqual(all.map((_, i) => i + 1));
    const msgs = await unary(storeClient.listMessages.bind(storeClient), { userId: user, conversationId: c, limit: 200 });
    expect(msgs.messages.filter((m) => m.agent === AgentRole.AGENT_ROLE_REPORTER)).toHaveLength(1);
    // Outputs the dead owner produced (its store writes were still pending) are stored once by the new owner.
    expect(msgs.messages.filter((m) => m.agent === AgentRole.AGENT_ROLE_PLANNER && m.round === 1)).toHaveLength(1);
    expect(msgs.messages.filter((m) => m.role === MessageRole.MESSAGE_ROLE_USER)).toHaveLength(1);
    await configure({ tokensPerSec: 40 });
  });

  it('events.lost: a WatchRun from a seq the bounded log no longer holds is told so explicitly, then continues', async () => {
    const small = await startService('orchestrator', {
      logDir, instance: 'smalllog',
      env: { REDIS_URL: redis.url, OTEL_SDK_DISABLED: 'true', STORE_ADDR: store.addr, TOOL_SERVICE_ADDR: tools.addr, LLM_BROKER_ADDR: broker.addr, RUN_LOG_MAX_EVENTS: '10' },
    });
    const client = createClient(OrchestratorServiceClient, small.addr);
    try {
      const c = await conversation();
      const { events: live } = await collect(start(client, c), (e) => TERMINAL.has(e.type));
      const last = live.at(-1)!;
      expect(last.type).toBe('run.completed');
      expect(last.seq).toBeGreaterThan(12); // a run writes far more events than the log keeps
      // Another replica, asked for everything after seq 1: only the last 10 events are retained.
      const { events: resumed } = await collect(watch(b, c, last.runId, 1));
      const [lost, ...rest] = resumed;
      expect(lost?.type).toBe('events.lost');
      const firstAvailableSeq = last.seq - 9;
      expect(data(lost!)).toEqual({ afterSeq: 1, firstAvailableSeq });
      expect(lost!.seq).toBe(firstAvailableSeq - 1);
      expect(rest.map((e) => e.seq)).toEqual(Array.from({ length: 10 }, (_, i) => firstAvailableSeq + i));
      expect(rest.at(-1)?.type).toBe('run.completed');
      expect(rest.some((e) => e.type === 'events.lost')).toBe(false);
      // A watcher whose position is still retained gets no such event.
      const { events: tail } = await collect(watch(b, c, last.runId, last.seq - 3));
      expect(tail.map((e) => e.type)).not.toContain('events.lost');
      expect(tail.map((e) => e.seq)).toEqual([last.seq - 2, last.seq - 1, last.seq]);
    } finally {
      client.close();
      await small.stop();
    }
  });

  it('a model that fails mid-answer: agent.failed with what it wrote, then run.failed saying so (never a short "completed")', async () => {
    await configure({ armed: { stream_error: 1 } } ); // the Planner's call fails after some tokens
    const c = await conversation();
    const { events: ev } = await collect(start(a, c));
    const failed = ev.find((e) => e.type === 'agent.failed');
    expect(failed).toBeDefined();
    expect(data(failed!)).toMatchObject({ agent: 'planner', round: 1, code: 'llm_stream_failed' });
    expect(data(failed!).partial.length).toBeGreaterThan(0);
    expect(ev.some((e) => e.type === 'token' && data(e).agent === 'planner')).toBe(true);
    const last = ev.at(-1)!;
    expect(last.type).toBe('run.failed');
    expect(data(last)).toMatchObject({ code: 'llm_stream_failed', retryable: true });
    expect(data(last).message).toMatch(/failed in the middle of its answer \(.*upstream error inside the stream/);
    expect(ev.some((e) => e.type === 'run.completed')).toBe(false);
  });

  it('degraded: a broker that refuses (its breaker opened by the provider\'s insufficient_quota) ends the run degraded, not failed', async () => {
    const refusalsBefore = await fetch(`http://127.0.0.1:${brokerProc.metricsPort}/metrics`).then((r) => r.text());
    await configure({ armed: { insufficient_quota: 1 } });
    const c = await conversation();
    const { events: ev } = await collect(start(a, c));
    const last = ev.at(-1)!;
    expect(last.type).toBe('degraded');
    expect(data(last)).toMatchObject({ reason: 'breaker_open', message: 'Service busy, please try again shortly.', retryable: true });
    const msgs = await unary(storeClient.listMessages.bind(storeClient), { userId: user, conversationId: c, limit: 200 });
    expect(msgs.messages.some((m) => m.status === MessageStatus.MESSAGE_STATUS_DEGRADED)).toBe(true);
    // The refusal came from the broker, which raised its alert: not a connection failure.
    const metrics = await fetch(`http://127.0.0.1:${brokerProc.metricsPort}/metrics`).then((r) => r.text());
    expect(refusalsBefore).not.toMatch(/llm_upstream_alerts_total\{reason="insufficient_quota"/);
    expect(metrics).toMatch(/llm_upstream_alerts_total\{reason="insufficient_quota"[^}]*\} 1/);
  });
});


