// What the six images (`npm run images`) hold, read from their mounted file systems: production
// dependencies of their own workspaces only (computed from package-lock.json; the edge's include
// the llm-broker, which it runs inside itself with EDGE_INLINE_BROKER), no sources of other
// services, no certificate of the build machine's TLS proxy, user 1000, and node started directly.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { IMAGES, image, podman, podmanSync, requireImages } from '../support/containers';

jest.setTimeout(120_000);

const ROOT = path.resolve(__dirname, '../..');
const workspaceOf = (name: string) => (name === 'emulator' ? 'test/emulator' : `services/${name}`);
/** The workspaces an image holds: its own, services/common, and for the edge the llm-broker it can run inside itself (EDGE_INLINE_BROKER). */
const workspacesOf = (name: string) =>
  name === 'emulator' ? [workspaceOf(name)] : [workspaceOf(name), 'services/common', ...(name === 'edge' ? ['services/llm-broker'] : [])];

type LockEntry = {
  link?: boolean; resolved?: string; dev?: boolean;
  dependencies?: Record<string, string>; optionalDependencies?: Record<string, string>;
  peerDependencies?: Record<string, string>; peerDependenciesMeta?: Record<string, { optional?: boolean }>;
};
const lock = JSON.parse(fs.readFileSync(path.join(ROOT, 'package-lock.json'), 'utf8')) as { packages: Record<string, LockEntry> };

/** Where node would find `dep` when required from the package at lockfile path `from`. */
function resolveDep(from: string, dep: string): string | undefined {
  let base = from;
  for (;;) {
    const candidate = base ? `${base}/node_modules/${dep}` : `node_modules/${dep}`;
    if (lock.packages[candidate]) return candidate;
    if (!base) return undefined;
    const i = base.lastIndexOf('/node_modules/');
    base = i >= 0 ? base.slice(0, i) : '';
  }
}

/** Lockfile paths (node_modules/…) of every package the workspaces need at run time. */
function productionClosure(workspaces: string[]): Set<string> {
  const seen = new Set<string>();
  const queue = [...workspaces];
  while (queue.length) {
    const at = queue.pop()!;
    if (seen.has(at)) continue;
    seen.add(at);
    const entry = lock.packages[at];
    if (!entry) continue;
    if (entry.link && entry.resolved) { queue.push(entry.resolved); continue; }
    const optionalPeers = new Set(Object.entries(entry.peerDependenciesMeta ?? {}).filter(([, m]) => m.optional).map(([n]) => n));
    const deps = [
      ...Object.keys(entry.dependencies ?? {}), ...Object.keys(entry.optionalDependencies ?? {}),
      ...Object.keys(entry.peerDependencies ?? {}).filter((n) => !optionalPeers.has(n)),
    ];
    for (const d of deps) {
      const p = resolveDep(at, d);
      if (p) queue.push(p);
    }
  }
  // …and the links node_modules/@agent-mesh/<name> to the workspaces themselves.
  const links = Object.entries(lock.packages).filter(([, e]) => e.link && e.resolved && workspaces.includes(e.resolved)).map(([p]) => p);
  return new Set([...links, ...[...seen].filter((p) => p.startsWith('node_modules/'))]);
}

/** Lockfile-style paths of the packages installed under `dir`/node_modules. */
function installedPackages(dir: string, prefix = ''): string[] {
  const nm = path.join(dir, 'node_modules');
  if (!fs.existsSync(nm)) return [];
  const out: string[] = [];
  const names = fs.readdirSync(nm).filter((n) => !n.startsWith('.'))
    .flatMap((n) => (n.startsWith('@') ? fs.readdirSync(path.join(nm, n)).map((s) => `${n}/${s}`) : [n]));
  for (const n of names) {
    const rel = `${prefix}node_modules/${n}`;
    out.push(rel);
    const full = path.join(nm, n);
    if (!fs.lstatSync(full).isSymbolicLink()) out.push(...installedPackages(full, `${rel}/`));
  }
  return out;
}

/** Files under `dir` (not following links). */
function* walk(dir: string): Generator<string> {
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) yield* walk(p);
    else if (e.isFile()) yield p;
  }
}

/** The base64 lines of the certificates this machine adds to its trust store (a TLS proxy's CA). */
const HOST_EXTRA_CA_DIR = '/usr/local/share/ca-certificates';
function hostExtraCaLines(): string[] {
  if (!fs.existsSync(HOST_EXTRA_CA_DIR)) return [];
  return fs.readdirSync(HOST_EXTRA_CA_DIR).filter((f) => f.endsWith('.crt')).flatMap((f) => {
    const lines = fs.readFileSync(path.join(HOST_EXTRA_CA_DIR, f), 'utf8').split('\n').map((l) => l.trim());
    // A full 64-character line from the middle of the certificate: unique to it.
    return lines.filter((l) => /^[A-Za-z0-9+/]{64}$/.test(l)).slice(2, 3);
  });
}

beforeAll(() => requireImages());

describe.each(IMAGES)('image %s', (name) => {
  const ref = image(name);
  let root: string;
  let config: { User: string; Entrypoint: string[] | null; Cmd: string[] | null; Env: string[] };

  beforeAll(async () => {
    root = await podman(['image', 'mount', ref]);
    config = JSON.parse(await podman(['image', 'inspect', '--format', '{{json .Config}}', ref]));
  });
  afterAll(() => { podmanSync(['image', 'unmount', ref]); });

  test('runs as uid 1000, node started directly (exec form, no shell), telemetry required first', async () => {
    expect(config.User).toBe('1000:1000');
    expect(await podman(['run', '--rm', '--entrypoint', 'id', ref, '-u'])).toBe('1000');
    expect(config.Entrypoint?.[0]).toBe('node');
    expect(config.Cmd ?? []).toEqual([]);
    if (name !== 'emulator') {
      expect(config.Entrypoint?.slice(1)).toEqual(['--require', '/app/services/common/dist/telemetry/register.js', '/app/main.js']);
      expect(fs.realpathSync(path.join(root, 'app/main.js'))).toBe(path.join(fs.realpathSync(root), `app/services/${name}/dist/main.js`));
    }
  });

  test('holds the production dependencies of its own workspaces (its own and common; the edge also the llm-broker) only', () => {
    const allowed = productionClosure(workspacesOf(name));
    const installed = installedPackages(path.join(root, 'app'));
    expect(installed.length).toBeGreaterThan(0);
    expect(installed.filter((p) => !allowed.has(p))).toEqual([]);
    // Dev-only packages of the lockfile (typescript, jest, …) are certainly not among them.
    expect(installed.filter((p) => lock.packages[p]?.dev)).toEqual([]);
    expect(fs.existsSync(path.join(root, 'app/node_modules/typescript'))).toBe(false);
    // …and every direct dependency of its workspaces is there.
    const own = workspacesOf(name).flatMap((ws) => Object.keys((JSON.parse(fs.readFileSync(path.join(ROOT, ws, 'package.json'), 'utf8')) as { dependencies?: Record<string, string> }).dependencies ?? {}));
    expect(own.filter((d) => !fs.existsSync(path.join(root, 'app/node_modules', d, 'package.json')))).toEqual([]);
  });

  test('holds no sources: only the build of its workspaces, no TypeScript', () => {
    const app = path.join(root, 'app');
    if (name === 'emulator') {
      expect(fs.existsSync(path.join(app, 'services'))).toBe(false);
      expect(fs.readdirSync(path.join(app, 'test'))).toEqual(['emulator']);
    } else {
      const names = workspacesOf(name).map((ws) => path.basename(ws)).sort();
      expect(fs.readdirSync(path.join(app, 'services')).sort()).toEqual(names);
      expect(fs.readdirSync(path.join(app, 'node_modules/@agent-mesh')).sort()).toEqual(names);
    }
    const sources = [...walk(app)].filter((f) => !f.includes('/node_modules/') && (/\.tsx?$/.test(f) || f.includes('/src/')));
    expect(sources).toEqual([]);
  });

  test("holds no certificate of the build machine's TLS proxy, and no extra trust settings", () => {
    expect(fs.existsSync(path.join(root, 'usr/local/share/ca-certificates')) ? fs.readdirSync(path.join(root, 'usr/local/share/ca-certificates')) : []).toEqual([]);
    expect(config.Env.filter((e) => /^(NODE_EXTRA_CA_CERTS|SSL_CERT_FILE|SSL_CERT_DIR|npm_config_cafile)=/i.test(e))).toEqual([]);
    for (const line of hostExtraCaLines()) {
      const found = spawnSync('grep', ['-rlF', '--no-messages', '-e', line, root], { encoding: 'utf8' });
      expect(found.stdout.trim()).toBe('');
      expect(found.status).toBe(1); // 1: no match anywhere in the image (2 would be an error)
    }
  });
});
