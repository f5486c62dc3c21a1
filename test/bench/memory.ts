// `npm run bench -- memory`: what one active run costs the orchestrator in memory (and one open
// stream the edge, one upstream call in flight the broker), measured where the work holds still.
// RUNS runs are started through the edge of a whole mesh (Redis, FerretDB, the five services, as
// they ship: LOG_LEVEL info) against an emulator that sends its first token only after HOLD_S, so
// that every run is active at once, its Planner's call in flight and its stream open. Read once idle
// (after the conversations exist) and once with every run held, for each process: its live heap
// (the process is asked through its inspector, on loopback for this benchmark only, to collect
// all its garbage, and its heap in use is read right after), then its heap in use and resident
// memory from its /metrics SAMPLES times, 250 ms apart, the lowest reading kept (an upper bound).
// Per run: (held − idle) ÷ RUNS.
// Options (env): RUNS (400), HOLD_S (90), SAMPLES (24). Loopback only, ~2 minutes. Last line: JSON.
import { performance } from 'node:perf_hooks';
import { gauge } from './stats';
import { freePort, mintToken, startEmulator, startFerret, startMesh, startRedis, testDir, waitFor, type Proc } from '../support';

const num = (name: string, dflt: number) => Number(process.env[name] ?? dflt);
const RUNS = num('RUNS', 400);
const HOLD_S = num('HOLD_S', 90);
const SAMPLES = num('SAMPLES', 24);
const round = (x: number, d = 1) => Math.round(x * 10 ** d) / 10 ** d;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

type Floors = Record<string, { heapBytes: number; rssBytes: number; liveHeapBytes: number }>;
type Target = { inspectorPort: number; metrics: string };

/** The lowest heap in use and resident memory of each process over SAMPLES readings, beside its live heap. */
async function floors(metrics: Record<string, string>, live: Record<string, number>): Promise<Floors> {
  const out: Floors = Object.fromEntries(Object.keys(metrics).map((k) => [k, { heapBytes: Infinity, rssBytes: Infinity, liveHeapBytes: live[k]! }]));
  for (let i = 0; i < SAMPLES; i += 1) {
    await Promise.all(Object.entries(metrics).map(async ([name, url]) => {
      const text = await (await fetch(url)).text();
      out[name]!.heapBytes = Math.min(out[name]!.heapBytes, gauge(text, 'nodejs_heap_size_used_bytes'));
      out[name]!.rssBytes = Math.min(out[name]!.rssBytes, gauge(text, 'process_resident_memory_bytes'));
    }));
    await sleep(250);
  }
  return out;
}

/**
 * Each process's heap in use right after a full garbage collection, asked for over the Chrome
 * DevTools protocol of its inspector (`HeapProfiler.collectGarbage`); /metrics is read once the
 * collection has answered. Taken first in each phase, so that both phases' other readings follow
 * a full collection alike (it lowers RSS too).
 */
async function liveHeaps(targets: Record<string, Target>): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const [name, t] of Object.entries(targets)) {
    const [page] = (await (await fetch(`http://127.0.0.1:${t.inspectorPort}/json/list`)).json()) as { webSocketDebuggerUrl: string }[];
    const ws = new WebSocket(page!.webSocketDebuggerUrl);
    await new Promise((resolve, reject) => { ws.onopen = resolve; ws.onerror = () => reject(new Error(`${name}'s inspector refused the connection`)); });
    await new Promise<void>((resolve, reject) => {
      ws.onmessage = (m) => { if ((JSON.parse(String(m.data)) as { id?: number }).id === 1) resolve(); };
      ws.onclose = () => reject(new Error(`${name}'s inspector closed before collecting`));
      ws.send(JSON.stringify({ id: 1, method: 'HeapProfiler.collectGarbage' }));
    });
    ws.onclose = null;
    ws.close();
    out[name] = gauge(await (await fetch(t.metrics)).text(), 'nodejs_heap_size_used_bytes');
  }
  return out;
}

async function main(): Promise<void> {
  const logDir = testDir('bench-memory');
  const procs: Proc[] = [];
  console.log(`memory benchmark: ${RUNS} runs held still (first token after ${HOLD_S} s) — logs in ${logDir}`);
  const [redis, ferret, emulator] = await Promise.all([
    startRedis({ logDir }), startFerret({ logDir }),
    startEmulator({ logDir, env: { EMULATOR_TTFT_MS: String(HOLD_S * 1000), EMULATOR_REVISE_RATE: '0' } }),
  ]);
  procs.push(redis, ferret, emulator);
  const secret = 'memory-bench-secret-0123456789abcdef';
  const inspectorPorts = { orchestrator: await freePort(), edge: await freePort(), 'llm-broker': await freePort() };
  const inspector = (name: keyof typeof inspectorPorts) => ({ NODE_OPTIONS: `--inspect=127.0.0.1:${inspectorPorts[name]}` });
  const mesh = await startMesh({
    logDir, redisUrl: redis.url, mongoUri: ferret.uri, llmBaseUrl: `${emulator.url}/v1`, jwtSecret: secret,
    env: { LOG_LEVEL: 'info' },
    perService: {
      // Nothing queues or is shed: every run's first call is in flight at the upstream.
      'llm-broker': { LLM_MAX_CONCURRENT: String(RUNS * 2), LLM_RPM: '100000000', LLM_TPM: '0', LLM_QUEUE_MAX: String(RUNS * 2), ...inspector('llm-broker') },
      orchestrator: { RUN_MAX_QUEUE_WAIT_MS: '0', AGENT_CALL_TIMEOUT_MS: String((HOLD_S + 60) * 1000), ...inspector('orchestrator') },
      edge: { SSE_MAX_STREAMS: String(RUNS * 2), RATE_LIMIT_PER_MINUTE: '0', ...inspector('edge') },
      'tool-service': { TOOL_CORPUS_SOURCES: 'docs' },
    },
  });
  const abort = new AbortController();
  try {
    const metrics = {
      orchestrator: `http://127.0.0.1:${mesh.orchestrator.metricsPort}/metrics`,
      edge: `${mesh.edge.url}/metrics`,
      'llm-broker': `http://127.0.0.1:${mesh.broker.metricsPort}/metrics`,
    };
    const targets = Object.fromEntries(Object.entries(inspectorPorts).map(([name, port]) => [name, { inspectorPort: port, metrics: metrics[name as keyof typeof metrics] }]));
    const users = await Promise.all(Array.from({ length: Math.ceil(RUNS / 10) }, (_, i) => mintToken(secret, `memory-user-${i}`)));
    const call = (token: string, p: string, init: RequestInit = {}) =>
      fetch(`${mesh.edge.url}${p}`, { ...init, signal: abort.signal, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', accept: 'text/event-stream' } });
    // One conversation per run (setup, made before the idle reading).
    const conversations: { token: string; id: string }[] = [];
    for (let i = 0; i < RUNS; i += 20) {
      await Promise.all(Array.from({ length: Math.min(20, RUNS - i) }, async (_, j) => {
        const token = users[(i + j) % users.length]!;
        const res = await call(token, '/api/conversations', { method: 'POST', body: JSON.stringify({ title: `memory ${i + j}` }) });
        if (res.status !== 201) throw new Error(`creating a conversation: HTTP ${res.status}`);
        conversations.push({ token, id: ((await res.json()) as { id: string }).id });
      }));
    }
    console.log('  idle reading …');
    const idle = await floors(metrics, await liveHeaps(targets));
    // Start every run, 20 at a time (the start path's bulkhead), and keep each stream open.
    const t0 = performance.now();
    const streams: Promise<unknown>[] = [];
    for (let i = 0; i < RUNS; i += 20) {
      await Promise.all(conversations.slice(i, i + 20).map(async (c) => {
        const res = await call(c.token, `/api/conversations/${c.id}/messages`, { method: 'POST', body: JSON.stringify({ content: `What does a heat pump do? (${c.id})` }) });
        if (res.status !== 200) throw new Error(`starting a run: HTTP ${res.status} ${await res.text()}`);
        streams.push(res.body!.pipeTo(new WritableStream()).catch(() => undefined));
      }));
    }
    await waitFor(`${RUNS} runs active with their first call in flight`, async () => {
      const [o, b] = await Promise.all([fetch(metrics.orchestrator).then((r) => r.text()), fetch(metrics['llm-broker']).then((r) => r.text())]);
      return gauge(o, 'orchestrator_active_runs') >= RUNS && gauge(b, 'llm_in_flight') >= RUNS;
    }, { timeoutMs: HOLD_S * 500, intervalMs: 250 });
    const startedS = (performance.now() - t0) / 1000;
    console.log(`  ${RUNS} runs held after ${round(startedS)} s; held reading …`);
    const held = await floors(metrics, await liveHeaps(targets));
    if ((performance.now() - t0) / 1000 > HOLD_S) throw new Error(`the readings outlasted HOLD_S (${HOLD_S} s): raise it`);

    const per = (name: string, unit: string) => {
      const d = (k: 'heapBytes' | 'rssBytes' | 'liveHeapBytes') => round((held[name]![k] - idle[name]![k]) / RUNS / 1024, 1);
      return { unit, liveHeapKb: d('liveHeapBytes'), heapKb: d('heapBytes'), rssKb: d('rssBytes'),
        idleLiveHeapMb: round(idle[name]!.liveHeapBytes / 2 ** 20), heldLiveHeapMb: round(held[name]!.liveHeapBytes / 2 ** 20), idleHeapMb: round(idle[name]!.heapBytes / 2 ** 20), heldHeapMb: round(held[name]!.heapBytes / 2 ** 20), idleRssMb: round(idle[name]!.rssBytes / 2 ** 20), heldRssMb: round(held[name]!.rssBytes / 2 ** 20) };
    };
    const figures = { orchestrator: per('orchestrator', 'active run'), edge: per('edge', 'open stream'), 'llm-broker': per('llm-broker', 'upstream call in flight') };
    console.log(`\n== memory per unit of held work (${RUNS} runs, idle and held; live: after a full collection; lowest: of ${SAMPLES} readings) ==`);
    for (const [name, f] of Object.entries(figures)) {
      console.log(`  ${name.padEnd(13)} live heap ${String(f.liveHeapKb).padStart(6)} KB (lowest reading ${f.heapKb}), RSS ${String(f.rssKb).padStart(6)} KB per ${f.unit}` +
        `  (live heap ${f.idleLiveHeapMb} → ${f.heldLiveHeapMb} MB, lowest reading ${f.idleHeapMb} → ${f.heldHeapMb} MB, RSS ${f.idleRssMb} → ${f.heldRssMb} MB)`);
    }
    console.log(JSON.stringify({ scenario: 'memory', runs: RUNS, holdS: HOLD_S, samples: SAMPLES, startedInS: round(startedS), perUnit: figures, logDir }));
  } finally {
    abort.abort();
    await mesh.stop().catch(() => undefined);
    for (const p of procs.reverse()) await p.stop(5_000).catch(() => undefined);
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
