import fs from 'node:fs';
import path from 'node:path';
import { DeferredExporter, instrumentationsFor, SERVICE_INSTRUMENTATIONS, tracedAlready } from './setup';

const SERVICES = path.resolve(__dirname, '../../..');

/** Every .ts file of a service's src, tests left out. */
function sources(service: string): string {
  const out: string[] = [];
  const walk = (dir: string) => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name.endsWith('.ts') && !e.name.endsWith('.test.ts')) out.push(fs.readFileSync(p, 'utf8'));
    }
  };
  walk(path.join(SERVICES, service, 'src'));
  return out.join('\n');
}

describe('SERVICE_INSTRUMENTATIONS', () => {
  // What a service's code uses, as its imports show it; the service's entry in the table must
  // instrument it (a new client library without its instrumentation would drop out of the traces).
  const uses: Record<string, RegExp> = {
    mongodb: /from 'mongodb'/,
    ioredis: /createRedis\(|from 'ioredis'/,
    undici: /from 'undici'|\bfetch\(/,
  };
  test.each(Object.keys(SERVICE_INSTRUMENTATIONS))('%s instruments every client library it uses', (service) => {
    const code = sources(service);
    const needed = Object.entries(uses).filter(([, re]) => re.test(code)).map(([name]) => name);
    expect(needed.length).toBeGreaterThan(0);
    for (const name of needed) expect({ service, instruments: SERVICE_INSTRUMENTATIONS[service]!.includes(name) ? name : undefined }).toEqual({ service, instruments: name });
  });

  // No http instrumentation: a fastify server traces its requests itself (traceHttpRequest).
  test('the edge, the one service with an HTTP server (fastify), traces its requests', () => {
    const servers = Object.keys(SERVICE_INSTRUMENTATIONS).filter((service) => /from 'fastify'/.test(sources(service)));
    expect(servers).toEqual(['edge']);
    expect(sources('edge')).toMatch(/traceHttpRequest\(req\.raw, reply\.raw/);
  });

  test('names exactly the five services, and an unknown name gets every instrumentation', () => {
    expect(Object.keys(SERVICE_INSTRUMENTATIONS).sort()).toEqual(fs.readdirSync(SERVICES).filter((d) => d !== 'common').sort());
    const names = instrumentationsFor('something-else').map((i) => i.instrumentationName);
    expect(names).toHaveLength(3);
    expect(instrumentationsFor('store').map((i) => i.instrumentationName).sort()).toEqual(['@opentelemetry/instrumentation-mongodb']);
  });
});

describe('tracedAlready (the undici instrumentation skips what the mesh traced itself)', () => {
  const traceparent = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
  test('a request with a trace context in its headers (undici 6+: [name, value, …]) is skipped, whatever the case', () => {
    expect(tracedAlready({ headers: ['content-type', 'application/json', 'traceparent', traceparent] })).toBe(true);
    expect(tracedAlready({ headers: ['TraceParent', traceparent] })).toBe(true);
    expect(tracedAlready({ headers: ['content-type', 'application/json', 'x-traceparent-note', 'traceparent'] })).toBe(false);
    expect(tracedAlready({ headers: [] })).toBe(false);
  });
  test('the same with headers as one string (undici 5)', () => {
    expect(tracedAlready({ headers: `accept: */*\r\ntraceparent: ${traceparent}\r\n` })).toBe(true);
    expect(tracedAlready({ headers: `traceparent: ${traceparent}\r\n` })).toBe(true);
    expect(tracedAlready({ headers: 'accept: */*\r\nx-note: traceparent: no\r\n' })).toBe(false);
  });
});

describe('DeferredExporter', () => {
  test('makes the real exporter at the first export only, and passes every call through', async () => {
    const calls: string[] = [];
    const deferred = new DeferredExporter(() => {
      calls.push('made');
      return {
        export: (spans, done) => { calls.push(`export ${spans.length}`); done({ code: 0 }); },
        shutdown: async () => { calls.push('shutdown'); },
        forceFlush: async () => { calls.push('flush'); },
      };
    });
    await deferred.forceFlush();
    expect(deferred.made).toBe(false);
    const result = await new Promise((resolve) => deferred.export([{} as never, {} as never], resolve));
    deferred.export([{} as never], () => undefined);
    await deferred.forceFlush();
    await deferred.shutdown();
    expect(result).toEqual({ code: 0 });
    expect(calls).toEqual(['made', 'export 2', 'export 1', 'flush', 'shutdown']);
  });

  test('a shutdown before any export makes nothing', async () => {
    let made = false;
    const deferred = new DeferredExporter(() => { made = true; throw new Error('not wanted'); });
    await deferred.shutdown();
    expect(made).toBe(false);
  });
});
