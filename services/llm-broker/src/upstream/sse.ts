// Server-sent events framing, shared by the protocols: raw text in (split anywhere, any line
// ending), complete events out, each with its `event:` name (if any) and its joined `data:` lines.

export interface SseFrame {
  /** The `event:` field; undefined when the block has none (OpenAI's chunks). */
  event?: string;
  data: string;
}

export class SseFramer {
  private buffer = '';

  /** Feeds raw text; returns the events it completed (blocks without data are skipped). */
  push(text: string): SseFrame[] {
    this.buffer += text.replace(/\r\n?/g, '\n');
    const frames: SseFrame[] = [];
    let idx: number;
    while ((idx = this.buffer.indexOf('\n\n')) >= 0) {
      const block = this.buffer.slice(0, idx);
      this.buffer = this.buffer.slice(idx + 2);
      let event: string | undefined;
      const data: string[] = [];
      for (const line of block.split('\n')) {
        if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
        else if (line.startsWith('event:')) event = line.slice(6).trim();
      }
      if (data.length === 0) continue;
      frames.push({ ...(event !== undefined ? { event } : {}), data: data.join('\n') });
    }
    return frames;
  }
}
