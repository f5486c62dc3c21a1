// A text/event-stream parser over a fetch() body. EventSource cannot POST or send an
// Authorization header, so the page reads SSE itself. Follows the WHATWG parsing rules
// (CRLF/LF/CR line ends, one optional space after the colon, multi-line data).

/**
 * Yields `{kind: 'event', id, event, data}` for each event (`id` only when the block had one),
 * `{kind: 'retry', ms}` for a `retry:` field and `{kind: 'comment'}` for comments (heartbeats).
 */
export async function* readSse(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '';
  let block = freshBlock();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += value;
      let start = 0;
      for (;;) {
        const cr = buf.indexOf('\r', start);
        const lf = buf.indexOf('\n', start);
        let end = cr < 0 ? lf : lf < 0 ? cr : Math.min(cr, lf);
        if (end < 0) break;
        // A CR at the end of the buffer may be the first half of a CRLF: wait for more.
        if (end === cr && end === buf.length - 1) break;
        const line = buf.slice(start, end);
        start = end + (buf[end] === '\r' && buf[end + 1] === '\n' ? 2 : 1);
        const out = parseLine(line, block);
        if (out === 'dispatch') {
          if (block.data.length > 0) {
            yield { kind: 'event', id: block.id, event: block.event || 'message', data: block.data.join('\n') };
          }
          block = freshBlock();
        } else if (out) {
          yield out;
        }
      }
      buf = buf.slice(start);
    }
  } finally {
    reader.cancel().catch(() => undefined);
  }
}

function freshBlock() {
  return { id: undefined, event: '', data: [] };
}

function parseLine(line, block) {
  if (line === '') return 'dispatch';
  if (line.startsWith(':')) return { kind: 'comment' };
  const i = line.indexOf(':');
  const field = i < 0 ? line : line.slice(0, i);
  let value = i < 0 ? '' : line.slice(i + 1);
  if (value.startsWith(' ')) value = value.slice(1);
  switch (field) {
    case 'event':
      block.event = value;
      return undefined;
    case 'data':
      block.data.push(value);
      return undefined;
    case 'id':
      if (!value.includes('\0')) block.id = value;
      return undefined;
    case 'retry':
      return /^\d+$/.test(value) ? { kind: 'retry', ms: Number(value) } : undefined;
    default:
      return undefined;
  }
}

/** Splits an event id `<runId>:<seq>`; undefined when it is not one. */
export function parseEventId(id) {
  if (typeof id !== 'string') return undefined;
  const i = id.lastIndexOf(':');
  if (i <= 0) return undefined;
  const seq = Number(id.slice(i + 1));
  if (!Number.isInteger(seq) || seq < 0) return undefined;
  return { runId: id.slice(0, i), seq };
}
