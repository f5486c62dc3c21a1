// What a committed event stream lets go of, to keep an open stream small (~10 KB idle at 20,000
// streams). These reach into fastify's and Node's internals by name: `memory.test.ts` checks, on a
// real fastify app and a real socket, that every name used here still exists, so an upgrade that
// renames one fails a test instead of silently keeping the memory.
import type { ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Writable } from 'node:stream';

/**
 * The name of fastify's 'finish'/'error' listener on every response (lib/reply.js), which runs
 * the onResponse hooks and logs the completion.
 */
export const FASTIFY_RESPONSE_LISTENER = 'onResFinished';

/**
 * fastify watches every response's 'finish'/'error' to run onResponse hooks and log completion;
 * those listeners hold the reply, the request and its child logger for the life of the socket.
 * A hijacked event stream needs neither (the edge's onResponse hook skips streams, and stream
 * measurements are taken when the stream closes), so they are dropped to free ~2 KB per stream.
 * Returns how many were dropped (2 on the fastify this was written for).
 */
export function releaseFastifyListeners(raw: Writable): number {
  let dropped = 0;
  for (const event of ['finish', 'error'] as const) {
    for (const l of raw.listeners(event)) {
      if ((l as { name?: string }).name === FASTIFY_RESPONSE_LISTENER) {
        raw.off(event, l as () => void);
        dropped += 1;
      }
    }
  }
  return dropped;
}

/**
 * Node keeps a connection's request (the response's `req`, the HTTP parser's `incoming`) for the
 * life of the connection, with its headers twice over (raw and parsed), the bearer token among
 * them, and its URL (with `access_token` for EventSource clients). A committed stream has copied
 * the few values it needs: the rest is dropped (~0.5 KB per stream, and no token kept in memory).
 */
export function forgetRequest(res: ServerResponse): void {
  const req = res.req as ServerResponse['req'] | undefined;
  if (!req) return;
  req.headers = NO_HEADERS;
  req.rawHeaders = NO_RAW_HEADERS;
  const q = req.url?.indexOf('?') ?? -1;
  // A copy, not a slice: V8 slices keep the whole original string (the token) alive.
  if (q >= 0) req.url = Buffer.from(req.url!.slice(0, q), 'utf8').toString('utf8');
}

const NO_HEADERS = Object.freeze({}) as ServerResponse['req']['headers'];
const NO_RAW_HEADERS = Object.freeze([]) as unknown as string[];

/**
 * Headers that only mean something on a document a browser renders (helmet sets them on every
 * response). Left off event streams: Node keeps each response's header text for the life of the
 * connection, and at 20,000 streams the CSP alone cost ~1 KB per stream.
 */
export const DOCUMENT_ONLY_HEADERS: ReadonlySet<string> = new Set([
  'content-security-policy',
  'cross-origin-opener-policy',
  'origin-agent-cluster',
  'referrer-policy',
  'x-dns-prefetch-control',
  'x-download-options',
  'x-frame-options',
  'x-permitted-cross-domain-policies',
  'x-xss-protection',
]);

/** Removes the document-only headers set on the raw response (writeHead would merge them back in). */
export function dropDocumentHeaders(raw: ServerResponse): void {
  for (const name of raw.getHeaderNames()) if (DOCUMENT_ONLY_HEADERS.has(name)) raw.removeHeader(name);
}

/** The reply's headers (CORS, nosniff, HSTS, …) that apply to an event stream. */
export function streamHeaders(h: Record<string, unknown>): Record<string, string | string[] | number> {
  const out: Record<string, string | string[] | number> = {};
  for (const [k, v] of Object.entries(h)) {
    if (DOCUMENT_ONLY_HEADERS.has(k)) continue;
    if (typeof v === 'string' || typeof v === 'number' || Array.isArray(v)) out[k] = v as string | string[] | number;
  }
  return out;
}

/** The names of Node's own listeners on a connection that hold its HTTP parser (lib/_http_server.js: bound at connection). */
export const NODE_PARSER_LISTENERS = { data: 'bound socketOnData', end: 'bound socketOnEnd' } as const;

type FreeParser = (parser: unknown, req: unknown, socket: unknown) => void;

/** Node's `freeParser` (lib/_http_common.js), the way its HTTP server gives a parser back; undefined if a Node.js ever stops exporting it. */
const freeParser: FreeParser | undefined = (() => {
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const f = (require('_http_common') as { freeParser?: unknown }).freeParser;
    return typeof f === 'function' ? (f as FreeParser) : undefined;
  } catch {
    return undefined;
  }
})();

/**
 * Whether an event stream's connection can give its HTTP parser back (see releaseParser): decided
 * before the head is written, which then says `Connection: close`.
 */
export function canReleaseParser(raw: ServerResponse): boolean {
  const socket = raw.socket as (Socket & { parser?: unknown }) | null;
  if (!freeParser || !socket?.parser) return false;
  return (Object.keys(NODE_PARSER_LISTENERS) as (keyof typeof NODE_PARSER_LISTENERS)[]).every((event) =>
    socket.listeners(event).some((l) => (l as { name?: string }).name === NODE_PARSER_LISTENERS[event]));
}

/**
 * Node keeps a connection's HTTP parser for the life of the connection, for its next request: on
 * Node.js 24 a 10 KB native object (an 8 KB slab for header strings, nodejs/node#61375), ~4 KB of
 * it resident, for every open stream. An event stream is its connection's last request (its head
 * says `Connection: close`, checked by canReleaseParser before it was written), so once the head is
 * written the parser is given back as Node gives back an upgraded connection's: the two listeners
 * of the socket that hold it (its data and end) are removed first, so that a parser the pool hands
 * to another connection is never used by this one; Node's other listeners read `socket.parser`,
 * null from then on. What the client sends after its request is discarded, and its end closes the
 * connection (as Node's end listener does). Returns whether it was released.
 */
export function releaseParser(raw: ServerResponse): boolean {
  const socket = raw.socket as (Socket & { parser?: unknown }) | null;
  if (!socket || !canReleaseParser(raw)) return false;
  for (const event of Object.keys(NODE_PARSER_LISTENERS) as (keyof typeof NODE_PARSER_LISTENERS)[]) {
    for (const l of socket.listeners(event)) if ((l as { name?: string }).name === NODE_PARSER_LISTENERS[event]) socket.off(event, l as () => void);
  }
  socket.on('data', discard);
  socket.once('end', () => socket.destroy());
  freeParser!(socket.parser, raw.req, socket);
  return true;
}

function discard(): void {}
