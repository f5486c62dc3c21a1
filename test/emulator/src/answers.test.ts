import { composeAnswer, detectRole, parseRound, reviseProbability, searchQuery, toolToCall, type Answer, type TextAnswer } from './answers';
import { SeededRandom } from './random';
import type { ChatCompletionRequest, ChatMessage, ToolDefinition } from './request';
import { countTokens } from './tokens';

const SEARCH: ToolDefinition = { type: 'function', function: { name: 'search_web', parameters: { type: 'object' } } };

function request(messages: ChatMessage[], extra: Partial<ChatCompletionRequest> = {}): ChatCompletionRequest {
  return { model: 'm', messages, stream: false, includeUsage: false, maxTokens: undefined, tools: undefined, toolChoice: undefined, temperature: undefined, stop: undefined, seed: undefined, topP: undefined, responseFormat: undefined, parallelToolCalls: true, logprobs: false, topLogprobs: 0, reasoningEffort: undefined, verbosity: undefined, endUser: undefined, ...extra };
}

function conversation(system: string, user: string): ChatMessage[] {
  return [
    { role: 'system', content: system },
    { role: 'user', content: user },
  ];
}

function text(answer: Answer): TextAnswer {
  if (answer.kind !== 'text') throw new Error(`expected text, got ${answer.kind}`);
  return answer;
}

const settings = { completionTokens: 80, reviseRate: 0.5 };

describe('detectRole', () => {
  it.each([
    ['You are the Planner. Break the question into steps.', 'planner'],
    ['You are the Critic. Review the plan the Planner wrote.', 'critic'],
    ["Critic: judge the Planner's plan", 'critic'],
    ['You are the Host; answer using the plan.', 'host'],
    ['Reporter: write the final answer from the Host and Critic notes.', 'reporter'],
    ['You are the Critic of a team of agents (Planner, Critic, Host, Reporter).', 'critic'],
    ['You are the Reporter of a team of agents (Planner, Critic, Host, Reporter).', 'reporter'],
    ['You are a helpful assistant.', 'other'],
  ])('%s → %s', (system, role) => {
    expect(detectRole(conversation(system, 'hi'))).toBe(role);
  });

  it('is "other" without a system message', () => {
    expect(detectRole([{ role: 'user', content: 'You are the Planner' }])).toBe('other');
  });
});

describe('parseRound and the revise probability', () => {
  it('reads "Round: N" from the system prompt or a user message, default 1', () => {
    expect(parseRound(conversation('You are the Critic. Round: 2', 'plan'))).toBe(2);
    expect(parseRound(conversation('You are the Critic.', 'Round: 3\nPlan: …'))).toBe(3);
    expect(parseRound(conversation('You are the Critic.', 'plan'))).toBe(1);
  });

  it('halves in round 2 and is zero from round 3', () => {
    expect(reviseProbability(1, 0.5)).toBe(0.5);
    expect(reviseProbability(2, 0.5)).toBe(0.25);
    expect(reviseProbability(3, 1)).toBe(0);
  });
});

describe('composeAnswer', () => {
  it('gives the Planner 3–5 numbered lines about the question', () => {
    for (let seed = 1; seed <= 20; seed++) {
      const answer = text(composeAnswer(request(conversation('You are the Planner.', 'How should a startup migrate PostgreSQL to Kubernetes?')), new SeededRandom(seed), settings));
      const lines = answer.text.split('\n');
      expect(lines.length).toBeGreaterThanOrEqual(3);
      expect(lines.length).toBeLessThanOrEqual(5);
      lines.forEach((line, i) => expect(line.startsWith(`${i + 1}. `)).toBe(true));
      expect(answer.text).toMatch(/startup|migrate|PostgreSQL|kubernetes/i);
    }
  });

  it('ends every critique with a VERDICT line, REVISE by the configured rate', () => {
    const critic = (round: number, reviseRate: number, seed: number) =>
      text(composeAnswer(request(conversation(`You are the Critic. Round: ${round}`, 'Plan:\n1. Do it')), new SeededRandom(seed), { completionTokens: 60, reviseRate }));
    for (let seed = 1; seed <= 10; seed++) {
      expect(critic(1, 1, seed).text).toMatch(/\nVERDICT: REVISE$/);
      expect(critic(1, 0, seed).text).toMatch(/\nVERDICT: APPROVE$/);
      expect(critic(3, 1, seed).text).toMatch(/\nVERDICT: APPROVE$/);
    }
    const ask = (question: string, plan: string, seed: number) =>
      text(composeAnswer(request(conversation('You are the Critic.', `Round: 1\n\nQuestion:\n${question}\n\nPlan:\n${plan}`)), new SeededRandom(seed), { completionTokens: 60, reviseRate: 0.5 })).verdict;
    const revisions = Array.from({ length: 400 }, (_, i) => ask(`How do I handle case ${i}?`, '1. Do it', 1)).filter((v) => v === 'REVISE').length;
    expect(revisions).toBeGreaterThan(120);
    expect(revisions).toBeLessThan(280);
    // The verdict depends on the question and the round, not on the seed or on how much of the plan was seen.
    for (let i = 0; i < 20; i++) {
      const q = `What is the best way to do thing ${i}?`;
      expect(ask(q, '1. First step', 7)).toBe(ask(q, '1. First step\n2. Second step\n3. Third', 99));
    }
  });

  it('starts the Reporter with "Final answer:" and keeps lengths within ±25% (and a sentence)', () => {
    for (let seed = 1; seed <= 50; seed++) {
      const answer = text(composeAnswer(request(conversation('You are the Reporter.', 'What is a vector clock?')), new SeededRandom(seed), settings));
      expect(answer.text.startsWith('Final answer: ')).toBe(true);
      const tokens = countTokens(answer.text);
      expect(tokens).toBeGreaterThanOrEqual(60);
      expect(tokens).toBeLessThanOrEqual(105);
    }
  });

  it('answers the same request the same way for the same seed', () => {
    const req = request(conversation('You are the Host.', 'Explain consistent hashing'));
    expect(composeAnswer(req, new SeededRandom(9), settings)).toEqual(composeAnswer(req, new SeededRandom(9), settings));
  });
});

describe('search tool calls', () => {
  const ask = (user: string, extra: Partial<ChatCompletionRequest> = {}) => request(conversation('You are the Host.', user), { tools: [SEARCH], ...extra });

  it('calls search_web when the user asks to search, find, look up, for the latest or news', () => {
    for (const q of ['Search for Node 22 features', 'latest Rust release?', 'Can you find cheap GPUs', 'look up the Raft paper', 'any news on Deno']) {
      expect(toolToCall(ask(q))).toBe('search_web');
    }
    expect(toolToCall(ask('Explain Raft'))).toBeUndefined();
    expect(toolToCall(request(conversation('You are the Host.', 'search Raft')))).toBeUndefined(); // no tools offered
    expect(toolToCall(ask('search Raft', { toolChoice: 'none' }))).toBeUndefined();
  });

  it('writes a query from the key words of the question', () => {
    const answer = composeAnswer(ask('Please search the latest news about WebAssembly garbage collection'), new SeededRandom(1), settings);
    expect(answer.kind).toBe('tool_call');
    if (answer.kind !== 'tool_call') return;
    expect(answer.call.name).toBe('search_web');
    expect(answer.call.id).toMatch(/^call_/);
    const { query } = JSON.parse(answer.call.arguments) as { query: string };
    expect(query).toMatch(/WebAssembly/);
    expect(query).toMatch(/garbage collection/);
    expect(query).not.toMatch(/search/i);
    expect(searchQuery([{ role: 'user', content: 'find' }])).toBe('find');
  });

  it('quotes the tool result once it is in the conversation', () => {
    const messages: ChatMessage[] = [
      ...conversation('You are the Host.', 'Search the latest Deno release'),
      { role: 'assistant', content: null, tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'search_web', arguments: '{"query":"Deno release"}' } }] },
      { role: 'tool', tool_call_id: 'call_1', content: JSON.stringify({ results: [{ title: 'Deno 2.1 ships with long-term support', url: 'https://example.test' }] }) },
    ];
    const answer = text(composeAnswer(request(messages, { tools: [SEARCH] }), new SeededRandom(3), settings));
    expect(answer.text).toContain('According to the web results, "Deno 2.1 ships with long-term support"');
  });
});
