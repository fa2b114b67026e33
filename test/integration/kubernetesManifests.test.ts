/**
 * deploy/kubernetes: the base and the cloudhsm/ overlay render with `kubectl kustomize`, keep the
 * invariants the service depends on (probes on its real routes and port, a grace period longer
 * than the drain and the deadline, no secret in a ConfigMap, non-root and read-only, autoscaler
 * and disruption budget on the Deployment's pods), set only variables the configuration knows,
 * and make an environment the real service starts with in production.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { test } from 'node:test';
import { parseAllDocuments } from 'yaml';
import { loadConfig } from '../../src/config/config.js';
import { freePort } from '../../testkit/localHttp.js';
import { startServiceProcess, type ServiceProcess } from '../support/faultService.js';
import {
  baseProblems,
  CLOUDHSM_MODULE,
  cloudHsmProblems,
  configVariables,
  deploymentOf,
  type K8sObject,
  kubectl,
  MANIFESTS,
  rawBase,
  readKustomization,
  render,
  serviceEnvironment,
} from '../support/kubernetesManifests.js';
import { createTestToken } from '../support/testToken.js';
import { httpsRequest, TestPki } from '../support/tlsPki.js';

const KUBECTL = kubectl();
const NO_KUBECTL = 'kubectl (with kustomize) is not on PATH: rendering not checked; the checks on the files as written still ran';

/** The manifests as the cluster would get them: rendered when kubectl is here, else the base as written. */
const bundle = (): K8sObject[] => (KUBECTL ? render(MANIFESTS) : rawBase());

function yamlFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((f) => {
    const p = join(dir, f);
    return statSync(p).isDirectory() ? yamlFiles(p) : p.endsWith('.yaml') ? [p] : [];
  });
}

test('every manifest parses, and each kustomization names files that exist', () => {
  const files = yamlFiles(MANIFESTS);
  assert.ok(files.length >= 7, `only ${files.length} YAML files under deploy/kubernetes`);
  for (const f of files) {
    for (const doc of parseAllDocuments(readFileSync(f, 'utf8'))) assert.deepEqual(doc.errors, [], relative(MANIFESTS, f));
  }
  for (const dir of [MANIFESTS, join(MANIFESTS, 'base'), join(MANIFESTS, 'cloudhsm'), join(MANIFESTS, 'components/inventory')]) {
    const k = readKustomization(dir);
    for (const f of [...(k.resources ?? []), ...(k.patches ?? []).map((p) => p.path ?? '')]) {
      assert.ok(existsSync(join(dir, f)), `${relative(MANIFESTS, dir) || '.'}/kustomization.yaml names ${f}, which does not exist`);
    }
  }
});

test('the configuration variables are read from src/config/config.ts', () => {
  const vars = configVariables();
  // A parse that found nothing would let every name through as unknown, or none as known.
  for (const name of ['NODE_ENV', 'HSM_MODULE', 'HSM_PIN_FILE', 'PORT', 'REQUEST_DEADLINE_MS', 'METRICS_PORT', 'AUDIT_LOG']) assert.ok(vars.has(name), name);
  assert.equal(vars.get('REQUEST_DEADLINE_MS'), String(loadConfig({ HSM_PIN: 'placeholder' }).requestDeadlineMs));
  assert.equal(vars.get('PORT'), '8080');
});

test('the base as written keeps every invariant', () => {
  assert.deepEqual(baseProblems(rawBase()), []);
});

test('kubectl kustomize renders the base, and the rendered base keeps every invariant', (t) => {
  if (!KUBECTL) return t.skip(NO_KUBECTL);
  const objects = render(MANIFESTS);
  assert.deepEqual(objects.map((o) => o.kind).sort(), ['ConfigMap', 'Deployment', 'HorizontalPodAutoscaler', 'PodDisruptionBudget', 'Service']);
  assert.deepEqual(baseProblems(objects), []);
  // The generated ConfigMap's name carries its hash, and the Deployment follows it (a change rolls the pods).
  const cm = objects.find((o) => o.kind === 'ConfigMap')?.metadata?.name ?? '';
  assert.match(cm, /^hsm-signer-config-[a-z0-9]+$/);
  assert.equal(deploymentOf(objects).container.envFrom?.[0]?.configMapRef?.name, cm);
  // The overlay's checks fail on the base: they can fail.
  assert.ok(cloudHsmProblems(objects).includes(`HSM_MODULE is undefined, not ${CLOUDHSM_MODULE}`));
});

test('kubectl kustomize renders the cloudhsm overlay: the CloudHSM library, its configuration and CA, and the base invariants', (t) => {
  if (!KUBECTL) return t.skip(NO_KUBECTL);
  const objects = render(join(MANIFESTS, 'cloudhsm'));
  assert.deepEqual(baseProblems(objects), []);
  assert.deepEqual(cloudHsmProblems(objects), []);
  const env = serviceEnvironment(objects);
  assert.equal(env.HSM_MODULE, CLOUDHSM_MODULE);
  // A networked HSM: a thread per session (README, HSM_THREADS).
  assert.equal(env.HSM_THREADS, env.HSM_SESSIONS);
});

/** `kubectl kustomize` of an overlay made here: `resource` (a folder of deploy/kubernetes) with the inventory component. */
function renderWithInventory(resource: string): K8sObject[] {
  const dir = mkdtempSync(join(tmpdir(), 'hsm-signer-k8s-overlay-'));
  try {
    // kustomize takes only relative paths.
    const from = (p: string): string => relative(dir, join(MANIFESTS, p));
    writeFileSync(
      join(dir, 'kustomization.yaml'),
      `apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - ${from(resource)}\ncomponents:\n  - ${from('components/inventory')}\n`,
    );
    return render(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test('the inventory component, on the base and on the cloudhsm overlay: the database URL from a Secret file, every invariant kept, loadConfig opens PostgreSQL', (t) => {
  if (!KUBECTL) return t.skip(NO_KUBECTL);
  const dir = mkdtempSync(join(tmpdir(), 'hsm-signer-k8s-'));
  try {
    for (const resource of ['base', 'cloudhsm']) {
      const objects = renderWithInventory(resource);
      assert.deepEqual(baseProblems(objects), [], resource);
      if (resource === 'cloudhsm') assert.deepEqual(cloudHsmProblems(objects), []);
      const { container, pod } = deploymentOf(objects);
      const env = serviceEnvironment(objects);
      assert.equal(env.ISSUANCE_DB_FILE, '/var/run/secrets/hsm-signer/inventory/url', resource);
      assert.equal(env.ISSUANCE_DB, undefined);
      const volume = pod.volumes?.find((v) => v.name === 'inventory');
      assert.deepEqual(volume?.secret?.items, [{ key: 'url', path: 'url' }]);
      assert.equal(volume?.secret?.secretName, 'hsm-signer-inventory');
      assert.ok(container.volumeMounts?.some((m) => m.name === 'inventory' && m.readOnly === true));
      // The other mounts are all still there: the component adds, it does not replace.
      assert.equal(container.volumeMounts?.length, (deploymentOf(render(join(MANIFESTS, resource))).container.volumeMounts?.length ?? 0) + 1);
      const files = {
        HSM_PIN_FILE: join(dir, 'pin'),
        CLIENTS_FILE: join(dir, 'clients.json'),
        TLS_CERT_FILE: join(dir, 'tls.crt'),
        TLS_KEY_FILE: join(dir, 'tls.key'),
        ISSUANCE_DB_FILE: join(dir, 'url'),
      };
      for (const f of Object.values(files)) writeFileSync(f, 'placeholder\n');
      writeFileSync(files.ISSUANCE_DB_FILE, 'postgres://hsm-signer:pa55word@issuance-db:5432/issuance\n');
      const inventory = loadConfig(withFiles(env, files)).inventory;
      assert.ok(
        inventory?.kind === 'postgres' && inventory.redacted === 'postgres://hsm-signer:***@issuance-db:5432/issuance',
        JSON.stringify(inventory?.kind),
      );
    }
    // Without the component: no inventory (issuing answers 503 INVENTORY_NOT_CONFIGURED), and no mount for it.
    assert.equal(serviceEnvironment(render(MANIFESTS)).ISSUANCE_DB_FILE, undefined);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

/** One way to break the base: values merged into its objects. */
interface Breakage {
  readonly configMap?: Record<string, string>;
  readonly env?: { name: string; value?: string; valueFrom?: unknown };
  readonly container?: Record<string, unknown>;
  readonly securityContext?: Record<string, unknown>;
  readonly pod?: Record<string, unknown>;
  /** By kind: merged into that object's spec. */
  readonly specs?: Record<string, Record<string, unknown>>;
}

/** A deep copy of the base as written, broken as `b` says. */
function broken(b: Breakage): K8sObject[] {
  const objects = structuredClone(rawBase());
  const { container, pod } = deploymentOf(objects);
  const cm = objects.find((o) => o.kind === 'ConfigMap');
  assert.ok(cm?.data);
  Object.assign(cm.data, b.configMap);
  if (b.env) container.env?.push(b.env);
  Object.assign(container, b.container);
  if (b.securityContext) container.securityContext = { ...container.securityContext, ...b.securityContext };
  Object.assign(pod, b.pod);
  for (const [kind, patch] of Object.entries(b.specs ?? {})) Object.assign(objects.find((o) => o.kind === kind)?.spec ?? {}, patch);
  return objects;
}

test('each invariant check reports a manifest that breaks it', () => {
  const probe = (path: string, port: string, scheme?: string) => ({ httpGet: { path, port, ...(scheme ? { scheme } : {}) } });
  const cases: [string, Breakage, RegExp][] = [
    ['a misspelt variable', { configMap: { WORKER: '2' } }, /WORKER is not a variable/],
    ['a misspelt env entry', { env: { name: 'TLS_CERT', value: '/x' } }, /container env: TLS_CERT is not a variable/],
    ['the PIN file path in the ConfigMap', { configMap: { HSM_PIN_FILE: '/p' } }, /HSM_PIN_FILE names secret material/],
    ['a PEM block in the ConfigMap', { configMap: { LOG_LEVEL: '-----BEGIN CERTIFICATE-----\nMIIB\n' } }, /LOG_LEVEL holds a PEM block/],
    ['HSM_PIN from a Secret', { env: { name: 'HSM_PIN', valueFrom: { secretKeyRef: { name: 'p', key: 'pin' } } } }, /HSM_PIN is set/],
    ['a readiness probe on no route', { container: { readinessProbe: probe('/ready', 'https', 'HTTPS') } }, /readinessProbe: path \/ready, not \/readyz/],
    [
      'a liveness probe on the metrics port',
      { container: { livenessProbe: probe('/healthz', 'metrics', 'HTTPS') } },
      /livenessProbe: port metrics is not PORT/,
    ],
    ['a probe over plain HTTP', { container: { startupProbe: probe('/healthz', 'https') } }, /startupProbe: scheme HTTP,/],
    ['PORT not the container port', { configMap: { PORT: '8080' } }, /no containerPort is PORT \(8080\)/],
    ['a grace period of drain + deadline', { pod: { terminationGracePeriodSeconds: 7 } }, /terminationGracePeriodSeconds 7 s is not longer/],
    ['a longer deadline', { configMap: { REQUEST_DEADLINE_MS: '30000' } }, /REQUEST_DEADLINE_MS 30000 ms/],
    ['a longer drain', { configMap: { DRAIN_MS: '40000' } }, /not longer than DRAIN_MS 40000/],
    ['root', { securityContext: { runAsUser: 0 } }, /runAsUser 0/],
    ['a writable root', { securityContext: { readOnlyRootFilesystem: false } }, /readOnlyRootFilesystem/],
    ['capabilities kept', { securityContext: { capabilities: {} } }, /drop ALL/],
    ['an audit file on the root', { configMap: { AUDIT_LOG: '/var/log/audit.log' } }, /AUDIT_LOG=\/var\/log\/audit.log is on the read-only root/],
    [
      'the TLS key outside its Secret',
      { env: { name: 'TLS_KEY_FILE', value: '/etc/tls.key' } },
      /TLS_KEY_FILE=\/etc\/tls.key is not a file of a Secret volume/,
    ],
    ['more workers than CPUs', { configMap: { WORKERS: '8' } }, /WORKERS 8 is not between 1 and the CPU limit/],
    [
      'an autoscaler on something else',
      { specs: { HorizontalPodAutoscaler: { scaleTargetRef: { apiVersion: 'apps/v1', kind: 'Deployment', name: 'other' } } } },
      /targets Deployment\/other/,
    ],
    ['one replica', { specs: { HorizontalPodAutoscaler: { minReplicas: 1 } } }, /minReplicas 1/],
    ['a budget for other pods', { specs: { PodDisruptionBudget: { selector: { matchLabels: { app: 'x' } } } } }, /PodDisruptionBudget's selector/],
    ['replicas beside the autoscaler', { specs: { Deployment: { replicas: 3 } } }, /sets replicas/],
    ['the inventory URL in the ConfigMap', { configMap: { ISSUANCE_DB: 'postgres://u:p@db/x' } }, /ISSUANCE_DB is set: its PostgreSQL URL holds the password/],
    [
      'the inventory URL file outside a Secret',
      { env: { name: 'ISSUANCE_DB_FILE', value: '/etc/issuance-url' } },
      /ISSUANCE_DB_FILE=\/etc\/issuance-url is not a file of a Secret volume/,
    ],
  ];
  for (const [what, breakage, expected] of cases) {
    const problems = baseProblems(broken(breakage));
    assert.ok(
      problems.some((p) => expected.test(p)),
      `${what}: expected a problem matching ${expected}, got ${JSON.stringify(problems)}`,
    );
  }
});

/** The manifests' environment with each *_FILE path pointing at a file made here. */
function withFiles(env: Record<string, string>, files: Record<string, string>): Record<string, string> {
  const out = { ...env };
  for (const [variable, path] of Object.entries(files)) {
    assert.ok(env[variable] !== undefined, `the manifests do not set ${variable}`);
    out[variable] = path;
  }
  return out;
}

test("loadConfig accepts the manifests' environment in production", () => {
  const dir = mkdtempSync(join(tmpdir(), 'hsm-signer-k8s-'));
  try {
    const files = {
      HSM_PIN_FILE: join(dir, 'pin'),
      CLIENTS_FILE: join(dir, 'clients.json'),
      TLS_CERT_FILE: join(dir, 'tls.crt'),
      TLS_KEY_FILE: join(dir, 'tls.key'),
    };
    for (const f of Object.values(files)) writeFileSync(f, 'placeholder\n');
    const env = serviceEnvironment(bundle());
    const config = loadConfig(withFiles(env, files));
    assert.equal(config.production, true);
    assert.equal(config.host, '0.0.0.0');
    assert.equal(config.port, Number(env.PORT));
    assert.deepEqual(config.tls, { certFile: files.TLS_CERT_FILE, keyFile: files.TLS_KEY_FILE });
    assert.equal(config.clientsFile, files.CLIENTS_FILE);
    assert.deepEqual(config.metricsListener, { host: '0.0.0.0', port: Number(env.METRICS_PORT) });
    assert.equal(config.auditLog, 'stdout');
    assert.deepEqual(config.warnings, []);
    // Without its TLS files the same environment is refused: production fails closed.
    const { TLS_CERT_FILE: _c, TLS_KEY_FILE: _k, ...noTls } = withFiles(env, files);
    assert.throws(() => loadConfig(noTls), /TLS_CERT_FILE/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("the probes' paths answer 200 over HTTPS on the real service started with the manifests' environment", { timeout: 120_000 }, async () => {
  const objects = bundle();
  const { container } = deploymentOf(objects);
  const env = serviceEnvironment(objects);
  const token = await createTestToken([{ name: 'k8s-ec', spec: 'ECC_NIST_P256' }]);
  const pki = await TestPki.create();
  let svc: ServiceProcess | undefined;
  try {
    const bearer = 'k8s-manifests-test-token-0123456789abcdef';
    const clientsFile = join(token.dir, 'clients.json');
    const tokenSha256 = createHash('sha256').update(bearer).digest('hex');
    writeFileSync(clientsFile, JSON.stringify({ clients: [{ name: 'probe', tokenSha256, allow: [{ keys: '*', operations: ['read'] }] }] }));
    const metricsPort = await freePort();
    const files = { HSM_PIN_FILE: token.pinFile, CLIENTS_FILE: clientsFile, TLS_CERT_FILE: pki.server.certFile, TLS_KEY_FILE: pki.server.keyFile };
    // The token's module and label, and loopback ports of this test's own; everything else as deployed (WORKERS, TLS, audit to stdout).
    svc = await startServiceProcess(
      { ...withFiles(env, files), ...token.env({ HSM_PIN_FILE: token.pinFile, METRICS_HOST: '127.0.0.1', METRICS_PORT: String(metricsPort) }) },
      { ready: async (port) => (await httpsRequest(port, { path: '/readyz', ca: pki.ca })).status === 200, readyTimeoutMs: 60_000 },
    );
    const port = svc.port;
    for (const [name, probe] of [
      ['readinessProbe', container.readinessProbe],
      ['livenessProbe', container.livenessProbe],
      ['startupProbe', container.startupProbe],
    ] as const) {
      const path = probe?.httpGet?.path;
      assert.ok(path, `${name} has no path`);
      assert.equal(probe?.httpGet?.scheme, 'HTTPS', name);
      const r = await httpsRequest(port, { path, ca: pki.ca });
      assert.equal(r.status, 200, `${name} GET ${path}: ${r.text}`);
    }
    // What a wrong path would get: the probe check above can fail.
    assert.equal((await httpsRequest(port, { path: '/ready', ca: pki.ca })).status, 404);
    // /v1 needs the clients file's token: production with auth, as the manifests configure it.
    assert.equal((await httpsRequest(port, { path: '/v1/keys', ca: pki.ca })).status, 401);
    assert.equal((await httpsRequest(port, { path: '/v1/keys', ca: pki.ca, headers: { authorization: `Bearer ${bearer}` } })).status, 200);
    // The scrape annotation's path on the metrics listener.
    const scrapePath = deploymentOf(objects).spec.template?.metadata?.annotations?.['prometheus.io/path'] ?? '/metrics';
    const scrape = await fetch(`http://127.0.0.1:${metricsPort}${scrapePath}`);
    assert.equal(scrape.status, 200);
    await scrape.text();
  } finally {
    await svc?.stop();
    await pki.remove();
    token.cleanup();
  }
});
