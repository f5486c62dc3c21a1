// Structured logs (pino) carrying the active trace id; secrets and message bodies are redacted.
import { trace } from '@opentelemetry/api';
import pino from 'pino';
import { processVars, read } from '../config';

export type Logger = pino.Logger;

export const REDACTED = '[Redacted]';

/** Keys whose values never reach a log line, at any of the first DEPTH levels of what is logged. */
const SECRET_KEYS = ['authorization', 'token', 'apiKey', 'api_key', 'password', 'secret'];
/** Message bodies: logged only at debug. */
const BODY_KEYS = ['content', 'messages'];
/** How deep the keys are looked for: `{ req: { headers: { authorization } } }` is three levels. */
const DEPTH = 3;

/**
 * `value` with what `hidden` names censored, down to `depth` levels; the same reference when there
 * is nothing to censor (the common case: no copy), otherwise a copy (the caller's objects are never
 * changed; an Error's copy is still an Error of its class, with its message and stack).
 */
export function scrub(value: unknown, hidden: ReadonlySet<string>, depth = DEPTH): unknown {
  if (depth === 0 || typeof value !== 'object' || value === null || ArrayBuffer.isView(value)) return value;
  if (Array.isArray(value)) {
    let out: unknown[] | undefined;
    for (let i = 0; i < value.length; i += 1) {
      const v = scrub(value[i], hidden, depth - 1);
      if (v !== value[i]) (out ??= [...value])[i] = v;
    }
    return out ?? value;
  }
  let out: object | undefined;
  const src = value as Record<string, unknown>;
  for (const key of Object.keys(src)) {
    const v = hidden.has(key) ? REDACTED : scrub(src[key], hidden, depth - 1);
    if (v === src[key]) continue;
    out ??= copyOf(src);
    Object.defineProperty(out, key, { value: v, enumerable: true, writable: true, configurable: true });
  }
  return out ?? value;
}

/**
 * A shallow copy with the same prototype and own properties, made configurable; an accessor's
 * value is read (an Error's `stack` is one, which answers only on the Error itself).
 */
function copyOf(value: object): object {
  const proto = Object.getPrototypeOf(value) as object | null;
  if (proto === Object.prototype || proto === null) return { ...value };
  const props = Object.getOwnPropertyDescriptors(value);
  for (const [key, p] of Object.entries(props)) {
    props[key] = p.get || p.set ? { value: (value as Record<string, unknown>)[key], enumerable: p.enumerable, writable: true, configurable: true } : { ...p, configurable: true };
  }
  return Object.create(proto, props) as object;
}

export function createLogger(service: string, level = read(processVars.LOG_LEVEL), destination?: pino.DestinationStream): Logger {
  const debug = level === 'debug' || level === 'trace';
  // Bodies only appear when debug logging is asked for.
  const hidden = new Set(debug ? SECRET_KEYS : [...SECRET_KEYS, ...BODY_KEYS]);
  // Not pino's `redact`: its wildcard paths (`*.token`) clone and stringify every value of every
  // line apart, ~9 µs a line; this walk costs well under one when there is nothing to hide.
  const options: pino.LoggerOptions = {
    name: service,
    level,
    base: { service },
    formatters: { log: (obj) => scrub(obj, hidden) as Record<string, unknown> },
    // A child logger's bindings (pino formats only the root's): censored by key.
    serializers: Object.fromEntries([...hidden].map((k) => [k, () => REDACTED])),
    mixin() {
      const ctx = trace.getActiveSpan()?.spanContext();
      return ctx ? { trace_id: ctx.traceId, span_id: ctx.spanId } : {};
    },
  };
  return destination ? pino(options, destination) : pino(options);
}
