// Every environment variable the orchestrator reads, with its default and validation.
import { config } from '@agent-mesh/common';
import { AGENT_ROLES, type AgentCallPolicy, type AgentRole } from './pipeline/types';

export interface OrchestratorConfig {
  /** gRPC port. @default 50051 (ORCHESTRATOR_PORT) */
  port: number;
  /** Interface of the gRPC and metrics listeners. @default 127.0.0.1 (ORCHESTRATOR_HOST) */
  host: string;
  /** @default 10000 (SHUTDOWN_GRACE_MS) */
  shutdownGraceMs: number;
  /** Prometheus side channel. @default port + 1000 (METRICS_PORT) */
  metricsPort: number;
  /** @default redis://127.0.0.1:6379 (REDIS_URL) */
  redisUrl: string;
  /** @default 127.0.0.1:50052 (LLM_BROKER_ADDR) */
  brokerAddr: string;
  /** @default 127.0.0.1:50053 (TOOL_SERVICE_ADDR) */
  toolServiceAddr: string;
  /** @default 127.0.0.1:50054 (STORE_ADDR) */
  storeAddr: string;
  /** Rounds at most (a REVISE in the last round is ignored). @default 3 (MAX_ROUNDS) */
  maxRounds: number;
  /** Pipelined agents (false: strictly sequential, for comparison). @default true (AGENT_OVERLAP) */
  agentOverlap: boolean;
  /**
   * With overlap on, the Host starts (speculatively) once the plan has this many complete steps;
   * 0: only on the complete plan. The Reporter always receives the complete plan.
   * @default 2 (AGENT_HOST_START_STEPS)
   */
  agentHostStartSteps: number;
  /** max_tokens of each agent call. @default 512 (AGENT_MAX_TOKENS) */
  agentMaxTokens: number;
  /**
   * Per role: the sampling temperature (AGENT_TEMPERATURES, `role=t` pairs; a role not listed gets
   * the provider's default; @default planner=0,critic=0) and whether its calls ask the broker's
   * response cache (AGENT_CACHE_ROLES, a list of roles or `none`; @default the roles at
   * temperature 0, whose answers may be reused).
   */
  agentCalls: Record<AgentRole, AgentCallPolicy>;
  /** Deadline of one broker call, queueing included. @default 120000 (AGENT_CALL_TIMEOUT_MS) */
  agentCallTimeoutMs: number;
  /**
   * Admission control: while the broker estimates a new run's first LLM call to wait longer than
   * this, StartRun is refused (`busy`, with a retry-after; the edge answers 503 + Retry-After), and
   * a run already started whose first call is estimated longer ends at once with `degraded`
   * ("Service busy, please try again in N s."). 0: runs wait their turn. See runs/admission.ts.
   * @default 20000 (RUN_MAX_QUEUE_WAIT_MS)
   */
  runMaxQueueWaitMs: number;
  /** How long one queue-wait estimate decides admissions. @default 1000 (RUN_ADMISSION_FRESH_MS) */
  runAdmissionFreshMs: number;
  /** StartRuns in progress on one replica above which the next is refused `busy`. @default 32 (RUN_MAX_STARTING) */
  runMaxStarting: number;
  /** Tokens of conversation history agents see. @default 2000 (HISTORY_TOKEN_BUDGET) */
  historyTokenBudget: number;
  /** Lease of a run's owner; renewed every lease/3. @default 5000 (RUN_LEASE_MS) */
  runLeaseMs: number;
  /** Events kept per run log (older ones are trimmed). @default 10000 (RUN_LOG_MAX_EVENTS) */
  runLogMaxEvents: number;
  /** How long a finished run's log stays readable. @default 3600 (RUN_LOG_RETENTION_S) */
  runLogRetentionS: number;
  /** @default 0.0005 (PRICE_PER_1K_PROMPT_TOKENS) */
  pricePer1kPrompt: number;
  /** @default 0.0015 (PRICE_PER_1K_COMPLETION_TOKENS) */
  pricePer1kCompletion: number;
  /** Deadline of a tool call. @default 15000 (TOOL_CALL_TIMEOUT_MS) */
  toolCallTimeoutMs: number;
}

type Env = Record<string, string | undefined>;

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

export function loadConfig(env: Env = process.env): OrchestratorConfig {
  const port = config.int({ env: 'ORCHESTRATOR_PORT', default: config.DEFAULT_PORTS.ORCHESTRATOR, min: 0, max: 65535 }, env);
  const temperatures = parseTemperatures(config.str({ env: 'AGENT_TEMPERATURES', default: 'planner=0,critic=0' }, env));
  const runLeaseMs = config.int({ env: 'RUN_LEASE_MS', default: 5000, min: 300 }, env);
  return {
    port,
    host: config.infra.bindHost('ORCHESTRATOR', env),
    shutdownGraceMs: config.infra.shutdownGraceMs(env),
    metricsPort: config.int({ env: 'METRICS_PORT', default: config.metricsPortFor(port), min: 0, max: 65535 }, env),
    redisUrl: config.infra.redisUrl(env),
    brokerAddr: config.infra.peer('LLM_BROKER', env),
    toolServiceAddr: config.infra.peer('TOOL_SERVICE', env),
    storeAddr: config.infra.peer('STORE', env),
    maxRounds: config.int({ env: 'MAX_ROUNDS', default: 3, min: 1, max: 10 }, env),
    agentOverlap: config.bool({ env: 'AGENT_OVERLAP', default: true }, env),
    agentHostStartSteps: config.int({ env: 'AGENT_HOST_START_STEPS', default: 2, min: 0, max: 100 }, env),
    agentMaxTokens: config.int({ env: 'AGENT_MAX_TOKENS', default: 512, min: 1 }, env),
    agentCalls: callPolicies(temperatures, parseCacheRoles(env.AGENT_CACHE_ROLES, temperatures)),
    agentCallTimeoutMs: config.int({ env: 'AGENT_CALL_TIMEOUT_MS', default: 120_000, min: 100 }, env),
    runMaxQueueWaitMs: config.int({ env: 'RUN_MAX_QUEUE_WAIT_MS', default: 20_000, min: 0 }, env),
    runAdmissionFreshMs: config.int({ env: 'RUN_ADMISSION_FRESH_MS', default: 1_000, min: 10 }, env),
    runMaxStarting: config.int({ env: 'RUN_MAX_STARTING', default: 32, min: 1 }, env),
    historyTokenBudget: config.int({ env: 'HISTORY_TOKEN_BUDGET', default: 2000, min: 0 }, env),
    runLeaseMs,
    runLogMaxEvents: config.int({ env: 'RUN_LOG_MAX_EVENTS', default: 10_000, min: 10 }, env),
    runLogRetentionS: config.int({ env: 'RUN_LOG_RETENTION_S', default: 3600, min: 1 }, env),
    pricePer1kPrompt: config.num({ env: 'PRICE_PER_1K_PROMPT_TOKENS', default: 0.0005, min: 0 }, env),
    pricePer1kCompletion: config.num({ env: 'PRICE_PER_1K_COMPLETION_TOKENS', default: 0.0015, min: 0 }, env),
    toolCallTimeoutMs: config.int({ env: 'TOOL_CALL_TIMEOUT_MS', default: 15_000, min: 100 }, env),
  };
}
