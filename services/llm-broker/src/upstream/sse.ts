// Incremental parser for an OpenAI-style streamed chat completion: server-sent events whose data
// lines carry `chat.completion.chunk` JSON, ending with `data: [DONE]`. Tool calls arrive as
// fragments keyed by index and are assembled here. A provider's in-stream error (`data: {"error":
// …}`, or an `event: error` block) becomes an `error` event, and so does a data line that is not
// JSON (code `invalid_stream_data`, naming what arrived).

export interface ToolCallOut {
  id: string;
  name: string;
  argumentsJson: string;
}

export interface UsageOut {
  promptTokens: number;
  completionTokens: number;
  totalTokens: number;
}

export type ChunkEvent =
  | { type: 'content'; text: string }
  | { type: 'finish'; reason: string }
  | { type: 'usage'; usage: UsageOut }
  | { type: 'model'; model: string }
  | { type: 'error'; message: string; code?: string }
  | { type: 'done' };

interface RawChunk {
  error?: { message?: string; code?: string | null; type?: string } | string;
  message?: string;
  model?: string;
  choices?: Array<{
    delta?: { content?: string | null; tool_calls?: Array<{ index?: number; id?: string; function?: { name?: string; arguments?: string } }> };
    finish_reason?: string | null;
  }>;
  usage?: { prompt_tokens?: number; completion_tokens?: number; total_tokens?: number } | null;
}

export class ChunkParser {
  private buffer = '';
  private readonly calls = new Map<number, ToolCallOut>();
  private modelSeen = false;

  /** Feeds raw text; returns the events completed by it. */
  push(text: string): ChunkEvent[] {
    this.buffer += text.replace(/\r\n?/g, '\n');
    const events: ChunkEvent[] = [];
    let idx: number;
    while ((idx = this.buffer.indexOf('\n\n')) >= 0) {
      const block = this.buffer.slice(0, idx);
      this.buffer = this.buffer.slice(idx + 2);
      const lines = block.split('\n');
      const data = lines
        .filter((l) => l.startsWith('data:'))
        .map((l) => l.slice(5).replace(/^ /, ''))
        .join('\n');
      if (data === '') continue;
      if (data === '[DONE]') {
        events.push({ type: 'done' });
        continue;
      }
      let chunk: RawChunk;
      try {
        chunk = JSON.parse(data) as RawChunk;
      } catch {
        events.push({ type: 'error', code: 'invalid_stream_data', message: `the provider sent a stream line that is not JSON: ${JSON.stringify(data.slice(0, 80))}` });
        continue;
      }
      const isErrorEvent = lines.some((l) => /^event:\s*error\s*$/.test(l));
      if (chunk.error !== undefined || isErrorEvent) {
        const e = typeof chunk.error === 'string' ? { message: chunk.error } : (chunk.error ?? (chunk as { message?: string; code?: string }));
        events.push({ type: 'error', message: e.message || 'the provider reported an error', ...(e.code ? { code: e.code } : {}) });
        continue;
      }
      this.onChunk(chunk, events);
    }
    return events;
  }

  /** The complete tool calls, in index order. */
  toolCalls(): ToolCallOut[] {
    return [...this.calls.entries()].sort((a, b) => a[0] - b[0]).map(([, c]) => c);
  }

  private onChunk(chunk: RawChunk, events: ChunkEvent[]): void {
    if (chunk.model && !this.modelSeen) {
      this.modelSeen = true;
      events.push({ type: 'model', model: chunk.model });
    }
    for (const choice of chunk.choices ?? []) {
      const delta = choice.delta;
      if (delta?.content) events.push({ type: 'content', text: delta.content });
      for (const tc of delta?.tool_calls ?? []) {
        const index = tc.index ?? 0;
        const call = this.calls.get(index) ?? { id: '', name: '', argumentsJson: '' };
        if (tc.id) call.id = tc.id;
        if (tc.function?.name) call.name += tc.function.name;
        if (tc.function?.arguments) call.argumentsJson += tc.function.arguments;
        this.calls.set(index, call);
      }
      if (choice.finish_reason) events.push({ type: 'finish', reason: choice.finish_reason });
    }
    if (chunk.usage) {
      events.push({
        type: 'usage',
        usage: {
          promptTokens: chunk.usage.prompt_tokens ?? 0,
          completionTokens: chunk.usage.completion_tokens ?? 0,
          totalTokens: chunk.usage.total_tokens ?? (chunk.usage.prompt_tokens ?? 0) + (chunk.usage.completion_tokens ?? 0),
        },
      });
    }
  }
}
