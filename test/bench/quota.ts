// Benchmark `quota`: global quota accuracy across broker replicas under overload, in variants that
// make it hard. Each variant starts its own brokers on a fresh Redis database, configures the
// emulator (which enforces the provider's limit L and referees it), offers 3× the binding limit
// for BENCH_MINUTES scaled minutes, and cancels what is still queued at the end:
// - rpm:            3 brokers, 30 equal users, short prompts (RPM binds);
// - below:          the provider's real limit 30 % under what the brokers are configured with;
// - tpm:            long prompts (TPM binds), the provider refunds unused tokens (settle);
// - no-refund:      long prompts, the provider charges prompt + max_tokens on arrival for good
//                   (emulator no_refund, brokers LLM_TPM_ACCOUNTING=reserve);
// - big-calls:      prompts of ~4,900 tokens, ~10 % of TPM: whole calls can use only ⌊TPM ÷ call⌋
//                   of them a window, which the summary reports beside the share of TPM;
// - no-headers:     the provider sends no x-ratelimit-* headers (the configured limits alone);
// - 10-brokers:     ten replicas share L;
// - heavy-light:    5 heavy users each asking 8× what each of 25 light users asks;
// - quantized:      600 RPM enforced per second (10 at once, one more every 100 ms), brokers with
//                   LLM_QUOTA_BURST_FRACTION=0.015 (the default 2 % lets 12 go at once after a lull);
// - otpm:           Anthropic's limits over its Messages API: input and output tokens per minute
//                   apart (ITPM, OTPM), max_tokens counted against the OTPM on arrival and corrected
//                   at the end; the OTPM binds (brokers with LLM_TPM = the ITPM, LLM_OTPM).
// - cached:         Anthropic's prompt caching: every prompt starts with the same ~1,500-token system
//                   prompt marked as a cache breakpoint, which the provider reads from its cache and
//                   leaves out of its ITPM; the ITPM binds on the ~150 uncached tokens of each call.
// - conversation:   as cached, but each user's calls are turns of conversations, each marking its latest
//                   message (Anthropic's advice for chats): the provider reads the turn before, found by its
//                   20-block lookback; a turn follows the answer to the one before (an arrival while each of
//                   the user's conversations awaits one opens another), and a user's calls go to the brokers
//                   in turn.
// Reported per variant: upstream 429s, the binding limit's share used, max-min fairness of what
// each user got against what it asked for, and queue waits over every offered call (calls still
// queued at the end are censored: their wait so far is a lower bound), and for RPM binding the
// least time over which L consecutive requests reached the provider (under a window: delays between
// admission and arrival spread that much, see LLM_QUOTA_WINDOW_MARGIN_MS).
// BENCH_VARIANTS=rpm,tpm picks variants; BENCH_COMPLETION_TOKENS (20) sets the answers' length; BENCH_SCALE (1: the
// brief's time, 60 s windows, ~33 min for the twelve variants; 0.1: a 6 s window, ~4 min, where the window margin and the
// pacing's burst cost ten times as much of the rate and the same event-loop delays weigh ten times as much);
// BENCH_MINUTES (2 scaled minutes per variant); BENCH_BURST_FRACTION sets LLM_QUOTA_BURST_FRACTION on every
// variant's brokers (to see what the default draws from the quantized provider). Prints a summary and, as the last line, one JSON object.
import os from 'node:os';
import { setMaxListeners } from 'node:events';
import { Metadata } from '@grpc/grpc-js';
import { createClient } from '@agent-mesh/common';
import { CallerRole, LlmBrokerServiceClient, type GenerateRequest, type GenerateResponse } from '@agent-mesh/common/gen/llmbroker/v1/llm_broker';
import { censoredPercentile, maxMinFairness } from './stats';
import { configureEmulator, emulatorStats, startEmulator, startRedis, startService, testDir, type ServiceProc } from '../support';

const SCALE = Number(process.env.BENCH_SCALE ?? 1); // 0.1 → a 6 s "minute"
const WINDOW_MS = 60_000 * SCALE;
const SCALED_MINUTES = Number(process.env.BENCH_MINUTES ?? 2);
const MAX_TOKENS = 120;
const COMPLETION_TOKENS = Number(process.env.BENCH_COMPLETION_TOKENS ?? 20);

/** `tpm`: input tokens only when `otpm` (output tokens per minute, Anthropic's) is set. */
interface Limits { rpm: number; tpm: number; concurrency: number; otpm?: number }
interface UserGroup { name: string; count: number; weight: number }
interface Variant {
  name: string;
  what: string;
  brokers: number;
  /** The emulator's (the provider's) limit. */
  provider: Limits;
  /** The brokers' configuration (default: the provider's limit). */
  configured?: Limits;
  binding: 'rpm' | 'tpm' | 'otpm';
  /** The wire protocol of the brokers' upstream (default openai). */
  protocol?: 'anthropic';
  /** Filler words that lengthen each prompt (TPM binding). */
  promptWords: number;
  /** Words of a system prompt shared by every call and marked as a cache breakpoint (Anthropic's prompt caching). */
  cachedSystemWords?: number;
  /** Each user's calls are the turns of one conversation, each marking its latest message as a cache breakpoint. */
  conversation?: boolean;
  groups: UserGroup[];
  behaviours?: Record<string, number>;
  brokerEnv?: Record<string, string>;
  /** The provider enforces RPM and TPM also over this (scaled) time (the emulator's limitQuantumMs). */
  quantumMs?: number;
}

const L: Limits = { rpm: 120, tpm: 24_000, concurrency: 8 };
const LONG: Limits = { rpm: 600, tpm: 48_000, concurrency: 20 };
const EQUAL: UserGroup[] = [{ name: 'user', count: 30, weight: 1 }];
const VARIANTS: Variant[] = [
  { name: 'rpm', what: '3 brokers, 30 equal users, RPM binding', brokers: 3, provider: L, binding: 'rpm', promptWords: 0, groups: EQUAL },
  {
    name: 'below', what: 'provider 30 % below the configured limit', brokers: 3, binding: 'rpm', promptWords: 0, groups: EQUAL,
    configured: L, provider: { rpm: Math.floor(L.rpm * 0.7), tpm: Math.floor(L.tpm * 0.7), concurrency: Math.floor(L.concurrency * 0.7) },
  },
  { name: 'tpm', what: 'long prompts: TPM binding, the provider refunds (settle)', brokers: 3, provider: LONG, binding: 'tpm', promptWords: 700, groups: EQUAL },
  {
    name: 'no-refund', what: 'long prompts, the provider charges prompt + max_tokens for good (reserve)', brokers: 3, provider: LONG, binding: 'tpm',
    promptWords: 700, groups: EQUAL, behaviours: { no_refund: 1 }, brokerEnv: { LLM_TPM_ACCOUNTING: 'reserve' },
  },
  {
    name: 'big-calls', what: 'calls of ~10 % of TPM (~4,900-token prompts, a long history), TPM binding, the provider counting a sliding minute', brokers: 3,
    provider: LONG, binding: 'tpm', promptWords: 4_600, groups: EQUAL,
  },
  { name: 'no-headers', what: 'no x-ratelimit-* headers', brokers: 3, provider: L, binding: 'rpm', promptWords: 0, groups: EQUAL, behaviours: { no_ratelimit_headers: 1 } },
  { name: '10-brokers', what: '10 brokers share L', brokers: 10, provider: L, binding: 'rpm', promptWords: 0, groups: EQUAL },
  {
    name: 'heavy-light', what: '5 heavy users asking 8× as much as 25 light ones', brokers: 3, provider: L, binding: 'rpm', promptWords: 0,
    groups: [{ name: 'heavy', count: 5, weight: 8 }, { name: 'light', count: 25, weight: 1 }],
  },
  {
    name: 'quantized', what: '600 RPM enforced as 10 a second', brokers: 3, binding: 'rpm', promptWords: 0, groups: EQUAL,
    provider: { rpm: 600, tpm: 1_000_000, concurrency: 20 }, quantumMs: 1_000, brokerEnv: { LLM_QUOTA_BURST_FRACTION: '0.015' },
  },
  {
    name: 'otpm', what: 'Anthropic\'s input and output limits apart (Messages API): OTPM binding, max_tokens 6× what calls generate', brokers: 3, binding: 'otpm',
    promptWords: 0, groups: EQUAL, protocol: 'anthropic', provider: { rpm: 600, tpm: 100_000, otpm: 2_400, concurrency: 40 },
  },
  {
    name: 'cached', what: 'Anthropic\'s prompt caching: a shared ~1,500-token system prompt read from the provider\'s cache, out of its ITPM; the ITPM binds on the rest', brokers: 3,
    binding: 'tpm', promptWords: 120, cachedSystemWords: 1_400, groups: EQUAL, protocol: 'anthropic', provider: { rpm: 6_000, tpm: 30_000, otpm: 1_000_000, concurrency: 40 },
  },
  {
    name: 'conversation', what: 'Anthropic\'s prompt caching in conversations: each call a turn marking its latest message, read by the next turn through the provider\'s lookback, the turns spread over the brokers', brokers: 3,
    binding: 'tpm', promptWords: 120, cachedSystemWords: 1_400, conversation: true, groups: EQUAL, protocol: 'anthropic', provider: { rpm: 6_000, tpm: 30_000, otpm: 1_000_000, concurrency: 40 },
  },
];
const BURST_FRACTION = process.env.BENCH_BURST_FRACTION;

interface Outcome {
  user: number;
  offeredAt: number;
  /** Admitted by the broker (a delta or done arrived). */
  served: boolean;
  ok: boolean;
  reason?: string;
  /** The broker's queue wait, or (censored) the time waited until the phase ended. */
  waitMs: number;
  censored: boolean;
}

/** The share of TPM that whole calls of `perCall` tokens can use in a sliding window, and the share of that `used` reached. */
function wholeCalls(perCall: number, tpm: number, used: number): { ceiling: number; used: number } {
  const ceiling = (Math.floor(tpm / perCall) * perCall) / tpm;
  return { ceiling: +ceiling.toFixed(4), used: +(used / ceiling).toFixed(4) };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const load = () => os.loadavg().map((x) => +x.toFixed(1));
const pct = (x: number) => `${(100 * x).toFixed(1)}%`;

const FILLER = 'quota pacing keeps every replica inside the shared provider limit while long prompts make tokens bind first'.split(' ');
/** Where a call is in a conversation: which of its user's, and how many turns were answered before it. */
interface Turn { conversation: number; turn: number }

/** A call of `user`: in a conversation, after the turns answered before it, its latest message a breakpoint. */
function request(user: number, v: Pick<Variant, 'promptWords' | 'cachedSystemWords' | 'conversation'>, { conversation, turn }: Turn = { conversation: 0, turn: 0 }): GenerateRequest {
  const { promptWords, cachedSystemWords = 0 } = v;
  const filler = Array.from({ length: promptWords }, (_, i) => FILLER[(i + user) % FILLER.length]).join(' ');
  const asks = (n: number) => (v.conversation ? `User ${user} asks (conversation ${conversation}, turn ${n})` : `User ${user} asks`);
  const question = (n: number) => ({ role: 'user', content: `${asks(n)}: how do we keep a shared LLM quota exact across replicas? ${filler}`, name: '', toolCallId: '', toolCalls: [], cacheTtl: '', thinking: [] });
  const said = v.conversation
    ? Array.from({ length: turn }, (_, n) => [question(n), { ...question(n), role: 'assistant', content: `Turn ${n}: count every call once, in one place.` }]).flat()
    : [];
  const system = cachedSystemWords > 0
    ? { content: `You are the Planner. ${Array.from({ length: cachedSystemWords }, (_, i) => FILLER[i % FILLER.length]).join(' ')}`, cacheTtl: '5m' }
    : { content: 'You are the Planner. Round: 1', cacheTtl: '' };
  return {
    userId: `00000000-0000-4000-8000-${String(user).padStart(12, '0')}`,
    runId: '', callerRole: CallerRole.CALLER_ROLE_PLANNER, runStarted: false, model: '', tools: [], toolsJson: '', maxTokens: MAX_TOKENS,
    temperature: 0, hasTemperature: false, cache: false, noStream: false, answerInDone: false, streamToolCalls: false, toolChoice: undefined, stop: [], anthropicBetas: [], responseFormatJson: '', logitBias: {},
    messages: [
      { role: 'system', name: '', toolCallId: '', toolCalls: [], thinking: [], ...system },
      ...said,
      { ...question(turn), cacheTtl: v.conversation ? '5m' : '' },
    ],
  };
}

async function generate(client: LlmBrokerServiceClient, user: number, v: Pick<Variant, 'promptWords' | 'cachedSystemWords' | 'conversation'>, signal: AbortSignal, turn?: Turn): Promise<Outcome> {
  const offeredAt = Date.now();
  const call = client.generate(request(user, v, turn), new Metadata(), { deadline: Date.now() + 120_000 });
  signal.addEventListener('abort', () => call.cancel(), { once: true });
  let served = false;
  let firstAt = 0;
  try {
    let done: GenerateResponse['update'];
    for await (const m of call as AsyncIterable<GenerateResponse>) {
      if (m.update?.$case === 'delta' || m.update?.$case === 'done') {
        if (!served) firstAt = Date.now();
        served = true;
      }
      if (m.update?.$case === 'done') done = m.update;
    }
    if (done?.$case !== 'done') return { user, offeredAt, served, ok: false, reason: 'no_done', waitMs: firstAt - offeredAt, censored: false };
    return { user, offeredAt, served, ok: true, waitMs: done.done.queueWaitMs, censored: false };
  } catch (err) {
    const e = err as { code?: number; metadata?: Metadata };
    const reason = String(e.metadata?.get('x-mesh-reason')[0] ?? (e.code === 1 ? 'cancelled' : `code_${e.code}`));
    // Cancelled at the phase's end: in flight (its wait ≈ until its first token) or still queued (censored).
    const end = Date.now();
    return { user, offeredAt, served, ok: false, reason, waitMs: served ? firstAt - offeredAt : end - offeredAt, censored: reason === 'cancelled' && !served };
  }
}

async function main(): Promise<void> {
  const only = process.env.BENCH_VARIANTS?.split(',').map((s) => s.trim());
  const variants = only ? VARIANTS.filter((v) => only.includes(v.name)) : VARIANTS;
  const dir = testDir('bench-quota');
  const redis = await startRedis({ logDir: dir });
  const emulator = await startEmulator({
    logDir: dir,
    // Short answers: what is measured is admission, not the CPU that streaming tokens costs.
    env: { EMULATOR_TIME_SCALE: String(SCALE), EMULATOR_COMPLETION_TOKENS: String(COMPLETION_TOKENS), EMULATOR_SEED: '42' },
  });
  const loadStart = load();
  const results: Awaited<ReturnType<typeof runVariant>>[] = [];
  const failed: { variant: string; error: string }[] = [];

  async function runVariant(v: Variant, db: number) {
    const conf = v.configured ?? v.provider;
    await configureEmulator(emulator, { rpm: v.provider.rpm, tpm: v.provider.tpm, otpm: v.provider.otpm ?? 0, maxConcurrent: v.provider.concurrency, limitQuantumMs: v.quantumMs ?? 0, behaviours: v.behaviours ?? {} });
    const brokers: ServiceProc[] = [];
    // Three at a time: ten starting at once on a busy 2-core machine miss their readiness deadline.
    for (let i = 0; i < v.brokers; i += 3) {
      const batch = await Promise.allSettled(
        Array.from({ length: Math.min(3, v.brokers - i) }, (_, j) =>
          startService('llm-broker', {
            logDir: dir, instance: `${v.name}-${i + j}`,
            env: {
              REDIS_URL: `${redis.url}/${db}`, LLM_BASE_URL: `${emulator.url}/v1`, LLM_API_KEY: 'bench', OTEL_SDK_DISABLED: 'true',
              LLM_MAX_CONCURRENT: String(conf.concurrency), LLM_RPM: String(conf.rpm), LLM_TPM: String(conf.tpm), LLM_OTPM: String(conf.otpm ?? 0),
              ...(v.protocol ? { LLM_PROTOCOL: v.protocol } : {}),
              LLM_TIME_SCALE: String(SCALE), LLM_QUEUE_MAX: '5000', LOG_LEVEL: 'warn', ...v.brokerEnv,
              ...(BURST_FRACTION === undefined ? {} : { LLM_QUOTA_BURST_FRACTION: BURST_FRACTION }),
            },
          }),
        ),
      );
      for (const b of batch) if (b.status === 'fulfilled') brokers.push(b.value);
      const failure = batch.find((b) => b.status === 'rejected');
      if (failure) {
        await Promise.all(brokers.map((b) => b.stop().catch(() => undefined)));
        throw failure.reason as Error;
      }
    }
    const clients = brokers.map((b) => createClient(LlmBrokerServiceClient, b.addr));
    try {
      // Tokens binding: the size of one call as the provider charges it (its output alone for the
      // OTPM), measured (not assumed) before the phase.
      /** What the binding token limit has counted (the emulator's figures): with an OTPM apart, the TPM is the ITPM, of input tokens. */
      const tokensCounted = (st: Awaited<ReturnType<typeof emulatorStats>>) =>
        v.binding === 'otpm' ? st.outputTokensCharged : v.provider.otpm ? st.inputTokensCharged : st.tokensCharged;
      let charged = 0;
      if (v.binding !== 'rpm') {
        await fetch(`${emulator.url}/_emulator/reset`, { method: 'POST' });
        // With a cached prefix, what a call reading it is charged: the second probe's.
        for (let n = 0; n < (v.cachedSystemWords ? 2 : 1); n += 1) {
          const before = tokensCounted(await emulatorStats(emulator));
          // In a conversation, the second is the next turn (the same one again would be read whole).
          const probe = await generate(clients[0]!, 0, v, new AbortController().signal, { conversation: 0, turn: n });
          if (!probe.ok) throw new Error(`the probe call failed: ${probe.reason}`);
          charged = tokensCounted(await emulatorStats(emulator)) - before;
        }
        await sleep(WINDOW_MS); // the probe leaves the provider's window
      }
      await fetch(`${emulator.url}/_emulator/reset`, { method: 'POST' });

      const users = v.groups.flatMap((g) => Array.from({ length: g.count }, () => g));
      const totalWeight = users.reduce((s, g) => s + g.weight, 0);
      // 3× what the binding limit of the provider allows.
      const bindingLimit = v.binding === 'rpm' ? v.provider.rpm : v.binding === 'otpm' ? v.provider.otpm! : v.provider.tpm;
      const callsPerWindow = 3 * (v.binding === 'rpm' ? bindingLimit : bindingLimit / charged);
      const unitPerSec = callsPerWindow / (WINDOW_MS / 1000) / totalWeight;
      const durationMs = SCALED_MINUTES * WINDOW_MS;
      const start = Date.now();
      const abort = new AbortController();
      setMaxListeners(0, abort.signal);
      const outcomes: Promise<Outcome>[] = [];
      const asked = users.map(() => 0);
      await Promise.all(
        users.map(async (g, u) => {
          const gapMs = 1000 / (unitPerSec * g.weight);
          // A user's conversations: the turns answered in each, and whether one is awaited. A turn
          // follows the answer to the one before, so an arrival goes to a conversation not waiting
          // (or opens one): arrivals stay open loop.
          const conversations: { turns: number; waiting: boolean }[] = [];
          await sleep(Math.random() * gapMs);
          for (let n = 0; Date.now() - start < durationMs; n += 1) {
            asked[u] = (asked[u] ?? 0) + 1;
            let c = conversations.findIndex((x) => !x.waiting);
            if (c < 0) c = conversations.push({ turns: 0, waiting: false }) - 1;
            const conversation = conversations[c]!;
            conversation.waiting = true;
            const outcome = generate(clients[(u + n) % clients.length]!, u, v, abort.signal, { conversation: c, turn: conversation.turns });
            outcomes.push(outcome);
            void outcome.then((o) => {
              if (o.ok) conversation.turns += 1;
              conversation.waiting = false;
            });
            await sleep(gapMs);
          }
        }),
      );
      const elapsed = Date.now() - start;
      abort.abort(); // what was not admitted within the phase is dropped (censored)
      const all = await Promise.all(outcomes);
      await sleep(500);
      const stats = await emulatorStats(emulator);
      const windows = elapsed / WINDOW_MS;
      const admittedInPhase = stats.admissions.filter((t) => t >= start && t <= start + elapsed).length;
      // The pacing admits L calls over no less than a window: L consecutive arrivals closer than
      // that show how far delays between admission and arrival spread (the window margin's job).
      const limit = v.binding === 'rpm' ? v.provider.rpm : 0;
      const arrivals = [...stats.admissions].sort((a, b) => a - b);
      let tightest = Infinity;
      for (let i = 0; limit > 0 && i + limit - 1 < arrivals.length; i += 1) tightest = Math.min(tightest, arrivals[i + limit - 1]! - arrivals[i]!);
      const used = v.binding === 'rpm' ? admittedInPhase / (bindingLimit * windows) : tokensCounted(stats) / (bindingLimit * windows);
      const got = users.map((_, u) => all.filter((o) => o.user === u && o.served).length);
      const waits = all.filter((o) => o.served || o.censored).map((o) => ({ value: o.waitMs, censored: o.censored }));
      const refusals: Record<string, number> = {};
      for (const o of all) if (!o.ok && !o.served && !o.censored) refusals[o.reason ?? '?'] = (refusals[o.reason ?? '?'] ?? 0) + 1;
      const byGroup = Object.fromEntries(v.groups.map((g) => {
        const idx = users.flatMap((x, u) => (x === g ? [u] : []));
        const sum = (xs: number[]) => idx.reduce((s, u) => s + (xs[u] ?? 0), 0);
        return [g.name, { asked: sum(asked), got: sum(got) }];
      }));
      return {
        variant: v.name, what: v.what, brokers: v.brokers, provider: { ...v.provider, quantumMs: v.quantumMs ?? 0 }, configured: conf, binding: v.binding, bindingLimit,
        burstFraction: Number(BURST_FRACTION ?? v.brokerEnv?.LLM_QUOTA_BURST_FRACTION ?? 0.02),
        tokensPerCall: Math.round(stats.tokensCharged / Math.max(1, stats.admissions.length)), offered: all.length, served: got.reduce((a, b) => a + b, 0),
        upstream429: stats.rateLimited, bindingUsed: +used.toFixed(4), maxPerWindow: stats.maxPerWindow, maxInFlight: stats.maxInFlight,
        /**
         * TPM binding: the most a provider counting a sliding window lets calls of this size use (whole calls: ⌊TPM ÷ call⌋ × call),
         * and the share of it used: with calls of ~10 % of TPM no pacing can reach 97 % of TPM itself.
         */
        wholeCalls: v.binding === 'tpm' ? wholeCalls(stats.tokensCharged / Math.max(1, stats.admissions.length), v.provider.tpm, used) : undefined,
        /** Least time over which L consecutive requests arrived, less the window (ms; RPM binding only). */
        tightestWindowMs: Number.isFinite(tightest) ? tightest - WINDOW_MS : null,
        maxMinFairness: +maxMinFairness(asked, got).toFixed(3), byGroup,
        queueWait: { p50: censoredPercentile(waits, 50), p99: censoredPercentile(waits, 99), censored: waits.filter((w) => w.censored).length, of: waits.length },
        refusals,
      };
    } finally {
      clients.forEach((c) => c.close());
      await Promise.all(brokers.map((b) => b.stop().catch(() => undefined)));
    }
  }

  try {
    for (const [i, v] of variants.entries()) {
      let r: Awaited<ReturnType<typeof runVariant>>;
      try {
        r = await runVariant(v, i + 1);
      } catch (err) {
        console.log(`  ${v.name} (${v.what}): NOT MEASURED: ${(err as Error).message}`);
        failed.push({ variant: v.name, error: (err as Error).message });
        continue;
      }
      results.push(r);
      const w = (p: { value: number; atLeast: boolean }) => `${p.atLeast ? '≥' : ''}${(p.value / 1000).toFixed(1)} s`;
      console.log(
        `  ${r.variant} (${r.what}; pacing bucket ${pct(r.burstFraction)} of each limit): 429s ${r.upstream429}, ${r.binding.toUpperCase()} used ${pct(r.bindingUsed)} of the provider's ${r.bindingLimit}, ` +
        `max in any window ${r.maxPerWindow} req${r.tightestWindowMs === null ? '' : ` (${r.provider.rpm} arrived over W ${r.tightestWindowMs < 0 ? '−' : '+'} ${Math.abs(r.tightestWindowMs)} ms at the tightest)`}, max in flight ${r.maxInFlight}/${r.provider.concurrency}, max-min fairness ${r.maxMinFairness} ${JSON.stringify(r.byGroup)}, ` +
        `queue wait p50 ${w(r.queueWait.p50)} p99 ${w(r.queueWait.p99)} (${r.queueWait.censored} of ${r.queueWait.of} censored), offered ${r.offered}, served ${r.served}, ` +
        `${r.tokensPerCall} tokens per call${r.wholeCalls ? ` (whole calls can use ${pct(r.wholeCalls.ceiling)} of TPM: ${pct(r.wholeCalls.used)} of that used)` : ''}, refusals ${JSON.stringify(r.refusals)}`,
      );
    }
  } finally {
    await emulator.stop();
    await redis.stop();
  }
  const loadEnd = load();
  console.log(`quota benchmark — time scale ${SCALE} (1 scaled minute = ${WINDOW_MS / 1000} s), ${SCALED_MINUTES} scaled minutes per variant, ` +
    `load average at start ${loadStart.join(' ')}, at end ${loadEnd.join(' ')} (${os.cpus().length} cores)`);
  console.log(JSON.stringify({ scenario: 'quota', timeScale: SCALE, scaledMinutes: SCALED_MINUTES, completionTokens: COMPLETION_TOKENS, loadAverage: { start: loadStart, end: loadEnd }, variants: results, notMeasured: failed }));
}

main().then(() => process.exit(0), (err) => {
  console.error(err);
  process.exit(1);
});
