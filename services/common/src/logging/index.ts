// Structured logs (pino) carrying the active trace id; secrets and message bodies are redacted.
import { trace } from '@opentelemetry/api';
import pino from 'pino';
import { processVars, read } from '../config';

export type Logger = pino.Logger;

const REDACT = [
  'authorization',
  'token',
  'apiKey',
  'api_key',
  'password',
  'secret',
  '*.authorization',
  '*.token',
  '*.apiKey',
  '*.password',
  '*.secret',
  'req.headers.authorization',
  'headers.authorization',
  'content',
  '*.content',
  'messages',
  '*.messages',
];

export function createLogger(service: string, level = read(processVars.LOG_LEVEL)): Logger {
  const debug = level === 'debug' || level === 'trace';
  return pino({
    name: service,
    level,
    base: { service },
    // Bodies only appear when debug logging is asked for.
    redact: debug ? REDACT.filter((p) => !/content|messages/.test(p)) : REDACT,
    mixin() {
      const ctx = trace.getActiveSpan()?.spanContext();
      return ctx ? { trace_id: ctx.traceId, span_id: ctx.spanId } : {};
    },
  });
}
