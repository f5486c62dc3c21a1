// JSON schemas shared by the routes (also what /docs describes).
import { isId } from '@agent-mesh/common';
import { badRequest } from '../errors';

export const idParams = {
  type: 'object',
  required: ['id'],
  properties: { id: { type: 'string', maxLength: 64, description: 'conversation id (UUID)' } },
} as const;

export const pageQuery = {
  type: 'object',
  properties: {
    pageSize: { type: 'string', pattern: '^[0-9]{1,3}$', description: 'page size (1–100)' },
    pageToken: { type: 'string', maxLength: 512, description: 'token of the next page' },
  },
} as const;

export const errorBody = {
  type: 'object',
  properties: {
    error: { type: 'object', properties: { code: { type: 'string' }, message: { type: 'string' } } },
  },
} as const;

export const conversationBody = {
  type: 'object',
  properties: {
    id: { type: 'string' },
    title: { type: 'string' },
    createdAt: { type: 'string', format: 'date-time' },
    updatedAt: { type: 'string', format: 'date-time' },
    lastRunId: { type: ['string', 'null'] },
  },
} as const;

/** Validates a conversation id from the path: a UUID, nothing else (no operators, no objects). */
export function conversationIdOf(params: unknown): string {
  const id = (params as { id?: unknown }).id;
  if (!isId(id)) throw badRequest('invalid conversation id');
  return id;
}

export function pageSizeOf(query: unknown, max: number): number {
  const raw = (query as { pageSize?: string }).pageSize;
  if (raw === undefined) return 0;
  const n = Number(raw);
  if (n < 1 || n > max) throw badRequest(`querystring/pageSize must be between 1 and ${max}`);
  return n;
}

export const iso = (ms: number): string => new Date(ms || 0).toISOString();
