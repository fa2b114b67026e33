/**
 * deploy/kubernetes read as objects: rendered by `kubectl kustomize`, or (without kubectl) the
 * base's files as written plus the ConfigMap its generator makes. The invariant checks return
 * the problems they find as sentences, so a test can also show that each check can fail.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse, parseAllDocuments } from 'yaml';
import { loadConfig } from '../../src/config/config.js';
import { AWS_CLOUDHSM_QUOTAS } from '../../loadtest/defaults.js';
import { REPO_ROOT } from '../../testkit/repoRoot.js';

export const MANIFESTS = join(REPO_ROOT, 'deploy/kubernetes');
export const CLOUDHSM_MODULE = '/opt/cloudhsm/lib/libcloudhsm_pkcs11.so';
export const CLOUDHSM_FILES = ['/opt/cloudhsm/etc/cloudhsm-pkcs11.cfg', '/opt/cloudhsm/etc/customerCA.crt'] as const;

// Only the fields the checks read.
export interface K8sObject {
  apiVersion?: string;
  kind?: string;
  metadata?: { name?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  data?: Record<string, string>;
  spec?: Record<string, unknown>;
}
interface Probe {
  httpGet?: { path?: string; port?: number | string; scheme?: string };
}
interface Container {
  name?: string;
  image?: string;
  env?: { name: string; value?: string; valueFrom?: unknown }[];
  envFrom?: { configMapRef?: { name?: string }; secretRef?: { name?: string } }[];
  ports?: { name?: string; containerPort?: number }[];
  startupProbe?: Probe;
  livenessProbe?: Probe;
  readinessProbe?: Probe;
  resources?: { requests?: Record<string, string>; limits?: Record<string, string> };
  securityContext?: SecurityContext;
  volumeMounts?: { name: string; mountPath: string; subPath?: string; readOnly?: boolean }[];
}
interface SecurityContext {
  runAsNonRoot?: boolean;
  runAsUser?: number;
  allowPrivilegeEscalation?: boolean;
  readOnlyRootFilesystem?: boolean;
  capabilities?: { drop?: string[] };
}
interface Volume {
  name: string;
  emptyDir?: unknown;
  secret?: { secretName?: string; items?: { key: string; path: string }[] };
  configMap?: { name?: string; items?: { key: string; path: string }[] };
}
interface PodSpec {
  terminationGracePeriodSeconds?: number;
  securityContext?: SecurityContext;
  containers?: Container[];
  volumes?: Volume[];
}
interface DeploymentSpec {
  replicas?: number;
  strategy?: { rollingUpdate?: { maxSurge?: number | string } };
  selector?: { matchLabels?: Record<string, string> };
  template?: { metadata?: { labels?: Record<string, string>; annotations?: Record<string, string> }; spec?: PodSpec };
}

const CONFIG_SOURCE = join(REPO_ROOT, 'src/config/config.ts');

/**
 * The environment variables the service's configuration knows, with the literal default of each
 * that has one: the keys of the zod object in src/config/config.ts (the schema is not exported).
 */
export function configVariables(source = readFileSync(CONFIG_SOURCE, 'utf8')): Map<string, string | undefined> {
  const body = /const schema = z\s*\.object\(\{([\s\S]*?)\n\s*\}\)/.exec(source)?.[1];
  if (body === undefined) throw new Error('src/config/config.ts: no `const schema = z.object({...})` found');
  const vars = new Map<string, string | undefined>();
  for (const m of body.matchAll(/^\s*([A-Z][A-Z0-9_]*):(.*)$/gm)) {
    const name = m[1] ?? '';
    vars.set(name, /\.default\(([0-9_]+)\)/.exec(m[2] ?? '')?.[1]?.replaceAll('_', ''));
  }
  return vars;
}

/** `kubectl` if it is on PATH and has kustomize, else undefined. */
export function kubectl(): string | undefined {
  const r = spawnSync('kubectl', ['kustomize', '--help'], { encoding: 'utf8' });
  return r.status === 0 ? 'kubectl' : undefined;
}

export function render(dir: string): K8sObject[] {
  const out = execFileSync('kubectl', ['kustomize', dir], { encoding: 'utf8' });
  return parseAllDocuments(out).map((d) => d.toJS() as K8sObject);
}

interface Kustomization {
  resources?: string[];
  patches?: { path?: string }[];
  configMapGenerator?: { name: string; literals?: string[]; behavior?: string }[];
}

export function readKustomization(dir: string): Kustomization {
  return parse(readFileSync(join(dir, 'kustomization.yaml'), 'utf8')) as Kustomization;
}

/** The base as written: its resource files, and each generated ConfigMap under its own name (no hash suffix). */
export function rawBase(dir = join(MANIFESTS, 'base')): K8sObject[] {
  const k = readKustomization(dir);
  const objects = (k.resources ?? []).flatMap((f) => parseAllDocuments(readFileSync(join(dir, f), 'utf8')).map((d) => d.toJS() as K8sObject));
  for (const g of k.configMapGenerator ?? []) {
    const data = Object.fromEntries((g.literals ?? []).map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
    objects.push({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: g.name }, data });
  }
  return objects;
}

function one(objects: readonly K8sObject[], kind: string): K8sObject {
  const found = objects.filter((o) => o.kind === kind);
  if (found.length !== 1) throw new Error(`expected one ${kind}, found ${found.length}`);
  return found[0] as K8sObject;
}

export function deploymentOf(objects: readonly K8sObject[]): { deployment: K8sObject; spec: DeploymentSpec; pod: PodSpec; container: Container } {
  const deployment = one(objects, 'Deployment');
  const spec = (deployment.spec ?? {}) as DeploymentSpec;
  const pod = spec.template?.spec ?? {};
  const containers = pod.containers ?? [];
  if (containers.length !== 1) throw new Error(`expected one container, found ${containers.length}`);
  return { deployment, spec, pod, container: containers[0] as Container };
}

/**
 * The service's environment as the pod would get it: the ConfigMaps of envFrom, then the
 * container's own `env` values (which win, as in Kubernetes).
 */
export function serviceEnvironment(objects: readonly K8sObject[]): Record<string, string> {
  const { container } = deploymentOf(objects);
  const env: Record<string, string> = {};
  for (const from of container.envFrom ?? []) {
    const name = from.configMapRef?.name;
    const cm = objects.find((o) => o.kind === 'ConfigMap' && o.metadata?.name === name);
    if (!cm) throw new Error(`envFrom names the ConfigMap ${String(name)}, which the manifests do not make`);
    Object.assign(env, cm.data);
  }
  for (const e of container.env ?? []) if (e.value !== undefined) env[e.name] = e.value;
  return env;
}

/** A ConfigMap key that names secret material (HSM_PIN_FILE is a path, but the name says PIN: it belongs beside its Secret mount). */
const SECRET_KEY = /(^|_)(PIN|PASSWORD|PASSWD|SECRET|CREDENTIALS?|TOKEN)(_|$)|PRIVATE_?KEY|(^|_)KEY_FILE$/i;
/** A key name that only looks like one: the token's label is not a secret. */
const NOT_SECRET = new Set(['HSM_TOKEN_LABEL']);

function portNumber(c: Container, port: number | string | undefined): number | undefined {
  if (typeof port === 'number') return port;
  return c.ports?.find((p) => p.name === port)?.containerPort;
}

function cpuCores(q: string | undefined): number {
  if (q === undefined) return NaN;
  return q.endsWith('m') ? Number(q.slice(0, -1)) / 1000 : Number(q);
}

function labelsMatch(selector: Record<string, string> | undefined, labels: Record<string, string> | undefined): boolean {
  const s = Object.entries(selector ?? {});
  return s.length > 0 && s.every(([k, v]) => labels?.[k] === v);
}

/** Where a file path is mounted from: the volume and the key it holds, or undefined. */
function mountedFile(c: Container, pod: PodSpec, path: string): { volume: Volume; key: string } | undefined {
  for (const m of c.volumeMounts ?? []) {
    const volume = pod.volumes?.find((v) => v.name === m.name);
    if (!volume) continue;
    const items = volume.secret?.items ?? volume.configMap?.items;
    if (m.subPath !== undefined) {
      if (m.mountPath === path) return { volume, key: items?.find((i) => i.path === m.subPath)?.key ?? m.subPath };
      continue;
    }
    const prefix = m.mountPath.endsWith('/') ? m.mountPath : `${m.mountPath}/`;
    if (!path.startsWith(prefix)) continue;
    const rest = path.slice(prefix.length);
    const item = items?.find((i) => i.path === rest);
    if (item) return { volume, key: item.key };
  }
  return undefined;
}

function writable(c: Container, pod: PodSpec, dir: string): boolean {
  return (c.volumeMounts ?? []).some((m) => {
    const v = pod.volumes?.find((x) => x.name === m.name);
    const prefix = m.mountPath.endsWith('/') ? m.mountPath : `${m.mountPath}/`;
    return v?.emptyDir !== undefined && m.readOnly !== true && (dir === m.mountPath || dir.startsWith(prefix));
  });
}

export interface Timings {
  /** Milliseconds the service keeps serving after SIGTERM when DRAIN_MS is not set. */
  readonly drainDefaultMs: number;
  /** REQUEST_DEADLINE_MS when not set: loadConfig's. */
  readonly deadlineDefaultMs: number;
}

/** The defaults the grace period must cover, from loadConfig: its drain and its deadline. */
export function defaultTimings(): Timings {
  const config = loadConfig({ HSM_PIN: 'placeholder' });
  return { drainDefaultMs: config.drainMs, deadlineDefaultMs: config.requestDeadlineMs };
}

/** Every invariant of the base that matters to the service; each problem is one sentence. */
export function baseProblems(objects: readonly K8sObject[], timings: Timings = defaultTimings()): string[] {
  const problems: string[] = [];
  const known = configVariables();
  const { deployment, spec, pod, container } = deploymentOf(objects);
  const env = serviceEnvironment(objects);

  // Every variable set is one the configuration knows: a typo would silently be the default.
  for (const cm of objects.filter((o) => o.kind === 'ConfigMap')) {
    for (const [key, value] of Object.entries(cm.data ?? {})) {
      if (!known.has(key)) problems.push(`ConfigMap ${cm.metadata?.name}: ${key} is not a variable of src/config/config.ts`);
      if (SECRET_KEY.test(key) && !NOT_SECRET.has(key)) problems.push(`ConfigMap ${cm.metadata?.name}: ${key} names secret material`);
      if (/-----BEGIN [A-Z0-9 ]+-----/.test(String(value))) problems.push(`ConfigMap ${cm.metadata?.name}: ${key} holds a PEM block`);
    }
  }
  for (const e of container.env ?? []) {
    if (!known.has(e.name)) problems.push(`container env: ${e.name} is not a variable of src/config/config.ts`);
  }
  if ('HSM_PIN' in env || (container.env ?? []).some((e) => e.name === 'HSM_PIN')) {
    problems.push('HSM_PIN is set: a process started with it keeps the PIN in /proc/<pid>/environ; mount it and set HSM_PIN_FILE');
  }
  if ((container.envFrom ?? []).some((f) => f.secretRef)) problems.push('envFrom a Secret puts secrets in the environment: mount them');

  // Secrets arrive as files from Secret volumes.
  for (const [variable, key] of [
    ['HSM_PIN_FILE', undefined],
    ['CLIENTS_FILE', undefined],
    ['TLS_CERT_FILE', 'tls.crt'],
    ['TLS_KEY_FILE', 'tls.key'],
  ] as const) {
    const path = env[variable];
    if (path === undefined) {
      problems.push(`${variable} is not set (production needs TLS and a way to identify callers)`);
      continue;
    }
    const from = mountedFile(container, pod, path);
    if (!from?.volume.secret) problems.push(`${variable}=${path} is not a file of a Secret volume`);
    else if (key !== undefined && from.key !== key)
      problems.push(`${variable}=${path} is key ${from.key} of its Secret, not ${key} (a kubernetes.io/tls Secret)`);
  }
  // The inventory (optional: components/inventory): a PostgreSQL URL holds its password, and a SQLite file would be one pod's own.
  if (env.ISSUANCE_DB !== undefined || (container.env ?? []).some((e) => e.name === 'ISSUANCE_DB')) {
    problems.push("ISSUANCE_DB is set: its PostgreSQL URL holds the password (and a SQLite file is one pod's own); mount the URL and set ISSUANCE_DB_FILE");
  }
  if (env.ISSUANCE_DB_FILE !== undefined && !mountedFile(container, pod, env.ISSUANCE_DB_FILE)?.volume.secret) {
    problems.push(`ISSUANCE_DB_FILE=${env.ISSUANCE_DB_FILE} is not a file of a Secret volume`);
  }
  if (env.NODE_ENV !== 'production') problems.push(`NODE_ENV is ${String(env.NODE_ENV)}, not production`);

  // Ports: the container's, the configuration's, the probes' and the Service's agree.
  const apiPort = Number(env.PORT ?? known.get('PORT'));
  const https = container.ports?.find((p) => p.containerPort === apiPort);
  if (!https) problems.push(`no containerPort is PORT (${apiPort})`);
  const scheme = env.TLS_CERT_FILE !== undefined ? 'HTTPS' : 'HTTP';
  const probes: [string, Probe | undefined, string][] = [
    ['readinessProbe', container.readinessProbe, '/readyz'],
    ['livenessProbe', container.livenessProbe, '/healthz'],
    ['startupProbe', container.startupProbe, '/healthz'],
  ];
  for (const [name, probe, path] of probes) {
    const get = probe?.httpGet;
    if (!get) {
      problems.push(`${name}: no httpGet`);
      continue;
    }
    if (get.path !== path) problems.push(`${name}: path ${String(get.path)}, not ${path}`);
    if (portNumber(container, get.port) !== apiPort) problems.push(`${name}: port ${String(get.port)} is not PORT (${apiPort})`);
    if ((get.scheme ?? 'HTTP') !== scheme) problems.push(`${name}: scheme ${get.scheme ?? 'HTTP'}, but the service serves ${scheme}`);
  }
  const service = one(objects, 'Service');
  const svc = service.spec as { selector?: Record<string, string>; ports?: { targetPort?: number | string }[] };
  const podLabels = spec.template?.metadata?.labels;
  if (!labelsMatch(svc.selector, podLabels)) problems.push("the Service's selector does not select the Deployment's pods");
  if (!(svc.ports ?? []).some((p) => portNumber(container, p.targetPort) === apiPort)) problems.push('no Service port targets PORT');
  const metricsPort = Number(env.METRICS_PORT ?? known.get('METRICS_PORT'));
  if (!container.ports?.some((p) => p.containerPort === metricsPort)) problems.push(`no containerPort is METRICS_PORT (${metricsPort})`);
  const scrapePort = spec.template?.metadata?.annotations?.['prometheus.io/port'];
  if (scrapePort !== undefined && Number(scrapePort) !== metricsPort) problems.push(`prometheus.io/port ${scrapePort} is not METRICS_PORT (${metricsPort})`);

  // Termination: the grace period outlasts the drain and the last request's deadline.
  const drainMs = Number(env.DRAIN_MS ?? timings.drainDefaultMs);
  const deadlineMs = Number(env.REQUEST_DEADLINE_MS ?? timings.deadlineDefaultMs);
  const graceMs = (pod.terminationGracePeriodSeconds ?? 30) * 1000;
  if (!(graceMs > drainMs + deadlineMs)) {
    problems.push(`terminationGracePeriodSeconds ${graceMs / 1000} s is not longer than DRAIN_MS ${drainMs} + REQUEST_DEADLINE_MS ${deadlineMs} ms`);
  }

  // Non-root, read-only, no privileges.
  const sc = { ...pod.securityContext, ...container.securityContext };
  if (sc.runAsNonRoot !== true) problems.push('runAsNonRoot is not true');
  if (!(typeof sc.runAsUser === 'number' && sc.runAsUser > 0)) problems.push(`runAsUser ${String(sc.runAsUser)} is not a non-zero uid`);
  if (container.securityContext?.allowPrivilegeEscalation !== false) problems.push('allowPrivilegeEscalation is not false');
  if (container.securityContext?.readOnlyRootFilesystem !== true) problems.push('readOnlyRootFilesystem is not true');
  if (!container.securityContext?.capabilities?.drop?.includes('ALL')) problems.push('capabilities do not drop ALL');
  if (!writable(container, pod, '/tmp')) problems.push('/tmp is not a writable emptyDir');
  const audit = env.AUDIT_LOG;
  if (audit !== undefined && audit !== 'stdout' && !writable(container, pod, audit.slice(0, audit.lastIndexOf('/')) || '/')) {
    problems.push(`AUDIT_LOG=${audit} is on the read-only root filesystem`);
  }

  // Resources, and one worker per CPU of the limit.
  const { requests, limits } = container.resources ?? {};
  for (const r of ['cpu', 'memory']) {
    if (requests?.[r] === undefined) problems.push(`no ${r} request`);
    if (limits?.[r] === undefined) problems.push(`no ${r} limit`);
  }
  const workers = Number(env.WORKERS);
  if (!(workers >= 1 && workers <= Math.max(1, cpuCores(limits?.cpu))))
    problems.push(`WORKERS ${String(env.WORKERS)} is not between 1 and the CPU limit (${String(limits?.cpu)})`);

  // The autoscaler owns the replicas; the budget and the autoscaler act on these pods.
  if (spec.replicas !== undefined) problems.push('the Deployment sets replicas, which the HorizontalPodAutoscaler owns');
  const hpa = one(objects, 'HorizontalPodAutoscaler').spec as {
    scaleTargetRef?: { apiVersion?: string; kind?: string; name?: string };
    minReplicas?: number;
    maxReplicas?: number;
    metrics?: { type?: string; resource?: { name?: string; target?: { type?: string } } }[];
  };
  const target = hpa.scaleTargetRef;
  if (target?.kind !== 'Deployment' || target.name !== deployment.metadata?.name || target.apiVersion !== 'apps/v1') {
    problems.push(`the HorizontalPodAutoscaler targets ${target?.kind}/${target?.name}, not Deployment/${deployment.metadata?.name}`);
  }
  if (!((hpa.minReplicas ?? 1) >= 2)) problems.push(`minReplicas ${String(hpa.minReplicas)}: fewer than 2 do not survive a node loss`);
  if (!((hpa.maxReplicas ?? 0) >= (hpa.minReplicas ?? 1))) problems.push('maxReplicas is below minReplicas');
  if (!(hpa.metrics ?? []).some((m) => m.type === 'Resource' && m.resource?.name === 'cpu' && m.resource.target?.type === 'Utilization')) {
    problems.push('the HorizontalPodAutoscaler does not scale on CPU utilization');
  }
  const pdb = one(objects, 'PodDisruptionBudget').spec as {
    selector?: { matchLabels?: Record<string, string> };
    minAvailable?: unknown;
    maxUnavailable?: unknown;
  };
  if (!labelsMatch(pdb.selector?.matchLabels, podLabels)) problems.push("the PodDisruptionBudget's selector does not select the Deployment's pods");
  if (!(pdb.minAvailable === 1 || pdb.maxUnavailable === 1)) problems.push('the PodDisruptionBudget is neither minAvailable 1 nor maxUnavailable 1');
  return problems;
}

/** What the cloudhsm/ overlay adds: the library, its configuration and the cluster's CA, writable log directory. */
export function cloudHsmProblems(objects: readonly K8sObject[]): string[] {
  const problems: string[] = [];
  const { spec, pod, container } = deploymentOf(objects);
  const env = serviceEnvironment(objects);
  if (env.HSM_MODULE !== CLOUDHSM_MODULE) problems.push(`HSM_MODULE is ${String(env.HSM_MODULE)}, not ${CLOUDHSM_MODULE}`);
  for (const file of CLOUDHSM_FILES) {
    const from = mountedFile(container, pod, file);
    if (!from) problems.push(`${file} is not mounted`);
    else if (from.key !== file.slice(file.lastIndexOf('/') + 1)) problems.push(`${file} is mounted from key ${from.key}`);
  }
  if (!writable(container, pod, '/opt/cloudhsm/run')) problems.push('/opt/cloudhsm/run (the default log directory of the library) is not writable');
  if (!/(^|\/)hsm-signer-cloudhsm(:|@|$)/.test(container.image ?? '')) problems.push(`image ${String(container.image)} is not hsm-signer-cloudhsm`);
  // Each worker is a CloudHSM application: one client connection, its own sessions: the pool's
  // HSM_SESSIONS and the logged-in session it keeps outside the pool.
  const sessions = Number(env.HSM_SESSIONS) + 1;
  if (!(sessions <= AWS_CLOUDHSM_QUOTAS.maxSessionsPerApplication)) {
    problems.push(
      `HSM_SESSIONS ${String(env.HSM_SESSIONS)} + the login session exceed CloudHSM's ${AWS_CLOUDHSM_QUOTAS.maxSessionsPerApplication} sessions per application`,
    );
  }
  const hpa = objects.find((o) => o.kind === 'HorizontalPodAutoscaler')?.spec as { maxReplicas?: number } | undefined;
  const surge = Number(spec.strategy?.rollingUpdate?.maxSurge ?? 1);
  const connections = Number(env.WORKERS) * ((hpa?.maxReplicas ?? 1) + surge);
  if (!(connections <= AWS_CLOUDHSM_QUOTAS.maxClientConnectionsPerCluster)) {
    problems.push(
      `WORKERS x (maxReplicas + maxSurge) = ${connections} client connections exceed CloudHSM's ${AWS_CLOUDHSM_QUOTAS.maxClientConnectionsPerCluster} per cluster`,
    );
  }
  return problems;
}
