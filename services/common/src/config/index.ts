// Typed configuration from environment variables: one place that knows every variable's default,
// and a start-up error that names any missing or malformed one.

export class ConfigError extends Error {
  override name = 'ConfigError';
}

type Env = Record<string, string | undefined>;

export interface VarSpec<T> {
  /** Environment variable name. */
  env: string;
  /** Default when unset; omit to make the variable required. */
  default?: T;
  /** What the variable is for (shown in errors). */
  doc?: string;
}

function raw(env: Env, spec: VarSpec<unknown>): string | undefined {
  const v = env[spec.env];
  return v === undefined || v === '' ? undefined : v;
}

function missing(spec: VarSpec<unknown>): never {
  throw new ConfigError(`missing required environment variable ${spec.env}${spec.doc ? ` (${spec.doc})` : ''}`);
}

export function str(spec: VarSpec<string>, env: Env = process.env): string {
  const v = raw(env, spec);
  if (v !== undefined) return v;
  if (spec.default !== undefined) return spec.default;
  return missing(spec);
}

export function int(spec: VarSpec<number> & { min?: number; max?: number }, env: Env = process.env): number {
  const v = raw(env, spec);
  if (v === undefined) {
    if (spec.default !== undefined) return spec.default;
    return missing(spec);
  }
  const n = Number(v);
  if (!Number.isInteger(n)) throw new ConfigError(`${spec.env} must be an integer, got "${v}"`);
  if (spec.min !== undefined && n < spec.min) throw new ConfigError(`${spec.env} must be >= ${spec.min}, got ${n}`);
  if (spec.max !== undefined && n > spec.max) throw new ConfigError(`${spec.env} must be <= ${spec.max}, got ${n}`);
  return n;
}

export function num(spec: VarSpec<number> & { min?: number }, env: Env = process.env): number {
  const v = raw(env, spec);
  if (v === undefined) {
    if (spec.default !== undefined) return spec.default;
    return missing(spec);
  }
  const n = Number(v);
  if (!Number.isFinite(n)) throw new ConfigError(`${spec.env} must be a number, got "${v}"`);
  if (spec.min !== undefined && n < spec.min) throw new ConfigError(`${spec.env} must be >= ${spec.min}, got ${n}`);
  return n;
}

export function bool(spec: VarSpec<boolean>, env: Env = process.env): boolean {
  const v = raw(env, spec);
  if (v === undefined) {
    if (spec.default !== undefined) return spec.default;
    return missing(spec);
  }
  if (/^(1|true|yes|on)$/i.test(v)) return true;
  if (/^(0|false|no|off)$/i.test(v)) return false;
  throw new ConfigError(`${spec.env} must be true or false, got "${v}"`);
}

/** A `host:port` peer address. */
export function addr(spec: VarSpec<string>, env: Env = process.env): string {
  const v = str(spec, env);
  if (!/^[\w.\-]+:\d{1,5}$|^\[[0-9a-f:]+\]:\d{1,5}$/i.test(v)) {
    throw new ConfigError(`${spec.env} must be host:port, got "${v}"`);
  }
  return v;
}

/** One `host:port`, or a comma-separated list of them (the replicas of a peer, balanced by gRPC). */
export function addrList(spec: VarSpec<string>, env: Env = process.env): string {
  const v = str(spec, env);
  for (const a of v.split(',')) addr({ env: spec.env }, { [spec.env]: a.trim() });
  return v;
}

/** Shared infrastructure variables, with the defaults of the local stack (deploy/local). */
export const infra = {
  redisUrl: (env: Env = process.env) => str({ env: 'REDIS_URL', default: 'redis://127.0.0.1:6379' }, env),
  peer: (service: 'ORCHESTRATOR' | 'LLM_BROKER' | 'TOOL_SERVICE' | 'STORE', env: Env = process.env) =>
    addrList({ env: `${service}_ADDR`, default: `127.0.0.1:${DEFAULT_PORTS[service]}` }, env),
  /**
   * The interface every listener of a service binds (gRPC, metrics, the edge's HTTP):
   * `<SERVICE>_HOST`, 127.0.0.1 by default (a developer's machine); images and manifests set 0.0.0.0.
   */
  bindHost: (service: keyof typeof DEFAULT_PORTS, env: Env = process.env) =>
    str({ env: `${service}_HOST`, default: '127.0.0.1' }, env),
  /** The whole shutdown budget, split into phases by lifecycle/shutdown.ts. */
  shutdownGraceMs: (env: Env = process.env) => int({ env: 'SHUTDOWN_GRACE_MS', default: 10_000, min: 0 }, env),
};

export const DEFAULT_PORTS = {
  EDGE: 8080,
  ORCHESTRATOR: 50051,
  LLM_BROKER: 50052,
  TOOL_SERVICE: 50053,
  STORE: 50054,
} as const;

/** Port of a service's HTTP side channel (Prometheus /metrics, JSON /metrics.json): gRPC port + 1000. */
export function metricsPortFor(grpcPort: number): number {
  return grpcPort + 1000;
}
