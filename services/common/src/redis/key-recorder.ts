// A stand-in for Redis that records the keys each script and each transaction would touch, for
// unit tests that check they are all in one cluster slot (the real cluster is in the e2e tests).
// Scripts defined with `defineCommand` get their KEYS from `numberOfKeys` (or, without it, from
// the first argument, as ioredis does); a MULTI's keys are each queued command's first argument
// (ZUNIONSTORE's sources too).
import type { Redis } from './index';

export interface RecordedCall {
  /** The script's name, or `multi`. */
  name: string;
  keys: string[];
}

export function keyRecorder(replies: Record<string, unknown> = {}): { redis: Redis; calls: RecordedCall[] } {
  const calls: RecordedCall[] = [];
  const scripts = new Map<string, number | undefined>();
  const target: Record<string, unknown> = {
    status: 'ready',
    defineCommand: (name: string, def: { numberOfKeys?: number }) => scripts.set(name, def.numberOfKeys),
    multi: () => {
      const keys: string[] = [];
      const chain: Record<string, unknown> = new Proxy({}, {
        get: (_, command: string) => {
          if (command === 'exec') return () => {
            calls.push({ name: 'multi', keys });
            return Promise.resolve([]);
          };
          return (...args: unknown[]) => {
            keys.push(String(args[0]));
            if (command === 'zunionstore') keys.push(...args.slice(2, 2 + Number(args[1])).map(String));
            return chain;
          };
        },
      });
      return chain;
    },
  };
  const redis = new Proxy(target, {
    get: (t, prop: string) => {
      if (prop in t) return t[prop];
      if (scripts.has(prop)) {
        return (...args: unknown[]) => {
          const n = scripts.get(prop);
          const keys = n === undefined ? args.slice(1, 1 + Number(args[0])) : args.slice(0, n);
          calls.push({ name: prop, keys: keys.map(String) });
          return Promise.resolve(replies[prop] ?? null);
        };
      }
      // Single-key commands: answered from `replies`, nothing to check.
      return () => Promise.resolve(replies[prop] ?? null);
    },
  });
  return { redis: redis as unknown as Redis, calls };
}
