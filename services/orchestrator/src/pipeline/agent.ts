// One agent step: a broker call streamed into `token` events, with the function-calling loop for
// agents that may use tools.
import { callerRoles } from '@agent-mesh/common';
import type { AgentCallPolicy, AgentRole, ChatMessage, Emit, LlmGateway, ToolDefinition, ToolGateway, Usage } from './types';
import { emptyUsage, plusUsage } from './types';
import { chat, type PromptCacheTtl } from './prompts';
import { DegradedError, StepFailure } from './errors';
import { retryAfterMs, type GateObserver } from '../runs/admission';

export const MAX_TOOL_ITERATIONS = 3;

export interface AgentEnv {
  runId: string;
  userId: string;
  llm: LlmGateway;
  tools: ToolGateway;
  maxTokens: number;
  /** Temperature and response cache per role. */
  calls: Record<AgentRole, AgentCallPolicy>;
  callTimeoutMs: number;
  toolTimeoutMs: number;
  /** The run's deadline (ms since the epoch): bounds every call below. */
  deadline?: number;
  /**
   * Prompt-cache breakpoints' lifetime (AGENT_PROMPT_CACHE_TTL; undefined: none marked). The step's
   * messages come with their stable part marked (agentMessages); a call that offers tools also marks
   * its latest message, so that each turn of the function-calling loop reads the one before it.
   */
  promptCacheTtl?: PromptCacheTtl;
  /** Shared by the run's calls: true once one call was admitted (the broker finishes begun runs first). */
  admitted: { value: boolean };
  /**
   * Load shedding (RUN_MAX_QUEUE_WAIT_MS; 0: off): a run none of whose calls was admitted yet ends
   * `degraded` ("service busy") as soon as the broker estimates its wait above this, instead of
   * waiting behind the begun runs. Begun runs are never shed: their calls rank first anyway.
   */
  maxFirstWaitMs?: number;
  /** Told what the broker says about the first calls of runs not begun yet (the admission gate). */
  gate?: GateObserver;
}

export interface AgentStep {
  agent: AgentRole;
  round: number;
  messages: ChatMessage[];
  emit: Emit;
  signal: AbortSignal;
  tools?: ToolDefinition[];
  /** Called with the text so far after each delta. */
  onText?: (text: string) => void;
}

export interface AgentOutput {
  content: string;
  usage: Usage;
}

/** The tools as the broker takes them (typed: its provider adapter writes each provider's format). */
function brokerTools(defs: ToolDefinition[]): { name: string; description: string; parametersJsonSchema: string; cacheTtl: string }[] {
  return defs.map(({ name, description, parametersJsonSchema }) => ({ name, description, parametersJsonSchema, cacheTtl: '' }));
}
function safeJson(text: string): unknown {
  if (!text) return undefined;
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return undefined;
  }
}

export async function runAgent(env: AgentEnv, step: AgentStep): Promise<AgentOutput> {
  const { agent, round, emit, signal } = step;
  let usage = emptyUsage();
  const messages = [...step.messages];
  let text = '';
  await emit('agent.started', { agent, round });
  const policy = env.calls[agent];
  for (let iteration = 0; ; iteration++) {
    const offerTools = step.tools !== undefined && step.tools.length > 0 && iteration < MAX_TOOL_ITERATIONS;
    const request = {
      userId: env.userId,
      runId: env.runId,
      callerRole: callerRoles.toWire(agent),
      runStarted: env.admitted.value,
      model: '',
      // A copy: the loop appends to `messages`, and only the latest one is marked.
      messages: offerTools && env.promptCacheTtl ? [...messages.slice(0, -1), { ...messages.at(-1)!, cacheTtl: env.promptCacheTtl }] : [...messages],
      tools: offerTools ? brokerTools(step.tools ?? []) : [],
      toolsJson: '',
      maxTokens: env.maxTokens,
      temperature: policy.temperature ?? 0,
      hasTemperature: policy.temperature !== undefined,
      cache: policy.cache,
      // Tokens reach the user as they come: the upstream call streams.
      noStream: false,
      answerInDone: false,
      // The tools are run once the calls are whole (in Done).
      streamToolCalls: false,
      toolChoice: undefined,
      stop: [],
      anthropicBetas: [],
      responseFormatJson: '',
      logitBias: {},
    };
    let toolCalls: { id: string; name: string; argumentsJson: string }[] = [];
    let callText = '';
    let fromCache = false;
    let queued = false;
    try {
      for await (const update of env.llm.generate(request, { signal, timeoutMs: env.callTimeoutMs, deadline: env.deadline })) {
        const u = update.update;
        if (!u) continue;
        if (u.$case === 'queued') {
          const wait = u.queued.estimatedWaitMs;
          if (u.queued.position === 0) {
            // Admitted at once: nothing to show, but the gate learns what the next run adds.
            if (!env.admitted.value && !queued) void env.gate?.observe(0, Number(u.queued.marginalWaitMs));
            queued = true;
            continue;
          }
          // The first answer says where a new call joins the queue: what the gate decides on, and
          // what sheds this run. Later ones (a place nearer the head) are shown, not acted on.
          if (!env.admitted.value && !queued) {
            void env.gate?.observe(wait, Number(u.queued.marginalWaitMs));
            if (env.maxFirstWaitMs && wait > env.maxFirstWaitMs) {
              throw new DegradedError('queue_wait', `the LLM queue's estimated wait (${wait} ms) is over this deployment's limit (${env.maxFirstWaitMs} ms)`,
                retryAfterMs(wait, env.maxFirstWaitMs));
            }
          }
          queued = true;
          await emit('queued', { agent, round, position: u.queued.position, estimatedWaitMs: u.queued.estimatedWaitMs });
          continue;
        }
        if (u.$case === 'cached') {
          // Replayed by the broker, free: it says nothing about the queue's wait.
          fromCache = true;
          continue;
        }
        if (!env.admitted.value && !fromCache && !queued) void env.gate?.observe(0, 0);
        env.admitted.value = true;
        if (u.$case === 'delta') {
          if (!u.delta.content) continue;
          callText += u.delta.content;
          text += u.delta.content;
          step.onText?.(text);
          // Not awaited: the emitter keeps the order and batches the tokens that arrive while a
          // write is in flight, instead of one Redis round trip per token on the stream's path.
          // A failed write (lease lost) rejects every later emit, so the awaited events surface it.
          emit('token', { agent, round, text: u.delta.content }).catch(() => undefined);
        } else if (u.$case === 'done') {
          usage = plusUsage(usage, u.done.usage);
          toolCalls = u.done.toolCalls;
        }
      }
    } catch (err) {
      // The model failed mid-call: the stream says which agent and what it had written so far.
      if (err instanceof StepFailure && !signal.aborted) await emit('agent.failed', { agent, round, code: err.code, message: err.message, partial: text });
      throw err;
    }
    if (toolCalls.length === 0 || !offerTools) break;
    // The model asked for tools: run them, show both sides in the event log, and ask again.
    messages.push({ ...chat('assistant', callText), toolCalls });
    for (const call of toolCalls) {
      const args = safeJson(call.argumentsJson) ?? call.argumentsJson;
      await emit('tool.called', { agent, round, callId: call.id, tool: call.name, arguments: args });
      let content: string;
      try {
        const res = await env.tools.invoke(
          { userId: env.userId, runId: env.runId, callId: call.id, toolName: call.name, argumentsJson: call.argumentsJson },
          { signal, timeoutMs: env.toolTimeoutMs, deadline: env.deadline },
        );
        const result = res.ok ? (safeJson(res.resultJson) ?? res.resultJson) : undefined;
        await emit('tool.result', {
          agent, round, callId: call.id, tool: call.name, ok: res.ok,
          ...(res.ok ? { result } : { error: { code: res.error?.code ?? 'failed', message: res.error?.message ?? 'tool failed' } }),
          cached: res.cached, degraded: res.degraded,
        });
        content = res.ok ? res.resultJson : JSON.stringify({ error: res.error ?? { code: 'failed' } });
      } catch (err) {
        if (signal.aborted) throw err;
        // A tool-service failure is the model's problem to work around, not the run's end.
        const message = err instanceof Error ? err.message : String(err);
        await emit('tool.result', {
          agent, round, callId: call.id, tool: call.name, ok: false,
          error: { code: 'unavailable', message: `tool service unavailable: ${message}` }, cached: false, degraded: true,
        });
        content = JSON.stringify({ error: { code: 'unavailable', message: 'tool service unavailable' } });
      }
      messages.push({ ...chat('tool', content), toolCallId: call.id });
    }
  }
  await emit('agent.completed', { agent, round, tokens: usage.completionTokens, content: text });
  return { content: text, usage };
}
