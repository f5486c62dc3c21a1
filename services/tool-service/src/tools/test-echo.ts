// test_echo (and copies under other names, each with its own limits): a tool for the integration tests only (enabled by TOOL_TEST_TOOLS=1, never in the
// default registry). It echoes, sleeps, fails on request, and counts its real executions.
import { setTimeout as sleep } from 'node:timers/promises';
import { definePlugin } from './contract';

interface EchoArgs {
  text: string;
  delayMs: number;
  fail: boolean;
  fallback: boolean;
}

export function testEcho(name = 'test_echo') {
  let executions = 0;
  return definePlugin<EchoArgs>({
    name,
    description: 'Test tool: echoes its text after delayMs; fails when fail is true.',
    parameters: {
      type: 'object',
      properties: {
        text: { type: 'string', maxLength: 200 },
        delayMs: { type: 'integer', minimum: 0, maximum: 60_000, default: 0 },
        fail: { type: 'boolean', default: false },
        fallback: { type: 'boolean', default: false, description: 'Offer a degraded answer when it cannot run.' },
      },
      required: ['text'],
      additionalProperties: false,
    },
    rateLimit: { maxConcurrent: 1_000, maxPerMinute: 10_000, timeoutMs: 1_000 },
    cache: { enabled: true, ttlSeconds: 60, keyStrategy: 'params' },
    async execute(args, ctx) {
      const execution = ++executions;
      if (args.delayMs > 0) await sleep(args.delayMs, undefined, { signal: ctx.signal });
      if (args.fail) throw new Error(`${name} failed on request`);
      return { text: args.text, pid: process.pid, execution };
    },
    async fallback(args, reason) {
      return args.fallback ? { text: args.text, fallback: true, reason } : undefined;
    },
  });
}
