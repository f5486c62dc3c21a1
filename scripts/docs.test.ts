// docs/configuration.md's tables are the specs', and the specs are every variable the code reads.
import fs from 'node:fs';
import path from 'node:path';
import { config } from '@agent-mesh/common';
import { generatedConfigDoc, CONFIG_DOC, SERVICE_VARS } from './docs';
import { loadConfig as edge } from '../services/edge/src/config';
import { loadConfig as orchestrator } from '../services/orchestrator/src/config';
import { loadConfig as broker } from '../services/llm-broker/src/config';
import { loadConfig as tools } from '../services/tool-service/src/config';
import { loadConfig as store } from '../services/store/src/config';

const ROOT = path.resolve(__dirname, '..');

test('docs/configuration.md shows the specs (`npm run docs` writes it)', () => {
  const page = fs.readFileSync(CONFIG_DOC, 'utf8');
  expect(page).toContain(config.BEGIN);
  expect(page).toBe(generatedConfigDoc(page));
});

/** The names `load` reads from the environment, over every environment in `envs`. */
function namesRead(load: (env: config.Env) => unknown, envs: config.Env[]): string[] {
  const seen = new Set<string>();
  for (const values of envs) {
    load(new Proxy(values, { get: (t, name: string) => (seen.add(name), t[name]) }));
  }
  return [...seen].sort();
}

// Each service's loadConfig, with environments that take every branch that reads a variable.
// (A Sentinel-managed Redis reads REDIS_SENTINEL_NAME.)
const SENTINEL = { REDIS_SENTINELS: '127.0.0.1:26379' };
const LOADERS: Record<string, { load: (env: config.Env) => unknown; envs: config.Env[] }> = {
  edge: { load: edge, envs: [{ AUTH_JWT_SECRET: 's' }, { AUTH_JWKS_URL: 'https://idp.example/jwks', AUTH_ISSUER: 'i', AUTH_AUDIENCE: 'a' }, { AUTH_JWT_SECRET: 's', ...SENTINEL }] },
  orchestrator: { load: orchestrator, envs: [{}, SENTINEL] },
  'llm-broker': { load: broker, envs: [{}, SENTINEL] },
  'tool-service': { load: tools, envs: [{}, SENTINEL] },
  store: { load: store, envs: [{}] },
};

test.each(SERVICE_VARS.map((s) => [s.service, s.vars] as const))('%s reads exactly the variables it has specs for', (service, vars) => {
  expect(namesRead(LOADERS[service]!.load, LOADERS[service]!.envs)).toEqual(Object.keys(vars).sort());
});

/** Non-test TypeScript under services/*\/src, without the generated code. */
function sources(dir = path.join(ROOT, 'services')): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) return ['node_modules', 'dist', 'gen', 'public'].includes(e.name) ? [] : sources(p);
    return /\.ts$/.test(e.name) && !/\.test\.ts$/.test(e.name) ? [p] : [];
  });
}

test('no code reads a variable by name: every read goes through a spec', () => {
  const direct = /process\.env\s*(\.|\[)|\benv\s*\[\s*['"`]|\benv\.[A-Z][A-Z0-9_]*\b/;
  const found = sources().flatMap((file) =>
    fs.readFileSync(file, 'utf8').split('\n').flatMap((line, i) => (direct.test(line) ? [`${path.relative(ROOT, file)}:${i + 1}: ${line.trim()}`] : [])),
  );
  expect(found).toEqual([]);
});

test('every process-wide variable is read where the specs say (logger, telemetry, gRPC)', () => {
  const text = sources().map((f) => fs.readFileSync(f, 'utf8')).join('\n');
  const unread = Object.keys(config.processVars).filter((name) => !text.includes(`processVars.${name}`));
  expect(unread).toEqual([]);
});
