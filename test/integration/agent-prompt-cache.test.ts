// The agents' prompt-cache breakpoints (AGENT_PROMPT_CACHE_TTL), end to end: real orchestrators,
// store, tool-service, Redis and FerretDB, a broker over Anthropic's Messages API, and the emulator,
// which caches as Anthropic does (only what a request marks, at least 1,024 tokens, read back from
// the breakpoints it finds looking back from each) and bills a run what it read. One orchestrator
// marks (the default), the other is told not to: the runs' own usage says what the provider read.
import { createClient, newId, unary } from '@agent-mesh/common';
import { OrchestratorServiceClient, type RunEvent } from '@agent-mesh/common/gen/orchestrator/v1/orchestrator';
import { StoreServiceClient } from '@agent-mesh/common/gen/store/v1/store';
import {
  startEmulator, startFerret, startRedis, startService, testDir,
  type EmulatorProc, type FerretProc, type RedisProc, type ServiceProc,
} from '../support';

jest.setTimeout(180_000);

const logDir = testDir('agent-prompt-cache');
const user = 'user-prompt-cache';
/** ~1,500 tokens: over the least cacheable prefix by itself. */
const BRIEF = 'Residents of the river district have asked how the city should plan for floods, summer heat and traffic over the next ten years. '.repeat(60);

let redis: RedisProc; let ferret: FerretProc; let emulator: EmulatorProc;
let store: ServiceProc; let tools: ServiceProc; let broker: ServiceProc; let marking: ServiceProc; let plain: ServiceProc;
let storeClient: StoreServiceClient;

beforeAll(async () => {
  redis = await startRedis({ logDir });
  ferret = await startFerret({ logDir });
  emulator = await startEmulator({ logDir, env: { EMULATOR_TIME_SCALE: '0.25', EMULATOR_REVISE_RATE: '0', EMULATOR_SEED: '11' } });
  const common = { REDIS_URL: redis.url, MONGODB_URI: ferret.uri, OTEL_SDK_DISABLED: 'true' };
  store = await startService('store', { logDir, env: common });
  tools = await startService('tool-service', { logDir, env: { ...common, STORE_ADDR: store.addr } });
  broker = await startService('llm-broker', { logDir, env: { ...common, LLM_PROTOCOL: 'anthropic', LLM_BASE_URL: `${emulator.url}/v1`, LLM_API_KEY: 'k' } });
  // The history holds the brief whole; each question its own (the Planner's and Critic's answers are otherwise replayed from the response cache).
  const env = { ...common, STORE_ADDR: store.addr, TOOL_SERVICE_ADDR: tools.addr, LLM_BROKER_ADDR: broker.addr, HISTORY_TOKEN_BUDGET: '8000', AGENT_CACHE_ROLES: 'none' };
  [marking, plain] = await Promise.all([
    startService('orchestrator', { logDir, env, instance: 'marking' }),
    startService('orchestrator', { logDir, env: { ...env, AGENT_PROMPT_CACHE_TTL: 'off' }, instance: 'plain' }),
  ]);
  storeClient = createClient(StoreServiceClient, store.addr);
});

afterAll(async () => {
  storeClient?.close();
  for (const p of [marking, plain, tools, store, broker]) await p?.stop();
  for (const p of [emulator, ferret, redis]) await p?.stop();
});

interface RunUsage { promptTokens: number; cacheReadTokens?: number; cacheWriteTokens?: number }

/** A run of `content` in `conversationId` on `orch`, to its end: the usage and cost it reports. */
async function run(orch: ServiceProc, conversationId: string, content: string): Promise<{ usage: RunUsage; usd: number; agents: string[] }> {
  const client = createClient(OrchestratorServiceClient, orch.addr);
  try {
    const call = client.startRun({ userId: user, conversationId, messageId: newId(), content }, { deadline: Date.now() + 170_000 });
    const events: RunEvent[] = [];
    for await (const m of call as AsyncIterable<{ event?: RunEvent }>) if (m.event) events.push(m.event);
    const last = events.at(-1)!;
    expect(last.type).toBe('run.completed');
    const done = JSON.parse(last.dataJson) as { usage: RunUsage; cost: { usd: number } };
    const agents = events.filter((e) => e.type === 'tool.called').map((e) => (JSON.parse(e.dataJson) as { agent: string }).agent);
    return { usage: done.usage, usd: done.cost.usd, agents };
  } finally {
    client.close();
  }
}

async function conversation(): Promise<string> {
  const id = newId();
  await unary(storeClient.createConversation.bind(storeClient), { userId: user, conversationId: id, title: 't' });
  return id;
}

it("a conversation's next turns read the history back from the provider's cache, billed at the read price; unmarked, nothing is read", async () => {
  const reads = async (orch: ServiceProc) => {
    const c = await conversation();
    const turns: RunUsage[] = [];
    turns.push((await run(orch, c, `${BRIEF}\nWhat should the river district do first?`)).usage);
    turns.push((await run(orch, c, 'And how should the plan be paid for?')).usage);
    turns.push((await run(orch, c, 'Which of these steps can start this year?')).usage);
    return turns;
  };
  const marked = await reads(marking);
  // The second turn writes its history (the brief and the first answer) for the Planner and for the
  // Host; the third reads both back, looking back from its own history's end.
  expect(marked[1]!.cacheWriteTokens).toBeGreaterThan(2 * 1_400);
  expect(marked[2]!.cacheReadTokens).toBeGreaterThan(2 * 1_400);
  const unmarked = await reads(plain);
  expect(unmarked.map((u) => [u.cacheReadTokens ?? 0, u.cacheWriteTokens ?? 0])).toEqual([[0, 0], [0, 0], [0, 0]]);
  // The same prompts, give or take the answers' words: billed whole without the marks.
  expect(unmarked[2]!.promptTokens).toBeGreaterThan(2 * 1_400);
});

it("the Host's function-calling loop reads its first call's prompt back in the second", async () => {
  const search = `${BRIEF}\nSearch for the latest flood maps of the river district.`;
  const marked = await run(marking, await conversation(), search);
  expect(marked.agents).toContain('host');
  // The Host's first call wrote its prompt, brief and plan included (the role's prompt alone is
  // under the least cacheable prefix); the second read it back.
  expect(marked.usage.cacheReadTokens).toBeGreaterThan(1_400);
  const unmarked = await run(plain, await conversation(), search);
  expect(unmarked.agents).toContain('host');
  expect(unmarked.usage.cacheReadTokens ?? 0).toBe(0);
});
