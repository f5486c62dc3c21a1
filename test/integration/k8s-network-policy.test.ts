// The NetworkPolicies of the rendered overlays, evaluated as the NetworkPolicy API defines them
// (a connection passes when the source's egress and the destination's ingress both allow it;
// a pod no policy selects in a direction is open in that direction). Who must reach whom is read
// from the services' own config.ts (their peers, Redis, MongoDB, the upstream), so a new call
// between services fails this test until a policy allows it; everything else must be refused.
import fs from 'node:fs';
import path from 'node:path';
import { parseAllDocuments } from 'yaml';
import { kustomize } from '../support/kube';
import { VARS as edgeVars } from '../../services/edge/src/config';
import { VARS as orchestratorVars } from '../../services/orchestrator/src/config';
import { VARS as brokerVars } from '../../services/llm-broker/src/config';
import { VARS as toolVars } from '../../services/tool-service/src/config';
import { VARS as storeVars } from '../../services/store/src/config';

const ROOT = path.resolve(__dirname, '../..');
const K8S = path.join(ROOT, 'deploy/k8s');
type Obj = Record<string, any>;

const SERVICES = ['edge', 'orchestrator', 'llm-broker', 'tool-service', 'store'] as const;
type Service = (typeof SERVICES)[number];
/** Every variable each service reads (the specs in its src/config.ts). */
const VARS: Record<Service, object> = { edge: edgeVars, orchestrator: orchestratorVars, 'llm-broker': brokerVars, 'tool-service': toolVars, store: storeVars };
const envPrefix = (s: string) => s.toUpperCase().replace(/-/g, '_');

// ---------------------------------------------------------------------------------------------
// Endpoints: pods in namespaces, or addresses outside the cluster.

interface Pod { ns: string; nsLabels: Record<string, string>; labels: Record<string, string>; ports: Obj[] }
interface External { ip: string }
type Endpoint = Pod | External;
const isPod = (e: Endpoint): e is Pod => 'labels' in e;
const namespace = (name: string) => ({ ns: name, nsLabels: { 'kubernetes.io/metadata.name': name } });

const INGRESS_CONTROLLER: Pod = { ...namespace('ingress-nginx'), labels: { 'app.kubernetes.io/name': 'ingress-nginx' }, ports: [] };
const PROMETHEUS: Pod = { ...namespace('monitoring'), labels: { 'app.kubernetes.io/name': 'prometheus' }, ports: [] };
/** Prometheus' pods as the edge's PROMETHEUS_URL reaches them (its Service forwards to 9090). */
const PROMETHEUS_API_PORT = 9090;
const PROMETHEUS_API: Pod = { ...PROMETHEUS, ports: [{ name: 'web', containerPort: PROMETHEUS_API_PORT }] };
const DNS: Pod = { ...namespace('kube-system'), labels: { 'k8s-app': 'kube-dns' }, ports: [{ containerPort: 53, protocol: 'UDP' }] };
const INTRUDER: Pod = { ...namespace('someone-else'), labels: { app: 'edge' }, ports: [] };
const PUBLIC: External = { ip: '203.0.113.10' };
const PRIVATE: External = { ip: '10.20.30.40' };

function matchSelector(sel: Obj | undefined, labels: Record<string, string>): boolean {
  if (!sel) return true;
  const byLabel = Object.entries(sel.matchLabels ?? {}).every(([k, v]) => labels[k] === v);
  const byExpr = ((sel.matchExpressions ?? []) as Obj[]).every((e) => {
    const has = e.key in labels;
    switch (e.operator) {
      case 'In': return has && (e.values as string[]).includes(labels[e.key]!);
      case 'NotIn': return !has || !(e.values as string[]).includes(labels[e.key]!);
      case 'Exists': return has;
      case 'DoesNotExist': return !has;
      default: throw new Error(`operator ${String(e.operator)}`);
    }
  });
  return byLabel && byExpr;
}

const ipToInt = (ip: string) => ip.split('.').reduce((n, o) => n * 256 + Number(o), 0);
function inCidr(ip: string, cidr: string): boolean {
  const [net, bits] = cidr.split('/');
  const block = 2 ** (32 - Number(bits));
  return Math.floor(ipToInt(ip) / block) === Math.floor(ipToInt(net!) / block);
}

/** Does a `from`/`to` peer of a policy in namespace `policyNs` match `e`? */
function peerMatches(peer: Obj, policyNs: string, e: Endpoint): boolean {
  if (peer.ipBlock) {
    if (isPod(e)) return false; // pod IPs live in the cluster's private ranges, which the upstream rule excludes
    return inCidr(e.ip, peer.ipBlock.cidr) && !((peer.ipBlock.except ?? []) as string[]).some((c) => inCidr(e.ip, c));
  }
  if (!isPod(e)) return false;
  const nsOk = peer.namespaceSelector ? matchSelector(peer.namespaceSelector, e.nsLabels) : e.ns === policyNs;
  return nsOk && matchSelector(peer.podSelector, e.labels);
}

function portMatches(ports: Obj[] | undefined, port: number, protocol: string, dest: Endpoint): boolean {
  if (!ports || ports.length === 0) return true;
  return ports.some((p) => {
    if ((p.protocol ?? 'TCP') !== protocol) return false;
    if (p.port === undefined) return true;
    if (typeof p.port === 'string') return isPod(dest) && dest.ports.some((cp) => cp.name === p.port && cp.containerPort === port);
    return port >= p.port && port <= (p.endPort ?? p.port);
  });
}

function allowed(policies: Obj[], from: Endpoint, to: Endpoint, port: number, protocol = 'TCP'): boolean {
  const applies = (dir: 'Ingress' | 'Egress', pod: Pod) => policies.filter((p) =>
    p.metadata.namespace === pod.ns && (p.spec.policyTypes ?? ['Ingress']).includes(dir) && matchSelector(p.spec.podSelector, pod.labels));
  const side = (dir: 'Ingress' | 'Egress', pod: Pod, peer: Endpoint) => {
    const selecting = applies(dir, pod);
    if (selecting.length === 0) return true;
    return selecting.some((p) => ((p.spec[dir === 'Ingress' ? 'ingress' : 'egress'] ?? []) as Obj[]).some((rule) => {
      const peers = (rule[dir === 'Ingress' ? 'from' : 'to'] ?? []) as Obj[];
      return (peers.length === 0 || peers.some((x) => peerMatches(x, p.metadata.namespace, peer))) && portMatches(rule.ports, port, protocol, to);
    }));
  };
  return (!isPod(from) || side('Egress', from, to)) && (!isPod(to) || side('Ingress', to, from));
}

// ---------------------------------------------------------------------------------------------
// Who calls whom, from the services' configuration code.

const reads = (s: Service, name: string) => name in VARS[s];
/** gRPC peers a service dials: the `<PEER>_ADDR` variables it reads. */
const grpcPeers = (s: Service) => SERVICES.filter((p) => reads(s, `${envPrefix(p)}_ADDR`));
/** Metrics ports a service reads: the edge's `<PEER>_METRICS_ADDR`. */
const metricsPeers = (s: Service) => SERVICES.filter((p) => reads(s, `${envPrefix(p)}_METRICS_ADDR`));
const usesRedis = (s: Service) => reads(s, 'REDIS_URL');
const usesMongo = (s: Service) => reads(s, 'MONGODB_URI');
const usesUpstream = (s: Service) => reads(s, 'LLM_BASE_URL');

describe.each(fs.readdirSync(path.join(K8S, 'overlays')).sort())('NetworkPolicies of overlays/%s', (overlay) => {
  const objects = parseAllDocuments(kustomize(path.join(K8S, 'overlays', overlay)).stdout).map((d) => d.toJS() as Obj);
  const policies = objects.filter((o) => o.kind === 'NetworkPolicy');
  const ns = String(objects.find((o) => o.kind === 'Deployment')!.metadata.namespace);
  const podOf = (app: string): Pod => {
    const d = objects.find((o) => o.kind === 'Deployment' && o.metadata.name === app);
    if (!d) throw new Error(`no Deployment ${app}`);
    return { ...namespace(ns), labels: d.spec.template.metadata.labels, ports: d.spec.template.spec.containers.flatMap((c: Obj) => c.ports ?? []) };
  };
  const portOf = (app: string, name: string) => Number(podOf(app).ports.find((p) => p.name === name)!.containerPort);
  const scrapePort = (app: string) => Number(objects.find((o) => o.kind === 'Deployment' && o.metadata.name === app)!.spec.template.metadata.annotations['prometheus.io/port']);
  const hasInfraPods = objects.some((o) => o.kind === 'Deployment' && o.metadata.name === 'redis');
  // Redis/MongoDB/OTLP: the dev pods when the overlay has them, otherwise a managed instance.
  const infra = (app: string): Endpoint => (hasInfraPods ? podOf(app) : PRIVATE);
  // An edge that runs the broker itself (components/inline-broker) calls the upstream too.
  const edgeEnv = (objects.find((o) => o.kind === 'Deployment' && o.metadata.name === 'edge')!.spec.template.spec.containers[0].env ?? []) as Obj[];
  const inlineBroker = edgeEnv.some((e) => e.name === 'EDGE_INLINE_BROKER' && e.value === 'true');
  const callsUpstream = (s: Service) => usesUpstream(s) || (s === 'edge' && inlineBroker);

  test('a default deny covers every pod in both directions', () => {
    const deny = policies.find((p) => Object.keys(p.spec.podSelector ?? {}).length === 0 && !p.spec.ingress && !p.spec.egress);
    expect(deny?.spec.policyTypes?.slice().sort()).toEqual(['Egress', 'Ingress']);
    // And so a pod the overlay adds later is closed until a policy opens it.
    const newcomer: Pod = { ...namespace(ns), labels: { app: 'newcomer' }, ports: [{ name: 'http', containerPort: 8080 }] };
    expect(allowed(policies, podOf('edge'), newcomer, 8080)).toBe(false);
    expect(allowed(policies, newcomer, PUBLIC, 443)).toBe(false);
  });

  test('the ingress controller reaches the edge, and only the edge', () => {
    expect(allowed(policies, INGRESS_CONTROLLER, podOf('edge'), portOf('edge', 'http'))).toBe(true);
    for (const s of SERVICES.filter((x) => x !== 'edge')) expect({ s, ok: allowed(policies, INGRESS_CONTROLLER, podOf(s), portOf(s, 'grpc')) }).toEqual({ s, ok: false });
  });

  test('each service is reached by exactly the callers its peers configure, on its gRPC and metrics ports', () => {
    const got: string[] = [];
    const want: string[] = [];
    for (const caller of SERVICES) {
      for (const callee of SERVICES.filter((x) => x !== 'edge' && x !== caller)) {
        for (const [kind, port] of [['grpc', portOf(callee, 'grpc')], ['metrics', portOf(callee, 'metrics')]] as const) {
          if (allowed(policies, podOf(caller), podOf(callee), port)) got.push(`${caller} → ${callee} ${kind}`);
          const expected = kind === 'grpc' ? grpcPeers(caller).includes(callee) : metricsPeers(caller).includes(callee);
          if (expected) want.push(`${caller} → ${callee} ${kind}`);
        }
      }
      // Nobody inside calls the edge.
      if (allowed(policies, podOf(caller), podOf('edge'), portOf('edge', 'http'))) got.push(`${caller} → edge http`);
    }
    expect(want.length).toBeGreaterThan(0);
    expect(got.sort()).toEqual(want.sort());
  });

  test('Prometheus reaches every scrape port and nothing else; pods of another namespace reach nothing', () => {
    for (const s of SERVICES) {
      expect({ s, scrape: allowed(policies, PROMETHEUS, podOf(s), scrapePort(s)) }).toEqual({ s, scrape: true });
      if (s !== 'edge') expect({ s, grpc: allowed(policies, PROMETHEUS, podOf(s), portOf(s, 'grpc')) }).toEqual({ s, grpc: false });
      const port = s === 'edge' ? portOf(s, 'http') : portOf(s, 'grpc');
      expect({ s, intruder: allowed(policies, INTRUDER, podOf(s), port) }).toEqual({ s, intruder: false });
    }
  });

  test('egress: DNS and the OTLP collector for all; Redis, MongoDB and the upstream only for their users', () => {
    for (const s of SERVICES) {
      const pod = podOf(s);
      expect({ s, dns: allowed(policies, pod, DNS, 53, 'UDP') }).toEqual({ s, dns: true });
      expect({ s, otlp: allowed(policies, pod, infra('jaeger'), 4318) }).toEqual({ s, otlp: true });
      expect({ s, redis: allowed(policies, pod, infra('redis'), 6379) }).toEqual({ s, redis: usesRedis(s) });
      expect({ s, mongodb: allowed(policies, pod, infra('mongodb'), 27017) }).toEqual({ s, mongodb: usesMongo(s) });
      expect({ s, upstream: allowed(policies, pod, PUBLIC, 443) }).toEqual({ s, upstream: callsUpstream(s) });
      // The upstream rule opens public addresses only, never the cluster's own.
      expect({ s, private443: allowed(policies, pod, PRIVATE, 443) }).toEqual({ s, private443: false });
    }
    expect(SERVICES.filter(usesUpstream)).toEqual(['llm-broker']);
  });

  test("the edge reaches Prometheus' HTTP API and Jaeger's query API (the ops page, run traces), and no other service does", () => {
    const data = objects.find((o) => o.kind === 'ConfigMap' && o.metadata.name === 'agent-mesh-config')!.data as Record<string, string>;
    // Both are set, so neither route answers 503 for want of configuration.
    expect(new URL(data.PROMETHEUS_URL!).hostname).toMatch(/\.monitoring(\.|$)/);
    const jaeger = new URL(data.JAEGER_QUERY_URL!);
    const users = SERVICES.filter((s) => reads(s, 'PROMETHEUS_URL'));
    expect(users).toEqual(['edge']);
    expect(SERVICES.filter((s) => reads(s, 'JAEGER_QUERY_URL'))).toEqual(['edge']);
    for (const s of SERVICES) {
      const pod = podOf(s);
      // PROMETHEUS_URL names its Service; the NetworkPolicy sees the pods' port.
      expect({ s, prometheus: allowed(policies, pod, PROMETHEUS_API, PROMETHEUS_API_PORT) }).toEqual({ s, prometheus: users.includes(s) });
      expect({ s, jaeger: allowed(policies, pod, infra('jaeger'), Number(jaeger.port)) }).toEqual({ s, jaeger: users.includes(s) });
    }
    // The dev Jaeger's query port is open to the edge, not to the world.
    if (hasInfraPods) expect(allowed(policies, INTRUDER, podOf('jaeger'), Number(jaeger.port))).toBe(false);
  });

  test('an upstream inside the cluster (LLM_BASE_URL naming a Service of the overlay) is reached by its users only', () => {
    const url = new URL(String(objects.find((o) => o.kind === 'ConfigMap' && o.metadata.name === 'agent-mesh-config')!.data.LLM_BASE_URL));
    const inCluster = objects.some((o) => o.kind === 'Service' && o.metadata.name === url.hostname);
    if (!inCluster) return expect(url.protocol).toBe('https:'); // a provider: the public-443 rule above
    const svc = objects.find((o) => o.kind === 'Service' && o.metadata.name === url.hostname)!;
    const port = svc.spec.ports.find((p: Obj) => p.port === Number(url.port));
    const target = podOf(url.hostname);
    const targetPort = typeof port.targetPort === 'string' ? Number(target.ports.find((p) => p.name === port.targetPort)!.containerPort) : Number(port.targetPort ?? port.port);
    for (const s of SERVICES) expect({ s, upstream: allowed(policies, podOf(s), target, targetPort) }).toEqual({ s, upstream: callsUpstream(s) });
    expect(allowed(policies, INTRUDER, target, targetPort)).toBe(false);
    expect(SERVICES.filter(usesMongo)).toEqual(['store']);
  });
});

describe('the evaluator', () => {
  const deny = { metadata: { namespace: 'a' }, spec: { podSelector: {}, policyTypes: ['Ingress', 'Egress'] } };
  const pod = (app: string, ns = 'a'): Pod => ({ ...namespace(ns), labels: { app }, ports: [{ name: 'grpc', containerPort: 50051 }] });

  test('no policy: open; a default deny: closed; a matching rule on both sides: open', () => {
    expect(allowed([], pod('x'), pod('y'), 50051)).toBe(true);
    expect(allowed([deny], pod('x'), pod('y'), 50051)).toBe(false);
    const egress = { metadata: { namespace: 'a' }, spec: { podSelector: { matchLabels: { app: 'x' } }, policyTypes: ['Egress'], egress: [{ to: [{ podSelector: { matchLabels: { app: 'y' } } }], ports: [{ port: 50051 }] }] } };
    const ingress = { metadata: { namespace: 'a' }, spec: { podSelector: { matchLabels: { app: 'y' } }, policyTypes: ['Ingress'], ingress: [{ from: [{ podSelector: { matchLabels: { app: 'x' } } }], ports: [{ port: 'grpc' }] }] } };
    expect(allowed([deny, egress], pod('x'), pod('y'), 50051)).toBe(false);
    expect(allowed([deny, egress, ingress], pod('x'), pod('y'), 50051)).toBe(true);
    expect(allowed([deny, egress, ingress], pod('x'), pod('y'), 50052)).toBe(false);
    expect(allowed([deny, egress, ingress], pod('x', 'b'), pod('y'), 50051)).toBe(false);
  });

  test('ipBlock with exceptions', () => {
    const out = { metadata: { namespace: 'a' }, spec: { podSelector: {}, policyTypes: ['Egress'], egress: [{ to: [{ ipBlock: { cidr: '0.0.0.0/0', except: ['10.0.0.0/8'] } }] }] } };
    expect(allowed([out], pod('x'), PUBLIC, 443)).toBe(true);
    expect(allowed([out], pod('x'), PRIVATE, 443)).toBe(false);
  });
});
