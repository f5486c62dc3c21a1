// `npm run bench -- sse`: how many concurrent SSE streams ONE edge process holds, its resident
// memory per stream, and the delay from an event entering the edge to reaching the client.
//
// Three processes besides this driver, so the edge is measured alone:
//   - a fake orchestrator (gRPC WatchRun and WatchRuns) that emits `token` events for every open run at a total
//     rate of TOKENS_PER_S, each carrying its emission time;
//   - the edge under test (real build, real Redis for its limiter), heartbeats on, as it ships:
//     OpenTelemetry `--require`d and every span exported to a Jaeger started here, LOG_LEVEL=info;
//   - a client process holding the streams on raw sockets, measuring each event's delay.
// Options (env): STREAMS (20000), TOKENS_PER_S (2000), HEARTBEAT_MS (15000), STEADY_S (30),
// RAMP_PER_S (2500), EDGE_NODE_FLAGS (none), HEAP_SNAPSHOT (0; 1 writes one at full load),
// BENCH_TRACING (1; 0: the edge without OpenTelemetry), BENCH_LOG_LEVEL (the edge's LOG_LEVEL, info).
// Loopback only; bounded to ~3 minutes. Last line: one JSON object.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { randomUUID } from 'node:crypto';
import { signToken } from '../../services/edge/src/auth';
import { percentile } from './stats';

const ROOT = path.resolve(__dirname, '../..');
const role = process.argv.find((a) => a.startsWith('--role='))?.slice(7) ?? 'driver';
const num = (name: string, dflt: number) => Number(process.env[name] ?? dflt);

// ---------------------------------------------------------------- fake orchestrator
async function orchestrator(): Promise<void> {
  const grpc = await import('@grpc/grpc-js');
  const { OrchestratorServiceService } = await import('@agent-mesh/common/gen/orchestrator/v1/orchestrator');
  type Stream = import('@grpc/grpc-js').ServerWritableStream<unknown, unknown>;
  /** One watched run: WatchRun's own call, or a subscription of a WatchRuns call. */
  type Watcher = { runId: string; seq: number; send(event: unknown): void };
  const watchers: Watcher[] = [];
  const rate = num('TOKENS_PER_S', 2000);
  const server = new grpc.Server({ 'grpc.max_concurrent_streams': 1_000_000 } as Record<string, number>);
  const unimplemented = (_c: unknown, cb?: (e: unknown) => void) => cb?.({ code: grpc.status.UNIMPLEMENTED });
  const remove = (w: Watcher) => {
    const i = watchers.indexOf(w);
    if (i >= 0) watchers.splice(i, 1);
  };
  const watch = (send: (event: unknown) => void): Watcher => {
    const w: Watcher = { runId: randomUUID(), seq: 1, send };
    w.send({ runId: w.runId, seq: 1, type: 'run.started', dataJson: JSON.stringify({ runId: w.runId }) });
    watchers.push(w);
    return w;
  };
  server.addService(OrchestratorServiceService as unknown as import('@grpc/grpc-js').ServiceDefinition, {
    startRun: (c: Stream) => c.destroy(new Error('unimplemented')),
    cancelRun: unimplemented,
    watchRun: (call: Stream) => {
      const w = watch((event) => call.write({ event }));
      call.on('cancelled', () => remove(w));
    },
    // Many watches over one call, tagged by subscription id (what the edge uses).
    watchRuns: (call: import('@grpc/grpc-js').ServerDuplexStream<{ subscriptionId: number; action?: { $case: string } }, unknown>) => {
      const subs = new Map<number, Watcher>();
      call.on('data', (req) => {
        if (req.action?.$case === 'subscribe') {
          subs.set(req.subscriptionId, watch((event) => call.write({ subscriptionId: req.subscriptionId, item: { $case: 'event', event } })));
        } else if (req.action?.$case === 'unsubscribe') {
          const w = subs.get(req.subscriptionId);
          if (w) remove(w);
          subs.delete(req.subscriptionId);
        }
      });
      const closeAll = () => {
        for (const w of subs.values()) remove(w);
        subs.clear();
      };
      call.on('cancelled', closeAll);
      call.on('end', () => {
        closeAll();
        call.end();
      });
    },
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))),
  );
  // Token events spread over every open run, round robin, every 20 ms.
  let next = 0;
  let carry = 0;
  setInterval(() => {
    carry += (rate * 20) / 1000;
    const n = Math.floor(carry);
    carry -= n;
    for (let i = 0; i < n && watchers.length > 0; i++) {
      next = (next + 1) % watchers.length;
      const w = watchers[next]!;
      w.seq += 1;
      w.send({ runId: w.runId, seq: w.seq, type: 'token', dataJson: `{"agent":"planner","round":1,"text":" word","ts":${Date.now()}}` });
    }
  }, 20);
  process.send!({ port });
}

// ---------------------------------------------------------------- clients
async function clients(): Promise<void> {
  const port = num('EDGE_PORT', 0);
  const token = process.env['TOKEN']!;
  const delays: number[] = [];
  let events = 0;
  let beats = 0;
  let open = 0;
  let errors = 0;
  const errorKinds: Record<string, number> = {};
  const fail = (kind: string) => {
    errors += 1;
    errorKinds[kind] = (errorKinds[kind] ?? 0) + 1;
  };
  const sockets: net.Socket[] = [];
  const connect = () =>
    new Promise<void>((resolve) => {
      const s = net.connect(port, '127.0.0.1');
      let headerDone = false;
      let buf = '';
      let settled = false;
      const done = () => {
        if (!settled) {
          settled = true;
          resolve();
        }
      };
      s.setNoDelay(true);
      s.on('connect', () => {
        s.write(`GET /api/conversations/${randomUUID()}/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${token}\r\nAccept: text/event-stream\r\n\r\n`);
      });
      s.on('data', (d: Buffer) => {
        buf += d.toString('latin1');
        if (!headerDone) {
          const i = buf.indexOf('\r\n\r\n');
          if (i < 0) return;
          const status = buf.slice(9, 12);
          if (status !== '200') {
            fail(`http_${status}`);
            s.destroy();
            done();
            return;
          }
          headerDone = true;
          open += 1;
          buf = buf.slice(i + 4);
          done();
        }
        // Chunked framing lines are ignored: only `"ts":` and heartbeat comments matter here.
        let j: number;
        while ((j = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, j);
          buf = buf.slice(j + 2);
          const t = block.indexOf('"ts":');
          if (t >= 0) {
            events += 1;
            delays.push(Date.now() - Number(block.slice(t + 5, block.indexOf('}', t))));
          } else if (block.includes(': hb')) beats += 1;
        }
      });
      s.on('error', (e: NodeJS.ErrnoException) => {
        fail(e.code ?? 'socket_error');
        done();
      });
      s.on('close', () => {
        if (headerDone) {
          open -= 1;
          if (!stopping) fail('closed_by_edge');
        }
        done();
      });
      sockets.push(s);
    });
  let stopping = false;
  process.on('message', async (m: { cmd: string; n?: number; perS?: number }) => {
    if (m.cmd === 'ramp') {
      const perBatch = Math.max(1, Math.round((m.perS ?? 2500) / 10));
      for (let i = 0; i < m.n!; i += perBatch) {
        const batch = Array.from({ length: Math.min(perBatch, m.n! - i) }, connect);
        await Promise.all([Promise.all(batch), new Promise((r) => setTimeout(r, 100))]);
      }
      process.send!({ cmd: 'ramped', open, errors, errorKinds });
    } else if (m.cmd === 'reset') {
      delays.length = 0;
      events = 0;
      beats = 0;
      process.send!({ cmd: 'reset' });
    } else if (m.cmd === 'report') {
      process.send!({ cmd: 'report', open, events, beats, errors, errorKinds, p50: percentile(delays, 50), p99: percentile(delays, 99), max: percentile(delays, 100) });
    } else if (m.cmd === 'stop') {
      stopping = true;
      for (const s of sockets) s.destroy();
      process.exit(0);
    }
  });
  process.send!({ cmd: 'ready' });
}

// ---------------------------------------------------------------- driver
function spawnWithIpc(args: string[], env: Record<string, string>, logFile: string, cwd = ROOT): ChildProcess {
  const out = fs.openSync(logFile, 'a');
  return spawn('bash', ['-c', 'ulimit -n 65536 2>/dev/null || ulimit -n $(ulimit -Hn); exec "$@"', 'bash', ...args], {
    cwd,
    env: { ...process.env, ...env },
    stdio: ['ignore', out, out, 'ipc'],
  });
}

const message = <T>(p: ChildProcess, cmd?: string) =>
  new Promise<T>((resolve) => {
    const on = (m: T & { cmd?: string }) => {
      if (!cmd || m.cmd === cmd) {
        p.off('message', on);
        resolve(m);
      }
    };
    p.on('message', on);
  });

function rssOf(pid: number): number {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+)/.exec(status)![1]) * 1024;
}

async function driver(): Promise<void> {
  // One process cannot hold more sockets than its file limit: where the hard limit is below the
  // goal (20,000 on some sandboxes, not raisable without CAP_SYS_RESOURCE), stay just under it.
  const fdLimit = Number(require('node:child_process').execSync('ulimit -Hn', { shell: '/bin/bash' }).toString().trim()) || 65_536;
  const streams = num('STREAMS', Math.min(20_000, fdLimit - 300));
  if (streams < 20_000) console.log(`file limit ${fdLimit}: ramping to ${streams} streams, not 20,000`);
  const tokensPerS = num('TOKENS_PER_S', 2_000);
  const heartbeatMs = num('HEARTBEAT_MS', 15_000);
  const steadyS = num('STEADY_S', 30);
  const rampPerS = num('RAMP_PER_S', 2_500);
  const started = Date.now();
  const hardStop = setTimeout(() => {
    console.error('bench: time bound (3 min) exceeded');
    process.exit(1);
  }, 180_000);
  hardStop.unref();
  const stack = require(path.join(ROOT, 'deploy/local/stack.js'));
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-sse-'));
  const tsx = path.join(ROOT, 'node_modules/.bin/tsx');
  const self = path.join(__dirname, 'sse.ts');
  const procs: ChildProcess[] = [];
  let redis: { stop(): Promise<unknown>; url: string } | undefined;
  let jaeger: { stop(): Promise<unknown>; otlpEndpoint: string } | undefined;
  const tracing = process.env['BENCH_TRACING'] !== '0';
  const logLevel = process.env['BENCH_LOG_LEVEL'] ?? 'info';
  try {
    redis = await stack.startRedis({ logDir: dir });
    if (tracing) jaeger = await stack.startJaeger({ logDir: dir });
    const orch = spawnWithIpc([tsx, self, '--role=orchestrator'], { TOKENS_PER_S: String(tokensPerS) }, path.join(dir, 'orchestrator.log'));
    procs.push(orch);
    const { port: orchPort } = await message<{ port: number }>(orch);
    const secret = 'bench-secret-long-enough-for-hs256';
    const edgePort: number = await stack.freePort();
    const snapshot = process.env['HEAP_SNAPSHOT'] === '1';
    // EDGE_NODE_FLAGS (e.g. `--max-semi-space-size=2`): to measure a flag's effect separately. The
    // headline figure is with none, as the image runs (the Kubernetes Deployment adds
    // --max-semi-space-size=16 and --max-old-space-size; docs/benchmarks.md gives both figures).
    const edgeNodeFlags = (process.env['EDGE_NODE_FLAGS'] ?? '').split(/\s+/).filter(Boolean);
    const edge = spawnWithIpc(
      [
        process.execPath, ...edgeNodeFlags, ...(snapshot ? ['--heapsnapshot-signal=SIGUSR2'] : []),
        ...(jaeger ? ['--require', path.join(ROOT, 'services/common/dist/telemetry/register.js')] : []),
        path.join(ROOT, 'services/edge/dist/main.js'),
      ],
      {
        EDGE_PORT: String(edgePort),
        EDGE_HOST: '127.0.0.1',
        METRICS_PORT: String(await stack.freePort()),
        AUTH_JWT_SECRET: secret,
        REDIS_URL: redis!.url,
        ORCHESTRATOR_ADDR: `127.0.0.1:${orchPort}`,
        STORE_ADDR: '127.0.0.1:9',
        LLM_BROKER_ADDR: '127.0.0.1:9',
        TOOL_SERVICE_ADDR: '127.0.0.1:9',
        SSE_MAX_STREAMS: String(streams + 1_000),
        SSE_HEARTBEAT_MS: String(heartbeatMs),
        SSE_HEARTBEAT_ADAPTIVE: 'false',
        RATE_LIMIT_PER_MINUTE: '0',
        LOG_LEVEL: logLevel,
        ...(jaeger ? { OTEL_SERVICE_NAME: 'edge', OTEL_EXPORTER_OTLP_ENDPOINT: jaeger.otlpEndpoint } : { OTEL_SDK_DISABLED: 'true' }),
      },
      path.join(dir, 'edge.log'),
      dir,
    );
    procs.push(edge);
    await stack.waitFor('edge', async () => (await fetch(`http://127.0.0.1:${edgePort}/api/health`)).status > 0, { timeoutMs: 30_000 });
    const token = signToken(secret, 'bench-user');
    const metrics = async () => {
      const res = await fetch(`http://127.0.0.1:${edgePort}/api/metrics`, { headers: { authorization: `Bearer ${token}` } });
      const body = (await res.json()) as { memory: { heapUsedBytes: number }; connections: { sseStreams: number } };
      if (res.status !== 200) throw new Error(`edge /api/metrics answered ${res.status}: ${JSON.stringify(body)}`);
      return body;
    };
    // Warm up the code paths (JIT, pools) with a few streams, then take the baseline.
    // Clients in several processes: each stays well under the file limit (the hard limit may be 20,000).
    const clientProcs = Array.from({ length: Math.max(1, Math.ceil(streams / 8_000)) }, (_, i) =>
      spawnWithIpc([tsx, self, '--role=clients'], { EDGE_PORT: String(edgePort), TOKEN: token }, path.join(dir, `clients-${i}.log`)),
    );
    procs.push(...clientProcs);
    await Promise.all(clientProcs.map((c) => message(c, 'ready')));
    const all = <T>(cmd: string, reply: string, n?: (i: number) => number, perS?: number) =>
      Promise.all(clientProcs.map((c, i) => {
        const answer = message<T>(c, reply);
        c.send({ cmd, n: n?.(i), perS });
        return answer;
      }));
    await all('ramp', 'ramped', (i) => (i === 0 ? 50 : 0), 500);
    await new Promise((r) => setTimeout(r, 2_000));
    const edgePid = edge.pid!;
    const baseRss = rssOf(edgePid);
    const baseHeap = (await metrics()).memory.heapUsedBytes;

    const rampStart = Date.now();
    const share = (i: number) => Math.floor(streams / clientProcs.length) + (i < streams % clientProcs.length ? 1 : 0);
    const ramps = await all<{ open: number; errors: number; errorKinds: Record<string, number> }>('ramp', 'ramped', share, rampPerS / clientProcs.length);
    const ramped = { open: ramps.reduce((s, r) => s + r.open, 0), errors: ramps.reduce((s, r) => s + r.errors, 0), kinds: Object.assign({}, ...ramps.map((r) => r.errorKinds)) };
    const rampS = (Date.now() - rampStart) / 1000;
    console.log(`ramp: ${ramped.open} streams open in ${rampS.toFixed(1)} s (${ramped.errors} errors ${JSON.stringify(ramped.kinds)})`);
    await new Promise((r) => setTimeout(r, 3_000));
    await all('reset', 'reset');
    let peakRss = 0;
    const sampler = setInterval(() => (peakRss = Math.max(peakRss, rssOf(edgePid))), 1_000);
    await new Promise((r) => setTimeout(r, steadyS * 1000));
    clearInterval(sampler);
    const rss = rssOf(edgePid);
    peakRss = Math.max(peakRss, rss);
    const m = await metrics();
    type Report = { open: number; events: number; beats: number; errors: number; errorKinds: Record<string, number>; p50: number; p99: number; max: number };
    const reports = await all<Report>('report', 'report');
    const rep: Report = {
      open: reports.reduce((s, r) => s + r.open, 0),
      events: reports.reduce((s, r) => s + r.events, 0),
      beats: reports.reduce((s, r) => s + r.beats, 0),
      errors: reports.reduce((s, r) => s + r.errors, 0),
      errorKinds: Object.assign({}, ...reports.map((r) => r.errorKinds)),
      // Per-process percentiles: the worst process's p99 bounds the whole (conservative).
      p50: Math.max(...reports.map((r) => r.p50)),
      p99: Math.max(...reports.map((r) => r.p99)),
      max: Math.max(...reports.map((r) => r.max)),
    };
    const held = m.connections.sseStreams;
    const perStreamKb = (rss - baseRss) / Math.max(1, held - 50) / 1024;
    const heapPerStreamKb = (m.memory.heapUsedBytes - baseHeap) / Math.max(1, held - 50) / 1024;
    const summary = {
      scenario: 'sse',
      streamsTarget: streams,
      fdLimit,
      streamsHeld: held,
      clientOpen: rep.open,
      rampSeconds: Math.round(rampS * 10) / 10,
      edgeNodeFlags: edgeNodeFlags.join(' '),
      edge: { tracing, logLevel, node: process.version },
      tokensPerSecond: tokensPerS,
      heartbeatMs,
      steadySeconds: steadyS,
      eventsDelivered: rep.events,
      eventsPerSecond: Math.round(rep.events / steadyS),
      heartbeatsReceived: rep.beats,
      delayP50Ms: rep.p50,
      delayP99Ms: rep.p99,
      delayMaxMs: rep.max,
      errors: rep.errors,
      errorKinds: rep.errorKinds,
      edgeRssBaseMb: Math.round(baseRss / 1e5) / 10,
      edgeRssMb: Math.round(rss / 1e5) / 10,
      edgeRssPeakMb: Math.round(peakRss / 1e5) / 10,
      rssPerStreamKb: Math.round(perStreamKb * 10) / 10,
      heapPerStreamKb: Math.round(heapPerStreamKb * 10) / 10,
      centrifugoKbPerConnection: 30,
      goal: { streams: 20_000, kbPerStream: 15 },
      goalMet: held >= 20_000 && perStreamKb <= 15,
      cores: os.cpus().length,
      seconds: Math.round((Date.now() - started) / 1000),
      logs: dir,
    };
    console.log(
      [
        `one edge held ${held} SSE streams (target ${streams}); ramp ${summary.rampSeconds} s`,
        `memory: RSS ${summary.edgeRssBaseMb} → ${summary.edgeRssMb} MB (peak ${summary.edgeRssPeakMb}) = ${summary.rssPerStreamKb} KB per stream (heap ${summary.heapPerStreamKb} KB); Centrifugo publishes ~30 KB per connection; goal ≤ 15 KB`,
        `events: ${rep.events} token events in ${steadyS} s (${summary.eventsPerSecond}/s of ${tokensPerS}/s sent), heartbeats every ${heartbeatMs} ms: ${rep.beats} received`,
        `delay orchestrator → client: p50 ${rep.p50} ms, p99 ${rep.p99} ms, max ${rep.max} ms`,
        `errors: ${rep.errors} ${JSON.stringify(rep.errorKinds)}`,
        `the edge as it ships: tracing ${tracing ? 'on (every span exported to Jaeger)' : 'OFF'}, LOG_LEVEL=${logLevel}, Node.js ${process.version}${edgeNodeFlags.length ? `, flags ${edgeNodeFlags.join(' ')}` : ''}`,
      ].join('\n'),
    );
    if (snapshot) {
      // HEAP_SNAPSHOT=1: a heap snapshot of the edge at full load, written into the logs folder.
      edge.kill('SIGUSR2');
      await stack.waitFor('heap snapshot', () => fs.readdirSync(dir).some((f) => f.endsWith('.heapsnapshot')), { timeoutMs: 60_000 });
      // Written in pieces: done when its size stops changing.
      const file = path.join(dir, fs.readdirSync(dir).find((f) => f.endsWith('.heapsnapshot'))!);
      for (let last = -1; ; ) {
        await new Promise((r) => setTimeout(r, 2_000));
        const size = fs.statSync(file).size;
        if (size === last && size > 1_000_000) break;
        last = size;
      }
      console.log(`heap snapshot: ${file}`);
    }
    for (const c of clientProcs) c.send({ cmd: 'stop' });
    console.log(JSON.stringify(summary));
  } finally {
    for (const p of procs.reverse()) if (p.exitCode === null) p.kill('SIGKILL');
    await redis?.stop();
    await jaeger?.stop();
  }
}

// A helper role ends with its driver: tsx runs the script in a child of the process the driver
// kills, which would otherwise live on (an orphaned orchestrator keeps its timer and port).
if (role !== 'driver') process.on('disconnect', () => process.exit(0));

const main = role === 'orchestrator' ? orchestrator : role === 'clients' ? clients : driver;
main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
