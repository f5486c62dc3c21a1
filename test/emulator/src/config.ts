// Every knob of the emulator: defaults, the environment variables that set them, and validation.
import { isBehaviour, type Behaviour } from './behaviours';

/** The behaviour of the emulated provider. Everything but `host`, `port` can change live. */
export interface EmulatorConfig {
  /** Interface to listen on. @default "127.0.0.1" (env EMULATOR_HOST) */
  host: string;
  /** Port to listen on; 0 picks a free one. @default 8090 (env EMULATOR_PORT) */
  port: number;
  /** Multiplies every latency and every rate window (0.1 = ten times faster). @default 1 (env EMULATOR_TIME_SCALE) */
  timeScale: number;
  /** Requests admitted per (scaled) minute; 0 = unlimited. @default 0 (env EMULATOR_RPM) */
  rpm: number;
  /**
   * Tokens charged per (scaled) minute: prompt + completion, or with `otpm` set the prompt alone
   * (Anthropic's ITPM: input tokens, charged on arrival, never refunded); 0 = unlimited.
   * @default 0 (env EMULATOR_TPM)
   */
  tpm: number;
  /**
   * Output tokens charged per (scaled) minute, as Anthropic limits them (OTPM): max_tokens (else
   * `completionTokens`) on arrival, corrected at the end to the tokens generated (not under
   * `no_refund`). Set, it makes `tpm` count input tokens alone; 0 = off, `tpm` counts both.
   * @default 0 (env EMULATOR_OTPM)
   */
  otpm: number;
  /** Requests in flight at once; 0 = unlimited. @default 0 (env EMULATOR_MAX_CONCURRENT) */
  maxConcurrent: number;
  /**
   * Quantized limits: RPM, TPM and OTPM are also enforced over this time, before scaling, as buckets of
   * that share of each limit refilled at its rate (OpenAI: "60,000 requests/minute may be enforced
   * as 1,000 requests/second" is 1000); 0 = off. @default 0 (env EMULATOR_LIMIT_QUANTUM_MS)
   */
  limitQuantumMs: number;
  /** Time to first token, before scaling. @default 400 (env EMULATOR_TTFT_MS) */
  ttftMs: number;
  /** Generation speed, before scaling. @default 40 (env EMULATOR_TOKENS_PER_SEC) */
  tokensPerSec: number;
  /** Typical completion length in tokens (answers vary ±25%). @default 80 (env EMULATOR_COMPLETION_TOKENS) */
  completionTokens: number;
  /** Probability (0..1) that an admitted request fails with 500 or 503. @default 0 (env EMULATOR_FAILURE_RATE) */
  failureRate: number;
  /** Probability (0..1) that an admitted request is never answered. @default 0 (env EMULATOR_HANG_RATE) */
  hangRate: number;
  /** Probability (0..1) that the response is cut midway (socket destroyed). @default 0 (env EMULATOR_CUT_RATE) */
  cutRate: number;
  /** Probability that the Critic asks for another round in round 1 (half in round 2, never later). @default 0.5 (env EMULATOR_REVISE_RATE) */
  reviseRate: number;
  /** Seed of the PRNG behind every random choice. @default random (env EMULATOR_SEED) */
  seed: number;
  /** Misbehaviours for every request, each with its probability (see behaviours.ts). @default {} (env EMULATOR_BEHAVIOURS="stream_error=0.1,no_usage") */
  behaviours: Partial<Record<Behaviour, number>>;
  /** Misbehaviours for the next N requests, whatever their probability. @default {} */
  armed: Partial<Record<Behaviour, number>>;
  /** The only accepted API key; empty = any non-empty key. @default "" (env EMULATOR_API_KEY) */
  apiKey: string;
  /**
   * The models served, as a provider's account has them: any other name is answered 404
   * `model_not_found` (with a model suffix of behaviours stripped first). Empty = any name is
   * served and `emulator-1` is listed. @default [] (env EMULATOR_MODELS="gpt-4o-mini,gpt-4o")
   */
  models: string[];
  /** `stall`: silence mid-stream, before scaling. @default 10000 (env EMULATOR_STALL_MS) */
  stallMs: number;
  /** `idle_close`: an idle keep-alive socket is closed after this, before scaling. @default 1000 (env EMULATOR_IDLE_CLOSE_MS) */
  idleCloseMs: number;
  /** `slow_prefill`: time to first token added per prompt token, before scaling. @default 0.25 (env EMULATOR_TTFT_PER_PROMPT_TOKEN_MS) */
  ttftPerPromptTokenMs: number;
  /** `heavy_tail`: Pareto shape of the latency factor (smaller = heavier tail). @default 1.5 (env EMULATOR_TAIL_ALPHA) */
  tailAlpha: number;
  /**
   * Prompt caching: the shortest prefix cached and read, in tokens — Anthropic's per model (1024 for
   * most), OpenAI's 1024, after which it caches in steps of 128. Shorter prefixes are silently not
   * cached. @default 1024 (env EMULATOR_CACHE_MIN_TOKENS)
   */
  cacheMinTokens: number;
  /**
   * Whether the input limit (Anthropic's ITPM) counts the tokens read from the prompt cache, as it
   * does for Anthropic's older models; off, it counts only the uncached input and the tokens written
   * to the cache. OpenAI's TPM counts every prompt token whatever this says.
   * @default false (env EMULATOR_CACHE_READS_LIMITED=1)
   */
  cacheReadsLimited: boolean;
}

/** The fields `configure()` and `POST /_emulator/config` may change while running. */
export type LiveConfig = Omit<EmulatorConfig, 'host' | 'port'>;
export type EmulatorOptions = Partial<EmulatorConfig>;

export const DEFAULT_CONFIG: Readonly<Omit<EmulatorConfig, 'seed'>> = {
  host: '127.0.0.1',
  port: 8090,
  timeScale: 1,
  rpm: 0,
  tpm: 0,
  otpm: 0,
  maxConcurrent: 0,
  limitQuantumMs: 0,
  ttftMs: 400,
  tokensPerSec: 40,
  completionTokens: 80,
  failureRate: 0,
  hangRate: 0,
  cutRate: 0,
  reviseRate: 0.5,
  behaviours: {},
  armed: {},
  apiKey: '',
  models: [],
  stallMs: 10_000,
  idleCloseMs: 1_000,
  ttftPerPromptTokenMs: 0.25,
  tailAlpha: 1.5,
  cacheMinTokens: 1024,
  cacheReadsLimited: false,
};

interface NumberRule {
  env: string;
  min: number;
  max: number;
  integer: boolean;
  /** 0 is refused (for divisors such as timeScale and tokensPerSec). */
  positive?: boolean;
}

type NumberKey = Exclude<keyof LiveConfig, 'behaviours' | 'armed' | 'apiKey' | 'models' | 'cacheReadsLimited'> | 'port';
const NUMBER_RULES: Record<NumberKey, NumberRule> = {
  port: { env: 'EMULATOR_PORT', min: 0, max: 65535, integer: true },
  timeScale: { env: 'EMULATOR_TIME_SCALE', min: 0, max: 1000, integer: false, positive: true },
  rpm: { env: 'EMULATOR_RPM', min: 0, max: Number.MAX_SAFE_INTEGER, integer: true },
  tpm: { env: 'EMULATOR_TPM', min: 0, max: Number.MAX_SAFE_INTEGER, integer: true },
  otpm: { env: 'EMULATOR_OTPM', min: 0, max: Number.MAX_SAFE_INTEGER, integer: true },
  maxConcurrent: { env: 'EMULATOR_MAX_CONCURRENT', min: 0, max: Number.MAX_SAFE_INTEGER, integer: true },
  limitQuantumMs: { env: 'EMULATOR_LIMIT_QUANTUM_MS', min: 0, max: 60_000, integer: false },
  ttftMs: { env: 'EMULATOR_TTFT_MS', min: 0, max: 3_600_000, integer: false },
  tokensPerSec: { env: 'EMULATOR_TOKENS_PER_SEC', min: 0, max: 1_000_000, integer: false, positive: true },
  completionTokens: { env: 'EMULATOR_COMPLETION_TOKENS', min: 1, max: 100_000, integer: true },
  failureRate: { env: 'EMULATOR_FAILURE_RATE', min: 0, max: 1, integer: false },
  hangRate: { env: 'EMULATOR_HANG_RATE', min: 0, max: 1, integer: false },
  cutRate: { env: 'EMULATOR_CUT_RATE', min: 0, max: 1, integer: false },
  reviseRate: { env: 'EMULATOR_REVISE_RATE', min: 0, max: 1, integer: false },
  seed: { env: 'EMULATOR_SEED', min: 0, max: 0xffffffff, integer: true },
  stallMs: { env: 'EMULATOR_STALL_MS', min: 0, max: 3_600_000, integer: false },
  idleCloseMs: { env: 'EMULATOR_IDLE_CLOSE_MS', min: 1, max: 3_600_000, integer: false },
  ttftPerPromptTokenMs: { env: 'EMULATOR_TTFT_PER_PROMPT_TOKEN_MS', min: 0, max: 1_000, integer: false },
  tailAlpha: { env: 'EMULATOR_TAIL_ALPHA', min: 0, max: 100, integer: false, positive: true },
  cacheMinTokens: { env: 'EMULATOR_CACHE_MIN_TOKENS', min: 0, max: Number.MAX_SAFE_INTEGER, integer: true },
};

/** `{name: number}` with known behaviour names; `max` bounds each value (1 for probabilities). */
function checkBehaviourMap(key: string, value: unknown, max: number, integer: boolean): Partial<Record<Behaviour, number>> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new ConfigError(`${key}: expected an object of behaviour names to numbers`);
  const out: Partial<Record<Behaviour, number>> = {};
  for (const [name, n] of Object.entries(value as Record<string, unknown>)) {
    if (!isBehaviour(name)) throw new ConfigError(`${key}: unknown behaviour "${name}"`);
    if (typeof n !== 'number' || !Number.isFinite(n) || n < 0 || n > max || (integer && !Number.isInteger(n))) {
      throw new ConfigError(`${key}.${name}: expected ${integer ? 'an integer' : 'a number'} from 0 to ${max}, got ${JSON.stringify(n)}`);
    }
    out[name] = n;
  }
  return out;
}

/** `stream_error=0.1,no_usage` (no value: always) → {stream_error: 0.1, no_usage: 1}. */
export function parseBehaviourRates(text: string, source: string): Partial<Record<Behaviour, number>> {
  const raw: Record<string, number> = {};
  for (const part of text.split(/[\s,]+/).filter(Boolean)) {
    const [name = '', rate] = part.split('=');
    raw[name] = rate === undefined ? 1 : Number(rate);
  }
  return checkBehaviourMap(source, raw, 1, false);
}

export class ConfigError extends Error {
  override readonly name = 'ConfigError';
}

function checkNumber(key: keyof typeof NUMBER_RULES, value: unknown, source: string): number {
  const rule = NUMBER_RULES[key];
  if (typeof value !== 'number' || !Number.isFinite(value)) {
    throw new ConfigError(`${source}: expected a number, got ${JSON.stringify(value)}`);
  }
  if (rule.integer && !Number.isInteger(value)) {
    throw new ConfigError(`${source}: expected an integer, got ${value}`);
  }
  if (value < rule.min || value > rule.max || (rule.positive === true && value === 0)) {
    const lower = rule.positive === true ? `> ${rule.min}` : `>= ${rule.min}`;
    throw new ConfigError(`${source}: expected a value ${lower} and <= ${rule.max}, got ${value}`);
  }
  return value;
}

/**
 * Checks a partial configuration (from code or from `POST /_emulator/config`).
 * Unknown keys are refused so that a misspelled knob fails loudly instead of doing nothing.
 */
export function validateConfigPatch(patch: unknown, allowListen: boolean): Partial<EmulatorConfig> {
  if (typeof patch !== 'object' || patch === null || Array.isArray(patch)) {
    throw new ConfigError('configuration must be a JSON object');
  }
  const out: Partial<EmulatorConfig> = {};
  for (const [key, value] of Object.entries(patch as Record<string, unknown>)) {
    if (value === undefined) continue;
    if (key === 'host') {
      if (!allowListen) throw new ConfigError('host cannot change while running');
      if (typeof value !== 'string' || value === '') throw new ConfigError('host: expected a non-empty string');
      out.host = value;
    } else if (key === 'port' && !allowListen) {
      throw new ConfigError('port cannot change while running');
    } else if (key === 'behaviours') {
      out.behaviours = checkBehaviourMap(key, value, 1, false);
    } else if (key === 'armed') {
      out.armed = checkBehaviourMap(key, value, Number.MAX_SAFE_INTEGER, true);
    } else if (key === 'apiKey') {
      if (typeof value !== 'string') throw new ConfigError('apiKey: expected a string');
      out.apiKey = value;
    } else if (key === 'models') {
      if (!Array.isArray(value) || !value.every((m) => typeof m === 'string' && m !== '' && !m.includes('+'))) {
        throw new ConfigError('models: expected an array of model names (non-empty, without "+")');
      }
      out.models = [...value] as string[];
    } else if (key === 'cacheReadsLimited') {
      if (typeof value !== 'boolean') throw new ConfigError('cacheReadsLimited: expected a boolean');
      out.cacheReadsLimited = value;
    } else if (key in NUMBER_RULES) {
      const k = key as keyof typeof NUMBER_RULES;
      out[k] = checkNumber(k, value, key);
    } else {
      throw new ConfigError(`unknown configuration key "${key}"`);
    }
  }
  return out;
}

export function randomSeed(): number {
  return Math.floor(Math.random() * 0xffffffff) >>> 0;
}

/** Merges options over the defaults, validating them. */
export function resolveConfig(options: EmulatorOptions = {}): EmulatorConfig {
  const checked = validateConfigPatch(options, true);
  return { ...DEFAULT_CONFIG, behaviours: {}, armed: {}, models: [], seed: randomSeed(), ...checked };
}

/** Reads the EMULATOR_* variables; an invalid value throws a ConfigError naming the variable. */
export function configFromEnv(env: NodeJS.ProcessEnv): EmulatorConfig {
  const options: EmulatorOptions = {};
  const host = env['EMULATOR_HOST'];
  if (host !== undefined && host !== '') options.host = host;
  const behaviours = env['EMULATOR_BEHAVIOURS'];
  if (behaviours !== undefined && behaviours.trim() !== '') options.behaviours = parseBehaviourRates(behaviours, 'EMULATOR_BEHAVIOURS');
  const apiKey = env['EMULATOR_API_KEY'];
  if (apiKey !== undefined) options.apiKey = apiKey;
  const models = env['EMULATOR_MODELS'];
  if (models !== undefined) options.models = models.split(',').map((m) => m.trim()).filter(Boolean);
  const readsLimited = env['EMULATOR_CACHE_READS_LIMITED']?.trim();
  if (readsLimited !== undefined && readsLimited !== '') {
    if (!['0', '1', 'true', 'false'].includes(readsLimited)) throw new ConfigError(`EMULATOR_CACHE_READS_LIMITED: expected 1 or 0, got "${readsLimited}"`);
    options.cacheReadsLimited = readsLimited === '1' || readsLimited === 'true';
  }
  for (const [key, rule] of Object.entries(NUMBER_RULES) as [keyof typeof NUMBER_RULES, NumberRule][]) {
    const raw = env[rule.env];
    if (raw === undefined || raw.trim() === '') continue;
    const value = Number(raw);
    if (!Number.isFinite(value)) throw new ConfigError(`${rule.env}: expected a number, got "${raw}"`);
    options[key] = checkNumber(key, value, rule.env);
  }
  return resolveConfig(options);
}
