// Every environment variable the orchestrator reads: its spec (type, default, description: the
// tables of docs/configuration.md are made from VARS) and its validation.
import path from 'node:path';
import { config, type RedisTarget } from '@agent-mesh/common';
import { AGENT_ROLES, type AgentCallPolicy, type AgentRole } from './pipeline/types';
import type { PromptCacheTtl } from './pipeline/prompts';

export interface OrchestratorConfig {
  /** gRPC port. */
  port: number;
  /** Interface of the gRPC and metrics listeners. */
  host: string;
  shutdownGraceMs: number;
  /** Prometheus side channel. */
  metricsPort: number;
  redis: RedisTarget;
  brokerAddr: string;
  toolServiceAddr: string;
  storeAddr: string;
  /** Rounds at most (a REVISE in the last round is ignored). */
  maxRounds: number;
  /** Pipelined agents (false: strictly sequential, for comparison). */
  agentOverlap: boolean;
  /**
   * With overlap on, the Host starts (speculatively) once the plan has this many complete steps;
   * 0: only on the complete plan. The Reporter always receives the complete plan.
   */
  agentHostStartSteps: number;
  /** max_tokens of each agent call. */
  agentMaxTokens: number;
  /**
   * Per role: the sampling temperature (AGENT_TEMPERATURES; a role not listed gets the provider's
   * default) and whether its calls ask the broker's response cache (AGENT_CACHE_ROLES).
   */
  agentCalls: Record<AgentRole, AgentCallPolicy>;
  /** Lifetime of the prompt-cache breakpoints the agents mark (AGENT_PROMPT_CACHE_TTL); undefined: `off`, none marked. */
  agentPromptCacheTtl?: PromptCacheTtl;
  /** Deadline of one broker call, queueing included. */
  agentCallTimeoutMs: number;
  /**
   * Admission control: while the broker estimates a new run's first LLM call to wait longer than
   * this, StartRun is refused (`busy`, with a retry-after; the edge answers 503 + Retry-After), and
   * a run already started whose first call is estimated longer ends at once with `degraded`
   * ("Service busy, please try again in N s."). 0: runs wait their turn. See runs/admission.ts.
   */
  runMaxQueueWaitMs: number;
  /** How long one queue-wait estimate decides admissions. */
  /** StartRuns in progress on one replica above which the next is refused `busy`. */
  runMaxStarting: number;
  /** Tokens of conversation history agents see. */
  historyTokenBudget: number;
  /** Lease of a run's owner; renewed every lease/3. */
  runLeaseMs: number;
  /** Events kept per run log (older ones are trimmed). */
  runLogMaxEvents: number;
  /** How long a finished run's log stays readable. */
  runLogRetentionS: number;
  pricePer1kPrompt: number;
  pricePer1kCompletion: number;
  pricePer1kCacheRead: number;
  pricePer1kCacheWrite: number;
  pricePer1kCacheWrite1h: number;
  /** Deadline of a tool call. */
  toolCallTimeoutMs: number;
  /** A run's deadline from its message's arrival (RUN_TIMEOUT_MS). */
  runTimeoutMs: number;
  /** The role prompts' folder. */
  promptsDir: string;
}

type Env = config.Env;

const { ORCHESTRATOR_PORT, ORCHESTRATOR_HOST, METRICS_PORT, SHUTDOWN_GRACE_MS, LLM_BROKER_ADDR, TOOL_SERVICE_ADDR, STORE_ADDR } = config.sharedVars;

/** Every variable the orchestrator reads. */
export const VARS = {
  ORCHESTRATOR_PORT, ORCHESTRATOR_HOST, METRICS_PORT, SHUTDOWN_GRACE_MS, ...config.redisVars, LLM_BROKER_ADDR, TOOL_SERVICE_ADDR, STORE_ADDR,
  ...config.defineVars({
    MAX_ROUNDS: { type: 'int', default: 3, min: 1, max: 10, doc: 'rounds at most (a REVISE in the last round is ignored)' },
    AGENT_OVERLAP: { type: 'bool', default: true, doc: 'pipelined agents (false: strictly sequential, for comparison)' },
    AGENT_HOST_START_STEPS: { type: 'int', default: 2, min: 0, max: 100, doc: 'with overlap, the Host starts speculatively once the plan has this many complete steps; 0: on the complete plan' },
    AGENT_MAX_TOKENS: { type: 'int', default: 512, min: 1, doc: '`max_tokens` of each agent call' },
    AGENT_TEMPERATURES: { type: 'string', default: 'planner=0,critic=0', doc: "`role=temperature` pairs (0–2); a role not listed gets the provider's default" },
    AGENT_CACHE_ROLES: {
      type: 'string', default: '', defaultDoc: 'the roles at temperature 0',
      doc: "the roles whose calls ask the broker's response cache (comma-separated, or `none`): answers at temperature 0 may be reused",
    },
    AGENT_PROMPT_CACHE_TTL: {
      type: 'string', default: '5m', values: ['5m', '1h', 'off'],
      doc: "the agents mark the part of their prompts that stays the same (the role's prompt and the conversation so far; in the Host's function-calling loop, each latest message) as a prompt-cache breakpoint kept this long: a provider that caches only what is marked (Anthropic) then bills it, when read back, at PRICE_PER_1K_CACHE_READ_TOKENS and outside its input-token limit. A write costs 1.25 times the prompt's price (`1h`: twice): a prefix written and not read again within its lifetime (a conversation of one message, a Host that calls no tool) costs that much more than unmarked, one read back a tenth; `off`: nothing marked. a prompt shorter than the provider's least cacheable prefix (1,024 to 4,096 tokens by model) is not cached; OpenAI caches on its own and ignores the marks",
    },
    AGENT_CALL_TIMEOUT_MS: { type: 'int', default: 120_000, min: 100, doc: 'deadline of one broker call, queueing included' },
    TOOL_CALL_TIMEOUT_MS: { type: 'int', default: 15_000, min: 100, doc: 'deadline of one tool call' },
    RUN_TIMEOUT_MS: {
      type: 'int', default: 600_000, min: 1_000,
      doc: "a run's deadline, counted from its message (a takeover keeps it): no broker, tool or store call of the run outlives it (each call's own timeout still applies when it is sooner); at the deadline the call in flight ends and the run fails as `timeout` or degrades",
    },
    RUN_MAX_QUEUE_WAIT_MS: {
      type: 'int', default: 10_000, min: 0,
      doc: "admission control (0: off, runs wait their turn): while the broker estimates a new run's first LLM call to wait longer than this, StartRun is refused as `busy` — the edge answers **503 with `Retry-After`** and \"Service busy, please try again in N s.\" — before the run touches Redis or the store; a run already started whose first call is estimated longer ends `degraded` with the same message and `retryAfterMs`. Begun runs are never shed",
    },
    RUN_MAX_STARTING: {
      type: 'int', default: 32, min: 1,
      doc: 'a bulkhead: StartRuns in progress on one replica (reading the history, registering the run) above which the next is refused `busy`, 503 + `Retry-After: 1`; it trips when the store is slow',
    },
    HISTORY_TOKEN_BUDGET: { type: 'int', default: 2000, min: 0, doc: 'tokens of conversation history each agent sees' },
    RUN_LEASE_MS: { type: 'int', default: 5000, min: 300, doc: "lease of a run's owner, renewed every third of it: a dead replica's runs are taken over after this" },
    RUN_LOG_MAX_EVENTS: { type: 'int', default: 10_000, min: 10, doc: 'events kept per run log (older ones are trimmed)' },
    RUN_LOG_RETENTION_S: { type: 'int', default: 3600, min: 1, doc: "how long a finished run's log stays readable" },
    PRICE_PER_1K_PROMPT_TOKENS: { type: 'number', default: 0.0005, min: 0, doc: 'USD, for the cost a run reports' },
    PRICE_PER_1K_COMPLETION_TOKENS: { type: 'number', default: 0.0015, min: 0, doc: 'USD, for the cost a run reports' },
    PRICE_PER_1K_CACHE_READ_TOKENS: { type: 'number', default: 0.00005, min: 0, doc: "USD, for the prompt tokens the provider read from its prompt cache (a tenth of the prompt's price, as Anthropic and OpenAI's current models bill them)" },
    PRICE_PER_1K_CACHE_WRITE_TOKENS: { type: 'number', default: 0.000625, min: 0, doc: "USD, for the prompt tokens the provider wrote to its prompt cache (Anthropic's 5-minute writes: 1.25 times the prompt's price; OpenAI reports none)" },
    PRICE_PER_1K_CACHE_WRITE_1H_TOKENS: { type: 'number', default: 0.001, min: 0, doc: "USD, for the prompt tokens the provider wrote to its prompt cache to keep an hour (Anthropic's `ttl: 1h`: twice the prompt's price), in place of PRICE_PER_1K_CACHE_WRITE_TOKENS" },
    PROMPTS_DIR: { type: 'string', defaultDoc: '`services/orchestrator/prompts`', doc: "the role prompts' folder (`planner.md`, `critic.md`, `host.md`, `reporter.md`)" },
  }),
};

function role(name: string, variable: string): AgentRole {
  const r = name.trim().toLowerCase();
  if (!(AGENT_ROLES as readonly string[]).includes(r)) throw new config.ConfigError(`${variable}: unknown role "${name.trim()}" (roles: ${AGENT_ROLES.join(', ')})`);
  return r as AgentRole;
}

/** `role=temperature` pairs, e.g. `planner=0,critic=0`; empty: every role at the provider's default. */
export function parseTemperatures(text: string): Partial<Record<AgentRole, number>> {
  const out: Partial<Record<AgentRole, number>> = {};
  for (const part of text.split(',').map((p) => p.trim()).filter(Boolean)) {
    const m = /^([a-z]+)=(\d+(?:\.\d+)?)$/i.exec(part);
    const t = m ? Number(m[2]) : NaN;
    if (!m || t > 2) throw new config.ConfigError(`AGENT_TEMPERATURES: expected role=temperature pairs with 0 <= temperature <= 2, got "${part}"`);
    out[role(m[1]!, 'AGENT_TEMPERATURES')] = t;
  }
  return out;
}

/** A comma-separated list of roles, `none`, or unset: the roles whose temperature is 0. */
export function parseCacheRoles(text: string | undefined, temperatures: Partial<Record<AgentRole, number>>): AgentRole[] {
  if (text === undefined || text.trim() === '') return AGENT_ROLES.filter((r) => temperatures[r] === 0);
  if (text.trim().toLowerCase() === 'none') return [];
  return [...new Set(text.split(',').filter((p) => p.trim()).map((p) => role(p, 'AGENT_CACHE_ROLES')))];
}

function callPolicies(temperatures: Partial<Record<AgentRole, number>>, cacheRoles: AgentRole[]): Record<AgentRole, AgentCallPolicy> {
  const policy = (r: AgentRole): AgentCallPolicy => ({ ...(temperatures[r] !== undefined ? { temperature: temperatures[r] } : {}), cache: cacheRoles.includes(r) });
  return { planner: policy('planner'), critic: policy('critic'), host: policy('host'), reporter: policy('reporter') };
}

const promptCacheTtl = (v: string): PromptCacheTtl | undefined => (v === 'off' ? undefined : (v as PromptCacheTtl));

export function loadConfig(env: Env = process.env): OrchestratorConfig {
  const read = <V extends config.Var>(v: V, fallback?: config.ValueOf<V>) => config.read(v, env, fallback);
  const port = read(VARS.ORCHESTRATOR_PORT);
  const temperatures = parseTemperatures(read(VARS.AGENT_TEMPERATURES));
  return {
    port,
    host: read(VARS.ORCHESTRATOR_HOST),
    shutdownGraceMs: read(VARS.SHUTDOWN_GRACE_MS),
    metricsPort: read(VARS.METRICS_PORT, config.metricsPortFor(port)),
    redis: config.readRedisTarget(env),
    brokerAddr: read(VARS.LLM_BROKER_ADDR),
    toolServiceAddr: read(VARS.TOOL_SERVICE_ADDR),
    storeAddr: read(VARS.STORE_ADDR),
    maxRounds: read(VARS.MAX_ROUNDS),
    agentOverlap: read(VARS.AGENT_OVERLAP),
    agentHostStartSteps: read(VARS.AGENT_HOST_START_STEPS),
    agentMaxTokens: read(VARS.AGENT_MAX_TOKENS),
    agentCalls: callPolicies(temperatures, parseCacheRoles(read(VARS.AGENT_CACHE_ROLES), temperatures)),
    agentPromptCacheTtl: promptCacheTtl(read(VARS.AGENT_PROMPT_CACHE_TTL)),
    agentCallTimeoutMs: read(VARS.AGENT_CALL_TIMEOUT_MS),
    runMaxQueueWaitMs: read(VARS.RUN_MAX_QUEUE_WAIT_MS),
    runMaxStarting: read(VARS.RUN_MAX_STARTING),
    historyTokenBudget: read(VARS.HISTORY_TOKEN_BUDGET),
    runLeaseMs: read(VARS.RUN_LEASE_MS),
    runLogMaxEvents: read(VARS.RUN_LOG_MAX_EVENTS),
    runLogRetentionS: read(VARS.RUN_LOG_RETENTION_S),
    pricePer1kPrompt: read(VARS.PRICE_PER_1K_PROMPT_TOKENS),
    pricePer1kCompletion: read(VARS.PRICE_PER_1K_COMPLETION_TOKENS),
    pricePer1kCacheRead: read(VARS.PRICE_PER_1K_CACHE_READ_TOKENS),
    pricePer1kCacheWrite: read(VARS.PRICE_PER_1K_CACHE_WRITE_TOKENS),
    pricePer1kCacheWrite1h: read(VARS.PRICE_PER_1K_CACHE_WRITE_1H_TOKENS),
    toolCallTimeoutMs: read(VARS.TOOL_CALL_TIMEOUT_MS),
    runTimeoutMs: read(VARS.RUN_TIMEOUT_MS),
    promptsDir: read(VARS.PROMPTS_DIR, path.resolve(__dirname, '../prompts')),
  };
}
