// GET /api/usage: the caller's token use against their budgets (the broker charges every upstream
// call; the windows are a UTC day and a minute).
import type { FastifyInstance } from 'fastify';
import type { EdgeContext } from '../context';
import { AUTHED, errorResponses } from './schemas';

const windowBody = {
  type: 'object',
  properties: {
    used: { type: 'integer', description: 'tokens used in the window' },
    limit: { type: ['integer', 'null'], description: 'the budget; null = unlimited' },
    remaining: { type: ['integer', 'null'] },
    resetsAt: { type: 'string', format: 'date-time' },
  },
} as const;

export function usageRoutes(app: FastifyInstance, ctx: EdgeContext): void {
  app.get(
    '/api/usage',
    {
      config: { auth: 'bearer' },
      schema: {
        tags: ['usage'],
        summary: "The caller's token use today and this minute, against their budgets",
        response: { 200: { type: 'object', properties: { day: windowBody, minute: windowBody } }, ...errorResponses(...AUTHED) },
      },
    },
    async (req) => {
      const windows = await ctx.budgets.usage(req.userId);
      const out: Record<string, unknown> = {};
      for (const w of windows) {
        const limit = w.limit > 0 ? w.limit : null;
        out[w.budget] = { used: w.used, limit, remaining: limit === null ? null : Math.max(0, limit - w.used), resetsAt: new Date(w.resetsAtMs).toISOString() };
      }
      return out;
    },
  );
}
