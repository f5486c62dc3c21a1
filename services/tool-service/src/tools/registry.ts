// The tool registry: every plugin, its argument validator, and per-deployment overrides of its
// limits and cache. Adding a tool = one file in this folder + one line in `defaultTools`.
import Ajv, { type ErrorObject, type ValidateFunction } from 'ajv';
import { calculator } from './calculator';
import type { ToolPlugin, ToolCachePolicy, ToolRateLimit } from './contract';
import { currentTime } from './current-time';
import type { ToolDeps } from './deps';
import { plan } from './plan';
import { searchWeb } from './search-web';
import { testEcho } from './test-echo';

/** The production tools. */
export function defaultTools(deps: ToolDeps): ToolPlugin[] {
  return [searchWeb(deps), plan(), calculator(), currentTime()];
}

/** Tools that only tests switch on: copies of one echo tool, so that each test has its own limiter. */
export function testTools(): ToolPlugin[] {
  return [testEcho('test_echo'), testEcho('test_quota'), testEcho('test_slots')];
}

/** Per-tool overrides of limits and cache (from TOOL_OVERRIDES), e.g. a smaller quota in a test. */
export type ToolOverrides = Record<string, { rateLimit?: Partial<ToolRateLimit>; cache?: Partial<Omit<ToolCachePolicy, 'keyStrategy'>> }>;

export interface RegisteredTool {
  plugin: ToolPlugin;
  /** Validates and normalises (fills defaults in) the arguments; returns a message naming the field on failure. */
  validate(args: unknown): { ok: true; args: Record<string, unknown> } | { ok: false; message: string };
}

export class ToolRegistry {
  private readonly tools = new Map<string, RegisteredTool>();
  private readonly ajv = new Ajv({ allErrors: true, useDefaults: true, strict: false, coerceTypes: false });

  constructor(plugins: ToolPlugin[], overrides: ToolOverrides = {}) {
    for (const original of plugins) {
      if (!/^[a-z][a-z0-9_]{0,63}$/.test(original.name)) throw new Error(`tool name "${original.name}" must be lower snake case`);
      if (this.tools.has(original.name)) throw new Error(`tool "${original.name}" is registered twice`);
      const o = overrides[original.name];
      const plugin: ToolPlugin = o
        ? { ...original, rateLimit: { ...original.rateLimit, ...o.rateLimit }, cache: { ...original.cache, ...o.cache } }
        : original;
      const check: ValidateFunction = this.ajv.compile(plugin.parameters);
      this.tools.set(plugin.name, {
        plugin,
        validate: (args) => {
          // Validation fills in defaults, so it works on a copy of the caller's object.
          const copy = structuredClone(args);
          return check(copy) ? { ok: true, args: copy as Record<string, unknown> } : { ok: false, message: describeErrors(check.errors ?? []) };
        },
      });
    }
    for (const name of Object.keys(overrides)) {
      if (!this.tools.has(name)) throw new Error(`TOOL_OVERRIDES names unknown tool "${name}"`);
    }
  }

  get(name: string): RegisteredTool | undefined {
    return this.tools.get(name);
  }

  list(): ToolPlugin[] {
    return [...this.tools.values()].map((t) => t.plugin);
  }

  names(): string[] {
    return [...this.tools.keys()];
  }
}

/** ajv errors as one sentence per problem, each naming the field (`limit: must be <= 20`). */
export function describeErrors(errors: ErrorObject[]): string {
  const seen = new Set<string>();
  for (const e of errors) {
    // `if/then` failures repeat the real error ("must match then schema"): skip the wrapper.
    if (e.keyword === 'if') continue;
    const field = e.instancePath.replace(/^\//, '').replace(/\//g, '.');
    let msg: string;
    switch (e.keyword) {
      case 'required':
        msg = `${join(field, String(e.params.missingProperty))}: is required`;
        break;
      case 'additionalProperties':
        msg = `${join(field, String(e.params.additionalProperty))}: is not a known parameter`;
        break;
      case 'enum':
        msg = `${field || 'arguments'}: must be one of ${(e.params.allowedValues as unknown[]).map((v) => JSON.stringify(v)).join(', ')}`;
        break;
      default:
        msg = `${field || 'arguments'}: ${e.message ?? 'is invalid'}`;
    }
    seen.add(msg);
  }
  return [...seen].join('; ') || 'arguments are invalid';
}

function join(parent: string, child: string): string {
  return parent ? `${parent}.${child}` : child;
}
