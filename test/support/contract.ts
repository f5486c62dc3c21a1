// The public contract, checked from the description itself: requests are generated (fast-check)
// from /docs/json — valid ones from each operation's schemas, broken ones by breaking one part —
// and every answer must be a status the operation documents (never a 500), with a body its
// schema accepts; a schema-valid request is never refused as invalid (400), a schema-violating one
// always is; a request without a token to a secured operation is 401; an unsupported method on a
// known path is 405 with Allow. Shared by the edge's unit test (in-memory peers) and the e2e test
// against a real mesh (test/e2e/contract.test.ts).
import Ajv from 'ajv';
import addFormats from 'ajv-formats';
import fc from 'fast-check';

type Schema = Record<string, any>;
export interface Operation {
  method: string;
  path: string;
  params: { name: string; in: 'path' | 'query' | 'header'; required?: boolean; schema: Schema }[];
  body?: Schema;
  responses: Record<string, { content?: Record<string, { schema: Schema }> }>;
  secured: boolean;
}

export interface Contract {
  /** The edge's base URL (`http://host:port`). */
  base: string;
  doc: any;
  /** Every operation of the description; those that delete come last (they erase `ownedId`). */
  ops: Operation[];
}

const ajv = new Ajv({ strict: false, allErrors: false });
addFormats(ajv);

/** Reads `/docs/json` from a running edge. */
export async function loadContract(base: string): Promise<Contract> {
  const doc = (await (await fetch(`${base}/docs/json`)).json()) as { paths: Record<string, unknown>; security?: unknown[] };
  const ops: Operation[] = [];
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
  ops.sort((a, b) => Number(a.method === 'DELETE') - Number(b.method === 'DELETE'));
  return { base, doc, ops };
}

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

/** How a path or query value is sent: as text (a number or an object as its JSON). */
const asText = (v: unknown): string => (typeof v === 'string' ? v : JSON.stringify(v));

/** A value that the schema refuses; `inUrl`: once sent as text (12345 in a query is the string "12345"). */
function brokenOf(s: Schema, inUrl: boolean): fc.Arbitrary<unknown> {
  // (A schema that refuses none of these would make the filter search forever: give each parameter a pattern or a bound.)
  // A body's value over any bound too (in a URL, one longer than the router takes falls to the web
  // UI's catch-all where it is served: the edge's unit tests check those). Not an empty or dot path
  // segment: the URL is then another path (`/v1/models/` is the list, `/v1/models/..` is `/v1`).
  return fc.oneof(fc.constant(12345), fc.constant({ $gt: '' }), fc.string({ maxLength: 20 }), ...(inUrl ? [] : [fc.constant('x'.repeat(1 + (s.maxLength ?? 1000)))]))
    .filter((v) => !ajv.validate(s, inUrl ? asText(v) : v) && !(inUrl && ['', '.', '..'].includes(asText(v))));
}

interface Req { path: string; query: string; body?: unknown; token: 'valid' | 'none'; valid: boolean; part: string }

function requestArb(op: Operation, ownedId: string, owned: Record<string, string> = {}): fc.Arbitrary<Req> {
  const parts = [...op.params.filter((p) => p.in !== 'header').map((p) => ({ key: `${p.in}:${p.name}`, p })), ...(op.body ? [{ key: 'body', p: undefined }] : [])];
  const build = (breakKey: string | undefined) => {
    const shape: Record<string, fc.Arbitrary<unknown>> = {};
    for (const { key, p } of parts) {
      const schema = p ? p.schema : op.body!;
      const required = p ? p.in === 'path' || !!p.required : true;
      if (key === breakKey) shape[key] = brokenOf(schema, p !== undefined);
      else if (key === 'path:id') shape[key] = fc.oneof(fc.constant(ownedId), arbOf(schema)); // the owned one, or any valid id
      else if (p?.in === 'path' && owned[p.name]) shape[key] = fc.oneof(fc.constant(owned[p.name]), arbOf(schema));
      // A body is valid as a whole too (a rule between its fields: `if`/`then`).
      else if (key === 'body') shape[key] = arbOf(schema).filter((v) => ajv.validate(schema, v));
      else shape[key] = required ? arbOf(schema) : fc.option(arbOf(schema), { nil: undefined, freq: 2 });
    }
    return fc.record(shape).map((v): Req => {
      let path = op.path;
      const query = new URLSearchParams();
      for (const [key, value] of Object.entries(v)) {
        const [where, name] = key.split(':') as [string, string];
        if (where === 'path') path = path.replace(`{${name}}`, encodeURIComponent(asText(value)));
        else if (where === 'query' && value !== undefined) query.set(name, asText(value));
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

async function send(base: string, op: Operation, r: Req, token: string): Promise<{ status: number; type: string; body: unknown }> {
  const abort = new AbortController();
  const headers: Record<string, string> = {};
  if (r.token === 'valid') headers.authorization = `Bearer ${token}`;
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
  return { status: res.status, type, body };
}

/**
 * The refusals of a schema-valid request that the description documents, because no schema can
 * express them: a page token of the right form that this API did not issue
 * (`invalid_page_token`) or an `after` that names no item of the list (`invalid_after`), a `previous_response_id` of the right form that names no response the
 * caller kept (`previous_response_not_found`). (A request the upstream provider refuses, `upstream_rejected`, is not
 * excused: the edge's schema must be at least as strict as the provider's rules it knows.)
 */
function semanticRefusal(r: Req, body: unknown): boolean {
  const code = (body as { error?: { code?: unknown } })?.error?.code;
  const said = String((body as { error?: { message?: unknown } })?.error?.message);
  const sent = (r.body ?? {}) as Record<string, unknown>;
  // A parameter the upstream's protocol has no way to send (the route's description says which is
  // refused by which protocol): only the deployment's upstreams decide, which no schema says.
  const unsendable = /^(\w+) is not supported by the \w+ protocol/.exec(said)?.[1];
  if (unsendable !== undefined) return sent[unsendable] != null;
  // The cache breakpoints are checked together (how many, their lifetimes' order), as Anthropic does.
  const marksCache = /"cache_control":\{/.test(JSON.stringify(sent));
  if (code === 'invalid_cache_control') return marksCache;
  // Extended thinking's budget is checked against max_tokens, and what the provider refuses beside
  // it (the route's description says which), as Anthropic does.
  const thinks = ['enabled', 'adaptive'].includes(String((sent.thinking as { type?: unknown } | undefined)?.type));
  if (code === 'invalid_thinking' || /^body: `max_tokens` must be greater than `thinking\.budget_tokens`|must be greater than thinking_budget_tokens|with extended thinking \(the provider refuses it\)$/.test(said)) return thinks;
  // Anthropic's error body (/v1/messages) has no code: the same refusals, said by their messages.
  if ((body as { type?: unknown })?.type === 'error') {
    if (/^body: a (maximum of \d+ blocks|ttl='1h' cache_control block)/.test(said)) return marksCache;
    return /^body\/tool_choice\b/.test(said) && sent.tool_choice != null;
  }
  // A reasoning item passed back must carry what this gateway gave (its description says so).
  if (code === 'empty_input') return Array.isArray(sent.input) && sent.input.every((i: { type?: unknown }) => i.type === 'reasoning');
  if (code === 'invalid_encrypted_content') return /"encrypted_content":"[^"]/.test(JSON.stringify(sent));
  if (code === 'invalid_page_token') return new URLSearchParams(r.query).has('pageToken');
  // So is an item id of the right form that the list does not hold.
  if (code === 'invalid_after') return new URLSearchParams(r.query).has('after');
  // So is a kept response's id of the right form that is not the caller's (or no longer kept).
  if (code === 'previous_response_not_found') return (r.body as { previous_response_id?: unknown } | undefined)?.previous_response_id != null;
  // A tool choice is checked against the tools beside it (its description says so), which no schema says.
  if (code === 'invalid_tool_choice') return (r.body as { tool_choice?: unknown } | undefined)?.tool_choice != null;
  // How short an embedding model can make its vectors is the model's own (the route's description
  // says the provider's 400 answers it): only the provider can say, for `dimensions` alone.
  if (code === 'upstream_rejected' && r.path === '/v1/embeddings') return sent.dimensions != null && /dimensions/i.test(said);
  return false;
}

export interface ContractReport {
  /** Every breach of the description found, deduplicated. */
  problems: string[];
  /** Per operation (`METHOD /path`), the statuses it answered, with how often. */
  seen: Record<string, Record<string, number>>;
}

/**
 * Runs `numRuns` generated requests against every operation (signed in as the owner of
 * `ownedId`, a conversation that exists, and `owned`, by path parameter, others: a kept response's
 * `response_id`) and checks each answer against the description.
 */
export async function checkOperations(c: Contract, o: { ownedId: string; owned?: Record<string, string>; token: string; numRuns: number; seed: number }): Promise<ContractReport> {
  const problems = new Set<string>();
  const seen: Record<string, Record<string, number>> = {};
  for (const op of c.ops) {
    const where = `${op.method} ${op.path}`;
    const counts = (seen[where] = {} as Record<string, number>);
    await fc.assert(
      fc.asyncProperty(requestArb(op, o.ownedId, o.owned), async (r) => {
        const res = await send(c.base, op, r, o.token);
        counts[res.status] = (counts[res.status] ?? 0) + 1;
        const documented = op.responses[String(res.status)];
        if (res.status === 500) problems.add(`${where}: 500 (${JSON.stringify(res.body)?.slice(0, 200)})`);
        if (!documented) problems.add(`${where}: status ${res.status} not documented (${JSON.stringify(res.body)?.slice(0, 120)})`);
        if (op.secured && r.token === 'none') {
          if (res.status !== 401) problems.add(`${where}: no token gave ${res.status}`);
          return;
        }
        if (r.valid && res.status === 400 && !semanticRefusal(r, res.body)) problems.add(`${where}: schema-valid request refused: ${JSON.stringify(res.body)} (sent ${r.query} ${JSON.stringify(r.body)?.slice(0, 300)})`);
        if (!r.valid && res.status !== 400) problems.add(`${where}: request with broken ${r.part} answered ${res.status}`);
        const schema = documented?.content?.['application/json']?.schema;
        if (schema && res.type.startsWith('application/json') && !ajv.validate(schema, res.body)) {
          problems.add(`${where}: ${res.status} body does not match its schema: ${ajv.errorsText()}`);
        }
      }),
      { numRuns: o.numRuns, seed: o.seed },
    );
  }
  return { problems: [...problems], seen };
}

/**
 * Every method a known path does not document: the answer must be 405 with an `Allow` listing
 * the documented ones. Returns the breaches; an unknown path must be 404.
 */
export async function checkMethods(c: Contract, o: { ownedId: string; token: string }): Promise<string[]> {
  const problems: string[] = [];
  for (const [path, item] of Object.entries<any>(c.doc.paths)) {
    const concrete = path.replace('{id}', o.ownedId);
    const methods = Object.keys(item).map((m) => m.toUpperCase());
    // A method that a templated path serves at this one (GET /v1/responses/{response_id} at
    // /v1/responses/input_tokens) is that route's to answer, not a 405.
    const servedByTemplate = (m: string) => Object.entries<any>(c.doc.paths).some(([other, otherItem]) =>
      other !== path && other.includes('{') && m.toLowerCase() in otherItem && new RegExp(`^${other.replace(/\{[^}]+\}/g, '[^/]+')}$`).test(path));
    for (const m of ['GET', 'POST', 'PUT', 'PATCH', 'DELETE'].filter((x) => !methods.includes(x) && !servedByTemplate(x))) {
      const res = await fetch(`${c.base}${concrete}`, { method: m, headers: { authorization: `Bearer ${o.token}` } });
      await res.arrayBuffer();
      const allow = (res.headers.get('allow') ?? '').split(', ');
      if (res.status !== 405) problems.push(`${m} ${path}: ${res.status}, not 405`);
      else if (!methods.every((x) => allow.includes(x))) problems.push(`${m} ${path}: Allow "${allow.join(', ')}" lacks one of ${methods.join(', ')}`);
    }
  }
  const unknown = await fetch(`${c.base}/api/nothing-here`, { method: 'PUT' });
  await unknown.arrayBuffer();
  if (unknown.status !== 404) problems.push(`PUT /api/nothing-here: ${unknown.status}, not 404`);
  return problems;
}
