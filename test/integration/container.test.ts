/**
 * Issue 13, the container set-up: docker-compose.yml validated by Debian's docker-compose (1.29),
 * the Dockerfile's invariants, the dev image's entrypoint with two replicas starting at once on one
 * token directory (without containers: the script and the service run here, on SoftHSMv2), the
 * images' health check, and the image build where a Docker daemon answers.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createPublicKey } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { DEMO_KEYS } from '../../src/dev/softHsm.js';
import { freePort, statusOf } from '../../testkit/localHttp.js';
import { REPO_ROOT } from '../../testkit/repoRoot.js';
import { HttpDriver, signatureVerifies } from '../support/faultService.js';

const run = (cmd: string, args: string[], o: { env?: NodeJS.ProcessEnv; input?: string; timeout?: number } = {}) =>
  spawnSync(cmd, args, { cwd: REPO_ROOT, encoding: 'utf8', timeout: o.timeout ?? 60_000, env: o.env ?? process.env, ...(o.input ? { input: o.input } : {}) });

const temps: string[] = [];
const children: ChildProcess[] = [];
const drivers: HttpDriver[] = [];
after(async () => {
  for (const d of drivers) d.close();
  await Promise.all(
    children.map(async (c) => {
      if (c.exitCode !== null || c.signalCode !== null) return;
      const exited = new Promise((r) => c.once('exit', r));
      c.kill('SIGTERM');
      await Promise.race([exited, sleep(8000)]);
      if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    }),
  );
  for (const d of temps) rmSync(d, { recursive: true, force: true });
});
const tempDir = (): string => {
  const d = mkdtempSync(join(tmpdir(), 'hsm-signer-container-'));
  temps.push(d);
  return d;
};

interface ComposeService {
  image?: string;
  build?: { context: string; target?: string };
  deploy?: { replicas?: number };
  profiles?: string[];
  command?: string[];
  environment?: Record<string, string>;
  volumes?: string[];
  ports?: string[];
}

/** `docker-compose [--profile loadtest] config` as data, through PyYAML (docker-compose's own YAML library). */
function composeConfig(args: string[]): { services: Record<string, ComposeService> } {
  const r = run('docker-compose', [...args, 'config']);
  assert.equal(r.status, 0, `docker-compose ${args.join(' ')} config: ${r.error?.message ?? r.stderr}`);
  const json = run('python3', ['-c', 'import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)'], { input: r.stdout });
  assert.equal(json.status, 0, json.stderr);
  return JSON.parse(json.stdout) as { services: Record<string, ComposeService> };
}

test('docker-compose.yml: valid for docker-compose 1.29, with and without the loadtest profile; two signer replicas on one token volume behind lb', () => {
  const version = run('docker-compose', ['version', '--short']);
  assert.equal(version.status, 0, `docker-compose: ${version.error?.message ?? version.stderr} (npm test installs the Debian package docker-compose)`);
  for (const args of [[], ['--profile', 'loadtest']]) {
    const r = run('docker-compose', [...args, 'config', '-q']);
    assert.equal(r.status, 0, `docker-compose ${args.join(' ')} config -q: ${r.stderr}`);
  }
  // The check can fail: a key compose does not know is refused.
  const bad = join(tempDir(), 'docker-compose.yml');
  writeFileSync(bad, readFileSync(join(REPO_ROOT, 'docker-compose.yml'), 'utf8').replace('  lb:\n', '  lb:\n    replica: 2\n'));
  assert.notEqual(run('docker-compose', ['-f', bad, 'config', '-q']).status, 0, 'an unknown key fails the validation');

  const { services } = composeConfig(['--profile', 'loadtest']);
  assert.deepEqual(Object.keys(services).sort(), ['lb', 'loadtest', 'signer']);
  const { signer, lb, loadtest } = services as Record<string, ComposeService>;
  assert.equal(signer?.build?.target, 'dev');
  assert.equal(signer?.deploy?.replicas, 2);
  assert.ok(
    signer?.volumes?.some((v) => v.startsWith('hsm-token:/app/.hsm')),
    'the replicas share the token volume',
  );
  assert.match(lb?.image ?? '', /^haproxy:2\.6/, "the official haproxy image, Debian bookworm's haproxy version");
  assert.ok(lb?.volumes?.some((v) => v.endsWith('/deploy/haproxy/haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro')));
  assert.deepEqual(loadtest?.profiles, ['loadtest'], 'the load test runs only when asked for');
  assert.equal(loadtest?.build?.target, 'build');
  assert.deepEqual(loadtest?.command?.slice(0, 6), ['npm', 'run', 'loadtest', '--', '--url', 'http://lb:8080']);

  // haproxy accepts the configuration with compose's values (the addresses resolve at run time, in Docker's DNS).
  const check = run('haproxy', ['-c', '-f', 'deploy/haproxy/haproxy.cfg'], { env: { PATH: process.env.PATH ?? '', ...lb?.environment } });
  assert.equal(check.status, 0, `haproxy -c with compose's environment: ${check.error?.message ?? check.stdout + check.stderr}`);
});

/** The Dockerfile's stages: name (or index) -> base and instructions, in order. */
function dockerfileStages(): { name: string; from: string; lines: string[] }[] {
  const text = readFileSync(join(REPO_ROOT, 'Dockerfile'), 'utf8').replace(/\\\n/g, ' ');
  const stages: { name: string; from: string; lines: string[] }[] = [];
  for (const line of text.split('\n').map((l) => l.trim())) {
    if (line === '' || line.startsWith('#')) continue;
    const from = /^FROM\s+(\S+)(?:\s+AS\s+(\S+))?$/i.exec(line);
    if (from) stages.push({ from: from[1]!, name: from[2] ?? String(stages.length), lines: [] });
    else stages.at(-1)?.lines.push(line);
  }
  return stages;
}

test('Dockerfile: the default target runs dist/main.js on node:20-bookworm-slim as a non-root user, with HEALTHCHECK on /healthz and STOPSIGNAL SIGTERM', () => {
  const stages = dockerfileStages();
  const byName = new Map(stages.map((s) => [s.name, s]));
  const baseImage = (name: string): string => {
    const s = byName.get(name);
    return s ? baseImage(s.from) : name;
  };
  const chain = (name: string): string[] => {
    const s = byName.get(name);
    return s ? [...chain(s.from), ...s.lines] : [];
  };
  const runtime = stages.at(-1)!;
  assert.equal(runtime.name, 'runtime', '`docker build .` builds the production image');
  assert.equal(baseImage('runtime'), 'node:20-bookworm-slim');
  const lines = chain('runtime');
  const last = (instruction: string): string | undefined => lines.filter((l) => l.toUpperCase().startsWith(`${instruction} `)).at(-1);
  assert.match(last('USER') ?? '', /^USER\s+(?!root\b|0\b)\S+/, 'a non-root user');
  assert.match(last('HEALTHCHECK') ?? '', /CMD \["node", "deploy\/docker\/healthcheck\.cjs"\]/);
  assert.match(readFileSync(join(REPO_ROOT, 'deploy/docker/healthcheck.cjs'), 'utf8'), /path: '\/healthz'/);
  assert.equal(last('STOPSIGNAL'), 'STOPSIGNAL SIGTERM');
  assert.equal(last('CMD'), 'CMD ["node", "dist/main.js"]');
  // PID 1 is tini, not node: the service's hard stop SIGKILLs itself, which PID 1 cannot.
  assert.equal(last('ENTRYPOINT'), 'ENTRYPOINT ["tini", "--"]');
  assert.ok(lines.some((l) => /apt-get install .*\btini\b/.test(l)));
  assert.match(last('ENV') ?? '', /NODE_ENV=production/);
  assert.ok(!lines.some((l) => /softhsm/i.test(l)), 'no SoftHSMv2 in the production image');
  // node_modules from a stage that ran `npm ci --omit=dev` (and compiled pkcs11js there), dist/ from the build.
  const copied = lines.filter((l) => /^COPY --from=/.test(l));
  const from = (path: string): string | undefined => /^COPY --from=(\S+)/.exec(copied.find((l) => l.includes(path)) ?? '')?.[1];
  assert.ok(byName.get(from('/app/node_modules') ?? '')?.lines.includes('RUN npm ci --omit=dev'));
  assert.ok(byName.get(from('/app/dist') ?? '')?.lines.includes('RUN npm run build'));
  assert.ok(!lines.some((l) => /^COPY (?!--from)\.\s/.test(l)), 'no sources in the runtime image');

  const dev = chain('dev');
  assert.equal(baseImage('dev'), 'node:20-bookworm-slim');
  assert.ok(dev.some((l) => /apt-get install .*softhsm2/.test(l)));
  assert.ok(dev.some((l) => /^ENTRYPOINT \["tini", "--", "hsm-signer-dev-entrypoint"\]$/.test(l)));
  assert.match(dev.filter((l) => l.startsWith('USER ')).at(-1) ?? '', /^USER\s+(?!root\b|0\b)\S+/);
  const ignored = readFileSync(join(REPO_ROOT, '.dockerignore'), 'utf8').split('\n');
  for (const p of ['node_modules', 'dist', '.hsm', '.git']) assert.ok(ignored.includes(p), `.dockerignore leaves out ${p}`);
});

test('the dev entrypoint: two replicas starting at once on one token directory make one token with the demo keys, and both serve', {
  timeout: 120_000,
}, async (t) => {
  const dir = join(tempDir(), 'hsm');
  const ports = [await freePort(), await freePort()];
  const exits: (number | null)[] = [];
  for (const [i, port] of ports.entries()) {
    const child = spawn('sh', ['deploy/docker/dev-entrypoint.sh', process.execPath, '--import', 'tsx', 'src/main.ts'], {
      cwd: REPO_ROOT,
      env: {
        PATH: process.env.PATH ?? '',
        HSM_DEV_DIR: dir,
        // The image runs the compiled dist/dev/start.js; the same from the sources here.
        HSM_DEV_SETUP: `${process.execPath} --import tsx src/dev/start.ts --setup-only`,
        HOST: '127.0.0.1',
        PORT: String(port),
        WORKERS: '1',
        LOG_LEVEL: 'error',
        // Stopped by the teardown, with no load balancer in front: no drain to wait for.
        DRAIN_MS: '0',
      },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let err = '';
    child.stderr?.on('data', (d: Buffer) => {
      err += d.toString('utf8');
    });
    child.on('exit', (code) => {
      exits[i] = code;
      t.diagnostic(`replica ${i + 1} exited ${code}: ${err.trim()}`);
    });
    children.push(child);
  }
  let statuses: number[] = [];
  for (const end = Date.now() + 90_000; Date.now() < end && exits.length === 0; await sleep(200)) {
    statuses = await Promise.all(ports.map((p) => statusOf(`http://127.0.0.1:${p}/readyz`)));
    if (statuses.every((s) => s === 200)) break;
  }
  assert.deepEqual({ exits, statuses }, { exits: [], statuses: [200, 200] }, 'both replicas ready (and running)');

  const slots = run('softhsm2-util', ['--show-slots'], { env: { ...process.env, SOFTHSM2_CONF: join(dir, 'softhsm2.conf') } });
  assert.equal(slots.stdout.match(/Label:\s+hsm-signer\s*$/gm)?.length, 1, 'one token labelled hsm-signer');
  const [one, two] = ports.map((p) => new HttpDriver(p, 2)) as [HttpDriver, HttpDriver];
  drivers.push(one, two);
  for (const d of [one, two]) {
    const keys = await d.request('GET', '/v1/keys');
    const listed = (keys.body as { keys: { name: string; versions: unknown[] }[] }).keys;
    assert.deepEqual(listed.map((k) => `${k.name} x${k.versions.length}`).sort(), DEMO_KEYS.map((k) => `${k.name} x1`).sort(), 'each demo key once');
  }
  const info = await two.request('GET', '/v1/keys/demo-ec-p256');
  const publicKey = createPublicKey((info.body as { versions: { publicKeyPem: string }[] }).versions[0]!.publicKeyPem);
  const message = Buffer.from('signed by one replica, checked with the key the other one lists');
  const signed = await one.request('POST', '/v1/keys/demo-ec-p256/sign', { algorithm: 'ECDSA_SHA_256', message: message.toString('base64') });
  assert.equal(signed.status, 200, signed.text);
  assert.ok(signatureVerifies(publicKey, 'ECDSA_SHA_256', message, (signed.body as { signature: string }).signature));

  // The images' HEALTHCHECK command, against a replica and against a port where nothing listens.
  const healthcheck = (port: number): number | null =>
    run(process.execPath, ['deploy/docker/healthcheck.cjs'], { env: { PATH: process.env.PATH ?? '', PORT: String(port) }, timeout: 10_000 }).status;
  assert.equal(healthcheck(ports[0]!), 0);
  assert.equal(healthcheck(await freePort()), 1);
});

test('the images build (where a Docker daemon answers)', { timeout: 1_800_000 }, (t) => {
  const info = run('docker', ['info'], { timeout: 30_000 });
  if (info.status !== 0) {
    t.skip(`no Docker daemon here (docker info: ${(info.error?.message ?? info.stderr).trim().split('\n').at(-1)}): the images are not built`);
    return;
  }
  for (const target of ['runtime', 'dev']) {
    const r = run('docker', ['build', '--target', target, '-t', `hsm-signer-test:${target}`, '.'], { timeout: 1_500_000 });
    assert.equal(r.status, 0, `docker build --target ${target}: ${r.stderr.slice(-3000)}`);
  }
  const inspect = run('docker', ['image', 'inspect', 'hsm-signer-test:runtime', '--format', '{{json .Config}}']);
  const config = JSON.parse(inspect.stdout) as { User: string; StopSignal: string; Cmd: string[]; Healthcheck?: { Test: string[] } };
  assert.equal(config.User, 'node');
  assert.equal(config.StopSignal, 'SIGTERM');
  assert.deepEqual(config.Cmd, ['node', 'dist/main.js']);
  assert.ok(config.Healthcheck?.Test.includes('deploy/docker/healthcheck.cjs'));
  // The native addon loads in the slim image (compiled in the deps stage, on the same Debian).
  const addon = run('docker', ['run', '--rm', 'hsm-signer-test:runtime', 'node', '-e', "require('pkcs11js'); require('node:fs').statSync('dist/main.js')"]);
  assert.equal(addon.status, 0, addon.stderr);
});
