// What the route modules share: configuration, peers, limiters, open streams and measurements.
import type { Logger } from '@agent-mesh/common';
import type { BackgroundCalls } from './background';
import type { UserBudgets } from './budgets';
import type { EdgeConfig } from './config';
import type { Gateways } from './gateways/types';
import type { RequestLimiter } from './ratelimit';
import type { HeartbeatHub } from './sse/heartbeat';
import type { StreamLimiter } from './sse/limiter';
import type { SseStream } from './sse/stream';
import type { EdgeStats } from './stats';

/** The part of the configuration the app itself uses (tests build it without env). */
export type AppConfig = Pick<EdgeConfig, 'sse' | 'maxMessageChars' | 'bodyLimitBytes' | 'v1BodyLimitBytes' | 'corsOrigins' | 'llmModel' | 'auth'>;

export interface EdgeContext {
  cfg: AppConfig;
  gw: Gateways;
  logger: Logger;
  requestLimiter: RequestLimiter;
  budgets: UserBudgets;
  sseLimiter: StreamLimiter;
  hub: HeartbeatHub;
  stats: EdgeStats;
  /** Background responses running in this edge. */
  background: BackgroundCalls;
  /** Open SSE streams (to tell them to reconnect on drain). */
  streams: Set<SseStream>;
  state: { draining: boolean };
}

declare module 'fastify' {
  interface FastifyRequest {
    /** The authenticated user (the token's `sub`); '' on public routes. */
    userId: string;
    /** The scopes the token grants (`scope` / `scp`); null on public routes. */
    scopes: ReadonlySet<string> | null;
    /**
     * On a route marked `spends: 'beside'`: the user's rate limit and budget checks, under way, not
     * yet awaited (rejects with the 429 of the first that refuses); null elsewhere.
     */
    gate: Promise<void> | null;
    /**
     * True once the answer became an event stream (the reply hijacked, its headers written): the
     * stream counts itself out of the active requests when it closes, not the onResponse hook.
     */
    streaming: boolean;
  }
  interface FastifyContextConfig {
    /** Who may call the route: `public`, `bearer` (header), `sse` (header or ?access_token=), or `api-key` (header or `x-api-key`, as Anthropic's clients send it). */
    auth?: 'public' | 'bearer' | 'sse' | 'api-key';
    /** The route needs a token with this scope besides sign-in (`ops`: AUTH_OPS_SCOPE); 403 without. */
    scope?: 'ops';
    /**
     * The route spends upstream tokens: refused (429) while the user's token budget is used up.
     * `true`: checked before the handler; `'beside'`: the budget and the rate limit are started and
     * handed to the handler (req.gate), which passes them before any upstream call, their round trip
     * beside others (a user refused lately is checked before the handler, as elsewhere).
     */
    spends?: boolean | 'beside';
    /** The route answers with a stream (its duration is not a response time). */
    stream?: boolean;
    /** No trace for the route (health checks, probes, metric scrapes: not worth a trace each). */
    untraced?: boolean;
    /** The route still answers while the instance drains (the liveness probe). */
    whileDraining?: boolean;
  }
}
