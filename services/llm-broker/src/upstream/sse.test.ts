import { SseFramer } from './sse';

describe('SseFramer', () => {
  it('frames events split anywhere, with CRLF or LF, keeping the event name and joining data lines', () => {
    const text = 'event: message_start\r\ndata: {"a":1}\r\n\r\ndata: one\ndata: two\n\n: a comment\n\nevent: ping\ndata: {}\n\n';
    const f = new SseFramer();
    const frames = [];
    for (let i = 0; i < text.length; i += 5) frames.push(...f.push(text.slice(i, i + 5)));
    expect(frames).toEqual([
      { event: 'message_start', data: '{"a":1}' },
      { data: 'one\ntwo' },
      { event: 'ping', data: '{}' },
    ]);
  });
});
