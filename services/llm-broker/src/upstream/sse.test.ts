import { ChunkParser } from './sse';

const chunk = (o: unknown) => `data: ${JSON.stringify(o)}\n\n`;

describe('ChunkParser', () => {
  it('parses content deltas split anywhere, and the usage chunk', () => {
    const text =
      chunk({ model: 'm1', choices: [{ delta: { role: 'assistant', content: 'Hel' } }] }) +
      chunk({ choices: [{ delta: { content: 'lo' } }] }) +
      chunk({ choices: [{ delta: {}, finish_reason: 'stop' }] }) +
      chunk({ choices: [], usage: { prompt_tokens: 5, completion_tokens: 2, total_tokens: 7 } }) +
      'data: [DONE]\n\n';
    const p = new ChunkParser();
    const events = [];
    for (let i = 0; i < text.length; i += 7) events.push(...p.push(text.slice(i, i + 7)));
    expect(events).toEqual([
      { type: 'model', model: 'm1' },
      { type: 'content', text: 'Hel' },
      { type: 'content', text: 'lo' },
      { type: 'finish', reason: 'stop' },
      { type: 'usage', usage: { promptTokens: 5, completionTokens: 2, totalTokens: 7 } },
      { type: 'done' },
    ]);
  });

  it('assembles tool calls split over chunks by index', () => {
    const p = new ChunkParser();
    p.push(chunk({ choices: [{ delta: { tool_calls: [{ index: 0, id: 'c1', function: { name: 'search', arguments: '{"q":' } }] } }] }));
    p.push(chunk({ choices: [{ delta: { tool_calls: [{ index: 1, id: 'c2', function: { name: 'calc', arguments: '{}' } }] } }] }));
    p.push(chunk({ choices: [{ delta: { tool_calls: [{ index: 0, function: { arguments: '"x"}' } }] } }] }).replace(/\n\n$/, '\r\n\r\n'));
    expect(p.push(chunk({ choices: [{ delta: {}, finish_reason: 'tool_calls' }] }))).toEqual([{ type: 'finish', reason: 'tool_calls' }]);
    expect(p.toolCalls()).toEqual([
      { id: 'c1', name: 'search', argumentsJson: '{"q":"x"}' },
      { id: 'c2', name: 'calc', argumentsJson: '{}' },
    ]);
  });
});

describe('ChunkParser, misbehaving providers', () => {
  it('turns an in-stream error, as data or as an `event: error` block, into an error event', () => {
    const p = new ChunkParser();
    const events = p.push(
      chunk({ choices: [{ delta: { content: 'Hi' } }] }) +
        chunk({ error: { message: 'The server had an error', type: 'server_error', code: null } }) +
        'event: error\ndata: {"message":"overloaded"}\n\n' +
        'data: [DONE]\n\n',
    );
    expect(events).toEqual([
      { type: 'content', text: 'Hi' },
      { type: 'error', message: 'The server had an error' },
      { type: 'error', message: 'overloaded' },
      { type: 'done' },
    ]);
  });

  it('reports a data line that is not JSON as an error naming it, keeping what came before', () => {
    const p = new ChunkParser();
    const events = p.push(chunk({ choices: [{ delta: { content: 'Hi' } }] }) + 'data: <html>502 Bad Gateway</html>\n\n');
    expect(events[0]).toEqual({ type: 'content', text: 'Hi' });
    expect(events[1]).toEqual({ type: 'error', code: 'invalid_stream_data', message: 'the provider sent a stream line that is not JSON: "<html>502 Bad Gateway</html>"' });
  });
});
