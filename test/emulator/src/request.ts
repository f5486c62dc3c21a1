// The chat completions request: its wire types and OpenAI's validation rules and messages.
import { IMAGE_DETAILS, openAiImageTokens, sniffImage, undownloadable, URL_IMAGE_SIZE, type ImageDetail, type ImageSize } from './images';
import type { AppliedContextEdit } from './messages-request';
import type { CacheBoundary } from './prompt-cache';
import { contentText } from './tokens';

export interface ContentPart {
  type: string;
  text?: string;
  [key: string]: unknown;
}

export interface ToolCall {
  id: string;
  type: 'function';
  function: { name: string; arguments: string };
}

export type ChatRole = 'system' | 'developer' | 'user' | 'assistant' | 'tool' | 'function';

export interface ChatMessage {
  role: ChatRole;
  content: string | ContentPart[] | null;
  name?: string;
  tool_calls?: ToolCall[];
  tool_call_id?: string;
  /** The images of a user message, in order, as its provider read and billed them (parsed, never sent). */
  images?: ImageInput[];
}

/** An image in a prompt: its size as read from its bytes (or assumed, behind a URL), and the prompt tokens the provider bills for it. */
export interface ImageInput extends ImageSize {
  tokens: number;
}

export interface ToolDefinition {
  type: 'function';
  function: { name: string; description?: string; parameters?: unknown; [key: string]: unknown };
}

export type ToolChoice = 'none' | 'auto' | 'required' | { type: 'function'; function: { name: string } };

/** A validated request; `tools` keeps the objects exactly as sent (their JSON is billed). */
export interface ChatCompletionRequest {
  model: string;
  messages: ChatMessage[];
  stream: boolean;
  includeUsage: boolean;
  /** `max_completion_tokens`, else `max_tokens`. */
  maxTokens: number | undefined;
  tools: ToolDefinition[] | undefined;
  toolChoice: ToolChoice | undefined;
  temperature: number | undefined;
  /** Sequences at which the answer stops (not included); up to 4. */
  stop: string[] | undefined;
  /** Asks for a repeatable answer: the same request and seed, the same answer. */
  seed: number | undefined;
  topP: number | undefined;
  /** Anthropic's `top_k` (OpenAI has none): 1 samples greedily, so the same prompt gets the same answer. */
  topK?: number;
  /** JSON mode (`json_object`) or structured output (`json_schema`, its schema); absent: text. */
  responseFormat: { type: 'json_object' } | { type: 'json_schema'; schema: Record<string, unknown> } | undefined;
  /** False: at most one tool call (OpenAI's `parallel_tool_calls`, Anthropic's `disable_parallel_tool_use`). */
  parallelToolCalls: boolean;
  /** Each token's log probability in the answer (`logprobs`), with this many alternatives (`top_logprobs`, 0–20). */
  logprobs: boolean;
  topLogprobs: number;
  /** A reasoning model's `reasoning_effort`: how many tokens it thinks before it answers (billed as completion tokens). */
  reasoningEffort: ReasoningEffort | undefined;
  /** `verbosity`: how long an answer the model writes (absent: medium). */
  verbosity: Verbosity | undefined;
  /** `user` (Anthropic's `metadata.user_id`): the caller's name for its end user. */
  endUser: string | undefined;
  /**
   * Anthropic's prompt-cache breakpoints (`cache_control`): the places in the request where a
   * cached prefix may end, up to the last breakpoint. Absent: none marked (OpenAI caches on its own).
   */
  cacheBoundaries?: CacheBoundary[];
  /**
   * Anthropic's extended thinking: `{"type": "enabled", "budget_tokens": N}`, its length set by the
   * budget, or `{"type": "adaptive"}`, set by `output_config.effort` (high when absent); absent: disabled.
   */
  thinking?: { type: 'enabled'; budgetTokens: number } | { type: 'adaptive'; effort: Effort };
  /**
   * Anthropic's context editing (`context_management`, a beta): what its edits cleared, as the
   * answer reports it. Absent when the request did not ask for it.
   */
  contextManagement?: { applied_edits: AppliedContextEdit[] };
}

export const REASONING_EFFORTS = ['none', 'minimal', 'low', 'medium', 'high', 'xhigh'] as const;
export type ReasoningEffort = (typeof REASONING_EFFORTS)[number];
/** Anthropic's `output_config.effort` levels. */
export const EFFORTS = ['low', 'medium', 'high', 'xhigh', 'max'] as const;
export type Effort = (typeof EFFORTS)[number];
export const VERBOSITIES = ['low', 'medium', 'high'] as const;
export type Verbosity = (typeof VERBOSITIES)[number];

/**
 * A 400 in OpenAI's words: message, offending parameter, machine-readable code (null where OpenAI
 * sends none) and, rarely, another error type than `invalid_request_error`.
 */
export class InvalidRequestError extends Error {
  override readonly name = 'InvalidRequestError';
  constructor(
    message: string,
    readonly param: string | null,
    readonly code: string | null,
    readonly type = 'invalid_request_error',
  ) {
    super(message);
  }
}

const ROLES: readonly ChatRole[] = ['system', 'developer', 'user', 'assistant', 'tool', 'function'];
const FUNCTION_NAME = /^[a-zA-Z0-9_-]{1,64}$/;

export function typeName(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'number') return Number.isInteger(value) ? 'an integer' : 'a decimal';
  if (typeof value === 'object') return 'an object';
  return `a ${typeof value}`;
}

export function invalidType(param: string, expected: string, value: unknown): InvalidRequestError {
  return new InvalidRequestError(
    `Invalid type for '${param}': expected ${expected}, but got ${typeName(value)} instead.`,
    param,
    'invalid_type',
  );
}

export function missing(param: string): InvalidRequestError {
  return new InvalidRequestError(`Missing required parameter: '${param}'.`, param, 'missing_required_parameter');
}

export function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Absent and `null` mean the same for optional parameters, as with OpenAI. */
export function optional(body: Record<string, unknown>, key: string): unknown {
  const value = body[key];
  return value === null ? undefined : value;
}

function parseMessage(raw: unknown, index: number): ChatMessage {
  const at = `messages[${index}]`;
  if (!isObject(raw)) throw invalidType(at, 'an object', raw);
  const role = raw['role'];
  if (role === undefined) throw missing(`${at}.role`);
  if (typeof role !== 'string' || !(ROLES as readonly string[]).includes(role)) {
    throw new InvalidRequestError(
      `Invalid value: '${String(role)}'. Supported values are: 'system', 'assistant', 'user', 'function', 'tool', and 'developer'.`,
      `${at}.role`,
      'invalid_value',
    );
  }
  const message: ChatMessage = { role: role as ChatRole, content: null };

  const content = raw['content'];
  const toolCalls = raw['tool_calls'];
  if (content === undefined || content === null) {
    const mayOmit = role === 'assistant' && (toolCalls !== undefined || raw['function_call'] !== undefined);
    if (!mayOmit) throw missing(`${at}.content`);
  } else if (typeof content === 'string') {
    message.content = content;
  } else if (Array.isArray(content)) {
    const images: ImageInput[] = [];
    content.forEach((part, i) => {
      if (!isObject(part) || typeof part['type'] !== 'string') {
        throw invalidType(`${at}.content[${i}]`, 'an object with a type', part);
      }
      if (part['type'] === 'text' && typeof part['text'] !== 'string') throw missing(`${at}.content[${i}].text`);
      if (part['type'] === 'image_url') {
        if (role !== 'user') {
          throw new InvalidRequestError(`Invalid '${at}'. Image URLs are only allowed for messages with role 'user', but this message with role '${role}' contains an image URL.`, at, 'invalid_value');
        }
        images.push(parseImagePart(part, `${at}.content[${i}]`));
      }
    });
    message.content = content as ContentPart[];
    if (images.length > 0) message.images = images;
  } else {
    throw invalidType(`${at}.content`, 'one of a string or array of objects', content);
  }

  const name = raw['name'];
  if (name !== undefined && name !== null) {
    if (typeof name !== 'string') throw invalidType(`${at}.name`, 'a string', name);
    message.name = name;
  }
  if (toolCalls !== undefined && toolCalls !== null) {
    if (role !== 'assistant') {
      throw new InvalidRequestError(`Invalid parameter: '${at}.tool_calls' is only allowed for messages with role 'assistant'.`, `${at}.tool_calls`, 'invalid_value');
    }
    if (!Array.isArray(toolCalls)) throw invalidType(`${at}.tool_calls`, 'an array', toolCalls);
    toolCalls.forEach((call, i) => {
      const fn = isObject(call) ? call['function'] : undefined;
      if (!isObject(call) || typeof call['id'] !== 'string') throw missing(`${at}.tool_calls[${i}].id`);
      if (!isObject(fn) || typeof fn['name'] !== 'string') throw missing(`${at}.tool_calls[${i}].function.name`);
      if (typeof fn['arguments'] !== 'string') throw missing(`${at}.tool_calls[${i}].function.arguments`);
    });
    message.tool_calls = toolCalls as ToolCall[];
  }
  if (role === 'tool') {
    const id = raw['tool_call_id'];
    if (typeof id !== 'string' || id === '') throw missing(`${at}.tool_call_id`);
    message.tool_call_id = id;
  }
  return message;
}

const UNSUPPORTED_IMAGE = 'You uploaded an unsupported image. Please make sure your image is valid.';

/**
 * An `image_url` part as OpenAI checks it — a base64 data URL of a PNG, JPEG, GIF or WebP whose
 * bytes are what it declares, or an http(s) URL to download — billed by its size and `detail`.
 */
function parseImagePart(part: Record<string, unknown>, at: string): ImageInput {
  const image = optional(part, 'image_url');
  if (image === undefined) throw missing(`${at}.image_url`);
  if (!isObject(image)) throw invalidType(`${at}.image_url`, 'an object', image);
  const url = optional(image, 'url');
  if (url === undefined) throw missing(`${at}.image_url.url`);
  if (typeof url !== 'string') throw invalidType(`${at}.image_url.url`, 'a string', url);
  const detail = optional(image, 'detail') ?? 'auto';
  if (!IMAGE_DETAILS.includes(detail as ImageDetail)) {
    throw new InvalidRequestError(`Invalid value: '${String(detail)}'. Supported values are: 'auto', 'low', and 'high'.`, `${at}.image_url.detail`, 'invalid_value');
  }
  let size: ImageSize = URL_IMAGE_SIZE;
  if (url.startsWith('data:')) {
    const [, mediaType, data] = /^data:([^;,]*);base64,(.*)$/s.exec(url) ?? [];
    const read = data === undefined ? undefined : sniffImage(data);
    if (read === undefined || read.mediaType !== mediaType) throw new InvalidRequestError(UNSUPPORTED_IMAGE, null, 'invalid_image_format');
    size = read;
  } else if (undownloadable(url)) {
    throw new InvalidRequestError(`Error while downloading ${url}.`, null, 'invalid_image_url');
  }
  return { width: size.width, height: size.height, tokens: openAiImageTokens(size, detail as ImageDetail) };
}

function parseTools(raw: unknown): ToolDefinition[] | undefined {
  if (raw === undefined) return undefined;
  if (!Array.isArray(raw)) throw invalidType('tools', 'an array', raw);
  raw.forEach((tool, i) => {
    if (!isObject(tool)) throw invalidType(`tools[${i}]`, 'an object', tool);
    if (tool['type'] !== 'function') {
      throw new InvalidRequestError(`Invalid value: '${String(tool['type'])}'. Supported values are: 'function'.`, `tools[${i}].type`, 'invalid_value');
    }
    const fn = tool['function'];
    if (!isObject(fn)) throw missing(`tools[${i}].function`);
    const name = fn['name'];
    if (typeof name !== 'string') throw missing(`tools[${i}].function.name`);
    if (!FUNCTION_NAME.test(name)) {
      throw new InvalidRequestError(
        `Invalid 'tools[${i}].function.name': string does not match pattern. Expected a string that matches the pattern '^[a-zA-Z0-9_-]+$'.`,
        `tools[${i}].function.name`,
        'invalid_value',
      );
    }
  });
  return raw as ToolDefinition[];
}

function parseToolChoice(raw: unknown, tools: ToolDefinition[] | undefined): ToolChoice | undefined {
  if (raw === undefined) return undefined;
  if (tools === undefined || tools.length === 0) {
    throw new InvalidRequestError(
      "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified.",
      'tool_choice',
      'invalid_value',
    );
  }
  if (raw === 'none' || raw === 'auto' || raw === 'required') return raw;
  if (isObject(raw) && raw['type'] === 'function' && isObject(raw['function']) && typeof raw['function']['name'] === 'string') {
    const name = raw['function']['name'];
    if (!tools.some((tool) => tool.function.name === name)) {
      throw new InvalidRequestError(
        `Invalid value for 'tool_choice': tool choice '${name}' not found in 'tools' parameter.`,
        'tool_choice',
        'invalid_value',
      );
    }
    return { type: 'function', function: { name } };
  }
  throw new InvalidRequestError(
    "Invalid value for 'tool_choice': expected 'none', 'auto', 'required' or a named function.",
    'tool_choice',
    'invalid_value',
  );
}

function parseMaxTokens(body: Record<string, unknown>): number | undefined {
  for (const key of ['max_completion_tokens', 'max_tokens']) {
    const value = optional(body, key);
    if (value === undefined) continue;
    if (typeof value !== 'number' || !Number.isInteger(value)) throw invalidType(key, 'an integer', value);
    if (value < 1) {
      throw new InvalidRequestError(
        `Invalid '${key}': integer below minimum value. Expected a value >= 1, but got ${value} instead.`,
        key,
        'integer_below_min_value',
      );
    }
    return value;
  }
  return undefined;
}

/**
 * `logit_bias` as OpenAI checks it: token ids (as text) to a bias between -100 and 100, at most
 * 300 of them. Checked only: the emulator's answers do not change with it.
 */
function checkLogitBias(raw: unknown): void {
  if (raw === undefined) return;
  if (!isObject(raw)) throw invalidType('logit_bias', 'an object', raw);
  const entries = Object.entries(raw);
  if (entries.length > 300) throw new InvalidRequestError(`Invalid 'logit_bias': too many tokens (${entries.length}); at most 300 are allowed.`, 'logit_bias', 'invalid_value');
  for (const [token, bias] of entries) {
    if (!/^\d+$/.test(token)) throw new InvalidRequestError(`Invalid key in 'logit_bias': ${JSON.stringify(token)}. Keys must be token ids.`, 'logit_bias', 'invalid_value');
    if (typeof bias !== 'number' || bias < -100 || bias > 100) {
      throw new InvalidRequestError(`Invalid value for 'logit_bias.${token}': expected a number between -100 and 100.`, 'logit_bias', 'invalid_value');
    }
  }
}

/** `logprobs` and `top_logprobs` as OpenAI checks them: alternatives only with logprobs, at most 20. */
function parseLogprobs(body: Record<string, unknown>): { logprobs: boolean; topLogprobs: number } {
  const logprobs = optional(body, 'logprobs') ?? false;
  if (typeof logprobs !== 'boolean') throw invalidType('logprobs', 'a boolean', logprobs);
  const top = optional(body, 'top_logprobs');
  if (top === undefined) return { logprobs, topLogprobs: 0 };
  if (typeof top !== 'number' || !Number.isInteger(top)) throw invalidType('top_logprobs', 'an integer', top);
  if (top < 0 || top > 20) {
    const side = top < 0 ? 'below minimum' : 'above maximum';
    throw new InvalidRequestError(
      `Invalid 'top_logprobs': integer ${side} value. Expected a value ${top < 0 ? '>= 0' : '<= 20'}, but got ${top} instead.`,
      'top_logprobs',
      top < 0 ? 'integer_below_min_value' : 'integer_above_max_value',
    );
  }
  if (!logprobs) throw new InvalidRequestError("Invalid value for 'top_logprobs': 'logprobs' must be true when 'top_logprobs' is given.", 'top_logprobs', 'invalid_value');
  return { logprobs, topLogprobs: top };
}

/** Validates a parsed JSON body as OpenAI does; throws InvalidRequestError on the first problem. */
export function parseChatCompletionRequest(body: unknown): ChatCompletionRequest {
  if (!isObject(body)) throw new InvalidRequestError(`Invalid body: expected an object, but got ${typeName(body)} instead.`, null, 'invalid_type');

  const model = body['model'];
  if (model === undefined || model === null) {
    throw new InvalidRequestError('you must provide a model parameter', 'model', 'missing_required_parameter');
  }
  if (typeof model !== 'string' || model === '') throw invalidType('model', 'a non-empty string', model);

  const rawMessages = body['messages'];
  if (rawMessages === undefined || rawMessages === null) throw missing('messages');
  if (!Array.isArray(rawMessages)) throw invalidType('messages', 'an array', rawMessages);
  if (rawMessages.length === 0) {
    throw new InvalidRequestError(
      "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.",
      'messages',
      'empty_array',
    );
  }
  const messages = rawMessages.map(parseMessage);

  const stream = optional(body, 'stream') ?? false;
  if (typeof stream !== 'boolean') throw invalidType('stream', 'a boolean', stream);

  let includeUsage = false;
  const streamOptions = optional(body, 'stream_options');
  if (streamOptions !== undefined) {
    if (!stream) {
      throw new InvalidRequestError("The 'stream_options' parameter is only allowed when 'stream' is enabled.", 'stream_options', 'invalid_value');
    }
    if (!isObject(streamOptions)) throw invalidType('stream_options', 'an object', streamOptions);
    const flag = streamOptions['include_usage'];
    if (flag !== undefined && typeof flag !== 'boolean') throw invalidType('stream_options.include_usage', 'a boolean', flag);
    includeUsage = flag === true;
  }

  const temperature = optional(body, 'temperature');
  if (temperature !== undefined) {
    if (typeof temperature !== 'number') throw invalidType('temperature', 'a decimal', temperature);
    if (temperature < 0 || temperature > 2) {
      const side = temperature < 0 ? 'below minimum' : 'above maximum';
      const bound = temperature < 0 ? '>= 0' : '<= 2';
      throw new InvalidRequestError(
        `Invalid 'temperature': decimal ${side} value. Expected a value ${bound}, but got ${temperature} instead.`,
        'temperature',
        temperature < 0 ? 'decimal_below_min_value' : 'decimal_above_max_value',
      );
    }
  }

  const tools = parseTools(optional(body, 'tools'));
  const toolChoice = parseToolChoice(optional(body, 'tool_choice'), tools);
  const topP = optional(body, 'top_p');
  if (topP !== undefined && (typeof topP !== 'number' || topP < 0 || topP > 1)) throw invalidType('top_p', 'a decimal between 0 and 1', topP);
  const seed = optional(body, 'seed');
  if (seed !== undefined && !Number.isInteger(seed)) throw invalidType('seed', 'an integer', seed);
  const { logprobs, topLogprobs } = parseLogprobs(body);
  const reasoningEffort = optional(body, 'reasoning_effort');
  if (reasoningEffort !== undefined && !REASONING_EFFORTS.includes(reasoningEffort as ReasoningEffort)) {
    throw new InvalidRequestError(
      `Invalid value: ${JSON.stringify(reasoningEffort)}. Supported values are: 'none', 'minimal', 'low', 'medium', 'high', and 'xhigh'.`,
      'reasoning_effort',
      'invalid_value',
    );
  }
  const verbosity = optional(body, 'verbosity');
  if (verbosity !== undefined && !VERBOSITIES.includes(verbosity as Verbosity)) {
    throw new InvalidRequestError(`Invalid value: ${JSON.stringify(verbosity)}. Supported values are: 'low', 'medium', and 'high'.`, 'verbosity', 'invalid_value');
  }
  checkLogitBias(optional(body, 'logit_bias'));
  const endUser = optional(body, 'user');
  if (endUser !== undefined && typeof endUser !== 'string') throw invalidType('user', 'a string', endUser);
  const parallelToolCalls = optional(body, 'parallel_tool_calls');
  if (parallelToolCalls !== undefined) {
    if (typeof parallelToolCalls !== 'boolean') throw invalidType('parallel_tool_calls', 'a boolean', parallelToolCalls);
    if (tools === undefined || tools.length === 0) {
      throw new InvalidRequestError("Invalid value for 'parallel_tool_calls': 'parallel_tool_calls' is only allowed when 'tools' are specified.", 'parallel_tool_calls', 'invalid_value');
    }
  }

  return {
    model,
    messages,
    stream,
    includeUsage,
    maxTokens: parseMaxTokens(body),
    tools: tools !== undefined && tools.length > 0 ? tools : undefined,
    toolChoice,
    temperature: temperature as number | undefined,
    stop: parseStop(optional(body, 'stop')),
    seed: seed as number | undefined,
    topP: topP as number | undefined,
    responseFormat: parseResponseFormat(optional(body, 'response_format'), messages),
    parallelToolCalls: parallelToolCalls !== false,
    logprobs,
    topLogprobs,
    reasoningEffort: reasoningEffort as ReasoningEffort | undefined,
    verbosity: verbosity as Verbosity | undefined,
    endUser: endUser as string | undefined,
  };
}

/** `response_format` as OpenAI checks it: JSON mode needs the word "json" in the messages. */
function parseResponseFormat(raw: unknown, messages: readonly ChatMessage[]): ChatCompletionRequest['responseFormat'] {
  if (raw === undefined) return undefined;
  if (!isObject(raw)) throw invalidType('response_format', 'an object', raw);
  if (raw['type'] === 'text') return undefined;
  if (raw['type'] === 'json_object') {
    // The text only: a base64 image may spell "json" by chance.
    const mentions = messages.some((m) => contentText(m.content).toLowerCase().includes('json'));
    if (!mentions) throw new InvalidRequestError("'messages' must contain the word 'json' in some form, to use 'response_format' of type 'json_object'.", 'messages', 'invalid_request_error');
    return { type: 'json_object' };
  }
  if (raw['type'] === 'json_schema') {
    const spec = raw['json_schema'];
    if (!isObject(spec) || typeof spec['name'] !== 'string') throw missing('response_format.json_schema.name');
    return { type: 'json_schema', schema: isObject(spec['schema']) ? spec['schema'] : {} };
  }
  throw new InvalidRequestError(`Invalid value: '${String(raw['type'])}'. Supported values are: 'text', 'json_object' and 'json_schema'.`, 'response_format.type', 'invalid_value');
}

/** `stop`: a string or up to 4 of them, as OpenAI takes it. */
function parseStop(raw: unknown): string[] | undefined {
  if (raw === undefined) return undefined;
  const list = typeof raw === 'string' ? [raw] : raw;
  if (!Array.isArray(list) || !list.every((s) => typeof s === 'string' && s !== '')) throw invalidType('stop', 'a string or an array of non-empty strings', raw);
  if (list.length > 4) throw new InvalidRequestError(`Invalid 'stop': array too long. Expected an array with maximum length 4, but got an array with length ${list.length} instead.`, 'stop', 'array_above_max_length');
  return list.length > 0 ? (list as string[]) : undefined;
}
