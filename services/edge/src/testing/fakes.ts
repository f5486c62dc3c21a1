// In-memory peers for tests and benchmarks: an orchestrator that plays a scripted run into a
// per-run log (served to StartRun/WatchRun like the real one), a store, a broker and probes.
import { f32leBytes, MeshError, redisUnavailable } from '@agent-mesh/common';
import type { RunEvent } from '@agent-mesh/common/gen/orchestrator/v1/orchestrator';
import { RunStatus, type Conversation, type Run, type StoredResponse } from '@agent-mesh/common/gen/store/v1/store';
import type { EmbedRequest, EmbedResponse, GenerateResponse } from '@agent-mesh/common/gen/llmbroker/v1/llm_broker';
import { randomUUID } from 'node:crypto';
import type { BrokerGateway, CancelSignal, Gateways, OrchestratorGateway, StoreGateway } from '../gateways/types';

export interface ScriptedEvent {
  type: string;
  data: Record<string, unknown>;
}

/** A small but complete run: four agents, tokens, one round, run.completed. */
export function defaultScript(runId: string, conversationId: string, messageId: string, tokensPerAgent = 3): ScriptedEvent[] {
  const out: ScriptedEvent[] = [{ type: 'run.started', data: { runId, conversationId, messageId } }];
  for (const agent of ['planner', 'critic', 'host', 'reporter']) {
    out.push({ type: 'agent.started', data: { agent, round: 1 } });
    let content = '';
    for (let i = 0; i < tokensPerAgent; i++) {
      const text = `${agent}-${i} `;
      content += text;
      out.push({ type: 'token', data: { agent, round: 1, text } });
    }
    if (agent === 'critic') content += '\nVERDICT: APPROVE';
    out.push({ type: 'agent.completed', data: { agent, round: 1, tokens: tokensPerAgent, content } });
    if (agent === 'critic') out.push({ type: 'round.completed', data: { round: 1, verdict: 'approve' } });
  }
  const answer = Array.from({ length: tokensPerAgent }, (_, i) => `reporter-${i} `).join('');
  out.push({ type: 'run.completed', data: { runId, answer, rounds: 1, usage: { promptTokens: 10, completionTokens: 12, totalTokens: 22, cacheReadTokens: 4 }, cost: { usd: 0.0001 } } });
  return out;
}

interface FakeRun {
  runId: string;
  userId: string;
  conversationId: string;
  log: RunEvent[];
  done: boolean;
  wake: Set<() => void>;
}

export class FakeOrchestrator implements OrchestratorGateway {
  readonly runs = new Map<string, FakeRun>();
  readonly lastRunOf = new Map<string, string>();
  readonly cancelled: string[] = [];
  /** Milliseconds between two scripted events. */
  intervalMs = 5;
  script: (runId: string, conversationId: string, messageId: string) => ScriptedEvent[] = defaultScript;
  /** Events older than this seq are "no longer retained" (tests events.lost). */
  retainedFromSeq = 1;
  /** Open watch streams (to check that disconnect cancels the watch). */
  openWatches = 0;
  /** The next this many watches fail UNAVAILABLE (redis_unavailable), as during a Redis failover. */
  failWatches = 0;
  /** Watches asked for, failed ones included. */
  watchesAsked = 0;

  constructor(private readonly store: FakeStore) {}

  startRun(req: { userId: string; conversationId: string; messageId: string; content: string }, signal: CancelSignal): AsyncIterable<RunEvent> {
    this.store.mustOwn(req.userId, req.conversationId);
    const active = this.lastRunOf.get(req.conversationId);
    if (active && !this.runs.get(active)!.done) {
      throw new MeshError('run_in_progress', 'a run is already in progress');
    }
    const runId = randomUUID();
    const run: FakeRun = { runId, userId: req.userId, conversationId: req.conversationId, log: [], done: false, wake: new Set() };
    this.runs.set(runId, run);
    this.lastRunOf.set(req.conversationId, runId);
    this.store.setLastRun(req.conversationId, runId);
    this.store.addRun({ id: runId, userId: req.userId, conversationId: req.conversationId, messageId: req.messageId });
    void this.play(run, this.script(runId, req.conversationId, req.messageId));
    return this.follow(run, 0, signal);
  }

  watchRun(req: { userId: string; conversationId: string; runId: string; afterSeq: number }, signal: CancelSignal): AsyncIterable<RunEvent> {
    this.watchesAsked += 1;
    if (this.failWatches > 0) {
      this.failWatches -= 1;
      return failing(redisUnavailable());
    }
    this.store.mustOwn(req.userId, req.conversationId);
    const runId = req.runId || this.lastRunOf.get(req.conversationId);
    const run = runId ? this.runs.get(runId) : undefined;
    if (!run || run.conversationId !== req.conversationId) throw new MeshError('not_found', 'run not found');
    return this.follow(run, req.afterSeq, signal);
  }

  async cancelRun(req: { userId: string; conversationId: string }) {
    this.store.mustOwn(req.userId, req.conversationId);
    const runId = this.lastRunOf.get(req.conversationId) ?? '';
    const run = this.runs.get(runId);
    if (!run || run.done) return { runId, cancelled: false };
    this.cancelled.push(runId);
    this.append(run, 'run.cancelled', { reason: 'user', partial: '' });
    run.done = true;
    return { runId, cancelled: true };
  }

  async exportConversation(req: { userId: string; conversationId: string }) {
    this.store.mustOwn(req.userId, req.conversationId);
    const { conversation } = await this.store.getConversation({ userId: req.userId, conversationId: req.conversationId });
    const runLogs = [...this.runs.values()].filter((r) => r.conversationId === req.conversationId).map((r) => ({ runId: r.runId, events: [...r.log] }));
    return { stored: { conversation, messages: [], runs: [], plans: [] }, runLogs };
  }

  async eraseConversation(req: { userId: string; conversationId: string }) {
    const { runId, cancelled } = await this.cancelRun(req);
    return { cancelledRunId: cancelled ? runId : '', alreadyErased: false, runsErased: 0, messagesErased: 0 };
  }

  private append(run: FakeRun, type: string, data: Record<string, unknown>): void {
    run.log.push({ runId: run.runId, seq: run.log.length + 1, type, dataJson: JSON.stringify(data) });
    for (const w of run.wake) w();
  }

  private async play(run: FakeRun, script: ScriptedEvent[]): Promise<void> {
    for (const ev of script) {
      if (run.done) return;
      await new Promise((r) => setTimeout(r, this.intervalMs));
      if (run.done) return;
      this.append(run, ev.type, ev.data);
    }
    run.done = true;
    for (const w of run.wake) w();
  }

  private async *follow(run: FakeRun, afterSeq: number, signal: CancelSignal): AsyncGenerator<RunEvent> {
    this.openWatches += 1;
    try {
      let next = afterSeq + 1;
      if (next < this.retainedFromSeq) {
        yield { runId: run.runId, seq: this.retainedFromSeq - 1, type: 'events.lost', dataJson: JSON.stringify({ afterSeq, firstAvailableSeq: this.retainedFromSeq }) };
        next = this.retainedFromSeq;
      }
      for (;;) {
        while (next <= run.log.length) {
          if (signal.aborted) return;
          yield run.log[next - 1]!;
          next += 1;
        }
        if (run.done || signal.aborted) return;
        await new Promise<void>((resolve) => {
          const w = () => {
            run.wake.delete(w);
            signal.removeEventListener('abort', w);
            resolve();
          };
          run.wake.add(w);
          signal.addEventListener('abort', w, { once: true });
        });
      }
    } finally {
      this.openWatches -= 1;
    }
  }
}

/** A stream that fails on its first read, as a gRPC stream whose server answered an error. */
async function* failing(err: Error): AsyncGenerator<RunEvent> {
  throw err;
}

export class FakeStore implements StoreGateway {
  readonly conversations = new Map<string, Conversation>();
  readonly runs = new Map<string, Run>();

  mustOwn(userId: string, conversationId: string): Conversation {
    const c = this.conversations.get(conversationId);
    if (!c || c.userId !== userId) throw new MeshError('not_found', 'conversation not found');
    return c;
  }

  setLastRun(conversationId: string, runId: string): void {
    const c = this.conversations.get(conversationId);
    if (c) c.lastRunId = runId;
  }

  async createConversation(req: { userId: string; conversationId: string; title: string }) {
    const existing = this.conversations.get(req.conversationId);
    // As the store: a repeat is answered the existing one; another user's id is a conflict.
    if (existing && existing.userId !== req.userId) throw new MeshError('id_conflict', 'conversation_id is already in use');
    if (existing) return { conversation: existing };
    const now = Date.now();
    const c: Conversation = { id: req.conversationId, userId: req.userId, title: req.title, createdAtMs: now, updatedAtMs: now, lastRunId: '' };
    this.conversations.set(c.id, c);
    return { conversation: c };
  }

  async listConversations(req: { userId: string; pageSize: number; pageToken: string }) {
    const all = [...this.conversations.values()].filter((c) => c.userId === req.userId).sort((a, b) => b.createdAtMs - a.createdAtMs);
    return { conversations: all.slice(0, req.pageSize || 20), nextPageToken: '' };
  }

  async getConversation(req: { userId: string; conversationId: string }) {
    return { conversation: this.mustOwn(req.userId, req.conversationId), messages: [], nextMessagePageToken: '' };
  }

  addRun(r: { id: string; userId: string; conversationId: string; messageId: string }): void {
    const now = Date.now();
    this.runs.set(r.id, { ...r, status: RunStatus.RUN_STATUS_RUNNING, checkpointJson: '', usage: undefined, costUsd: 0, createdAtMs: now, updatedAtMs: now, completedAtMs: 0, error: '' });
  }

  async getRun(req: { userId: string; runId: string }) {
    const run = this.runs.get(req.runId);
    if (!run || run.userId !== req.userId) throw new MeshError('not_found', 'run not found');
    return { run };
  }

  readonly responses = new Map<string, StoredResponse>();
  /** Set to make the next saves fail, as a store that is down. */
  failSaves = false;

  async saveStoredResponse(req: { userId: string; response?: StoredResponse; onlyIfPending?: boolean }) {
    if (this.failSaves) throw new MeshError('db_unavailable', 'store down');
    const r = req.response!;
    const existing = this.responses.get(r.id);
    if (req.onlyIfPending && !(existing?.pending && existing.userId === req.userId)) throw new MeshError('response_not_pending', 'the response is not pending');
    if (existing && existing.userId !== req.userId) throw new MeshError('not_found', 'response not found');
    this.responses.set(r.id, { ...r, userId: req.userId, updatedAtMs: Date.now() });
    return {};
  }

  async getStoredResponse(req: { userId: string; responseId: string }) {
    const response = this.responses.get(req.responseId);
    if (!response || response.userId !== req.userId) throw new MeshError('not_found', 'response not found');
    return { response };
  }

  async deleteStoredResponse(req: { userId: string; responseId: string }) {
    await this.getStoredResponse(req);
    this.responses.delete(req.responseId);
    return {};
  }

  private responsesOf(userId: string): StoredResponse[] {
    return [...this.responses.values()].filter((r) => r.userId === userId);
  }

  async listStoredResponses(req: { userId: string; pageSize: number; pageToken: string }) {
    const all = this.responsesOf(req.userId).sort((a, b) => b.createdAtMs - a.createdAtMs);
    return { responses: all.slice(0, req.pageSize || 20).map((r) => ({ ...r, responseJson: '', itemsJson: '' })), nextPageToken: '' };
  }

  async eraseStoredResponses(req: { userId: string }) {
    const mine = this.responsesOf(req.userId);
    for (const r of mine) this.responses.delete(r.id);
    return { deleted: mine.length };
  }
}

export class FakeBroker implements BrokerGateway {
  async listModels() {
    return [{ id: 'model-a', upstream: 'default' }, { id: 'model-b', upstream: 'backup' }];
  }

  /** A word a token, 3 a message and 10 a tool: enough to tell what was counted. */
  async countTokens(req: { messages: { content: string }[]; tools: unknown[] }) {
    const words = req.messages.reduce((n, m) => n + 3 + m.content.split(/\s+/).filter(Boolean).length, 0);
    return { promptTokens: words + 10 * req.tools.length, upstream: 'default', model: 'upstream' };
  }

  /** Calls that reached the broker with a gate (counted before it is passed). */
  gated = 0;
  /** Calls that passed their gate. */
  calls = 0;
  async *generate(req: { model: string }, signal: AbortSignal, gate?: Promise<unknown>): AsyncGenerator<GenerateResponse> {
    if (gate) this.gated += 1;
    await gate;
    this.calls += 1;
    yield { update: { $case: 'queued', queued: { position: 1, estimatedWaitMs: 0, marginalWaitMs: 0 } } };
    for (const word of ['Hello', ' from', ' the', ' broker']) {
      if (signal.aborted) return;
      await new Promise((r) => setTimeout(r, 2));
      yield { update: { $case: 'delta', delta: { content: word, logprobs: [] } } };
    }
    yield {
      update: {
        $case: 'done',
        done: { finishReason: 'stop', usage: { promptTokens: 5, completionTokens: 4, totalTokens: 9 }, toolCalls: [], model: req.model || 'upstream', queueWaitMs: 0, cache: 0, cachedUsage: undefined, upstream: 'default', content: '', logprobs: [] },
      },
    };
  }

  /** The Embed requests that passed their gate. */
  embedded: EmbedRequest[] = [];
  /** How many of a call's vectors the answer says came from the cache (at most its inputs). */
  embedCached = 0;
  /** Answer `values` even when the request asks for bytes, as a broker that predates `vectors_as_bytes`. */
  vectorsAsValuesOnly = false;
  /** Each input's vector: [its position, its length or token count, 0.5] (dimensions: the first that many). */
  async embed(req: EmbedRequest, _signal: AbortSignal, gate?: Promise<unknown>): Promise<EmbedResponse> {
    if (gate) this.gated += 1;
    await gate;
    this.embedded.push(req);
    const sizeOf = (i: EmbedRequest['inputs'][number]) => (i.input?.$case === 'text' ? i.input.text.length : i.input?.$case === 'tokens' ? i.input.tokens.ids.length : 0);
    const bytes = req.vectorsAsBytes && !this.vectorsAsValuesOnly;
    const embeddings = req.inputs.map((input, k) => {
      const values = [k, sizeOf(input), 0.5].slice(0, req.dimensions || 3);
      return bytes ? { values: [], f32le: f32leBytes(Float32Array.from(values)) } : { values, f32le: Buffer.alloc(0) };
    });
    return { embeddings, promptTokens: req.inputs.reduce((n, i) => n + sizeOf(i), 0), model: req.model, upstream: 'default', queueWaitMs: 0, cachedInputs: Math.min(this.embedCached, req.inputs.length), cachedPromptTokens: 0, cachedStale: false };
  }
}

export function fakeGateways(): Gateways & { fakeStore: FakeStore; fakeOrchestrator: FakeOrchestrator; fakeBroker: FakeBroker } {
  const store = new FakeStore();
  const orchestrator = new FakeOrchestrator(store);
  const broker = new FakeBroker();
  const up = async () => ({ status: 'up' as const, latencyMs: 0 });
  return {
    store,
    orchestrator,
    broker,
    fakeStore: store,
    fakeOrchestrator: orchestrator,
    fakeBroker: broker,
    health: { llm: up, database: up, cache: up, orchestrator: up, toolService: up },
    metrics: {},
    close: async () => undefined,
  };
}
