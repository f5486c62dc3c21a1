// GET /docs (a small page), /docs/json (the OpenAPI description @fastify/swagger builds) and
// /run-events.js (the run event catalogue as an ES module, imported by the web UI).
import type { FastifyInstance } from 'fastify';
import { runEventsModule } from '@agent-mesh/common';

const RUN_EVENTS_JS = runEventsModule();

const PAGE = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>agent mesh API</title>
<style>body{font:15px/1.5 system-ui,sans-serif;max-width:48rem;margin:2rem auto;padding:0 1rem}code{background:#f3f3f3;padding:0 .2em}</style>
</head><body>
<h1>agent mesh — public API</h1>
<p>The OpenAPI 3 description of every route is at <a href="/docs/json"><code>/docs/json</code></a>.</p>
<p>Authenticate with <code>Authorization: Bearer &lt;JWT&gt;</code> (HS256). Run streams are Server-Sent Events:
<code>id: &lt;runId&gt;:&lt;seq&gt;</code>; resume with <code>Last-Event-ID</code>.</p>
</body></html>`;

export function docsRoutes(app: FastifyInstance): void {
  app.get('/docs/json', { config: { auth: 'public' }, schema: { hide: true } }, async () => app.swagger());
  app.get('/docs', { config: { auth: 'public' }, schema: { hide: true } }, async (req, reply) => {
    if ((req.headers.accept ?? '').includes('application/json')) return app.swagger();
    return reply.type('text/html; charset=utf-8').send(PAGE);
  });
  app.get('/run-events.js', { config: { auth: 'public' }, schema: { hide: true } }, async (_req, reply) =>
    reply.type('text/javascript; charset=utf-8').header('cache-control', 'no-cache').send(RUN_EVENTS_JS));
}
