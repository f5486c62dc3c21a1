// Role prompts come from files (services/orchestrator/prompts/*.md), so that they can be tuned
// without touching code; this module turns them and the run's state into chat messages.
import fs from 'node:fs';
import path from 'node:path';
import type { AgentRole, ChatMessage, HistoryTurn, RoundRecord } from './types';

export type RolePrompts = Record<AgentRole, string>;

/** The four role prompts from `dir` (PROMPTS_DIR). */
export function loadPrompts(dir: string): RolePrompts {
  const read = (role: AgentRole) => fs.readFileSync(path.join(dir, `${role}.md`), 'utf8').trim();
  return { planner: read('planner'), critic: read('critic'), host: read('host'), reporter: read('reporter') };
}

export function chat(role: string, content: string): ChatMessage {
  return { role, content, name: '', toolCallId: '', toolCalls: [], cacheTtl: '', thinking: [] };
}

export interface PromptInput {
  round: number;
  question: string;
  history: HistoryTurn[];
  /** Rounds already judged (for a revised plan). */
  previous: RoundRecord[];
  plan?: string;
  /** True when the plan is still being written (overlapped Critic, early Host). */
  planPartial?: boolean;
  hostAnswer?: string;
}

/** A prompt-cache breakpoint's lifetime (AGENT_PROMPT_CACHE_TTL): how long the provider keeps what the agents mark. */
export type PromptCacheTtl = '5m' | '1h';

/**
 * An agent's prompt: its role's prompt, the conversation so far (Planner and Host), then what this
 * round asks. With `cacheTtl`, the end of the part that stays the same is marked as a prompt-cache
 * breakpoint: the role's prompt is the same in every run, and the conversation grows only at its
 * end, so a provider that caches what is marked (Anthropic) reads that part back at a tenth of its
 * price, and outside its input-token limit, for the next round's call and the next turn's (it
 * looks back from a breakpoint to the earlier ones). Providers that cache on their own ignore it.
 */
export function agentMessages(prompts: RolePrompts, agent: AgentRole, input: PromptInput, cacheTtl?: PromptCacheTtl): ChatMessage[] {
  const msgs: ChatMessage[] = [chat('system', prompts[agent])];
  if (agent === 'planner' || agent === 'host') {
    for (const t of input.history) msgs.push(chat(t.role, t.content));
  }
  if (cacheTtl) msgs.push({ ...msgs.pop()!, cacheTtl });
  const parts = [`Round: ${input.round}`, `Question:\n${input.question}`];
  const last = input.previous.at(-1);
  if (agent === 'planner' && last) {
    parts.push(`Previous plan:\n${last.plan}`, `Critic's critique:\n${last.critique}`);
  }
  if ((agent === 'critic' || agent === 'host' || agent === 'reporter') && input.plan !== undefined) {
    parts.push(`${input.planPartial ? 'Plan (still being written, first steps)' : 'Plan'}:\n${input.plan}`);
  }
  if (agent === 'reporter' && input.hostAnswer !== undefined) parts.push(`Host's answer:\n${input.hostAnswer}`);
  msgs.push(chat('user', parts.join('\n\n')));
  return msgs;
}
