// Typed configuration from environment variables. Each service declares every variable it reads
// once, as a spec (name, type, default, description) in its `src/config.ts`; `read` is the only
// way a value is taken from the environment, so a default is written in its spec and nowhere
// else, and the configuration tables of docs/configuration.md are generated from the specs (`npm run docs`,
// see ./docs.ts). A missing or malformed variable is a ConfigError that names it.

export class ConfigError extends Error {
  override name = 'ConfigError';
}

export type Env = Record<string, string | undefined>;

interface Described {
  /** What the variable is for: docs/configuration.md's description. */
  doc: string;
  /**
   * What docs/configuration.md shows as the default when the code derives it from other values (the reader
   * then passes it as `read`'s fallback), or when the variable may stay unset or is required
   * only with another one.
   */
  defaultDoc?: string;
}

export type VarSpec =
  | (Described & { type: 'string'; default?: string; /** The accepted values, if only some are. */ values?: readonly string[] })
  /** One `host:port` (a DNS name or an address). */
  | (Described & { type: 'addr'; default?: string })
  /** One `host:port`, or a comma-separated list of them (the replicas of a peer, balanced by gRPC). */
  | (Described & { type: 'addrList'; default?: string })
  | (Described & { type: 'int' | 'number'; default?: number; min?: number; max?: number })
  | (Described & { type: 'bool'; default?: boolean });

/** A spec with its variable's name. */
export type Var = VarSpec & { env: string };

/** The type `read` returns for a spec. */
export type ValueOf<V extends VarSpec> = V extends { type: 'int' | 'number' } ? number : V extends { type: 'bool' } ? boolean : string;

/** Names the specs after their keys: `defineVars({ LLM_RPM: { type: 'int', … } }).LLM_RPM.env === 'LLM_RPM'`. */
export function defineVars<const T extends Record<string, VarSpec>>(specs: T): { [K in keyof T & string]: T[K] & { env: K } } {
  const out: Record<string, Var> = {};
  for (const [env, spec] of Object.entries(specs)) out[env] = { ...spec, env };
  return out as { [K in keyof T & string]: T[K] & { env: K } };
}

const HOST_PORT = /^[\w.\-]+:\d{1,5}$|^\[[0-9a-f:]+\]:\d{1,5}$/i;

/**
 * The variable's value from `env`: parsed and checked as its spec says; unset or empty → the
 * spec's default, else `fallback` (a default derived from other values), else a ConfigError.
 */
export function read<V extends Var>(v: V, env: Env = process.env, fallback?: ValueOf<V>): ValueOf<V> {
  const text = env[v.env];
  if (text === undefined || text === '') {
    const d = v.default ?? fallback;
    if (d === undefined) throw new ConfigError(`missing required environment variable ${v.env} (${v.defaultDoc ?? v.doc})`);
    return d as ValueOf<V>;
  }
  return parse(v, text) as ValueOf<V>;
}

function parse(v: Var, text: string): string | number | boolean {
  switch (v.type) {
    case 'string':
      if (v.values && !v.values.includes(text)) throw new ConfigError(`${v.env} must be ${v.values.slice(0, -1).join(', ')} or ${v.values.at(-1)}, got "${text}"`);
      return text;
    case 'addr':
      if (!HOST_PORT.test(text)) throw new ConfigError(`${v.env} must be host:port, got "${text}"`);
      return text;
    case 'addrList':
      for (const a of text.split(',')) parse({ ...v, type: 'addr' }, a.trim());
      return text;
    case 'int':
    case 'number': {
      const n = Number(text);
      if (v.type === 'int' ? !Number.isInteger(n) : !Number.isFinite(n)) throw new ConfigError(`${v.env} must be ${v.type === 'int' ? 'an integer' : 'a number'}, got "${text}"`);
      if (v.min !== undefined && n < v.min) throw new ConfigError(`${v.env} must be >= ${v.min}, got ${n}`);
      if (v.max !== undefined && n > v.max) throw new ConfigError(`${v.env} must be <= ${v.max}, got ${n}`);
      return n;
    }
    case 'bool':
      if (/^(1|true|yes|on)$/i.test(text)) return true;
      if (/^(0|false|no|off)$/i.test(text)) return false;
      throw new ConfigError(`${v.env} must be true or false, got "${text}"`);
  }
}

/** A comma-separated list, trimmed, without empty entries. */
export function list(text: string): string[] {
  return text.split(',').map((s) => s.trim()).filter(Boolean);
}
