// An answer's pieces — text deltas, and tool call pieces that may interleave (as OpenAI streams
// parallel calls) — as blocks streamed one at a time, each started, filled and stopped before the
// next: what Anthropic's content blocks and the Responses API's output items are. The first tool
// call named streams as it comes; the other calls, and text that comes after a call began, are
// held and follow, whole, at the answer's end. Nothing is dropped: the end takes the answer's
// calls as the broker gave them whole, with any it did not stream.

/** A piece of tool call `index`: the first of each call names it. */
export interface ToolCallPiece {
  index: number;
  id?: string;
  name?: string;
  arguments: string;
}

/** A tool call, whole (OpenAI's wire shape). */
export interface WholeCall {
  id: string;
  function: { name: string; arguments: string };
}

/** A piece of extended thinking (before the answer): more text of the current block, its signature (which ends it), or a whole redacted block. */
export interface ThinkingPiece {
  text?: string;
  signature?: string;
  redactedData?: string;
}

/** A block of thinking, whole: its text and signature, or a redacted block's data. */
export type WholeThinking = { type: 'thinking'; thinking: string; signature: string } | { type: 'redacted_thinking'; data: string };

/** Thinking pieces joined into whole blocks: a block ends at its signature, a redacted block is one piece. */
export class ThinkingBlocks {
  readonly blocks: WholeThinking[] = [];
  private open: Extract<WholeThinking, { type: 'thinking' }> | undefined;

  add(piece: ThinkingPiece): void {
    if (piece.redactedData) {
      this.open = undefined;
      this.blocks.push({ type: 'redacted_thinking', data: piece.redactedData });
      return;
    }
    if (!this.open) this.blocks.push((this.open = { type: 'thinking', thinking: '', signature: '' }));
    this.open.thinking += piece.text ?? '';
    if (piece.signature) {
      this.open.signature = piece.signature;
      this.open = undefined;
    }
  }
}

/** What to stream next; `block` numbers the blocks from 0 in the order they start. */
export type Step =
  /** A thinking block starts (a redacted one whole, with its data: nothing follows but its stop). */
  | { kind: 'thinking-start'; block: number; redactedData?: string }
  | { kind: 'thinking'; block: number; text: string }
  | { kind: 'thinking-signature'; block: number; signature: string }
  | { kind: 'thinking-stop'; block: number }
  | { kind: 'text-start'; block: number }
  | { kind: 'text'; block: number; text: string }
  | { kind: 'text-stop'; block: number; text: string }
  | { kind: 'call-start'; block: number; id: string; name: string }
  | { kind: 'call-arguments'; block: number; arguments: string }
  | { kind: 'call-stop'; block: number; id: string; name: string; arguments: string };

interface Call {
  id: string;
  name: string;
  arguments: string;
  block?: number;
}

export class BlockSequence {
  private blocks = 0;
  private open: { kind: 'text'; block: number; text: string } | { kind: 'call'; call: Call } | { kind: 'thinking'; block: number } | undefined;
  /** Thinking that came while a call streamed (a provider thinks first: not expected), followed whole at the end. */
  private readonly heldThinking = new ThinkingBlocks();
  private readonly calls = new Map<number, Call>();
  private held = '';

  /** A piece of thinking: a block of its own, started at its first piece and stopped at its signature. */
  thinking(piece: ThinkingPiece): Step[] {
    if (this.open?.kind === 'call') {
      this.heldThinking.add(piece);
      return [];
    }
    const steps = this.stopText();
    if (piece.redactedData) {
      steps.push(...this.stopThinking());
      const block = this.blocks++;
      steps.push({ kind: 'thinking-start', block, redactedData: piece.redactedData }, { kind: 'thinking-stop', block });
      return steps;
    }
    if (this.open?.kind !== 'thinking') {
      this.open = { kind: 'thinking', block: this.blocks++ };
      steps.push({ kind: 'thinking-start', block: this.open.block });
    }
    const { block } = this.open;
    if (piece.text) steps.push({ kind: 'thinking', block, text: piece.text });
    if (piece.signature) steps.push({ kind: 'thinking-signature', block, signature: piece.signature }, ...this.stopThinking());
    return steps;
  }

  text(delta: string): Step[] {
    if (this.open?.kind === 'call') {
      this.held += delta;
      return [];
    }
    const steps: Step[] = this.stopThinking();
    if (this.open?.kind !== 'text') {
      this.open = { kind: 'text', block: this.blocks++, text: '' };
      steps.push({ kind: 'text-start', block: this.open.block });
    }
    this.open.text += delta;
    steps.push({ kind: 'text', block: this.open.block, text: delta });
    return steps;
  }

  toolCall(piece: ToolCallPiece): Step[] {
    let call = this.calls.get(piece.index);
    if (!call) this.calls.set(piece.index, (call = { id: piece.id ?? '', name: piece.name ?? '', arguments: '' }));
    call.arguments += piece.arguments;
    if (this.open?.kind === 'call') {
      return this.open.call === call && piece.arguments ? [{ kind: 'call-arguments', block: call.block!, arguments: piece.arguments }] : [];
    }
    const steps = [...this.stopThinking(), ...this.stopText()];
    this.open = { kind: 'call', call };
    steps.push(...this.start(call));
    return steps;
  }

  /** The answer ended: the open block stops, then the other calls follow whole (in their order), then the text held. */
  end(whole: readonly WholeCall[]): Step[] {
    for (const [index, c] of whole.entries()) {
      const call = this.calls.get(index);
      if (call) Object.assign(call, { id: c.id, name: c.function.name, arguments: c.function.arguments });
      else this.calls.set(index, { id: c.id, name: c.function.name, arguments: c.function.arguments });
    }
    const steps = [...this.stopThinking(), ...this.stopText()];
    if (this.open?.kind === 'call') steps.push(stop(this.open.call));
    this.open = undefined;
    for (const t of this.heldThinking.blocks) {
      steps.push(...this.thinking(t.type === 'redacted_thinking' ? { redactedData: t.data } : { text: t.thinking, signature: t.signature }), ...this.stopThinking());
    }
    for (const [, call] of [...this.calls.entries()].sort((a, b) => a[0] - b[0])) {
      if (call.block === undefined) steps.push(...this.start(call), stop(call));
    }
    if (this.held) {
      steps.push(...this.text(this.held), ...this.stopText());
      this.held = '';
    }
    return steps;
  }

  private start(call: Call): Step[] {
    call.block = this.blocks++;
    const steps: Step[] = [{ kind: 'call-start', block: call.block, id: call.id, name: call.name }];
    if (call.arguments) steps.push({ kind: 'call-arguments', block: call.block, arguments: call.arguments });
    return steps;
  }

  /** A thinking block left open (its signature never came) stops. */
  private stopThinking(): Step[] {
    if (this.open?.kind !== 'thinking') return [];
    const { block } = this.open;
    this.open = undefined;
    return [{ kind: 'thinking-stop', block }];
  }

  private stopText(): Step[] {
    if (this.open?.kind !== 'text') return [];
    const { block, text } = this.open;
    this.open = undefined;
    return [{ kind: 'text-stop', block, text }];
  }
}

const stop = (call: Call): Step => ({ kind: 'call-stop', block: call.block!, id: call.id, name: call.name, arguments: call.arguments });
