// Every knob of the emulator: defaults, the environment variables that set them, and validation.

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
  /** Tokens charged per (scaled) minute; 0 = unlimited. @default 0 (env EMULATOR_TPM) */
  tpm: number;
  /** Requests in flight at once; 0 = unlimited. @default 0 (env EMULATOR_MAX_CONCURRENT) */
  maxConcurrent: number;
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
  maxConcurrent: 0,
  ttftMs: 400,
  tokensPerSec: 40,
  completionTokens: 80,
  failureRate: 0,
  hangRate: 0,
  cutRate: 0,
  reviseRate: 0.5,
};

interface NumberRule {
  env: string;
  min: number;
  max: number;
  integer: boolean;
  /** 0 is refused (for divisors such as timeScale and tokensPerSec). */
  positive?: boolean;
}

const NUMBER_RULES: Record<keyof LiveConfig | 'port', NumberRule> = {
  port: { env: 'EMULATOR_PORT', min: 0, max: 65535, integer: true },
  timeScale: { env: 'EMULATOR_TIME_SCALE', min: 0, max: 1000, integer: false, positive: true },
  rpm: { env: 'EMULATOR_RPM', min: 0, max: Number.MAX_SAFE_INTEGER, integer: true },
  tpm: { env: 'EMULATOR_TPM', min: 0, max: Number.MAX_SAFE_INTEGER, integer: true },
  maxConcurrent: { env: 'EMULATOR_MAX_CONCURRENT', min: 0, max: Number.MAX_SAFE_INTEGER, integer: true },
  ttftMs: { env: 'EMULATOR_TTFT_MS', min: 0, max: 3_600_000, integer: false },
  tokensPerSec: { env: 'EMULATOR_TOKENS_PER_SEC', min: 0, max: 1_000_000, integer: false, positive: true },
  completionTokens: { env: 'EMULATOR_COMPLETION_TOKENS', min: 1, max: 100_000, integer: true },
  failureRate: { env: 'EMULATOR_FAILURE_RATE', min: 0, max: 1, integer: false },
  hangRate: { env: 'EMULATOR_HANG_RATE', min: 0, max: 1, integer: false },
  cutRate: { env: 'EMULATOR_CUT_RATE', min: 0, max: 1, integer: false },
  reviseRate: { env: 'EMULATOR_REVISE_RATE', min: 0, max: 1, integer: false },
  seed: { env: 'EMULATOR_SEED', min: 0, max: 0xffffffff, integer: true },
};

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
  return { ...DEFAULT_CONFIG, seed: randomSeed(), ...checked };
}

/** Reads the EMULATOR_* variables; an invalid value throws a ConfigError naming the variable. */
export function configFromEnv(env: NodeJS.ProcessEnv): EmulatorConfig {
  const options: EmulatorOptions = {};
  const host = env['EMULATOR_HOST'];
  if (host !== undefined && host !== '') options.host = host;
  for (const [key, rule] of Object.entries(NUMBER_RULES) as [keyof typeof NUMBER_RULES, NumberRule][]) {
    const raw = env[rule.env];
    if (raw === undefined || raw.trim() === '') continue;
    const value = Number(raw);
    if (!Number.isFinite(value)) throw new ConfigError(`${rule.env}: expected a number, got "${raw}"`);
    options[key] = checkNumber(key, value, rule.env);
  }
  return resolveConfig(options);
}
