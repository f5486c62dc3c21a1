// What a committed event stream lets go of, to keep an open stream small (~10 KB idle at 20,000
// streams). These reach into fastify's and Node's internals by name: `memory.test.ts` checks, on a
// real fastify app and a real socket, that every name used here still exists, so an upgrade that
// renames one fails a test instead of silently keeping the memory.
import type { ServerResponse } from 'node:http';
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
