// Offline checks of the Kubernetes manifests under deploy/k8s (k8s-apiserver.test.ts runs them
// through a real API server): every YAML document is parsed, validated with the
// kubernetes-models 4.5 schemas, checked for fields those schemas do not know, and held to the
// deployment rules of the brief: non-root, probes, requests and limits, graceful shutdown, heap
// sized from the memory limit, autoscaling on the signals that matter, consistent wiring.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { parseAllDocuments } from 'yaml';
import { Deployment } from 'kubernetes-models/apps/v1/Deployment';
import { HorizontalPodAutoscaler } from 'kubernetes-models/autoscaling/v2/HorizontalPodAutoscaler';
import { Ingress } from 'kubernetes-models/networking.k8s.io/v1/Ingress';
import { NetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1/NetworkPolicy';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1/PodDisruptionBudget';
import { ConfigMap } from 'kubernetes-models/v1/ConfigMap';
import { Secret } from 'kubernetes-models/v1/Secret';
import { config, parseCallerPolicy } from '@agent-mesh/common';
import { Service } from 'kubernetes-models/v1/Service';
import { ServiceAccount } from 'kubernetes-models/v1/ServiceAccount';
import { PrometheusRule } from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule';
import { ServiceMonitor } from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor';
import { kustomize } from '../support/kube';
// eslint-disable-next-line @typescript-eslint/no-require-imports
const stack = require('../../deploy/local/stack.js') as { CALLERS: Record<string, string> };
import { loadConfig as edgeConfig } from '../../services/edge/src/config';

const K8S = path.resolve(__dirname, '../../deploy/k8s');

type Obj = Record<string, unknown>;
type ModelCtor = new (data: Obj) => { validate(): void };

/** apiVersion/kind → kubernetes-models class. Any other kind fails the suite. */
const MODELS: Record<string, ModelCtor> = {
  'v1/ConfigMap': ConfigMap as unknown as ModelCtor,
  'v1/Secret': Secret as unknown as ModelCtor,
  'v1/Service': Service as unknown as ModelCtor,
  'v1/ServiceAccount': ServiceAccount as unknown as ModelCtor,
  'apps/v1/Deployment': Deployment as unknown as ModelCtor,
  'autoscaling/v2/HorizontalPodAutoscaler': HorizontalPodAutoscaler as unknown as ModelCtor,
  'networking.k8s.io/v1/Ingress': Ingress as unknown as ModelCtor,
  'networking.k8s.io/v1/NetworkPolicy': NetworkPolicy as unknown as ModelCtor,
  'policy/v1/PodDisruptionBudget': PodDisruptionBudget as unknown as ModelCtor,
  // prometheus-operator kinds (components/monitoring)
  'monitoring.coreos.com/v1/PrometheusRule': PrometheusRule as unknown as ModelCtor,
  'monitoring.coreos.com/v1/ServiceMonitor': ServiceMonitor as unknown as ModelCtor,
};
/** kustomize's own files (not Kubernetes objects): allowed only as kustomization.yaml. */
const KUSTOMIZE_KINDS = ['kustomize.config.k8s.io/v1beta1/Kustomization', 'kustomize.config.k8s.io/v1alpha1/Component'];
/** Top-level fields of kustomize v5's Kustomization/Component (kustomize has no schema in this repo). */
const KUSTOMIZATION_FIELDS = new Set([
  'apiVersion', 'kind', 'metadata', 'openapi', 'namePrefix', 'nameSuffix', 'namespace', 'commonLabels', 'labels',
  'commonAnnotations', 'patches', 'patchesStrategicMerge', 'patchesJson6902', 'images', 'replacements', 'replicas',
  'vars', 'sortOptions', 'resources', 'components', 'crds', 'bases', 'configMapGenerator', 'secretGenerator',
  'generatorOptions', 'helmGlobals', 'helmCharts', 'configurations', 'generators', 'transformers', 'validators',
  'buildMetadata',
]);

const APP_SERVICES = ['edge', 'orchestrator', 'llm-broker', 'tool-service', 'store'] as const;
const GRPC_SERVICES = ['orchestrator', 'llm-broker', 'tool-service', 'store'] as const;
/** `llm-broker` → `LLM_BROKER`, the prefix of its variables. */
const envPrefix = (service: string) => service.toUpperCase().replace(/-/g, '_');
/** Lifecycle (services/common/src/lifecycle) force-exits this long after SHUTDOWN_GRACE_MS. */
const APP_FORCE_EXIT_MARGIN_MS = 2_000;

// ---------------------------------------------------------------------------------------------
// Unknown fields.
//
// kubernetes-models does not reject unknown fields, and it ships its schemas compiled to ajv
// standalone validators (`_schemas/*.js`): the JSON Schema objects themselves (`properties`,
// `$ref`) are not in the package, so they cannot be walked directly. The compiled code, though, reads
// every property its schema declares (`data.<name>`, following each `$ref` into the referenced
// validator) and enumerates an object's keys only where the schema allows arbitrary keys (maps such
// as labels, annotations, ConfigMap data). Running the model's own validator over a Proxy that
// records those reads therefore tells, for every object in a document, which keys the schema knows;
// a key that was never read is unknown — `replica:` for `replicas:` included.

interface Reads {
  path: string;
  read: Set<string>;
  /** The validator iterated the keys: a map, whose keys are data, not field names. */
  enumerated: boolean;
}

function unknownFields(body: Obj, Model: ModelCtor): string[] {
  const seen = new Map<object, Reads>();
  const proxies = new WeakMap<object, object>();
  const wrap = (value: unknown, at: string): unknown => {
    if (value === null || typeof value !== 'object') return value;
    const existing = proxies.get(value);
    if (existing) return existing;
    const reads: Reads = { path: at, read: new Set(), enumerated: false };
    seen.set(value, reads);
    const proxy = new Proxy(value, {
      get(target, key, receiver) {
        const v: unknown = Reflect.get(target, key, receiver);
        if (typeof key !== 'string') return v;
        reads.read.add(key);
        return Object.prototype.hasOwnProperty.call(target, key) ? wrap(v, `${at}/${key}`) : v;
      },
      ownKeys(target) {
        reads.enumerated = true;
        return Reflect.ownKeys(target);
      },
    });
    proxies.set(value, proxy);
    return proxy;
  };
  try {
    // The same validate() as `new Model(body).validate()`, with the tracked document as `this`
    // (the constructor would copy the document and lose the Proxy). Its verdict is checked elsewhere.
    Model.prototype.validate.call(wrap(body, ''));
  } catch {
    /* schema errors are reported by schemaErrors() */
  }
  const unknown: string[] = [];
  for (const [object, reads] of seen) {
    if (Array.isArray(object) || reads.enumerated) continue;
    for (const key of Object.keys(object)) {
      if (!reads.read.has(key)) unknown.push(`${reads.path}/${key}`);
    }
  }
  return unknown.sort();
}

interface AjvError {
  instancePath: string;
  keyword: string;
  message?: string;
  params?: Obj;
}

/** kubernetes-models validation; `partial` (patch files) ignores missing required fields. */
function schemaErrors(body: Obj, Model: ModelCtor, partial = false): string[] {
  try {
    new Model(body).validate();
    return [];
  } catch (err) {
    const errors = (err as { errors?: AjvError[] }).errors;
    if (!errors) return [String(err)];
    return errors
      .filter((e) => !(partial && e.keyword === 'required'))
      .map((e) => `${e.instancePath || '/'} ${e.message ?? e.keyword} ${e.params ? JSON.stringify(e.params) : ''}`.trim());
  }
}

// ---------------------------------------------------------------------------------------------
// Loading.

interface Doc {
  /** Path relative to deploy/k8s. */
  file: string;
  index: number;
  body: Obj;
}

const typeKey = (body: Obj) => `${String(body.apiVersion)}/${String(body.kind)}`;
const nameOf = (body: Obj) => String((body.metadata as Obj | undefined)?.name);
const where = (d: Doc) => `${d.file}#${d.index} ${String(d.body.kind)}/${nameOf(d.body)}`;

function yamlFiles(dir: string): string[] {
  return fs
    .readdirSync(dir, { withFileTypes: true })
    .flatMap((e) => (e.isDirectory() ? yamlFiles(path.join(dir, e.name)) : /\.ya?ml$/.test(e.name) ? [path.join(dir, e.name)] : []))
    .sort();
}

/** Parses a multi-document YAML text; throws on syntax errors and duplicate keys. */
function parseYaml(text: string, file: string): Obj[] {
  return parseAllDocuments(text, { uniqueKeys: true }).flatMap((d, i) => {
    if (d.errors.length) throw new Error(`${file}#${i}: ${d.errors.map((e) => e.message).join('; ')}`);
    const body: unknown = d.toJS();
    if (body === null || body === undefined) return []; // a comment-only document (e.g. before the first ---)
    if (typeof body !== 'object' || Array.isArray(body)) throw new Error(`${file}#${i}: not a mapping`);
    return [body as Obj];
  });
}

const files = yamlFiles(K8S);
const docs: Doc[] = files.flatMap((abs) =>
  parseYaml(fs.readFileSync(abs, 'utf8'), abs).map((body, index) => ({ file: path.relative(K8S, abs), index, body })),
);
const kustomizations = docs.filter((d) => path.basename(d.file) === 'kustomization.yaml');

const asArray = (v: unknown): unknown[] => (Array.isArray(v) ? v : []);
const asObj = (v: unknown): Obj => (v && typeof v === 'object' && !Array.isArray(v) ? (v as Obj) : {});

/** Files a kustomization refers to (resources, components, patches, generator inputs), resolved. */
function referencedPaths(k: Doc): string[] {
  const dir = path.join(K8S, path.dirname(k.file));
  const refs: string[] = [
    ...asArray(k.body.resources),
    ...asArray(k.body.components),
    ...asArray(k.body.bases),
    ...asArray(k.body.patchesStrategicMerge),
    ...asArray(k.body.patches).map((p) => asObj(p).path),
    ...asArray(k.body.patchesJson6902).map((p) => asObj(p).path),
    ...[...asArray(k.body.configMapGenerator), ...asArray(k.body.secretGenerator)].flatMap((g) => [
      ...asArray(asObj(g).files).map((f) => String(f).replace(/^[^=]*=/, '')),
      ...asArray(asObj(g).envs),
    ]),
  ].filter((r): r is string => typeof r === 'string');
  return refs.map((r) => path.resolve(dir, r));
}

/** Patch files, validated without the required-field rule (they are partial objects). */
const patchFiles = new Set(
  kustomizations.flatMap((k) => {
    const dir = path.join(K8S, path.dirname(k.file));
    return [...asArray(k.body.patches).map((p) => asObj(p).path), ...asArray(k.body.patchesStrategicMerge)]
      .filter((p): p is string => typeof p === 'string')
      .map((p) => path.relative(K8S, path.resolve(dir, p)));
  }),
);
const isPatch = (d: Doc) => patchFiles.has(d.file);
const objects = docs.filter((d) => !KUSTOMIZE_KINDS.includes(typeKey(d.body)));
const full = objects.filter((d) => !isPatch(d));

// ---------------------------------------------------------------------------------------------
// Accessors for the application's objects (base/).

const inDir = (dir: string) => (d: Doc) => d.file.startsWith(`${dir}/`);
const ofKind = (kind: string, list: Doc[] = full) => list.filter((d) => d.body.kind === kind);
const base = full.filter(inDir('base'));

function one(kind: string, name: string, list: Doc[] = base): Obj {
  const found = list.filter((d) => d.body.kind === kind && nameOf(d.body) === name);
  if (found.length !== 1) throw new Error(`expected one ${kind}/${name}, found ${found.length}`);
  return found[0]!.body;
}

const podSpec = (deployment: Obj) => asObj(asObj(asObj(deployment.spec).template).spec);
const podLabels = (deployment: Obj) => asObj(asObj(asObj(asObj(deployment.spec).template).metadata).labels);
const podAnnotations = (deployment: Obj) => asObj(asObj(asObj(asObj(deployment.spec).template).metadata).annotations);
const containersOf = (deployment: Obj) => [...asArray(podSpec(deployment).initContainers), ...asArray(podSpec(deployment).containers)].map(asObj);
const mainContainer = (deployment: Obj) => asObj(asArray(podSpec(deployment).containers)[0]);
const envValue = (container: Obj, name: string) => asObj(asArray(container.env).map(asObj).find((e) => e.name === name)).value;
const envEntry = (container: Obj, name: string) => asArray(container.env).map(asObj).find((e) => e.name === name);
const containerPort = (container: Obj, name: string) => asObj(asArray(container.ports).map(asObj).find((p) => p.name === name)).containerPort;
const selects = (selector: Obj, labels: Obj) => Object.keys(selector).length > 0 && Object.entries(selector).every(([k, v]) => labels[k] === v);

/** Parses a Kubernetes memory quantity into bytes. */
function bytes(q: unknown): number {
  const m = /^(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?$/.exec(String(q));
  if (!m) throw new Error(`unsupported memory quantity ${String(q)}`);
  const unit: Record<string, number> = { Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, k: 1e3, M: 1e6, G: 1e9, T: 1e12 };
  return Number(m[1]) * (m[2] ? unit[m[2]]! : 1);
}

/** Problems with references between objects of one set: selectors, ports, HPA/PDB targets, config. */
function wiringProblems(set: Doc[]): string[] {
  const problems: string[] = [];
  const deployments = ofKind('Deployment', set);
  for (const svc of ofKind('Service', set)) {
    const selector = asObj(asObj(svc.body.spec).selector);
    const matches = deployments.filter((d) => selects(selector, podLabels(d.body)));
    if (matches.length !== 1) {
      problems.push(`${where(svc)}: selector ${JSON.stringify(selector)} matches ${matches.length} Deployments`);
      continue;
    }
    const target = matches[0]!.body;
    if (nameOf(target) !== nameOf(svc.body)) problems.push(`${where(svc)}: selects Deployment ${nameOf(target)}`);
    const ports = containersOf(target).flatMap((c) => asArray(c.ports).map(asObj));
    for (const p of asArray(asObj(svc.body.spec).ports).map(asObj)) {
      const ok = typeof p.targetPort === 'string'
        ? ports.some((cp) => cp.name === p.targetPort)
        : ports.some((cp) => cp.containerPort === (p.targetPort ?? p.port));
      if (!ok) problems.push(`${where(svc)}: port ${String(p.name)} targets ${String(p.targetPort)}, which the pods do not expose`);
    }
  }
  for (const d of deployments) {
    const selector = asObj(asObj(asObj(d.body.spec).selector).matchLabels);
    if (!selects(selector, podLabels(d.body))) problems.push(`${where(d)}: selector does not match its own pod labels`);
  }
  for (const pdb of ofKind('PodDisruptionBudget', set)) {
    const selector = asObj(asObj(asObj(pdb.body.spec).selector).matchLabels);
    const n = deployments.filter((d) => selects(selector, podLabels(d.body))).length;
    if (n !== 1) problems.push(`${where(pdb)}: selects ${n} Deployments`);
  }
  for (const hpa of ofKind('HorizontalPodAutoscaler', set)) {
    const ref = asObj(asObj(hpa.body.spec).scaleTargetRef);
    const target = deployments.find((d) => nameOf(d.body) === ref.name);
    if (ref.kind !== 'Deployment' || ref.apiVersion !== 'apps/v1' || !target) problems.push(`${where(hpa)}: no target Deployment ${String(ref.name)}`);
    else if (asObj(target.body.spec).replicas !== undefined) problems.push(`${where(target)}: sets replicas although HPA ${nameOf(hpa.body)} owns the count`);
  }
  for (const ing of ofKind('Ingress', set)) {
    for (const rule of asArray(asObj(ing.body.spec).rules)) {
      for (const p of asArray(asObj(asObj(rule).http).paths)) {
        const backend = asObj(asObj(asObj(p).backend).service);
        const svc = ofKind('Service', set).find((s) => nameOf(s.body) === backend.name);
        const port = asObj(backend.port);
        const ok = svc && asArray(asObj(svc.body.spec).ports).map(asObj).some((sp) => sp.name === port.name || sp.port === port.number);
        if (!ok) problems.push(`${where(ing)}: backend ${String(backend.name)}:${String(port.name ?? port.number)} does not exist`);
      }
    }
  }
  const configMaps = new Set(ofKind('ConfigMap', set).map((c) => nameOf(c.body)));
  for (const d of deployments) {
    for (const c of containersOf(d.body)) {
      for (const from of asArray(c.envFrom).map(asObj)) {
        const ref = asObj(from.configMapRef);
        if (ref.name !== undefined && !configMaps.has(String(ref.name))) problems.push(`${where(d)}: envFrom ConfigMap ${String(ref.name)} does not exist`);
      }
    }
  }
  return problems;
}

// ---------------------------------------------------------------------------------------------

describe('deploy/k8s manifests', () => {
  test('the expected files exist and every document has a known kind', () => {
    for (const f of [
      'base/kustomization.yaml', 'base/config.yaml', 'base/secret.example.yaml',
      ...APP_SERVICES.map((s) => `base/${s}.yaml`),
      'overlays/production/kustomization.yaml', 'components/infra-dev/kustomization.yaml',
      'base/network-policy.yaml', 'components/infra-dev/network-policy.yaml', 'prometheus-adapter/kustomization.yaml',
    ]) {
      expect(fs.existsSync(path.join(K8S, f))).toBe(true);
    }
    const problems = docs.flatMap((d) => {
      const key = typeKey(d.body);
      const isKustomizationFile = path.basename(d.file) === 'kustomization.yaml';
      if (isKustomizationFile) return KUSTOMIZE_KINDS.includes(key) ? [] : [`${d.file}: ${key} is not a kustomization`];
      return MODELS[key] ? [] : [`${where(d)}: unknown apiVersion/kind ${key}`];
    });
    expect(problems).toEqual([]);
  });

  test('every object passes kubernetes-models validation (patches: all but required fields)', () => {
    const problems = objects.flatMap((d) => schemaErrors(d.body, MODELS[typeKey(d.body)]!, isPatch(d)).map((e) => `${where(d)}: ${e}`));
    expect(problems).toEqual([]);
  });

  test('no object has a field its schema does not know', () => {
    const problems = objects.flatMap((d) => unknownFields(d.body, MODELS[typeKey(d.body)]!).map((f) => `${where(d)}: unknown field ${f}`));
    expect(problems).toEqual([]);
  });

  describe('the unknown-field check', () => {
    const edge = () => structuredClone(one('Deployment', 'edge'));

    test('rejects a misspelled `replica:` in a Deployment that kubernetes-models accepts', () => {
      const bad = edge();
      (bad.spec as Obj).replica = 3;
      expect(schemaErrors(bad, MODELS['apps/v1/Deployment']!)).toEqual([]); // why the check exists
      expect(unknownFields(bad, MODELS['apps/v1/Deployment']!)).toEqual(['/spec/replica']);
    });

    test('finds misspellings deep inside, through the referenced schemas', () => {
      const bad = edge();
      const container = mainContainer(bad);
      container.readinesProbe = container.readinessProbe;
      asObj(container.securityContext).runAsNonroot = true;
      asObj(podSpec(bad).securityContext).seccompprofile = { type: 'RuntimeDefault' };
      expect(unknownFields(bad, MODELS['apps/v1/Deployment']!)).toEqual([
        '/spec/template/spec/containers/0/readinesProbe',
        '/spec/template/spec/containers/0/securityContext/runAsNonroot',
        '/spec/template/spec/securityContext/seccompprofile',
      ]);
    });

    test('accepts any key in maps (labels, annotations, ConfigMap data)', () => {
      const ok = edge();
      asObj(asObj(ok.metadata).labels)['any.example.com/whatever'] = 'x';
      podAnnotations(ok)['another/annotation'] = 'y';
      expect(unknownFields(ok, MODELS['apps/v1/Deployment']!)).toEqual([]);
      expect(unknownFields({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'x' }, data: { ANY_KEY: '1' } }, MODELS['v1/ConfigMap']!)).toEqual([]);
    });

    test('leaves type errors to the schema validation, which catches them', () => {
      const bad = edge();
      (bad.spec as Obj).revisionHistoryLimit = 'five';
      expect(schemaErrors(bad, MODELS['apps/v1/Deployment']!).join()).toMatch(/revisionHistoryLimit/);
    });
  });

  describe('kustomize', () => {
    test('kustomization files use only known fields', () => {
      const problems = kustomizations.flatMap((k) => [
        ...Object.keys(k.body).filter((key) => !KUSTOMIZATION_FIELDS.has(key)).map((key) => `${k.file}: unknown field ${key}`),
        ...asArray(k.body.patches).flatMap((p) => Object.keys(asObj(p)).filter((key) => !['path', 'patch', 'target', 'options'].includes(key)).map((key) => `${k.file}: unknown patch field ${key}`)),
        ...asArray(k.body.images).flatMap((i) => Object.keys(asObj(i)).filter((key) => !['name', 'newName', 'newTag', 'digest'].includes(key)).map((key) => `${k.file}: unknown image field ${key}`)),
      ]);
      expect(problems).toEqual([]);
    });

    test('every kustomization lists only files that exist', () => {
      const problems = kustomizations.flatMap((k) =>
        referencedPaths(k)
          .filter((p) => !(fs.existsSync(p) && (fs.statSync(p).isFile() || fs.existsSync(path.join(p, 'kustomization.yaml')))))
          .map((p) => `${k.file}: ${path.relative(K8S, p)} does not exist`),
      );
      expect(problems).toEqual([]);
    });

    test('every manifest beside a kustomization is listed in it (examples excepted)', () => {
      const problems = kustomizations.flatMap((k) => {
        const dir = path.join(K8S, path.dirname(k.file));
        const listed = new Set(referencedPaths(k));
        return fs
          .readdirSync(dir)
          .filter((f) => /\.ya?ml$/.test(f) && f !== 'kustomization.yaml' && !/\.example\.ya?ml$/.test(f))
          .filter((f) => !listed.has(path.join(dir, f)))
          .map((f) => `${k.file}: does not list ${f}`);
      });
      expect(problems).toEqual([]);
    });

    test('the example Secret is not applied by default', () => {
      const all = kustomizations.flatMap(referencedPaths);
      expect(all.some((p) => /secret\.example\.ya?ml$/.test(p))).toBe(false);
    });

    test('patches target objects that exist in the base', () => {
      const problems = docs.filter(isPatch).flatMap((p) =>
        base.some((b) => typeKey(b.body) === typeKey(p.body) && nameOf(b.body) === nameOf(p.body)) ? [] : [`${where(p)}: no such object in base/`],
      );
      expect(problems).toEqual([]);
    });
  });

  describe('wiring', () => {
    test('base: Service selectors match their Deployment pod labels; ports, PDBs, HPAs, Ingress and ConfigMap refs resolve', () => {
      expect(wiringProblems(base)).toEqual([]);
    });

    test('components/infra-dev: Services select their Deployments', () => {
      expect(wiringProblems(full.filter(inDir('components/infra-dev')))).toEqual([]);
    });

    test('every application service has a ServiceAccount, Deployment, Service, PDB and HPA in its own file', () => {
      for (const s of APP_SERVICES) {
        const kinds = full.filter((d) => d.file === `base/${s}.yaml`).map((d) => `${String(d.body.kind)}/${nameOf(d.body)}`);
        for (const k of ['ServiceAccount', 'Deployment', 'Service', 'PodDisruptionBudget', 'HorizontalPodAutoscaler']) expect(kinds).toContain(`${k}/${s}`);
        expect(podSpec(one('Deployment', s)).serviceAccountName).toBe(s);
        expect(mainContainer(one('Deployment', s)).image).toBe(`agent-mesh/${s}:latest`);
      }
    });

    test('gRPC Services are headless, so that callers balance over every pod (the edge, behind the Ingress, keeps a virtual IP)', () => {
      for (const s of GRPC_SERVICES) expect({ s, clusterIP: asObj(one('Service', s).spec).clusterIP }).toEqual({ s, clusterIP: 'None' });
      expect(asObj(one('Service', 'edge').spec).clusterIP).toBeUndefined();
    });

    test('the ConfigMap carries ports, peer addresses, infrastructure, upstream and limits', () => {
      const data = asObj(one('ConfigMap', 'agent-mesh-config').data);
      for (const key of ['REDIS_URL', 'MONGODB_URI', 'OTEL_EXPORTER_OTLP_ENDPOINT', 'LLM_BASE_URL', 'LLM_MODEL']) expect(data[key]).toEqual(expect.any(String));
      expect(data).toMatchObject({ LLM_MAX_CONCURRENT: '50', LLM_RPM: '500', SSE_MAX_STREAMS: '200', SSE_HEARTBEAT_MS: '15000', EDGE_PORT: '8080' });
      expect(Number(data.EDGE_PORT)).toBe(containerPort(mainContainer(one('Deployment', 'edge')), 'http'));
      // Probes, Service traffic and scrapes reach a pod on its pod IP: every service listens on all interfaces.
      for (const s of APP_SERVICES) expect({ s, host: data[`${envPrefix(s)}_HOST`] }).toEqual({ s, host: '0.0.0.0' });
      for (const s of GRPC_SERVICES) {
        const port = containerPort(mainContainer(one('Deployment', s)), 'grpc');
        const servicePorts = asArray(asObj(one('Service', s).spec).ports).map(asObj);
        expect(data[`${envPrefix(s)}_PORT`]).toBe(String(port));
        expect(data[`${envPrefix(s)}_ADDR`]).toBe(`${s}:${String(port)}`);
        expect(servicePorts).toContainEqual(expect.objectContaining({ name: 'grpc', port }));
        expect(data[`${envPrefix(s)}_METRICS_ADDR`]).toBe(`${s}:${Number(port) + 1000}`);
        expect(servicePorts).toContainEqual(expect.objectContaining({ name: 'metrics', port: Number(port) + 1000 }));
      }
      // The edge's ops page and run traces: Prometheus' and Jaeger's query APIs (503 when unset).
      for (const key of ['PROMETHEUS_URL', 'JAEGER_QUERY_URL']) expect({ key, protocol: new URL(String(data[key])).protocol }).toEqual({ key, protocol: 'http:' });
      expect(edgeConfig({ ...data, AUTH_JWT_SECRET: 'x'.repeat(48) } as config.Env).ops).toEqual({ prometheusUrl: expect.stringMatching(/^http:/), jaegerQueryUrl: expect.stringMatching(/^http:/) });
      // Secrets never go into the ConfigMap.
      expect(Object.keys(data).filter((k) => /SECRET|API_KEY|PASSWORD|TOKEN/.test(k))).toEqual([]);
    });

    test('every service takes the shared ConfigMap and its own OTEL_SERVICE_NAME; secrets come from the Secret', () => {
      const secretKeys = Object.keys(asObj(one('Secret', 'agent-mesh-secrets').stringData));
      expect(secretKeys.sort()).toEqual(['AUTH_JWT_SECRET', 'LLM_API_KEY']);
      for (const s of APP_SERVICES) {
        const c = mainContainer(one('Deployment', s));
        expect(c.envFrom).toEqual([{ configMapRef: { name: 'agent-mesh-config' } }]);
        expect(envValue(c, 'OTEL_SERVICE_NAME')).toBe(s);
        for (const e of asArray(c.env).map(asObj).filter((x) => x.valueFrom)) {
          const ref = asObj(asObj(e.valueFrom).secretKeyRef);
          expect({ env: e.name, secret: ref.name, known: secretKeys.includes(String(ref.key)) }).toEqual({ env: e.name, secret: 'agent-mesh-secrets', known: true });
        }
      }
      expect(asObj(asObj(envEntry(mainContainer(one('Deployment', 'edge')), 'AUTH_JWT_SECRET')).valueFrom).secretKeyRef).toEqual({ name: 'agent-mesh-secrets', key: 'AUTH_JWT_SECRET' });
      expect(asObj(asObj(envEntry(mainContainer(one('Deployment', 'llm-broker')), 'LLM_API_KEY')).valueFrom).secretKeyRef).toEqual({ name: 'agent-mesh-secrets', key: 'LLM_API_KEY' });
    });
  });

  describe('pods', () => {
    const deployments = ofKind('Deployment');

    test('every container has CPU and memory requests and limits', () => {
      const problems = deployments.flatMap((d) =>
        containersOf(d.body).flatMap((c) =>
          ['requests', 'limits'].flatMap((kind) =>
            ['cpu', 'memory'].filter((r) => asObj(asObj(c.resources)[kind])[r] === undefined).map((r) => `${where(d)} ${String(c.name)}: no ${kind}.${r}`),
          ),
        ),
      );
      expect(problems).toEqual([]);
    });

    test('every container runs as non-root with a read-only root filesystem, no privilege escalation, no capabilities', () => {
      const problems = deployments.flatMap((d) => {
        const pod = asObj(podSpec(d.body).securityContext);
        return containersOf(d.body).flatMap((c) => {
          const sc = asObj(c.securityContext);
          const out: string[] = [];
          const runAsNonRoot = sc.runAsNonRoot ?? pod.runAsNonRoot;
          const runAsUser = sc.runAsUser ?? pod.runAsUser;
          const seccomp = asObj(sc.seccompProfile ?? pod.seccompProfile).type;
          if (runAsNonRoot !== true) out.push('runAsNonRoot is not true');
          if (runAsUser === 0) out.push('runs as uid 0');
          if (sc.readOnlyRootFilesystem !== true) out.push('root filesystem is writable');
          if (sc.allowPrivilegeEscalation !== false) out.push('allowPrivilegeEscalation is not false');
          if (sc.privileged === true) out.push('privileged');
          if (!asArray(asObj(sc.capabilities).drop).includes('ALL')) out.push('capabilities not dropped (ALL)');
          if (seccomp !== 'RuntimeDefault') out.push('seccompProfile is not RuntimeDefault');
          return out.map((p) => `${where(d)} ${String(c.name)}: ${p}`);
        });
      });
      expect(problems).toEqual([]);
    });

    test('application pods run as uid 1000, without a service-account token, with an emptyDir /tmp', () => {
      for (const s of APP_SERVICES) {
        const d = one('Deployment', s);
        const c = mainContainer(d);
        expect(asObj(c.securityContext).runAsUser ?? asObj(podSpec(d).securityContext).runAsUser).toBe(1000);
        expect(podSpec(d).automountServiceAccountToken).toBe(false);
        expect(asArray(c.volumeMounts)).toContainEqual(expect.objectContaining({ name: 'tmp', mountPath: '/tmp' }));
        expect(asArray(podSpec(d).volumes)).toContainEqual(expect.objectContaining({ name: 'tmp', emptyDir: expect.any(Object) }));
      }
    });

    test('every gRPC service has gRPC startup, readiness and liveness probes on its gRPC port', () => {
      for (const s of GRPC_SERVICES) {
        const c = mainContainer(one('Deployment', s));
        const port = containerPort(c, 'grpc');
        expect(port).toEqual(expect.any(Number));
        for (const probe of ['startupProbe', 'readinessProbe', 'livenessProbe']) {
          expect({ service: s, probe, grpc: asObj(c[probe]).grpc }).toEqual({ service: s, probe, grpc: { port } });
        }
      }
    });

    test('the edge is ready on /api/health and alive without asking its downstreams', () => {
      const c = mainContainer(one('Deployment', 'edge'));
      expect(asObj(c.readinessProbe).httpGet).toEqual({ path: '/api/health', port: 'http' });
      const liveness = asObj(c.livenessProbe);
      expect(liveness.httpGet ?? liveness.tcpSocket).toBeDefined();
      expect(asObj(liveness.httpGet).path).not.toBe('/api/health');
      expect(c.startupProbe).toBeDefined();
    });

    test('termination grace covers the preStop sleep, SHUTDOWN_GRACE_MS and the forced-exit margin', () => {
      for (const s of APP_SERVICES) {
        const d = one('Deployment', s);
        const c = mainContainer(d);
        const preStopS = Number(asObj(asObj(asObj(c.lifecycle).preStop).sleep).seconds);
        const graceMs = Number(envValue(c, 'SHUTDOWN_GRACE_MS'));
        const terminationS = Number(podSpec(d).terminationGracePeriodSeconds);
        expect({ s, preStopS: preStopS >= 3, graceMs: graceMs > 0 }).toEqual({ s, preStopS: true, graceMs: true });
        expect(terminationS * 1000).toBeGreaterThan(preStopS * 1000 + graceMs + APP_FORCE_EXIT_MARGIN_MS);
      }
      // The edge drains SSE streams: it gets the long grace.
      expect(Number(envValue(mainContainer(one('Deployment', 'edge')), 'SHUTDOWN_GRACE_MS'))).toBeGreaterThanOrEqual(25_000);
    });

    test('the V8 heap (NODE_OPTIONS: the old generation and the young one) is sized from the memory limit: 50–80 % of it', () => {
      for (const s of APP_SERVICES) {
        const c = mainContainer(one('Deployment', s));
        // Both generations set, so that the limit does not depend on the memory Node.js sees.
        expect({ s, options: String(envValue(c, 'NODE_OPTIONS')) }).toEqual({ s, options: expect.stringMatching(/--max-old-space-size=\d+ --max-semi-space-size=\d+/) });
        const ratio = v8HeapLimit(envValue(c, 'NODE_OPTIONS')) / bytes(asObj(asObj(c.resources).limits).memory);
        expect({ s, ratio: ratio >= 0.5 && ratio <= 0.8 }).toEqual({ s, ratio: true });
      }
    });

    test('Prometheus scrape annotations point at a port the pod exposes (gRPC port + 1000 for gRPC services)', () => {
      for (const s of APP_SERVICES) {
        const d = one('Deployment', s);
        const a = podAnnotations(d);
        expect(a['prometheus.io/scrape']).toBe('true');
        expect(a['prometheus.io/path']).toBe('/metrics');
        const c = mainContainer(d);
        const expected = s === 'edge' ? containerPort(c, 'http') : Number(containerPort(c, 'grpc')) + 1000;
        expect(Number(a['prometheus.io/port'])).toBe(expected);
        expect(asArray(c.ports).map(asObj).map((p) => p.containerPort)).toContain(expected);
      }
    });
  });

  describe('availability and autoscaling', () => {
    const hpa = (s: string) => asObj(one('HorizontalPodAutoscaler', s).spec);
    const metricsOf = (s: string) => asArray(hpa(s).metrics).map(asObj);

    test('each service scales on its signal: open streams, upstream calls in flight, active runs; CPU for tools and store', () => {
      const pods = (s: string) => metricsOf(s).filter((m) => m.type === 'Pods').map((m) => asObj(asObj(m.pods).metric).name);
      expect(pods('edge')).toEqual(['edge_sse_open_streams']);
      expect(pods('llm-broker')).toEqual(['llm_in_flight']);
      expect(pods('orchestrator')).toEqual(['orchestrator_active_runs']);
      for (const s of ['tool-service', 'store']) {
        expect(metricsOf(s)).toContainEqual({ type: 'Resource', resource: { name: 'cpu', target: { type: 'Utilization', averageUtilization: expect.any(Number) } } });
      }
      // The edge scales out before its SSE limiter fills up.
      const edgeTarget = asObj(asObj(metricsOf('edge').find((m) => m.type === 'Pods')!.pods).target);
      const maxStreams = Number(asObj(one('ConfigMap', 'agent-mesh-config').data).SSE_MAX_STREAMS);
      expect(Number(edgeTarget.averageValue)).toBeLessThan(maxStreams);
    });

    test('every HPA scales up fast and down slowly, and keeps at least two replicas', () => {
      for (const s of APP_SERVICES) {
        const spec = hpa(s);
        const up = asObj(asObj(spec.behavior).scaleUp);
        const down = asObj(asObj(spec.behavior).scaleDown);
        expect(Number(spec.minReplicas)).toBeGreaterThanOrEqual(2);
        expect(Number(spec.maxReplicas)).toBeGreaterThan(Number(spec.minReplicas));
        expect(Number(up.stabilizationWindowSeconds)).toBe(0);
        expect(Number(down.stabilizationWindowSeconds)).toBeGreaterThanOrEqual(300);
      }
    });

    test('every service has a PodDisruptionBudget that allows node drains', () => {
      for (const s of APP_SERVICES) {
        const spec = asObj(one('PodDisruptionBudget', s).spec);
        expect(spec.maxUnavailable ?? spec.minAvailable).toBeDefined();
        expect(asObj(spec.selector).matchLabels).toEqual(podLabels(one('Deployment', s)));
      }
    });

    test.each(['edge', 'edge-messages'])('the Ingress %s streams SSE unbuffered with a long read timeout', (name) => {
      const a = asObj(asObj(one('Ingress', name).metadata).annotations);
      expect(a['nginx.ingress.kubernetes.io/proxy-buffering']).toBe('off');
      expect(Number(a['nginx.ingress.kubernetes.io/proxy-read-timeout'])).toBeGreaterThanOrEqual(300);
    });

    test('the message route has an Ingress of its own that retries on another edge even after one took the POST', () => {
      const route = one('Ingress', 'edge-messages');
      const a = asObj(asObj(route.metadata).annotations);
      const retriesOn = (ann: Record<string, unknown>) => String(ann['nginx.ingress.kubernetes.io/proxy-next-upstream'] ?? '').split(/\s+/);
      expect(retriesOn(a)).toEqual(expect.arrayContaining(['error', 'timeout', 'http_502', 'non_idempotent']));
      expect(a['nginx.ingress.kubernetes.io/use-regex']).toBe('true');
      const paths = asArray(asObj(asArray(asObj(route.spec).rules).map(asObj)[0]!.http).paths).map(asObj);
      expect(paths).toHaveLength(1);
      expect(paths[0]!.pathType).toBe('ImplementationSpecific');
      expect(asObj(asObj(paths[0]!.backend).service)).toEqual({ name: 'edge', port: { name: 'http' } });
      // The path is the message route and nothing else (nginx matches a regex path as a prefix: `^` is implied).
      const re = new RegExp(`^${String(paths[0]!.path)}`);
      expect(['/api/conversations/3f2a-9c/messages'].map((p) => re.test(p))).toEqual([true]);
      expect(['/api/conversations', '/api/conversations/3f2a-9c', '/api/conversations/a/b/messages', '/api/conversations/3f2a-9c/messages/x', '/api/runs/r1/trace'].filter((p) => re.test(p))).toEqual([]);
      // Every other request keeps nginx's default: a POST an edge has taken is not sent again.
      expect(retriesOn(asObj(asObj(one('Ingress', 'edge').metadata).annotations))).not.toContain('non_idempotent');
    });
  });

  describe('components/mtls (in overlays/production)', () => {
    let deployments: Obj[] | undefined;
    const rendered = () => (deployments ??= parseYaml(kustomize(path.join(K8S, 'overlays/production')).stdout, 'production').filter((o) => o.kind === 'Deployment'));
    const TLS_VARS = ['GRPC_TLS_CA', 'GRPC_TLS_CERT', 'GRPC_TLS_KEY'];

    test("every service gets GRPC_TLS_* naming files of its own Secret agent-mesh-grpc-tls-<service>, mounted read-only (no pod holds another's key)", () => {
      expect(rendered().map(nameOf).sort()).toEqual([...APP_SERVICES].sort());
      for (const d of rendered()) {
        const c = mainContainer(d);
        const secrets = asArray(podSpec(d).volumes).map(asObj).map((v) => asObj(v.secret).secretName).filter((n) => String(n).startsWith('agent-mesh-grpc-tls'));
        expect({ service: nameOf(d), secrets }).toEqual({ service: nameOf(d), secrets: [`agent-mesh-grpc-tls-${nameOf(d)}`] });
        const volume = asArray(podSpec(d).volumes).map(asObj).find((v) => asObj(v.secret).secretName === `agent-mesh-grpc-tls-${nameOf(d)}`);
        const mount = asArray(c.volumeMounts).map(asObj).find((m) => m.name === volume?.name);
        expect({ service: nameOf(d), readOnly: mount?.readOnly }).toEqual({ service: nameOf(d), readOnly: true });
        for (const v of TLS_VARS) {
          const file = String(envValue(c, v));
          expect({ service: nameOf(d), v, inMount: file.startsWith(`${String(mount!.mountPath)}/`) }).toEqual({ service: nameOf(d), v, inMount: true });
        }
      }
      // Without the component (the dev overlay's base), plaintext: none of the three is set.
      for (const s of APP_SERVICES) for (const v of TLS_VARS) expect(envEntry(mainContainer(one('Deployment', s)), v)).toBeUndefined();
    });

    test('each gRPC service serves only the services that call it: GRPC_ALLOWED_CALLERS as the local stack sets it under --mtls', () => {
      const callers = stack.CALLERS as Record<string, string>;
      expect(Object.keys(callers).sort()).toEqual([...GRPC_SERVICES].sort());
      for (const d of rendered()) {
        expect({ service: nameOf(d), allowed: envEntry(mainContainer(d), 'GRPC_ALLOWED_CALLERS')?.value }).toEqual({ service: nameOf(d), allowed: callers[nameOf(d)] });
      }
      // Each parses as the services read it.
      for (const text of Object.values(callers)) expect(parseCallerPolicy(text).size).toBeGreaterThan(0);
    });

    test('gRPC services are probed over plain HTTP on their metrics port: /readyz to start and serve, /healthz to live', () => {
      for (const d of rendered().filter((o) => GRPC_SERVICES.includes(nameOf(o) as never))) {
        const c = mainContainer(d);
        const probes = Object.fromEntries(['startupProbe', 'readinessProbe', 'livenessProbe'].map((p) => [p, asObj(c[p])]));
        for (const p of Object.values(probes)) expect(p.grpc).toBeUndefined();
        expect({ service: nameOf(d), ...Object.fromEntries(Object.entries(probes).map(([k, p]) => [k, p.httpGet])) }).toEqual({
          service: nameOf(d),
          startupProbe: { path: '/readyz', port: 'metrics' },
          readinessProbe: { path: '/readyz', port: 'metrics' },
          livenessProbe: { path: '/healthz', port: 'metrics' },
        });
        expect(containerPort(c, 'metrics')).toEqual(expect.any(Number));
      }
    });
  });

  describe('components/inline-broker (in overlays/demo-inline)', () => {
    let objs: Obj[] | undefined;
    const rendered = () => (objs ??= parseYaml(kustomize(path.join(K8S, 'overlays/demo-inline')).stdout, 'demo-inline'));
    const deployment = (name: string, list: Obj[]) => list.find((o) => o.kind === 'Deployment' && nameOf(o) === name)!;
    const demo = () => parseYaml(kustomize(path.join(K8S, 'overlays/demo')).stdout, 'demo');

    test("the edge runs the broker: the setting, the provider's key from the Secret as the llm-broker takes it, a config the edge loads", () => {
      const edge = mainContainer(deployment('edge', rendered()));
      expect(envValue(edge, 'EDGE_INLINE_BROKER')).toBe('true');
      const brokerKey = asObj(asObj(envEntry(mainContainer(deployment('llm-broker', rendered())), 'LLM_API_KEY')).valueFrom).secretKeyRef;
      expect(asObj(asObj(envEntry(edge, 'LLM_API_KEY')).valueFrom).secretKeyRef).toEqual(brokerKey);
      // What the edge's process reads at start (the Secret's values stand in): it loads, and calls the ConfigMap's upstream.
      const data = asObj(rendered().find((o) => o.kind === 'ConfigMap' && nameOf(o) === 'agent-mesh-config')!.data);
      const literal = Object.fromEntries(asArray(edge.env).map(asObj).filter((e) => typeof e.value === 'string').map((e) => [e.name, e.value]));
      const cfg = edgeConfig({ ...data, ...literal, AUTH_JWT_SECRET: 'x'.repeat(48), LLM_API_KEY: 'k' } as config.Env);
      expect(cfg.inlineBroker?.upstreams.map((u) => u.baseUrl)).toEqual([data.LLM_BASE_URL]);
      // Without the component the provider's key stays out of the pods that face the Internet.
      const plain = mainContainer(deployment('edge', demo()));
      expect([envEntry(plain, 'EDGE_INLINE_BROKER'), envEntry(plain, 'LLM_API_KEY')]).toEqual([undefined, undefined]);
    });

    test('the edge gets room for the broker: a higher memory limit, the heap 50–80 % of it; nothing else changes', () => {
      const limit = (d: Obj) => bytes(asObj(asObj(mainContainer(d).resources).limits).memory);
      const edge = deployment('edge', rendered());
      expect(limit(edge) - limit(deployment('edge', demo()))).toBeGreaterThanOrEqual(100 * 2 ** 20);
      const heap = v8HeapLimit(envValue(mainContainer(edge), 'NODE_OPTIONS'));
      expect(heap / limit(edge)).toBeGreaterThanOrEqual(0.5);
      expect(heap / limit(edge)).toBeLessThanOrEqual(0.8);
      // Every other Deployment as in the demo (namespaces aside).
      const strip = (list: Obj[]) => list.filter((o) => o.kind === 'Deployment' && nameOf(o) !== 'edge').map((o) => ({ ...o, metadata: { ...asObj(o.metadata), namespace: '' } }));
      expect(strip(rendered())).toEqual(strip(demo()));
    });
  });

  describe('overlays/production', () => {
    const patches = docs.filter((d) => d.file.startsWith('overlays/production/') && isPatch(d));

    test('uses a MongoDB replica set', () => {
      const data = asObj(patches.find((d) => d.body.kind === 'ConfigMap')?.body.data);
      expect(data.MONGO_REPLICA_SET).toEqual(expect.any(String));
      expect(String(data.MONGODB_URI)).toContain(`replicaSet=${String(data.MONGO_REPLICA_SET)}`);
    });

    test('uses a Sentinel-managed Redis (the services read it as such)', () => {
      const data = asObj(patches.find((d) => d.body.kind === 'ConfigMap')?.body.data);
      const target = config.readRedisTarget({ ...asObj(one('ConfigMap', 'agent-mesh-config').data), ...data } as config.Env);
      expect(target.mode).toBe('sentinel');
      expect(target.mode === 'sentinel' && target.sentinels.length).toBe(3);
    });

    test('raises every service replica floor above the base', () => {
      for (const s of APP_SERVICES) {
        const p = patches.find((d) => d.body.kind === 'HorizontalPodAutoscaler' && nameOf(d.body) === s);
        expect(Number(asObj(p?.body.spec).minReplicas)).toBeGreaterThan(Number(asObj(one('HorizontalPodAutoscaler', s).spec).minReplicas));
      }
    });
  });

  // `kubectl kustomize` (the kubectl deploy/k8s/tools/install.sh builds) renders offline: the
  // rendered overlays get the same schema, unknown-field and wiring checks (catches patches that
  // merge into something invalid). k8s-apiserver.test.ts then applies them to a real API server.
  const overlays = fs.readdirSync(path.join(K8S, 'overlays')).sort();
  describe('rendered overlays (kubectl kustomize)', () => {
    test.each(overlays)('overlays/%s renders to valid, fully wired objects', (overlay) => {
      const out = kustomize(path.join(K8S, 'overlays', overlay));
      expect(out.stderr).toBe('');
      expect(out.status).toBe(0);
      const rendered: Doc[] = parseYaml(out.stdout, overlay).map((body, index) => ({ file: `rendered/${overlay}`, index, body }));
      expect(rendered.length).toBeGreaterThan(0);
      const problems = rendered.flatMap((d) => {
        const Model = MODELS[typeKey(d.body)];
        if (!Model) return [`${where(d)}: unknown apiVersion/kind`];
        return [...schemaErrors(d.body, Model), ...unknownFields(d.body, Model).map((f) => `unknown field ${f}`)].map((e) => `${where(d)}: ${e}`);
      });
      expect([...problems, ...wiringProblems(rendered)]).toEqual([]);
    });

    // A replica that starts while Redis is away divides the LLM quota by LLM_FALLBACK_REPLICAS (a
    // tool's limits by TOOL_FALLBACK_REPLICAS, a user's request limit by RATE_LIMIT_FALLBACK_REPLICAS):
    // below the most replicas that can share them, the shares add up to more than the limits.
    test.each(overlays)('overlays/%s: LLM_, TOOL_ and RATE_LIMIT_FALLBACK_REPLICAS count every replica that can share the limits', (overlay) => {
      const objs = parseYaml(kustomize(path.join(K8S, 'overlays', overlay)).stdout, overlay);
      const of = (kind: string, name: string) => objs.find((o) => o.kind === kind && nameOf(o) === name)!;
      const ceiling = (name: string) => Number(asObj(of('HorizontalPodAutoscaler', name).spec).maxReplicas);
      const inlineEdges = envValue(mainContainer(of('Deployment', 'edge')), 'EDGE_INLINE_BROKER') === 'true';
      const sharers = ceiling('llm-broker') + (inlineEdges ? ceiling('edge') : 0);
      const data = asObj(of('ConfigMap', 'agent-mesh-config').data);
      expect([Number(data.LLM_FALLBACK_REPLICAS), Number(data.TOOL_FALLBACK_REPLICAS), Number(data.RATE_LIMIT_FALLBACK_REPLICAS)]).toEqual([sharers, ceiling('tool-service'), ceiling('edge')]);
    });
  });
});

/**
 * All the heap V8 may take with these NODE_OPTIONS, in bytes, as this Node.js reports it
 * (`heap_size_limit`: the old generation and the young one, three semi-spaces). Node.js 24 sizes an
 * unset young generation from the memory it sees: with `--max-old-space-size=576` alone it reports
 * 768 MB on a machine of 24 GiB without a limit, 624 in a 768 MiB memory cgroup; 576 + 48 with
 * `--max-semi-space-size=16` anywhere.
 */
function v8HeapLimit(nodeOptions: unknown): number {
  const flags = String(nodeOptions ?? '').split(/\s+/).filter(Boolean);
  const r = spawnSync(process.execPath, [...flags, '-p', "require('v8').getHeapStatistics().heap_size_limit"], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`node ${flags.join(' ')}: ${r.stderr}`);
  return Number(r.stdout.trim());
}
