// The edge's HTTP API as the browser sees it: the signed-in user's token, JSON requests, and
// error messages a person can read. Streams (SSE) are read in stream.js.

const TOKEN_KEY = 'agent-mesh.token';

export const auth = {
  get token() {
    return localStorage.getItem(TOKEN_KEY) ?? '';
  },
  signIn(token) {
    localStorage.setItem(TOKEN_KEY, token.trim().replace(/^Bearer\s+/i, ''));
  },
  signOut() {
    localStorage.removeItem(TOKEN_KEY);
  },
  /** The token's claims (not verified here: the edge verifies; this is only for display). */
  claims() {
    const part = auth.token.split('.')[1];
    if (!part) return {};
    try {
      const json = atob(part.replace(/-/g, '+').replace(/_/g, '/').padEnd(Math.ceil(part.length / 4) * 4, '='));
      return JSON.parse(json);
    } catch {
      return {};
    }
  },
  headers() {
    return auth.token ? { Authorization: `Bearer ${auth.token}` } : {};
  },
};

/** Fired (on `window`) when the edge rejects the token, so the page can ask to sign in again. */
export const UNAUTHORIZED_EVENT = 'agent-mesh:unauthorized';

export class ApiError extends Error {
  constructor(status, message, body, headers) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.body = body;
    this.headers = headers;
  }
}

/** The message to show for an error body, whatever shape the edge gave it. */
export function errorMessage(status, body) {
  const b = body && typeof body === 'object' ? body : {};
  const nested = b.error && typeof b.error === 'object' ? b.error : {};
  const text = nested.message ?? b.message ?? (typeof b.error === 'string' ? b.error : undefined);
  if (status === 401) return 'Your token was rejected or has expired. Sign in again.';
  if (status === 404) return text ? `Not found: ${text}` : 'Not found.';
  return text ? String(text) : `The server answered ${status}.`;
}

async function readBody(res) {
  const text = await res.text();
  if (!text) return undefined;
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

/** A JSON request with the user's token. Throws ApiError for any non-2xx answer. */
export async function api(path, { method = 'GET', body, headers = {}, signal } = {}) {
  const res = await fetch(path, {
    method,
    signal,
    headers: {
      Accept: 'application/json',
      ...(body !== undefined ? { 'Content-Type': 'application/json' } : {}),
      ...auth.headers(),
      ...headers,
    },
    body: body !== undefined ? JSON.stringify(body) : undefined,
  });
  const parsed = await readBody(res);
  if (res.status === 401) window.dispatchEvent(new Event(UNAUTHORIZED_EVENT));
  if (!res.ok) throw new ApiError(res.status, errorMessage(res.status, parsed), parsed, res.headers);
  return parsed;
}

/** Reads an error answer of a streaming request (which did not become a stream). */
export async function streamError(res) {
  const parsed = await readBody(res).catch(() => undefined);
  if (res.status === 401) window.dispatchEvent(new Event(UNAUTHORIZED_EVENT));
  return new ApiError(res.status, errorMessage(res.status, parsed), parsed, res.headers);
}

/** Milliseconds from a Retry-After header (seconds or an HTTP date); undefined when absent. */
export function retryAfterMs(headers) {
  const v = headers?.get?.('retry-after');
  if (!v) return undefined;
  if (/^\d+(\.\d+)?$/.test(v.trim())) return Number(v) * 1000;
  const at = Date.parse(v);
  return Number.isNaN(at) ? undefined : Math.max(0, at - Date.now());
}

// Field names read defensively: the edge may pass the store's records through as they are
// (createdAtMs) or reshape them (createdAt as a date string).
export function timeOf(record) {
  const r = record ?? {};
  for (const v of [r.createdAtMs, r.created_at_ms, r.createdAt, r.created_at, r.updatedAtMs, r.updatedAt]) {
    if (typeof v === 'number' && Number.isFinite(v)) return v;
    if (typeof v === 'string' && v) {
      const n = /^\d+$/.test(v) ? Number(v) : Date.parse(v);
      if (!Number.isNaN(n)) return n;
    }
  }
  return 0;
}

export const conversations = {
  list(pageToken) {
    const q = new URLSearchParams({ pageSize: '30' });
    if (pageToken) q.set('pageToken', pageToken);
    return api(`/api/conversations?${q}`);
  },
  create() {
    return api('/api/conversations', { method: 'POST', body: {} });
  },
  get(id, messagePageToken) {
    const q = new URLSearchParams();
    if (messagePageToken) q.set('pageToken', messagePageToken);
    const qs = q.toString();
    return api(`/api/conversations/${encodeURIComponent(id)}${qs ? `?${qs}` : ''}`);
  },
  cancel(id) {
    return api(`/api/conversations/${encodeURIComponent(id)}/cancel`, { method: 'POST', body: {} });
  },
};
