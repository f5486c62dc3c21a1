// The public contract, checked from the description itself: requests are generated (fast-check)
// from /docs/json — valid ones from each operation's schemas, broken ones by breaking one part —
// and every answer must be a status the operation documents, with a body its schema accepts;
// a schema-valid request is never refused as invalid (400), a schema-violating one always is;
// an unsupported method on a known path is 405 with Allow. The edge runs against in-memory peers.
import Ajv from 'ajv';
import addFormats from 'ajv-formats';
import fc from 'fast-check';
import { createLogger } from '@agent-mesh/common';
import { buildApp, type EdgeApp } from './app';
import { devAuth, signToken } from './auth';
import { memoryRequestLimiter } from './ratelimit';
import { fakeGateways } from './testing/fakes';

jest.setTimeout(120_000);

const SECRET = 'contract-secret-of-sufficient-length';
type Schema = Record<string, any>;
interface Operation {
  method: string;
  path: string;
  params: { name: string; in: 'path' | 'query' | 'header'; required?: boolean; schema: Schema }[];
  body?: Schema;
  responses: Record<string, { content?: Record<string, { schema: Schema }> }>;
  secured: boolean;
}

let edge: EdgeApp;
let base: string;
let doc: any;
let ops: Operation[];
let ownedId: string;
const ajv = new Ajv({ strict: false, allErrors: false });
addFormats(ajv);

beforeAll(async () => {
  edge = await buildApp({
    cfg: { auth: devAuth(SECRET), sse: { maxStreams: 500, heartbeatMs: 15_000, bufferMaxEvents: 1000, bufferMaxBytes: 1 << 20, retryMs: 2000 }, maxMessageChars: 8000, bodyLimitBytes: 65_536, corsOrigins: [], llmModel: 'upstream' },
    gateways: fakeGateways(),
    logger: createLogger('edge-contract', 'silent'),
    requestLimiter: memoryRequestLimiter(0),
    publicDir: '/nonexistent',
  });
  await edge.app.listen({ port: 0, host: '127.0.0.1' });
  const a = edge.app.server.address() as { port: number };
  base = `http://127.0.0.1:${a.port}`;
  doc = await (await fetch(`${base}/docs/json`)).json();
  ops = [];
  for (const [path, item] of Object.entries<any>(doc.paths)) {
    for (const [method, op] of Object.entries<any>(item)) {
      ops.push({
        method: method.toUpperCase(),
        path,
        params: op.parameters ?? [],
        body: op.requestBody?.content?.['application/json']?.schema,
        responses: op.responses ?? {},
        secured: (op.security ?? doc.security ?? []).length > 0,
      });
    }
  }
  const created = await fetch(`${base}/api/conversations`, { method: 'POST', headers: { authorization: `Bearer ${signToken(SECRET, 'prop-user')}`, 'content-type': 'application/json' }, body: '{}' });
  ownedId = ((await created.json()) as { id: string }).id;
});

afterAll(async () => {
  edge?.drain();
  await edge?.app.close();
});

// ——— schema → arbitrary ———

function stringArb(s: Schema): fc.Arbitrary<string> {
  if (s.enum) return fc.constantFrom(...(s.enum as string[]));
  const max = Math.min(s.maxLength ?? 40, 40);
  const min = s.minLength ?? 0;
  if (s.pattern) {
    const re = new RegExp(s.pattern, 'u');
    let arb: fc.Arbitrary<string>;
    try {
      arb = fc.stringMatching(re);
    } catch {
      arb = fc.string({ unit: 'grapheme', minLength: min, maxLength: max }).filter((v) => re.test(v));
    }
    return arb.filter((v) => v.length >= min && v.length <= (s.maxLength ?? Infinity));
  }
  return fc.string({ unit: 'grapheme', minLength: min, maxLength: Math.max(min, max) });
}

function arbOf(s: Schema | undefined, depth = 0): fc.Arbitrary<unknown> {
  if (!s || depth > 8) return fc.constant(null);
  if (s.enum) return fc.constantFrom(...(s.enum as unknown[]));
  if (s.anyOf || s.oneOf) return fc.oneof(...(s.anyOf ?? s.oneOf).map((x: Schema) => arbOf(x, depth + 1)));
  const types: string[] = Array.isArray(s.type) ? s.type : [s.type ?? (s.properties ? 'object' : 'string')];
  if (s.nullable) types.push('null');
  return fc.oneof(...types.map((t) => arbOfType(t, s, depth)));
}

function arbOfType(t: string, s: Schema, depth: number): fc.Arbitrary<unknown> {
  switch (t) {
    case 'string': return stringArb(s);
    case 'integer': return fc.integer({ min: s.minimum ?? -1000, max: s.maximum ?? 100_000 });
    case 'number': return fc.double({ min: s.minimum ?? -1000, max: s.maximum ?? 1000, noNaN: true, noDefaultInfinity: true });
    case 'boolean': return fc.boolean();
    case 'null': return fc.constant(null);
    case 'array': return fc.array(arbOf(s.items, depth + 1), { minLength: s.minItems ?? 0, maxLength: Math.min(s.maxItems ?? 3, 3) });
    default: {
      const props: Record<string, Schema> = s.properties ?? {};
      const required = new Set<string>(s.required ?? []);
      const shape: Record<string, fc.Arbitrary<unknown>> = {};
      for (const [k, v] of Object.entries(props)) shape[k] = arbOf(v, depth + 1);
      return fc.record(shape, { requiredKeys: [...required].filter((k) => k in shape) });
    }
  }
}

/** A value that the schema refuses. */
function brokenOf(s: Schema): fc.Arbitrary<unknown> {
  return fc.oneof(fc.constant(12345), fc.constant({ $gt: '' }), fc.string({ maxLength: 20 })).filter((v) => !ajv.validate(s, v));
}

interface Req { path: string; query: string; body?: unknown; token: 'valid' | 'none'; valid: boolean; part: string }

function requestArb(op: Operation): fc.Arbitrary<Req> {
  const parts = [...op.params.filter((p) => p.in !== 'header').map((p) => ({ key: `${p.in}:${p.name}`, p })), ...(op.body ? [{ key: 'body', p: undefined }] : [])];
  const build = (breakKey: string | undefined) => {
    const shape: Record<string, fc.Arbitrary<unknown>> = {};
    for (const { key, p } of parts) {
      const schema = p ? p.schema : op.body!;
      const required = p ? p.in === 'path' || !!p.required : true;
      if (key === breakKey) shape[key] = brokenOf(schema);
      else if (key === 'path:id') shape[key] = fc.oneof(fc.constant(ownedId), arbOf(schema)); // the owned one, or any valid id
      else shape[key] = required ? arbOf(schema) : fc.option(arbOf(schema), { nil: undefined });
    }
    return fc.record(shape).map((v): Req => {
      let path = op.path;
      const query = new URLSearchParams();
      for (const [key, value] of Object.entries(v)) {
        const [where, name] = key.split(':') as [string, string];
        if (where === 'path') path = path.replace(`{${name}}`, encodeURIComponent(typeof value === 'string' ? value : JSON.stringify(value)));
        else if (where === 'query' && value !== undefined) query.set(name, typeof value === 'string' ? value : JSON.stringify(value));
      }
      return { path, query: query.toString(), body: v['body'], token: 'valid', valid: breakKey === undefined, part: breakKey ?? '' };
    });
  };
  const breakable = parts.map((x) => x.key).filter((k) => k !== 'query:access_token');
  return fc.oneof(
    { weight: 3, arbitrary: build(undefined) },
    ...breakable.map((k) => ({ weight: 1, arbitrary: build(k) })),
    { weight: 1, arbitrary: build(undefined).map((r) => ({ ...r, token: 'none' as const })) },
  );
}

// ——— answers against the description ———

async function send(op: Operation, r: Req): Promise<{ status: number; type: string; body: unknown; allow: string | null }> {
  const abort = new AbortController();
  const headers: Record<string, string> = {};
  if (r.token === 'valid') headers.authorization = `Bearer ${signToken(SECRET, 'prop-user')}`;
  if (op.body) headers['content-type'] = 'application/json';
  const res = await fetch(`${base}${r.path}${r.query ? `?${r.query}` : ''}`, {
    method: op.method,
    headers,
    body: op.body ? JSON.stringify(r.body) : undefined,
    signal: abort.signal,
  });
  const type = res.headers.get('content-type') ?? '';
  let body: unknown;
  if (type.startsWith('application/json')) body = await res.json();
  else if (type.startsWith('text/event-stream')) abort.abort(); // a live stream: its status and type are the answer
  else body = await res.text();
  return { status: res.status, type, body, allow: res.headers.get('allow') };
}

test('every operation answers only documented statuses with documented bodies; valid requests are never 400, broken ones always are', async () => {
  expect(ops.length).toBeGreaterThanOrEqual(12);
  const problems = new Set<string>();
  for (const op of ops) {
    await fc.assert(
      fc.asyncProperty(requestArb(op), async (r) => {
        const res = await send(op, r);
        const where = `${op.method} ${op.path}`;
        const documented = op.responses[String(res.status)];
        if (!documented) problems.add(`${where}: status ${res.status} not documented (${JSON.stringify(res.body)?.slice(0, 120)})`);
        if (op.secured && r.token === 'none') {
          if (res.status !== 401) problems.add(`${where}: no token gave ${res.status}`);
          return;
        }
        if (r.valid && res.status === 400) problems.add(`${where}: schema-valid request refused: ${JSON.stringify(res.body)} (sent ${r.query} ${JSON.stringify(r.body)?.slice(0, 300)})`);
        if (!r.valid && res.status !== 400) problems.add(`${where}: request with broken ${r.part} answered ${res.status}`);
        const schema = documented?.content?.['application/json']?.schema;
        if (schema && res.type.startsWith('application/json') && !ajv.validate(schema, res.body)) {
          problems.add(`${where}: ${res.status} body does not match its schema: ${ajv.errorsText()}`);
        }
      }),
      { numRuns: 25, seed: 20261130 },
    );
  }
  expect([...problems]).toEqual([]);
});

test('an unsupported method on a known path is 405 with Allow; an unknown path 404', async () => {
  const token = `Bearer ${signToken(SECRET, 'prop-user')}`;
  for (const [path, item] of Object.entries<any>(doc.paths)) {
    const concrete = path.replace('{id}', ownedId);
    const methods = Object.keys(item).map((m) => m.toUpperCase());
    for (const m of ['GET', 'POST', 'PUT', 'PATCH', 'DELETE'].filter((x) => !methods.includes(x))) {
      const res = await fetch(`${base}${concrete}`, { method: m, headers: { authorization: token } });
      expect({ path, m, status: res.status }).toEqual({ path, m, status: 405 });
      const allow = (res.headers.get('allow') ?? '').split(', ');
      expect(allow).toEqual(expect.arrayContaining(methods));
    }
  }
  expect((await fetch(`${base}/api/nothing-here`, { method: 'PUT' })).status).toBe(404);
});
