// Anthropic's Messages API request: its validation (Anthropic's error shape and words), and the
// same call as a chat completions request, so that answers, tokens and limits are shared; with its
// prompt-cache breakpoints (`cache_control`), the places where a cached prefix may end.
import { createHash } from 'node:crypto';
import { anthropicImageTokens, IMAGE_MEDIA_TYPES, sniffImage, undownloadable, URL_IMAGE_SIZE, type ImageMediaType, type ImageSize } from './images';
import type { CacheBoundary, CacheTtl } from './prompt-cache';
import { EFFORTS, type ChatCompletionRequest, type ChatMessage, type Effort, type ImageInput, type ToolChoice, type ToolDefinition } from './request';
import { unredactThinking, verifyThinking } from './thinking';
import { countPromptTokens } from './tokens';

/** A 400 in Anthropic's words: `{"type":"error","error":{"type":"invalid_request_error","message":…}}`. */
export class InvalidMessagesRequestError extends Error {
  override readonly name = 'InvalidMessagesRequestError';
}

export function anthropicError(type: string, message: string): { type: 'error'; error: { type: string; message: string }; request_id: string } {
  return { type: 'error', error: { type, message }, request_id: `req_${Math.random().toString(36).slice(2, 14)}` };
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
/** `metadata`: only `user_id` (a string of up to 256 characters, or null), as Anthropic checks it. */
function endUserOf(metadata: unknown): string | undefined {
  if (metadata === undefined || metadata === null) return undefined;
  if (!isObject(metadata)) return bad('metadata: Input should be a valid dictionary');
  for (const key of Object.keys(metadata)) if (key !== 'user_id') bad(`metadata.${key}: Extra inputs are not permitted`);
  const id = metadata.user_id;
  if (id === undefined || id === null) return undefined;
  if (typeof id !== 'string' || id.length > 256) return bad('metadata.user_id: String should have at most 256 characters');
  return id;
}

const bad = (message: string): never => {
  throw new InvalidMessagesRequestError(message);
};

type Block = Record<string, unknown>;

function blocksOf(content: unknown, at: string): Block[] {
  if (typeof content === 'string') return [{ type: 'text', text: content }];
  if (!Array.isArray(content)) return bad(`${at}.content: Input should be a valid list`);
  content.forEach((b, i) => {
    if (!isObject(b) || typeof b.type !== 'string') bad(`${at}.content.${i}: Input should be an object with a type`);
    const block = b as Block;
    if (block.type === 'text' && typeof block.text !== 'string') bad(`${at}.content.${i}.text: Field required`);
    if (block.type === 'text' && block.text === '') bad(`${at}.content.${i}: text content blocks must be non-empty`);
    if (block.type === 'tool_use' && (typeof block.id !== 'string' || typeof block.name !== 'string' || !isObject(block.input))) bad(`${at}.content.${i}: tool_use needs id, name and an input object`);
    if (block.type === 'tool_result' && typeof block.tool_use_id !== 'string') bad(`${at}.content.${i}.tool_use_id: Field required`);
    if (isThinking(block)) {
      const fields = block.type === 'thinking' ? ['thinking', 'signature'] : ['data'];
      for (const f of fields) if (typeof block[f] !== 'string') bad(`${at}.content.${i}.${block.type}.${f}: Field required`);
      // A thinking block cannot be a cache breakpoint (it is cached as part of the prefix it stands in).
      if (block.cache_control !== undefined) bad(`${at}.content.${i}.${block.type}.cache_control: Extra inputs are not permitted`);
    }
  });
  return content as Block[];
}

/**
 * An image block as Anthropic checks it — base64 bytes of the media type it declares, or a URL to
 * download — billed by its size.
 */
function imageOf(block: Block, at: string): ImageInput {
  const source = block.source;
  if (!isObject(source)) return bad(`${at}.image.source: Field required`);
  let size: ImageSize = URL_IMAGE_SIZE;
  if (source.type === 'base64') {
    const where = `${at}.image.source.base64`;
    const declared = source.media_type;
    if (!IMAGE_MEDIA_TYPES.includes(declared as ImageMediaType)) return bad(`${where}.media_type: Input should be 'image/jpeg', 'image/png', 'image/gif' or 'image/webp'`);
    if (typeof source.data !== 'string') return bad(`${where}.data: Field required`);
    const read = sniffImage(source.data);
    if (read?.mediaType === undefined) return bad('Could not process image');
    if (read.mediaType !== declared) return bad(`${where}: The image was specified using the ${String(declared)} media type, but the image appears to be a ${read.mediaType} image`);
    if (Math.max(read.width, read.height) > 8000) return bad(`${where}.data: At least one of the image dimensions exceed max allowed size: 8000 pixels`);
    size = read;
  } else if (source.type === 'url') {
    if (typeof source.url !== 'string') return bad(`${at}.image.source.url.url: Field required`);
    if (undownloadable(source.url)) return bad('Unable to download the file. Please verify the URL and try again.');
  } else {
    return bad(`${at}.image.source: Input tag '${String(source.type)}' found using 'type' does not match any of the expected tags: 'base64', 'url'`);
  }
  return { width: size.width, height: size.height, tokens: anthropicImageTokens(size) };
}

const textOf = (v: unknown): string =>
  typeof v === 'string' ? v : Array.isArray(v) ? v.map((b) => (isObject(b) && typeof b.text === 'string' ? b.text : '')).join('') : '';

/** The most blocks a request may mark with `cache_control`. */
const MAX_BREAKPOINTS = 4;

/**
 * A block's `cache_control`, as Anthropic checks it: `{"type": "ephemeral", "ttl"?: "5m" | "1h"}`
 * (null: none). Returns the breakpoint's lifetime, or undefined when the block is none.
 */
function cacheTtlOf(block: Block, at: string): CacheTtl | undefined {
  const control = block.cache_control;
  if (control === undefined || control === null) return undefined;
  if (!isObject(control)) return bad(`${at}.cache_control: Input should be a valid dictionary`);
  for (const key of Object.keys(control)) if (key !== 'type' && key !== 'ttl') bad(`${at}.cache_control.${key}: Extra inputs are not permitted`);
  if (control.type !== 'ephemeral') return bad(`${at}.cache_control.type: Input should be 'ephemeral'`);
  if (control.ttl === undefined || control.ttl === null) return '5m';
  if (control.ttl !== '5m' && control.ttl !== '1h') return bad(`${at}.cache_control.ttl: Input should be '5m' or '1h'`);
  return control.ttl;
}

/**
 * The breakpoints of a request, in the order Anthropic processes blocks (tools, system, messages):
 * at most 4, and none of an hour after one of 5 minutes (an entry cannot outlive the prefix it
 * extends).
 */
function breakpointsOf(marked: readonly { block: Block; at: string }[]): Map<Block, CacheTtl> {
  const ttls = new Map<Block, CacheTtl>();
  let shorter = false;
  for (const { block, at } of marked) {
    const ttl = cacheTtlOf(block, at);
    if (ttl === undefined) continue;
    if (ttl === '1h' && shorter) {
      bad(`${at}.cache_control.ttl: a ttl='1h' cache_control block must not come after a ttl='5m' cache_control block. Note that blocks are processed in the following order: \`tools\`, \`system\`, \`messages\`.`);
    }
    shorter ||= ttl === '5m';
    ttls.set(block, ttl);
  }
  if (ttls.size > MAX_BREAKPOINTS) bad(`A maximum of ${MAX_BREAKPOINTS} blocks with cache_control may be provided. Found ${ttls.size}.`);
  return ttls;
}

/** A message of the request: its role and its content as blocks (a string is one text block). */
interface Turn {
  role: 'user' | 'assistant';
  blocks: Block[];
  /** The texts of its thinking blocks, verified (thinking on — enabled or adaptive — only: see checkThinking). */
  thinking?: ReadonlyMap<Block, string>;
  /** Those of them that stay in the prompt, billed as input and part of its cached prefixes (see keepThinking). */
  thoughts?: ReadonlyMap<Block, string>;
}

const isThinking = (b: Block | undefined): boolean => b?.type === 'thinking' || b?.type === 'redacted_thinking';

type Thinking = NonNullable<ChatCompletionRequest['thinking']>;

/** An integer field of at least `min`, in Anthropic's words. */
function integerOf(value: unknown, at: string, min: number): number {
  if (typeof value !== 'number') return bad(`${at}: Input should be a valid integer`);
  if (!Number.isInteger(value)) return bad(`${at}: Input should be a valid integer, got a number with a fractional part`);
  if (value < min) return bad(`${at}: Input should be greater than or equal to ${min}`);
  return value;
}

/**
 * `thinking`, as Anthropic checks it: `{"type": "enabled", "budget_tokens": N}` (N ≥ 1024);
 * `{"type": "adaptive"}`, the model deciding how much to think by the `effort` (high when none),
 * a `budget_tokens` beside it (an integer ≥ 0: Claude Code sends 0) ignored; or `{"type":
 * "disabled"}`. Returns how it thinks, or undefined when disabled (or absent).
 */
function thinkingOf(raw: unknown, effort: Effort | undefined): Thinking | undefined {
  if (raw === undefined || raw === null) return undefined;
  if (!isObject(raw)) return bad('thinking: Input should be a valid dictionary or object to extract fields from');
  if (raw.type === undefined) return bad("thinking: Unable to extract tag using discriminator 'type'");
  if (raw.type === 'disabled') return undefined;
  if (raw.type !== 'enabled' && raw.type !== 'adaptive') {
    return bad(`thinking: Input tag '${String(raw.type)}' found using 'type' does not match any of the expected tags: 'adaptive', 'disabled', 'enabled'`);
  }
  const budget = raw.budget_tokens;
  const at = `thinking.${raw.type}.budget_tokens`;
  if (raw.type === 'adaptive') {
    if (budget !== undefined && budget !== null) integerOf(budget, at, 0);
    return { type: 'adaptive', effort: effort ?? 'high' };
  }
  if (budget === undefined) return bad(`${at}: Field required`);
  return { type: 'enabled', budgetTokens: integerOf(budget, at, 1024) };
}

/**
 * `output_config`, as Anthropic checks it: its `effort` (low, medium, high, xhigh or max; null:
 * none) and its `format` (structured output: `{"type": "json_schema", "schema": {…}}`, the answer
 * decoded to fit the schema; null: text).
 */
function outputConfigOf(raw: unknown): { effort?: Effort; format?: { type: 'json_schema'; schema: Record<string, unknown> } } {
  if (raw === undefined || raw === null) return {};
  if (!isObject(raw)) return bad(`output_config: ${NOT_A_DICT}`);
  onlyKeys(raw, 'output_config', ['effort', 'format']);
  const { effort, format } = raw;
  if (effort !== undefined && effort !== null && !EFFORTS.includes(effort as Effort)) return bad("output_config.effort: Input should be 'low', 'medium', 'high', 'xhigh' or 'max'");
  if (format !== undefined && format !== null) {
    if (!isObject(format)) return bad(`output_config.format: ${NOT_A_DICT}`);
    if (format.type !== 'json_schema') return bad(`output_config.format.type: Input should be 'json_schema'`);
    if (format.schema === undefined) return bad('output_config.format.schema: Field required');
    if (!isObject(format.schema)) return bad(`output_config.format.schema: ${NOT_A_DICT}`);
    onlyKeys(format, 'output_config.format', ['type', 'schema']);
  }
  return {
    ...(effort !== undefined && effort !== null ? { effort: effort as Effort } : {}),
    ...(isObject(format) ? { format: { type: 'json_schema' as const, schema: format.schema as Record<string, unknown> } } : {}),
  };
}

const THINKING_DOCS = 'https://docs.claude.com/en/docs/build-with-claude/extended-thinking';

/**
 * What thinking (enabled or adaptive) does not go with, in Anthropic's words: a budget not under
 * max_tokens, sampling changed, a tool forced.
 */
function checkThinkingCompatible(thinking: Thinking, maxTokens: number, body: Record<string, unknown>, toolChoice: ToolChoice | undefined): void {
  if (thinking.type === 'enabled' && maxTokens <= thinking.budgetTokens) bad(`\`max_tokens\` must be greater than \`thinking.budget_tokens\`. Please consult our documentation at ${THINKING_DOCS}#max-tokens-and-context-window-size`);
  if (body.temperature !== undefined && body.temperature !== 1) bad(`\`temperature\` may only be set to 1 when thinking is enabled. Please consult our documentation at ${THINKING_DOCS}#feature-compatibility`);
  if (body.top_k !== undefined) bad(`\`top_k\` must be unset when thinking is enabled. Please consult our documentation at ${THINKING_DOCS}#feature-compatibility`);
  if (typeof body.top_p === 'number' && body.top_p < 0.95) bad(`\`top_p\` must be greater than or equal to 0.95 or unset when thinking is enabled. Please consult our documentation at ${THINKING_DOCS}#feature-compatibility`);
  if (toolChoice === 'required' || typeof toolChoice === 'object') bad('Thinking may not be enabled when tool_choice forces tool use.');
}

/**
 * The thinking blocks passed back in assistant turns, as Anthropic checks them. With thinking
 * disabled they are ignored (not verified), but none may be in a final assistant message. On
 * (enabled or adaptive): a turn holding one starts with one and does not end with one; each must
 * verify (its signature, or its redacted data, for this model); and when the last assistant turn
 * holds tool_use (a tool loop being continued), it must start with one. The texts are set on each
 * turn as `thinking` (which of them stay in the prompt is keepThinking's). Returns whether a tool
 * loop is continued.
 */
function checkThinking(turns: Turn[], model: string, enabled: boolean): boolean {
  const last = turns.findLastIndex((t) => t.role === 'assistant');
  // The last assistant turn holds tool_use: the request continues a tool loop.
  const loop = enabled && last !== -1 && turns[last]!.blocks.some((b) => b.type === 'tool_use');
  turns.forEach((turn, i) => {
    if (turn.role !== 'assistant' || !turn.blocks.some(isThinking)) return;
    if (!enabled) {
      if (i === turns.length - 1) {
        bad(`messages.${i}.content.${turn.blocks.findIndex(isThinking)}: When thinking is disabled, an \`assistant\` message in the final position cannot contain \`thinking\`. To use thinking blocks, enable \`thinking\` in your request.`);
      }
      return;
    }
    if (!isThinking(turn.blocks[0])) {
      bad(`messages.${i}.content.0: If an assistant message contains any thinking blocks, the first block must be \`thinking\` or \`redacted_thinking\`. Found \`${String(turn.blocks[0]?.type)}\`.`);
    }
    if (isThinking(turn.blocks.at(-1))) bad(`messages.${i}: The final block in an assistant message cannot be \`thinking\`.`);
    const thoughts = new Map<Block, string>();
    turn.blocks.forEach((b, j) => {
      if (b.type === 'thinking') {
        if (!verifyThinking(model, b.thinking as string, b.signature as string)) bad(`messages.${i}.content.${j}: Invalid \`signature\` in \`thinking\` block`);
        thoughts.set(b, b.thinking as string);
      } else if (b.type === 'redacted_thinking') {
        const text = unredactThinking(model, b.data as string);
        if (text === undefined) bad(`messages.${i}.content.${j}: Invalid \`data\` in \`redacted_thinking\` block`);
        thoughts.set(b, text as string);
      }
    });
    turn.thinking = thoughts;
  });
  const final = turns[last];
  if (loop && !isThinking(final!.blocks[0])) {
    bad(
      `messages.${last}.content.0.type: Expected \`thinking\` or \`redacted_thinking\`, but found \`${String(final!.blocks[0]?.type)}\`. When \`thinking\` is enabled, a final \`assistant\` message must start with a thinking block (preceeding the lastmost set of \`tool_use\` and \`tool_result\` blocks). We recommend you include thinking blocks from previous turns. To avoid this requirement, disable \`thinking\`. Please consult our documentation at ${THINKING_DOCS}`,
    );
  }
  return loop;
}

/**
 * Which thinking passed back stays in the prompt (Anthropic strips the rest before the model sees
 * it): that of the last `keep` assistant turns, or of every one ("all"). A turn is the assistant's
 * messages from one user message to the next that is not tool results alone (a tool loop is one
 * turn); they are counted back from the one being answered: the last, when the request continues a
 * tool loop, else a new one, whose thinking is yet to come. So the default, 1 (Anthropic's without
 * `clear_thinking_20251015`), keeps a tool loop's own thinking and strips every finished turn's.
 * Sets each turn's `thoughts`; returns the number of turns whose thinking was stripped.
 */
function keepThinking(turns: Turn[], loop: boolean, keep: number | 'all'): number {
  let count = 0;
  let open = false;
  const turnOf = turns.map((t) => {
    if (t.role === 'user') open &&= t.blocks.every((b) => b.type === 'tool_result');
    else if (!open) [count, open] = [count + 1, true];
    return count;
  });
  const stripped = new Set<number>();
  turns.forEach((t, i) => {
    if (t.thinking === undefined) return;
    const back = count - turnOf[i]! + (loop ? 1 : 2);
    const kept = keep === 'all' || back <= keep;
    t.thoughts = kept ? t.thinking : undefined;
    if (!kept) stripped.add(turnOf[i]!);
  });
  return stripped.size;
}

/** `system` as blocks: a string is one text block (none when empty). */
function systemBlocksOf(system: unknown): Block[] {
  if (typeof system === 'string') return system === '' ? [] : [{ type: 'text', text: system }];
  return Array.isArray(system) ? system.filter(isObject) : [];
}

/** The system blocks as the chat's system message (their texts joined), or none. */
function systemMessages(system: readonly Block[]): ChatMessage[] {
  const text = textOf(system);
  return text ? [{ role: 'system', content: text }] : [];
}

/**
 * One message as chat messages: an assistant's text and tool calls; a user's tool results (a
 * `tool` message each), then its text and images (a message of their own when the turn has no text).
 */
function turnMessages({ role, blocks, thoughts }: Turn, images: ReadonlyMap<Block, ImageInput>): ChatMessage[] {
  const text = blocks.filter((b) => b.type === 'text').map((b) => b.text as string).join('');
  if (role === 'assistant') {
    const calls = blocks.filter((b) => b.type === 'tool_use');
    // Billed thinking (the last turn's, in a tool loop) is counted as part of the message's content.
    const thought = blocks.map((b) => thoughts?.get(b) ?? '').join('');
    return [{
      role: 'assistant',
      content: thought === '' ? text : [{ type: 'thinking', text: thought }, { type: 'text', text }],
      ...(calls.length > 0 ? { tool_calls: calls.map((c) => ({ id: c.id as string, type: 'function' as const, function: { name: c.name as string, arguments: JSON.stringify(c.input) } })) } : {}),
    }];
  }
  const out: ChatMessage[] = blocks.filter((b) => b.type === 'tool_result').map((b) => ({ role: 'tool', content: textOf(b.content), tool_call_id: b.tool_use_id as string }));
  const seen = blocks.flatMap((b) => images.get(b) ?? []);
  if (text || seen.length > 0) out.push({ role: 'user', content: text, ...(seen.length > 0 ? { images: seen } : {}) });
  return out;
}

/** JSON with every object's keys sorted: the same content, the same text, whatever order it was sent in. */
function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (isObject(value)) {
    return `{${Object.keys(value).sort().filter((k) => value[k] !== undefined).map((k) => `${JSON.stringify(k)}:${canonicalJson(value[k])}`).join(',')}}`;
  }
  return JSON.stringify(value) ?? 'null';
}

/** A block or tool without its own `cache_control`: where the breakpoints are is not part of the prefix. */
const withoutBreakpoint = ({ cache_control: _, ...rest }: Block): Block => rest;

/**
 * The places where a cached prefix may end, in Anthropic's order — after each tool, each system
 * block, each content block of each message — up to the last breakpoint. Each is keyed by a running
 * digest of the canonical JSON of what precedes it (a message's role opens it), and counts its
 * tokens, when asked, as the request cut after its block. The thinking — enabled's budget, or
 * adaptive and its effort — keys the messages' prefixes, not the tools' and system's (Anthropic:
 * changing it invalidates message breakpoints).
 * The blocks are those the model is shown: thinking stripped (keepThinking) is left out, so a
 * prefix holding a turn's thinking is read back only by requests that keep it too; tool results
 * cleared by context editing are there as cleared.
 */
function cacheBoundaries(tools: readonly Block[], definitions: readonly ToolDefinition[], system: readonly Block[], turns: readonly Turn[], images: ReadonlyMap<Block, ImageInput>, ttls: ReadonlyMap<Block, CacheTtl>, thinking: Thinking | undefined): CacheBoundary[] {
  const hash = createHash('sha256');
  const out: CacheBoundary[] = [];
  let left = ttls.size;
  const add = (piece: unknown, block: Block, cut: () => Pick<ChatCompletionRequest, 'messages' | 'tools'>): void => {
    if (left === 0) return;
    hash.update(`${canonicalJson(piece)}\n`);
    const ttl = ttls.get(block);
    if (ttl !== undefined) left--;
    let tokens: number | undefined;
    out.push({ digest: hash.copy().digest('base64url'), ttl, tokens: () => (tokens ??= countPromptTokens(cut())) });
  };
  const allTools = definitions.length > 0 ? [...definitions] : undefined;
  tools.forEach((t, i) => add(['tool', withoutBreakpoint(t)], t, () => ({ messages: [], tools: definitions.slice(0, i + 1) })));
  system.forEach((b, i) => add(['system', withoutBreakpoint(b)], b, () => ({ messages: systemMessages(system.slice(0, i + 1)), tools: allTools })));
  const head = systemMessages(system);
  const before: ChatMessage[] = [];
  if (thinking !== undefined && left > 0) {
    hash.update(`${JSON.stringify(thinking.type === 'enabled' ? ['thinking', thinking.budgetTokens] : ['thinking', 'adaptive', thinking.effort])}\n`);
  }
  for (const turn of turns) {
    if (left === 0) break;
    hash.update(`${JSON.stringify(['message', turn.role])}\n`);
    const earlier = [...head, ...before];
    turn.blocks.forEach((b, j) => {
      // Thinking stripped from the prompt is no part of its prefixes (and a thinking block is never a breakpoint).
      if (isThinking(b) && turn.thoughts?.has(b) !== true) return;
      add(['block', withoutBreakpoint(b)], b, () => ({ messages: [...earlier, ...turnMessages({ ...turn, blocks: turn.blocks.slice(0, j + 1) }, images)], tools: allTools }));
    });
    before.push(...turnMessages(turn, images));
  }
  return out;
}

/** Anthropic's context-editing beta: without it in `anthropic-beta`, `context_management` is an unknown field. */
export const CONTEXT_MANAGEMENT_BETA = 'context-management-2025-06-27';

/**
 * The betas this emulator takes, as Anthropic's API does: names its documentation gives or its
 * clients send. Any other is refused with Anthropic's message (a provider's list moves, and those
 * of Anthropic's models on other clouds are shorter: a client's beta refused is a real failure).
 */
export const KNOWN_BETAS: ReadonlySet<string> = new Set([
  'message-batches-2024-09-24', 'prompt-caching-2024-07-31', 'computer-use-2024-10-22', 'computer-use-2025-01-24', 'pdfs-2024-09-25',
  'token-counting-2024-11-01', 'token-efficient-tools-2025-02-19', 'output-128k-2025-02-19', 'files-api-2025-04-14', 'mcp-client-2025-04-04',
  'dev-full-thinking-2025-05-14', 'interleaved-thinking-2025-05-14', 'code-execution-2025-05-22', 'extended-cache-ttl-2025-04-11',
  'context-1m-2025-08-07', CONTEXT_MANAGEMENT_BETA, 'model-context-window-exceeded-2025-08-26', 'skills-2025-10-02',
  'fine-grained-tool-streaming-2025-05-14', 'search-results-2025-06-09', 'web-fetch-2025-09-10', 'code-execution-2025-08-25',
  'claude-code-20250219', 'oauth-2025-04-20',
]);

/** Anthropic's refusal of betas it does not know (400 invalid_request_error), each name in backquotes. */
export function unknownBetasMessage(unknown: readonly string[]): string {
  return `Unexpected value(s) ${unknown.map((b) => `\`${b}\``).join(', ')} for the \`anthropic-beta\` header. Please consult our documentation at docs.anthropic.com or try again without the header.`;
}

/** The betas an `anthropic-beta` header lists: comma-separated (a repeated header's values too), any case, any spacing. */
export function betasOf(header: string | string[] | undefined): Set<string> {
  const raw = Array.isArray(header) ? header.join(',') : (header ?? '');
  return new Set(raw.split(',').map((b) => b.trim().toLowerCase()).filter((b) => b !== ''));
}

const CLEAR_THINKING = 'clear_thinking_20251015';
const CLEAR_TOOL_USES = 'clear_tool_uses_20250919';
/** What a cleared tool result holds instead (Anthropic's placeholder text is not documented). */
const CLEARED_TOOL_RESULT = '[cleared to save context]';

interface ClearThinking {
  type: typeof CLEAR_THINKING;
  /** The assistant turns whose thinking stays, counted back from the one answered (keepThinking). */
  keep: number | 'all';
}
interface ClearToolUses {
  type: typeof CLEAR_TOOL_USES;
  trigger: { type: 'input_tokens' | 'tool_uses'; value: number };
  keep: number;
  clearAtLeast: number;
  excludeTools: ReadonlySet<string>;
  /** `clear_tool_inputs`: every cleared use's input (true), or those of these tools. */
  clearInputs: boolean | ReadonlySet<string>;
}
type ContextEdit = ClearThinking | ClearToolUses;

const NOT_A_DICT = 'Input should be a valid dictionary or object to extract fields from';
const onlyKeys = (raw: Record<string, unknown>, at: string, keys: readonly string[]): void => {
  for (const key of Object.keys(raw)) if (!keys.includes(key)) bad(`${at}.${key}: Extra inputs are not permitted`);
};
const given = (v: unknown): boolean => v !== undefined && v !== null;

/** A count of context editing: `{"type": T, "value": N}`, N an integer of at least `min`. */
function countOf<T extends string>(raw: unknown, at: string, types: readonly T[], min: number): { type: T; value: number } {
  if (!isObject(raw)) return bad(`${at}: ${NOT_A_DICT}`);
  onlyKeys(raw, at, ['type', 'value']);
  if (!types.includes(raw.type as T)) return bad(`${at}.type: Input should be ${types.map((t) => `'${t}'`).join(' or ')}`);
  const value = raw.value;
  if (value === undefined) return bad(`${at}.value: Field required`);
  if (typeof value !== 'number' || !Number.isInteger(value)) return bad(`${at}.value: Input should be a valid integer`);
  if (value < min) return bad(`${at}.value: Input should be greater than or equal to ${min}`);
  return { type: raw.type as T, value };
}

function toolNamesOf(raw: unknown, at: string): ReadonlySet<string> {
  if (!Array.isArray(raw)) return bad(`${at}: Input should be a valid list`);
  raw.forEach((name, i) => typeof name !== 'string' && bad(`${at}.${i}: Input should be a valid string`));
  return new Set(raw as string[]);
}

/** `clear_thinking_20251015`'s `keep`: "all" (or `{"type": "all"}`), or `{"type": "thinking_turns", "value": N ≥ 1}`; absent, 1. */
function thinkingKeepOf(raw: unknown, at: string): number | 'all' {
  if (raw === undefined) return 1;
  if (raw === 'all') return 'all';
  if (isObject(raw) && raw.type === 'all') {
    onlyKeys(raw, at, ['type']);
    return 'all';
  }
  if (!isObject(raw) || raw.type !== 'thinking_turns') return bad(`${at}: Input should be 'all' or {"type": "thinking_turns", "value": N}`);
  return countOf(raw, at, ['thinking_turns'], 1).value;
}

/** One edit of `context_management.edits`, by its tag (the error paths name it, as for `thinking`). */
function contextEditOf(raw: unknown, at: string): ContextEdit {
  if (!isObject(raw)) return bad(`${at}: ${NOT_A_DICT}`);
  if (raw.type === undefined) return bad(`${at}: Unable to extract tag using discriminator 'type'`);
  const where = `${at}.${String(raw.type)}`;
  if (raw.type === CLEAR_THINKING) {
    onlyKeys(raw, where, ['type', 'keep']);
    return { type: CLEAR_THINKING, keep: thinkingKeepOf(raw.keep, `${where}.keep`) };
  }
  if (raw.type !== CLEAR_TOOL_USES) {
    return bad(`${at}: Input tag '${String(raw.type)}' found using 'type' does not match any of the expected tags: '${CLEAR_THINKING}', '${CLEAR_TOOL_USES}'`);
  }
  onlyKeys(raw, where, ['type', 'trigger', 'keep', 'clear_at_least', 'exclude_tools', 'clear_tool_inputs']);
  const inputs = raw.clear_tool_inputs;
  return {
    type: CLEAR_TOOL_USES,
    trigger: raw.trigger === undefined ? { type: 'input_tokens', value: 100_000 } : countOf(raw.trigger, `${where}.trigger`, ['input_tokens', 'tool_uses'], 1),
    keep: raw.keep === undefined ? 3 : countOf(raw.keep, `${where}.keep`, ['tool_uses'], 0).value,
    clearAtLeast: given(raw.clear_at_least) ? countOf(raw.clear_at_least, `${where}.clear_at_least`, ['input_tokens'], 0).value : 0,
    excludeTools: given(raw.exclude_tools) ? toolNamesOf(raw.exclude_tools, `${where}.exclude_tools`) : new Set(),
    clearInputs: !given(inputs) ? false : typeof inputs === 'boolean' ? inputs : Array.isArray(inputs) ? toolNamesOf(inputs, `${where}.clear_tool_inputs`) : bad(`${where}.clear_tool_inputs: Input should be a valid boolean or a list of tool names`),
  };
}

/**
 * `context_management` (`{"edits": [...]}`), as Anthropic checks it: only with its beta asked
 * for; each strategy at most once, `clear_thinking_20251015` first. Undefined when absent (or null).
 */
function contextEditsOf(raw: unknown, betas: ReadonlySet<string>): ContextEdit[] | undefined {
  if (raw === undefined) return undefined;
  // Without the beta the field is not in the schema: refused as any unknown field is.
  if (!betas.has(CONTEXT_MANAGEMENT_BETA)) return bad('context_management: Extra inputs are not permitted');
  if (raw === null) return undefined;
  if (!isObject(raw)) return bad(`context_management: ${NOT_A_DICT}`);
  onlyKeys(raw, 'context_management', ['edits']);
  if (!given(raw.edits)) return [];
  if (!Array.isArray(raw.edits)) return bad('context_management.edits: Input should be a valid list');
  const edits = raw.edits.map((e: unknown, i) => contextEditOf(e, `context_management.edits.${i}`));
  edits.forEach((e, i) => {
    if (edits.findIndex((o) => o.type === e.type) !== i) bad(`context_management.edits.${i}: \`${e.type}\` may be given only once`);
    if (e.type === CLEAR_THINKING && i > 0) bad(`context_management.edits.${i}: \`${CLEAR_THINKING}\` must be the first strategy in \`edits\` when it is combined with others`);
  });
  return edits;
}

/** An edit as the answer reports it (`context_management.applied_edits`). */
export type AppliedContextEdit =
  | { type: typeof CLEAR_THINKING; cleared_thinking_turns: number; cleared_input_tokens: number }
  | { type: typeof CLEAR_TOOL_USES; cleared_tool_uses: number; cleared_input_tokens: number };

/**
 * `clear_tool_uses_20250919`: once the prompt is past its trigger (its input tokens, or its tool
 * uses, above the value), the results of all tool uses but the last `keep` — none of a tool of
 * `exclude_tools` — are replaced by a placeholder (with `clear_tool_inputs`, their inputs emptied
 * too); unless that clears fewer than `clear_at_least` tokens, when nothing is (as Anthropic
 * documents it). Replaces the turns' blocks (new ones: their `cache_control` stays); returns what
 * was cleared, or undefined when nothing was.
 */
function clearToolUses(turns: Turn[], edit: ClearToolUses, promptTokens: () => number): AppliedContextEdit | undefined {
  const uses = turns.flatMap((t) => (t.role === 'assistant' ? t.blocks.filter((b) => b.type === 'tool_use') : []));
  const before = promptTokens();
  if ((edit.trigger.type === 'input_tokens' ? before : uses.length) <= edit.trigger.value) return undefined;
  const cleared = uses.slice(0, Math.max(0, uses.length - edit.keep)).filter((u) => !edit.excludeTools.has(u.name as string));
  if (cleared.length === 0) return undefined;
  const ids = new Set(cleared.map((u) => u.id));
  const clearInput = (name: unknown): boolean => edit.clearInputs === true || (edit.clearInputs instanceof Set && edit.clearInputs.has(name as string));
  const original = turns.map((t) => t.blocks);
  for (const t of turns) {
    t.blocks = t.blocks.map((b) =>
      b.type === 'tool_result' && ids.has(b.tool_use_id) ? { ...b, content: CLEARED_TOOL_RESULT }
      : b.type === 'tool_use' && ids.has(b.id) && clearInput(b.name) ? { ...b, input: {} }
      : b,
    );
  }
  const saved = before - promptTokens();
  if (saved < edit.clearAtLeast) {
    turns.forEach((t, i) => (t.blocks = original[i]!));
    return undefined;
  }
  return { type: CLEAR_TOOL_USES, cleared_tool_uses: cleared.length, cleared_input_tokens: saved };
}

/**
 * What the model is shown of the turns, and what the answer reports: the thinking kept (by
 * `clear_thinking_20251015`, else Anthropic's default), then the tool uses cleared
 * (`clear_tool_uses_20250919`), in the order of `edits`. An edit that cleared nothing is not reported.
 */
function applyContextEdits(turns: Turn[], loop: boolean, edits: readonly ContextEdit[], promptTokens: () => number): AppliedContextEdit[] {
  const applied: AppliedContextEdit[] = [];
  if (!edits.some((e) => e.type === CLEAR_THINKING)) keepThinking(turns, loop, 1);
  for (const edit of edits) {
    if (edit.type === CLEAR_TOOL_USES) {
      const done = clearToolUses(turns, edit, promptTokens);
      if (done !== undefined) applied.push(done);
      continue;
    }
    // What it clears: the prompt with every turn's thinking, less the prompt with what it keeps.
    keepThinking(turns, loop, 'all');
    const before = promptTokens();
    const turnsCleared = keepThinking(turns, loop, edit.keep);
    if (turnsCleared > 0) applied.push({ type: CLEAR_THINKING, cleared_thinking_turns: turnsCleared, cleared_input_tokens: before - promptTokens() });
  }
  return applied;
}

/** Validates a Messages body as Anthropic does (the checks the broker may trip) and returns it as a chat completions request. */
export function parseMessagesRequest(body: unknown, betas: ReadonlySet<string> = new Set()): ChatCompletionRequest {
  if (!isObject(body)) return bad('Input should be an object');
  const model = body.model;
  if (typeof model !== 'string' || model === '') bad('model: Field required');
  const maxTokens = body.max_tokens;
  if (maxTokens === undefined) bad('max_tokens: Field required');
  if (typeof maxTokens !== 'number' || !Number.isInteger(maxTokens) || maxTokens < 1) bad('max_tokens: Input should be greater than or equal to 1');
  const raw = body.messages;
  if (!Array.isArray(raw)) return bad('messages: Field required');
  if (raw.length === 0) bad('messages: at least one message is required');
  const temperature = body.temperature;
  if (temperature !== undefined && (typeof temperature !== 'number' || temperature < 0 || temperature > 1)) bad('temperature: Input should be less than or equal to 1');
  const stream = body.stream ?? false;
  if (typeof stream !== 'boolean') bad('stream: Input should be a valid boolean');
  const { effort, format } = outputConfigOf(body.output_config);
  const thinking = thinkingOf(body.thinking, effort);
  // Without thinking, the model goes no further than high.
  if (thinking === undefined && (effort === 'xhigh' || effort === 'max')) {
    bad(`output_config.effort '${effort}' is not supported when thinking is disabled on this model. Use effort 'high' or below, or enable thinking.`);
  }
  const edits = contextEditsOf(body.context_management, betas);
  if (thinking === undefined && edits?.some((e) => e.type === CLEAR_THINKING)) bad(`\`${CLEAR_THINKING}\` strategy requires \`thinking\` to be enabled or adaptive`);

  const system = systemBlocksOf(body.system);
  // The images ride on the user message, billed as Anthropic bills them.
  const images = new Map<Block, ImageInput>();
  const turns = raw.map((m: unknown, i): Turn => {
    const at = `messages.${i}`;
    if (!isObject(m)) return bad(`${at}: Input should be an object`);
    if (m.role !== 'user' && m.role !== 'assistant') return bad(`${at}.role: Input should be 'user' or 'assistant'`);
    const blocks = blocksOf(m.content, at);
    if (m.role === 'assistant') {
      const image = blocks.findIndex((b) => b.type === 'image');
      if (image !== -1) return bad(`${at}.content.${image}: image content blocks are only allowed in user messages`);
    } else {
      const thought = blocks.findIndex(isThinking);
      if (thought !== -1) return bad(`${at}.content.${thought}: ${String(blocks[thought]!.type)} content blocks are only allowed in assistant messages`);
    }
    blocks.forEach((b, j) => {
      if (b.type === 'image') images.set(b, imageOf(b, `${at}.content.${j}`));
    });
    return { role: m.role, blocks };
  });

  let tools: Block[] = [];
  let definitions: ToolDefinition[] = [];
  if (body.tools !== undefined) {
    if (!Array.isArray(body.tools)) return bad('tools: Input should be a valid list');
    tools = body.tools as Block[];
    definitions = body.tools.map((t: unknown, i): ToolDefinition => {
      if (!isObject(t) || typeof t.name !== 'string' || !/^[a-zA-Z0-9_-]{1,64}$/.test(t.name)) return bad(`tools.${i}.name: String should match pattern '^[a-zA-Z0-9_-]{1,64}$'`);
      if (!isObject(t.input_schema)) return bad(`tools.${i}.input_schema: Field required`);
      return { type: 'function', function: { name: t.name, ...(typeof t.description === 'string' ? { description: t.description } : {}), parameters: t.input_schema } };
    });
  }
  const toolChoice = toolChoiceOf(body.tool_choice, definitions);
  const topP = body.top_p === undefined ? undefined : typeof body.top_p === 'number' && body.top_p >= 0 && body.top_p <= 1 ? body.top_p : bad('top_p: Input should be less than or equal to 1');
  const topK = body.top_k === undefined ? undefined : Number.isInteger(body.top_k) && (body.top_k as number) >= 0 ? (body.top_k as number) : bad('top_k: Input should be greater than or equal to 0');
  if (thinking !== undefined) checkThinkingCompatible(thinking, maxTokens as number, body, toolChoice);
  // A signature binds the model without a `+behaviour` suffix (the one answers are made for).
  const loop = checkThinking(turns, (model as string).split('+')[0]!, thinking !== undefined);
  const promptTokens = () => countPromptTokens({ messages: [...systemMessages(system), ...turns.flatMap((t) => turnMessages(t, images))], tools: definitions.length > 0 ? definitions : undefined });
  // Context editing rewrites the turns (what the model is shown) before they are translated and cached.
  const applied = applyContextEdits(turns, loop, edits ?? [], promptTokens);
  const ttls = breakpointsOf([
    ...tools.map((block, i) => ({ block, at: `tools.${i}` })),
    ...system.map((block, i) => ({ block, at: `system.${i}` })),
    ...turns.flatMap((t, i) => t.blocks.map((block, j) => ({ block, at: `messages.${i}.content.${j}` }))),
  ]);
  return {
    model: model as string,
    messages: [...systemMessages(system), ...turns.flatMap((t) => turnMessages(t, images))],
    ...(ttls.size > 0 ? { cacheBoundaries: cacheBoundaries(tools, definitions, system, turns, images, ttls, thinking) } : {}),
    stream: stream as boolean,
    includeUsage: true,
    maxTokens: maxTokens as number,
    tools: definitions.length > 0 ? definitions : undefined,
    toolChoice,
    stop: stopSequencesOf(body.stop_sequences),
    seed: undefined,
    responseFormat: format,
    parallelToolCalls: !(isObject(body.tool_choice) && body.tool_choice.disable_parallel_tool_use === true),
    // The Messages API has no log probabilities.
    logprobs: false,
    topLogprobs: 0,
    reasoningEffort: undefined,
    verbosity: undefined,
    endUser: endUserOf(body.metadata),
    topP,
    ...(topK === undefined ? {} : { topK }),
    temperature: temperature as number | undefined,
    ...(thinking === undefined ? {} : { thinking }),
    ...(edits === undefined ? {} : { contextManagement: { applied_edits: applied } }),
  };
}

/** Anthropic's `tool_choice` (auto, any, tool with a name, none) in OpenAI's terms; absent: auto. */
function toolChoiceOf(raw: unknown, tools: readonly ToolDefinition[]): ToolChoice | undefined {
  if (raw === undefined) return undefined;
  if (!isObject(raw) || !['auto', 'any', 'tool', 'none'].includes(raw.type as string)) return bad("tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none'");
  if (raw.disable_parallel_tool_use !== undefined && typeof raw.disable_parallel_tool_use !== 'boolean') return bad('tool_choice.disable_parallel_tool_use: Input should be a valid boolean');
  if (raw.type === 'auto') return 'auto';
  if (raw.type === 'none') return 'none';
  if (tools.length === 0) return bad('tool_choice: may only be specified while providing tools');
  if (raw.type === 'any') return 'required';
  if (typeof raw.name !== 'string' || !tools.some((t) => t.function.name === raw.name)) return bad(`tool_choice.name: tool ${JSON.stringify(raw.name)} not found in tools`);
  return { type: 'function', function: { name: raw.name } };
}

function stopSequencesOf(raw: unknown): string[] | undefined {
  if (raw === undefined) return undefined;
  if (!Array.isArray(raw) || !raw.every((s) => typeof s === 'string')) return bad('stop_sequences: Input should be a valid list of strings');
  return raw.length > 0 ? (raw as string[]) : undefined;
}
