// The 400 a request that breaks its schema gets: one sentence per problem, said as a person would
// (what a pattern means, which values are allowed, which parameter is unknown), and for a value
// that may take one of several shapes (a message by its role, a format by its type, content as text
// or parts) only what is wrong with the shape it has, not why it is none of the others.
import type { FastifySchemaValidationError } from 'fastify/types/schema';
import { ID_PATTERN, IMAGE_URL, NO_NUL, NOT_BLANK, TOKEN_ID } from './routes/schemas';

/** What a documented pattern means, for messages people read. */
const PATTERN_MEANING: Record<string, string> = {
  [NO_NUL]: 'must not contain NUL characters',
  [NOT_BLANK]: 'must not be empty or blank, and must not contain NUL characters',
  [ID_PATTERN]: 'must be a UUID',
  [TOKEN_ID]: 'must be a token id (up to 9 digits)',
  [IMAGE_URL]: 'must be an http(s) URL or a data: URL of a base64 PNG, JPEG, GIF or WebP image',
};

/** `propertyName`: the key at fault, for a rule about an object's keys (`propertyNames`). */
type ValidationError = FastifySchemaValidationError & { schemaPath: string; propertyName?: string };

/**
 * `body/messages/0/role must be "system" or "user"; body/n must be 1 or null`, and the parameter of
 * the first (`messages[0].role`). With the schema the request was checked against and the value
 * checked, an `anyOf` reports only the alternatives that fit the value's type and role.
 */
export function validationMessage(context: string, errors: readonly FastifySchemaValidationError[], schema?: unknown, data?: unknown): { message: string; param: string | undefined } {
  const shown = relevant(errors as readonly ValidationError[], schema, data);
  const lines = shown.map((e) => `${context}${e.instancePath}${e.propertyName === undefined ? '' : ` key ${JSON.stringify(e.propertyName)}`} ${describe(e, schema)}${condition(e, schema, context)}`);
  return { message: [...new Set(lines)].join('; '), param: shown[0] && paramOf(shown[0]) };
}

/**
 * The parameter an error is about, named as OpenAI's `param` names it: `messages[0].role`, `n`, the
 * missing property (`messages[0].tool_call_id`), the unknown one; undefined for the whole body.
 */
function paramOf(e: ValidationError): string | undefined {
  const p = e.params as Record<string, unknown>;
  const extra = e.keyword === 'required' ? p['missingProperty'] : e.keyword === 'additionalProperties' ? p['additionalProperty'] : undefined;
  const keys = [...e.instancePath.split('/').slice(1).map((k) => k.replace(/~1/g, '/').replace(/~0/g, '~')), ...(extra === undefined ? [] : [String(extra)])];
  const param = keys.map((k, i) => (/^\d+$/.test(k) ? `[${k}]` : i === 0 ? k : `.${k}`)).join('');
  return param || undefined;
}

/** For a rule between fields (`if`/`then`), when it applies: ` when body/top_logprobs is given`, ` when body/background is true`. */
function condition(e: ValidationError, schema: unknown, context: string): string {
  const then = e.schemaPath.lastIndexOf('/then/');
  if (then < 0 || schema === undefined) return '';
  const rule = at(schema, `${e.schemaPath.slice(0, then)}/if`) as Schema | undefined;
  const given = rule?.required;
  if (!Array.isArray(given) || given.length === 0) return '';
  const valued = given.map((k) => [`${context}/${String(k)}`, rule?.properties?.[String(k)]?.['const']] as const);
  if (valued.every(([, v]) => v === undefined)) return ` when ${valued.map(([k]) => k).join(' and ')} ${given.length > 1 ? 'are' : 'is'} given`;
  return ` when ${valued.map(([k, v]) => `${k} is ${v === undefined ? 'given' : JSON.stringify(v)}`).join(' and ')}`;
}

function describe(e: ValidationError, schema: unknown): string {
  const p = e.params as Record<string, unknown>;
  if (e.keyword === 'const') return `must be ${JSON.stringify(p['allowedValue'])}`;
  // An array that must hold a given value (`contains: {const: …}`): which one.
  const held = e.keyword === 'contains' ? (at(schema, e.schemaPath) as Schema | undefined)?.['const'] : undefined;
  if (held !== undefined) return `must contain ${JSON.stringify(held)}`;
  if (e.keyword === 'pattern') return PATTERN_MEANING[String(p['pattern'])] ?? e.message ?? 'is not valid';
  if (e.keyword === 'enum') return `must be ${(p['allowedValues'] as unknown[]).map((v) => JSON.stringify(v)).join(' or ')}`;
  if (e.keyword === 'additionalProperties') return `has a parameter this API does not take: "${String(p['additionalProperty'])}" (refused rather than ignored)`;
  return e.message ?? 'is not valid';
}

type Schema = { type?: string | string[]; properties?: Record<string, Schema>; enum?: unknown[]; [k: string]: unknown };

/** The part of a JSON document a pointer (`#/properties/messages/items/anyOf/0`, `/messages/0`) names. */
function at(doc: unknown, pointer: string): unknown {
  let node = doc;
  for (const key of pointer.replace(/^#/, '').split('/').slice(1)) {
    if (node === null || typeof node !== 'object') return undefined;
    node = (node as Record<string, unknown>)[key.replace(/~1/g, '/').replace(/~0/g, '~')];
  }
  return node;
}

const jsonType = (v: unknown) => (v === null ? 'null' : Array.isArray(v) ? 'array' : Number.isInteger(v) ? 'integer' : typeof v);

/** The properties that say which alternative an object is (a message's role, a format's type). */
const TAGS = ['role', 'type'] as const;

const tagOf = (value: unknown, key: string): unknown => (value !== null && typeof value === 'object' ? (value as Record<string, unknown>)[key] : undefined);

/** How an alternative plainly does not describe the value: another type, or a tag it does not allow. */
function misfit(branch: Schema | undefined, value: unknown): 'type' | 'tag' | undefined {
  if (!branch) return undefined;
  if (branch.type !== undefined) {
    const types = Array.isArray(branch.type) ? branch.type : [branch.type];
    const t = jsonType(value);
    if (!types.includes(t) && !(t === 'integer' && types.includes('number'))) return 'type';
  }
  return TAGS.some((key) => {
    const allowed = branch.properties?.[key]?.enum;
    const tag = tagOf(value, key);
    return allowed !== undefined && tag !== undefined && !allowed.includes(tag);
  }) ? 'tag' : undefined;
}

/**
 * The errors worth showing. An `anyOf` reports every alternative's errors; those of alternatives
 * that do not fit the value are left out. When none fits: the roles (or types) there are, for an
 * object whose own none allows; else each alternative's complaint.
 */
function relevant(errors: readonly ValidationError[], schema: unknown, data: unknown): ValidationError[] {
  const anyOfAt = new Map(errors.filter((e) => e.keyword === 'anyOf').map((e) => [e.schemaPath, e.instancePath]));
  // An `if` error only says that its `then` failed: those errors say how.
  // (`propertyNames` only says that a key failed: the key's own error says how.)
  const own = errors.filter((e) => e.keyword !== 'anyOf' && e.keyword !== 'if' && e.keyword !== 'propertyNames');
  if (anyOfAt.size === 0 || schema === undefined) return own;
  // Each error's alternatives, as `…/anyOf/<i>` schema-path prefixes, outermost first.
  const branchesOf = (e: ValidationError) => [...e.schemaPath.matchAll(/\/anyOf\/\d+/g)].map((m) => e.schemaPath.slice(0, m.index + m[0].length));
  const how = (branch: string) => {
    const where = anyOfAt.get(branch.slice(0, branch.lastIndexOf('/')));
    return where === undefined ? undefined : misfit(at(schema, branch) as Schema | undefined, at(data, where));
  };
  const fitting = own.filter((e) => branchesOf(e).every((b) => how(b) === undefined));
  if (fitting.length > 0) return fitting;
  // No alternative fits: an object whose role (or type) none allows is told the ones there are…
  for (const [path, where] of anyOfAt) {
    const value = at(data, where);
    for (const key of TAGS) {
      const allowed = [...new Set(((at(schema, path) as Schema[] | undefined) ?? []).flatMap((b) => b.properties?.[key]?.enum ?? []))];
      const tag = tagOf(value, key);
      if (allowed.length > 0 && tag !== undefined && !allowed.includes(tag)) {
        return [{ keyword: 'enum', instancePath: `${where}/${key}`, schemaPath: path, params: { allowedValues: allowed }, message: '' }];
      }
    }
  }
  // …and a value of none of the types allowed, each alternative's complaint (those of its tag).
  const rightTag = own.filter((e) => branchesOf(e).every((b) => how(b) !== 'tag'));
  return rightTag.length > 0 ? rightTag : own;
}
