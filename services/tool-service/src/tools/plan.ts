// plan: create, update, read and list the calling user's plans, kept by the store service.
import { isId, newId, planStatuses, type PlanStatusName } from '@agent-mesh/common';
import type { Plan } from '../store/plan-store';
import { definePlugin, ToolInputError } from './contract';

interface PlanArgs {
  action: 'create' | 'update' | 'get' | 'list';
  planId?: string;
  title?: string;
  steps?: string[];
  status?: PlanStatusName;
  conversationId?: string;
  limit?: number;
}

const view = (p: Plan) => ({ id: p.id, title: p.title, steps: p.steps, status: p.status, conversationId: p.conversationId || undefined, createdAtMs: p.createdAtMs, updatedAtMs: p.updatedAtMs });

export function plan() {
  return definePlugin<PlanArgs>({
    name: 'plan',
    description:
      "Keep the user's plans: action \"create\" (title, steps), \"update\" (planId and any of title, steps, status), \"get\" (planId) or \"list\" (newest first).",
    parameters: {
      type: 'object',
      properties: {
        action: { type: 'string', enum: ['create', 'update', 'get', 'list'] },
        planId: { type: 'string', description: 'The plan id (update, get).' },
        title: { type: 'string', minLength: 1, maxLength: 200 },
        steps: { type: 'array', items: { type: 'string', minLength: 1, maxLength: 1_000 }, maxItems: 50 },
        status: { type: 'string', enum: [...planStatuses.names] },
        conversationId: { type: 'string', description: 'The conversation the plan belongs to (create).' },
        limit: { type: 'integer', minimum: 1, maximum: 50, default: 10, description: 'How many plans to list.' },
      },
      required: ['action'],
      additionalProperties: false,
      allOf: [
        { if: { properties: { action: { const: 'create' } } }, then: { required: ['title', 'steps'] } },
        { if: { properties: { action: { enum: ['update', 'get'] } } }, then: { required: ['planId'] } },
      ],
    },
    rateLimit: { maxConcurrent: 100, maxPerMinute: 500, timeoutMs: 5_000 },
    // Plans change under the user's hand: a cached read could be stale.
    cache: { enabled: false, ttlSeconds: 0, keyStrategy: 'params+user' },
    async execute(args, { userId, signal, store }) {
      if (args.planId !== undefined && !isId(args.planId)) throw new ToolInputError(`planId: "${args.planId}" is not a plan id`);
      if (args.conversationId !== undefined && !isId(args.conversationId)) throw new ToolInputError('conversationId: not a conversation id');
      switch (args.action) {
        case 'list':
          return { plans: (await store.list(userId, args.limit ?? 10, signal)).map(view) };
        case 'get': {
          const found = await store.get(userId, args.planId!, signal);
          if (!found) throw new ToolInputError(`planId: no plan ${args.planId}`);
          return { plan: view(found) };
        }
        case 'create': {
          const now = Date.now();
          const saved = await store.save(userId, {
            id: newId(), userId, conversationId: args.conversationId ?? '', title: args.title!, steps: args.steps!,
            status: args.status ?? 'draft', createdAtMs: now, updatedAtMs: now,
          }, signal);
          return { plan: view(saved) };
        }
        case 'update': {
          const found = await store.get(userId, args.planId!, signal);
          if (!found) throw new ToolInputError(`planId: no plan ${args.planId}`);
          const saved = await store.save(userId, {
            ...found,
            title: args.title ?? found.title,
            steps: args.steps ?? found.steps,
            status: args.status ?? found.status,
            updatedAtMs: Date.now(),
          }, signal);
          return { plan: view(saved) };
        }
      }
    },
    async fallback() {
      return undefined;
    },
  });
}
