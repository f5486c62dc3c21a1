// The mesh from its container images (`npm run images`), for the image tests and the `images`
// benchmark: the five services and the emulator on a podman network whose aliases are the
// Kubernetes Service names, each container with the environment its manifests give it (the
// ConfigMap of deploy/k8s/base plus its Deployment's own `env`), and Redis, FerretDB and Jaeger
// as containers on the same network under the names the ConfigMap uses (redis, mongodb, jaeger).
// Containers run as the manifests run them: read-only root filesystem, no capabilities, the
// image's user. The host reaches every container at its address on the network's bridge.
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { parseAllDocuments } from 'yaml';
// eslint-disable-next-line @typescript-eslint/no-require-imports
const podmanLib = require('../../deploy/images/podman.js');
// eslint-disable-next-line @typescript-eslint/no-require-imports
const stack = require('../../deploy/local/stack.js');

export const podman: (args: string[], o?: { timeoutMs?: number }) => Promise<string> = podmanLib.podman;
export const podmanSync: (args: string[]) => { status: number | null; stdout: string; stderr: string } = podmanLib.podmanSync;
export const image: (name: string) => string = podmanLib.image;
export const SERVICE_IMAGES: readonly ServiceName[] = podmanLib.SERVICE_IMAGES;
export const IMAGES: readonly string[] = podmanLib.IMAGES;
export const BASE_IMAGE: string = podmanLib.BASE_IMAGE;

export type ServiceName = 'store' | 'llm-broker' | 'tool-service' | 'orchestrator' | 'edge';
const K8S_BASE = path.resolve(__dirname, '../../deploy/k8s/base');
const INFRA_CONTAINERFILE = path.resolve(__dirname, '../images/infra.Containerfile');
/** Redis from Debian in the local base; FerretDB and Jaeger are mounted from the host's cache. */
const INFRA_IMAGE = 'localhost/agent-mesh/test-infra:latest';

/** What the manifests say about one service's container. */
export interface ManifestService {
  name: ServiceName;
  /** The ConfigMap's data, then the Deployment's plain `env` values on top. */
  env: Record<string, string>;
  /** Variables the Deployment takes from the Secret (the caller supplies them). */
  secretEnv: string[];
  /** Named container ports (`grpc`, `metrics`, `http`). */
  ports: Record<string, number>;
  terminationGracePeriodSeconds: number;
}

type Obj = Record<string, any>;
function docs(file: string): Obj[] {
  return parseAllDocuments(fs.readFileSync(path.join(K8S_BASE, file), 'utf8')).map((d) => d.toJS() as Obj).filter(Boolean);
}

export function manifestService(name: ServiceName): ManifestService {
  const config = docs('config.yaml').find((d) => d.kind === 'ConfigMap');
  const deployment = docs(`${name}.yaml`).find((d) => d.kind === 'Deployment');
  if (!config || !deployment) throw new Error(`deploy/k8s/base: no ConfigMap or no Deployment for ${name}`);
  const pod = deployment.spec.template.spec;
  const container = pod.containers[0];
  const env: Record<string, string> = { ...config.data };
  const secretEnv: string[] = [];
  for (const e of container.env ?? []) {
    if (e.value !== undefined) env[e.name] = String(e.value);
    else secretEnv.push(e.name);
  }
  const ports = Object.fromEntries((container.ports ?? []).map((p: Obj) => [p.name, p.containerPort]));
  return { name, env, secretEnv, ports, terminationGracePeriodSeconds: pod.terminationGracePeriodSeconds ?? 30 };
}

function tcpOpen(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host, port });
    s.once('connect', () => { s.destroy(); resolve(true); });
    s.once('error', () => resolve(false));
  });
}

export interface RunningContainer {
  name: string;
  ip: string;
}

export interface ServiceContainer extends RunningContainer {
  manifest: ManifestService;
  /** `ip:port` of its gRPC server (not for the edge). */
  grpcAddr?: string;
  /** Its Prometheus endpoint, from outside the container. */
  metricsUrl: string;
  /** The edge's base URL. */
  url?: string;
}

/** Manifest values the test environment has to replace, and the Secret's values. */
export interface ContainerMeshOptions {
  logDir: string;
  secrets: Record<string, string>;
  /** On top of the manifests' environment, for every service (e.g. LLM_BASE_URL → the emulator). */
  overrides?: Record<string, string>;
  emulatorEnv?: Record<string, string>;
  /** Services to start (all five by default). */
  services?: readonly ServiceName[];
}

/** Fails with what to run when an image is missing. */
export function requireImages(names: readonly string[] = IMAGES): void {
  const missing: string[] = podmanLib.missingImages(names);
  if (missing.length) throw new Error(`images missing: ${missing.map(image).join(', ')} (run: npm run images)`);
}

/** Builds the infrastructure image once (podman's layer cache makes later calls instant). */
export async function ensureInfraImage(): Promise<void> {
  if (podmanSync(['image', 'exists', INFRA_IMAGE]).status === 0) return;
  await podman(['build', '--quiet', '--layers', '--build-arg', `BASE=${BASE_IMAGE}`, '-t', INFRA_IMAGE,
    '-f', INFRA_CONTAINERFILE, path.dirname(INFRA_CONTAINERFILE)], { timeoutMs: 600_000 });
}

/** One podman network and the containers started on it; `close()` removes them all. */
export class ContainerNetwork {
  readonly name: string;
  readonly containers: string[] = [];
  private constructor(name: string, readonly logDir: string) { this.name = name; }

  static async create(logDir: string): Promise<ContainerNetwork> {
    const name = `mesh-test-${process.pid}-${Date.now().toString(36)}`;
    await podman(['network', 'create', name]);
    return new ContainerNetwork(name, logDir);
  }

  /** Starts a detached container on the network, reachable under `alias`. */
  async run(alias: string, img: string, { env = {}, args = [], cmd = [], readOnly = true }: {
    env?: Record<string, string>; args?: string[]; cmd?: string[]; readOnly?: boolean;
  } = {}): Promise<RunningContainer> {
    const name = `${this.name}-${alias}`;
    const envArgs = Object.entries(env).flatMap(([k, v]) => ['-e', `${k}=${v}`]);
    this.containers.push(name);
    await podman(['run', '-d', '--name', name, '--network', this.name, '--network-alias', alias,
      '--label', `agent-mesh.test=${this.name}`,
      ...(readOnly ? ['--read-only', '--cap-drop=all', '--security-opt=no-new-privileges'] : []),
      ...envArgs, ...args, img, ...cmd]);
    return { name, ip: await podmanLib.containerIp(name, this.name) };
  }

  /** Sends SIGTERM (podman stop), waits up to `graceS` before SIGKILL; the exit code and the time it took. */
  async stop(name: string, graceS: number): Promise<{ exitCode: number; ms: number }> {
    const start = Date.now();
    await podman(['stop', '--time', String(graceS), name], { timeoutMs: (graceS + 30) * 1000 });
    const ms = Date.now() - start;
    const exitCode = Number(await podman(['inspect', '--format', '{{.State.ExitCode}}', name]));
    return { exitCode, ms };
  }

  logs(name: string): string {
    const r = podmanSync(['logs', name]);
    return `${r.stdout}\n${r.stderr}`;
  }

  /** Keeps every container's log in logDir, then removes the containers and the network. */
  close(): void {
    fs.mkdirSync(this.logDir, { recursive: true });
    for (const c of this.containers) {
      fs.writeFileSync(path.join(this.logDir, `${c.slice(this.name.length + 1)}.log`), this.logs(c));
      podmanSync(['rm', '-f', '-t', '0', c]);
    }
    podmanSync(['network', 'rm', '-f', this.name]);
  }
}

export interface Infra {
  redis: RunningContainer;
  mongodb: RunningContainer;
  jaeger: RunningContainer & { queryUrl: string };
}

/** Redis, FerretDB and Jaeger on the network under the ConfigMap's names and ports. */
export async function startInfra(netw: ContainerNetwork): Promise<Infra> {
  await ensureInfraImage();
  const bin = (n: string) => {
    const p = path.join(stack.BIN, n);
    if (!fs.existsSync(p)) throw new Error(`${p} is missing: run deploy/local/install.sh`);
    return `${p}:/usr/local/bin/${n}:ro`;
  };
  const jaegerCfg = path.join(netw.logDir, 'jaeger.yaml');
  fs.mkdirSync(netw.logDir, { recursive: true });
  fs.writeFileSync(jaegerCfg, stack.jaegerConfig({
    host: '0.0.0.0', otlpHttpPort: 4318, otlpGrpcPort: 4317, queryPort: 16686, queryGrpcPort: 16685, healthPort: 13133,
  }));
  const [redis, mongodb, jaeger] = await Promise.all([
    netw.run('redis', INFRA_IMAGE, { cmd: ['redis-server', '--save', '', '--appendonly', 'no', '--protected-mode', 'no'] }),
    netw.run('mongodb', INFRA_IMAGE, {
      args: ['-v', bin('ferretdb'), '--tmpfs', '/data'],
      cmd: ['ferretdb', '--handler=sqlite', '--sqlite-url=file:/data/', '--listen-addr=0.0.0.0:27017',
        '--state-dir=-', '--telemetry=disable', '--debug-addr=-', '--log-level=warn'],
    }),
    netw.run('jaeger', INFRA_IMAGE, { args: ['-v', bin('jaeger'), '-v', `${jaegerCfg}:/etc/jaeger.yaml:ro`], cmd: ['jaeger', '--config', '/etc/jaeger.yaml'] }),
  ]);
  const queryUrl = `http://${jaeger.ip}:16686`;
  await Promise.all([
    stack.waitFor('redis container', () => tcpOpen(redis.ip, 6379)),
    stack.waitFor('ferretdb container', () => tcpOpen(mongodb.ip, 27017)),
    stack.waitFor('jaeger container', async () => (await fetch(`${queryUrl}/api/services`)).ok, { timeoutMs: 60_000 }),
  ]);
  return { redis, mongodb, jaeger: { ...jaeger, queryUrl } };
}

/** The emulator's image on the network as `emulator` (port 8090). */
export async function startEmulatorContainer(netw: ContainerNetwork, env: Record<string, string> = {}): Promise<RunningContainer & { url: string }> {
  const c = await netw.run('emulator', image('emulator'), { env });
  const url = `http://${c.ip}:8090`;
  await stack.waitFor('emulator container', async () => (await fetch(`${url}/health`)).ok);
  return { ...c, url };
}

/** The environment a service's container gets: the manifests', then `overrides`, then its secrets. */
export function serviceEnv(m: ManifestService, overrides: Record<string, string>, secrets: Record<string, string>): Record<string, string> {
  const env = { ...m.env, ...overrides };
  for (const k of m.secretEnv) {
    if (secrets[k] === undefined) throw new Error(`${m.name} takes ${k} from the Secret: pass it in secrets`);
    env[k] = secrets[k]!;
  }
  return env;
}

/** Starts one service's container; resolves once it is reachable from outside (not yet ready). */
export async function runService(netw: ContainerNetwork, name: ServiceName, opts: { overrides?: Record<string, string>; secrets: Record<string, string>; alias?: string }): Promise<ServiceContainer> {
  const m = manifestService(name);
  const c = await netw.run(opts.alias ?? name, image(name), { env: serviceEnv(m, opts.overrides ?? {}, opts.secrets) });
  if (name === 'edge') {
    const url = `http://${c.ip}:${m.ports.http}`;
    return { ...c, manifest: m, url, metricsUrl: `${url}/metrics` };
  }
  return { ...c, manifest: m, grpcAddr: `${c.ip}:${m.ports.grpc}`, metricsUrl: `http://${c.ip}:${m.ports.metrics}/metrics` };
}

/** The service answers: gRPC health SERVING, or the edge's /api/health 200. */
export async function serving(s: ServiceContainer): Promise<boolean> {
  if (s.url) {
    try { return (await fetch(`${s.url}/api/health`)).status === 200; } catch { return false; }
  }
  return stack.grpcServing(s.grpcAddr);
}

export interface ContainerMesh {
  network: ContainerNetwork;
  infra: Infra;
  emulator: RunningContainer & { url: string };
  services: Record<ServiceName, ServiceContainer>;
  close(): void;
}

/** Infrastructure, the emulator and the services, all started at once as a cluster would, ready. */
export async function startContainerMesh(o: ContainerMeshOptions): Promise<ContainerMesh> {
  requireImages();
  const netw = await ContainerNetwork.create(o.logDir);
  try {
    const [infra, emulator] = await Promise.all([startInfra(netw), startEmulatorContainer(netw, o.emulatorEnv)]);
    const names = o.services ?? SERVICE_IMAGES;
    const started = await Promise.all(names.map((n) => runService(netw, n, { overrides: o.overrides, secrets: o.secrets })));
    const services = Object.fromEntries(started.map((s) => [s.manifest.name, s])) as Record<ServiceName, ServiceContainer>;
    await Promise.all(started.map((s) => stack.waitFor(`${s.manifest.name} container serving`, () => serving(s), { timeoutMs: 60_000, intervalMs: 250 })));
    return { network: netw, infra, emulator, services, close: () => netw.close() };
  } catch (err) {
    netw.close();
    throw err;
  }
}
