/**
 * The production build, as a deployment gets it: a copy of what it needs (package files, bin/,
 * and dist/ compiled by tsc from the repository's sources), with production dependencies only
 * (`npm ci --omit=dev`: no tsx, esbuild or TypeScript). Its admin bin creates a key of every key
 * spec on a real SoftHSMv2 token, its `node dist/main.js` (default WORKERS) signs with every
 * algorithm of each, openssl verifies every signature, and SIGTERM stops it. Then the copy's
 * `node dist/dev/start.js` (the development entry point, compiled) makes its own token and serves.
 * Never writes into the repository: it compiles from the repository's sources into the copy.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { closeSync, cpSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { ALGORITHMS, KEY_SPECS, algorithmInfo, type KeySpec, type SigningAlgorithm } from '../../src/crypto/algorithms.js';
import { freePort } from '../../testkit/localHttp.js';
import { REPO_ROOT } from '../../testkit/repoRoot.js';
import { createTestToken, type TestToken } from '../support/testToken.js';

const exec = promisify(execFile);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const seconds = (since: number): string => `${((performance.now() - since) / 1000).toFixed(1)} s`;

/**
 * What the runtime needs besides dist/ and what npm installs (package.json also makes dist/ ES
 * modules). No src/: nothing compiled may reach for the TypeScript sources.
 */
const DEPLOYED = ['package.json', 'package-lock.json', 'bin'];

interface Started {
  readonly child: ChildProcess;
  readonly port: number;
  readonly logFile: string;
  /** Resolves with the exit code (or the signal's name) once the process has exited. */
  readonly exited: Promise<number | string>;
}

/** `node <script>` in the copy, output to a file; resolves once /readyz answers 200. */
async function startNode(copy: string, script: string, env: NodeJS.ProcessEnv, logFile: string): Promise<Started> {
  const port = await freePort();
  const fd = openSync(logFile, 'a');
  // Its own process group, so that cleanup can end the primary and its workers together.
  const child = spawn(process.execPath, [script], {
    cwd: copy,
    env: { ...env, PORT: String(port), HOST: '127.0.0.1' },
    stdio: ['ignore', fd, fd],
    detached: true,
  });
  closeSync(fd);
  const exited = new Promise<number | string>((resolve) => child.once('exit', (code, signal) => resolve(code ?? signal ?? 'unknown')));
  const started: Started = { child, port, logFile, exited };
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`${script} exited before it was ready:\n${readFileSync(logFile, 'utf8')}`);
    const status = await fetch(`http://127.0.0.1:${port}/readyz`, { signal: AbortSignal.timeout(2000) }).then(
      (r) => r.status,
      () => 0,
    );
    if (status === 200) return started;
    if (Date.now() > deadline) throw new Error(`${script} was not ready within 60 s:\n${readFileSync(logFile, 'utf8')}`);
    await sleep(200);
  }
}

/** SIGTERM to the primary alone (as a container runtime sends it); its exit code, or the signal that ended it. */
async function terminate(s: Started): Promise<number | string> {
  s.child.kill('SIGTERM');
  // An unref'd timer: once the process has exited, it must not keep the test file's process alive.
  const late = new Promise<string>((resolve) => setTimeout(() => resolve('still running 20 s after SIGTERM'), 20_000).unref());
  return Promise.race([s.exited, late]);
}

/** Ends the process group if anything of it is left (a failed test); no-op once it has exited. */
function killGroup(s: Started | undefined): void {
  if (s?.child.pid === undefined) return;
  try {
    process.kill(-s.child.pid, 'SIGKILL');
  } catch {
    // the group is gone
  }
}

/** GET url, 200 expected; `fresh`: on a connection of its own, so that successive calls reach different workers. */
function getJson(url: string, fresh = false): Promise<unknown> {
  return new Promise((resolve, reject) => {
    http
      .get(url, fresh ? { agent: false } : {}, (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          text += chunk;
        });
        res.on('end', () => (res.statusCode === 200 ? resolve(JSON.parse(text)) : reject(new Error(`GET ${url}: ${res.statusCode} ${text}`))));
      })
      .on('error', reject);
  });
}

/** openssl's verdict on `signature` over `message` (DER for ECDSA; PSS: MGF1 with the same hash, salt = digest length). */
async function opensslVerifies(dir: string, pem: string, algorithm: SigningAlgorithm, message: Buffer, signature: Buffer): Promise<boolean> {
  writeFileSync(join(dir, 'pub.pem'), pem);
  writeFileSync(join(dir, 'msg'), message);
  writeFileSync(join(dir, 'sig'), signature);
  const info = algorithmInfo(algorithm);
  const pss = info.padding === 'PSS' ? ['-sigopt', 'rsa_padding_mode:pss', '-sigopt', 'rsa_pss_saltlen:digest', '-sigopt', `rsa_mgf1_md:${info.hash}`] : [];
  const args = ['dgst', `-${info.hash}`, '-verify', 'pub.pem', ...pss, '-signature', 'sig', 'msg'];
  try {
    const { stdout } = await exec('openssl', args, { cwd: dir, encoding: 'utf8' });
    return stdout.trim() === 'Verified OK';
  } catch {
    return false;
  }
}

const keyName = (spec: KeySpec): string => `build-${spec.toLowerCase().replaceAll('_', '-')}`;

test('the compiled build with production dependencies only: admin bin, node dist/main.js, openssl-verified signatures', { timeout: 300_000 }, async () => {
  const work = mkdtempSync(join(tmpdir(), 'hsm-signer-build-'));
  const copy = join(work, 'app');
  const scratch = join(work, 'openssl');
  mkdirSync(scratch);
  let token: TestToken | undefined;
  let service: Started | undefined;
  let dev: Started | undefined;
  try {
    const t0 = performance.now();
    for (const f of DEPLOYED) cpSync(join(REPO_ROOT, f), join(copy, f), { recursive: true });

    // Before the build, the bin says what to do in one line.
    const unbuilt = await exec(join(copy, 'bin/hsm-signer-admin'), ['keys', 'list'], { cwd: copy, encoding: 'utf8' }).then(
      () => undefined,
      (e: { code?: number; stderr?: string }) => e,
    );
    assert.ok(unbuilt, 'the bin fails without dist/');
    assert.equal(unbuilt.code, 1);
    assert.match(unbuilt.stderr ?? '', /^hsm-signer-admin: .*dist\/admin\/cli\.js is missing: run 'npm run build' first[^\n]*\n$/);

    // Compiled from the repository's sources into the copy's dist/, while
    // npm installs the production dependencies (independent: dist/ and node_modules/).
    // npm's own settings from an `npm test` parent (npm_config_*) are not the deployment's.
    const npmEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.toLowerCase().startsWith('npm_')));
    const timed = async (run: () => Promise<unknown>): Promise<string> => {
      const since = performance.now();
      await run();
      return seconds(since);
    };
    const tsc = [join(REPO_ROOT, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.build.json', '--outDir', join(copy, 'dist')];
    // Without install scripts: the native addons (pkcs11js, better-sqlite3) are those the
    // checkout's own `npm ci` compiled for this Node, copied in; compiling them again here would
    // take a minute and a half and prove nothing more about the build.
    const [compileTime, installTime] = await Promise.all([
      timed(() => exec(process.execPath, tsc, { cwd: REPO_ROOT })),
      timed(() =>
        exec('npm', ['ci', '--omit=dev', '--ignore-scripts', '--prefer-offline', '--no-audit', '--no-fund'], { cwd: copy, env: npmEnv, encoding: 'utf8' }),
      ),
    ]);
    const nativeAddons = Object.keys((JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { allowScripts?: object }).allowScripts ?? {});
    for (const name of nativeAddons) {
      const built = join(REPO_ROOT, 'node_modules', name, 'build');
      if (existsSync(join(copy, 'node_modules', name)) && existsSync(built)) cpSync(built, join(copy, 'node_modules', name, 'build'), { recursive: true });
    }
    assert.ok(existsSync(join(copy, 'dist/main.js')) && existsSync(join(copy, 'dist/hsm/pkcs11/pkcs11Thread.js')), 'dist/ has main.js and the HSM thread');
    const installed = (await exec('npm', ['ls', '--omit=dev', '--all', '--parseable'], { cwd: copy, env: npmEnv, encoding: 'utf8' })).stdout.trim().split('\n');
    for (const dev of ['tsx', 'esbuild', 'typescript', '@esbuild']) {
      assert.equal(existsSync(join(copy, 'node_modules', dev)), false, `${dev} is not installed for production`);
    }

    // Every key spec, made by the copy's compiled admin CLI.
    token = await createTestToken();
    const env = token.env({ HSM_ADMIN_PIN_FILE: token.pinFile });
    let t = performance.now();
    for (const spec of KEY_SPECS) {
      const { stdout, stderr } = await exec(join(copy, 'bin/hsm-signer-admin'), ['keys', 'create', '--name', keyName(spec), '--spec', spec], {
        cwd: copy,
        env,
        encoding: 'utf8',
      });
      assert.match(stdout, new RegExp(`^created ${keyName(spec)} version 1 \\(${spec}\\)`));
      assert.equal(stderr, '');
    }
    const keysTime = seconds(t);

    // The service as production runs it: node dist/main.js, default WORKERS, nothing else in the environment but the token's.
    t = performance.now();
    service = await startNode(copy, 'dist/main.js', token.env(), join(work, 'service.log'));
    const startTime = seconds(t);
    const base = `http://127.0.0.1:${service.port}`;
    // Both default workers serve (readyz answers once the first does): fresh connections until each has answered.
    const workers = availableParallelism();
    const pids = new Set<number>();
    for (const until = Date.now() + 30_000; pids.size < workers && Date.now() < until; ) {
      const r = (await getJson(`${base}/readyz`, true).catch(() => undefined)) as { worker: { pid: number } } | undefined;
      if (r) pids.add(r.worker.pid);
      else await sleep(100);
    }
    assert.equal(pids.size, workers, `the default WORKERS (${workers}) each answered /readyz`);

    t = performance.now();
    let verified = 0;
    for (const spec of KEY_SPECS) {
      const info = (await getJson(`${base}/v1/keys/${keyName(spec)}`)) as {
        keySpec: string;
        signingAlgorithms: SigningAlgorithm[];
        versions: { publicKeyPem: string }[];
      };
      assert.equal(info.keySpec, spec);
      const pem = info.versions[0]!.publicKeyPem;
      const expected = [...ALGORITHMS.values()].filter((a) => a.keyType === (spec.startsWith('RSA') ? 'RSA' : 'EC')).map((a) => a.name);
      assert.deepEqual([...info.signingAlgorithms].sort(), expected.sort(), `${spec}: its algorithms`);
      for (const algorithm of info.signingAlgorithms) {
        const message = Buffer.from(`production build, ${spec}, ${algorithm}`);
        const r = await fetch(`${base}/v1/keys/${keyName(spec)}/sign`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ algorithm, message: message.toString('base64') }),
        });
        const body = (await r.json()) as { signature?: string };
        assert.equal(r.status, 200, `${spec} ${algorithm}: ${JSON.stringify(body)}`);
        const signature = Buffer.from(body.signature ?? '', 'base64');
        assert.ok(await opensslVerifies(scratch, pem, algorithm, message, signature), `${spec} ${algorithm}: openssl verifies the signature`);
        verified++;
        if (verified === 1) {
          // The verifier can say no: the same signature over another message.
          assert.equal(await opensslVerifies(scratch, pem, algorithm, Buffer.from('another message'), signature), false, 'openssl refuses a wrong message');
        }
      }
    }
    const signTime = seconds(t);

    const exitCode = await terminate(service);
    assert.equal(exitCode, 0, `node dist/main.js exits 0 on SIGTERM; its log:\n${readFileSync(service.logFile, 'utf8')}`);

    // The development entry point, compiled: its own token and demo keys under HSM_DEV_DIR, then dist/main.js.
    t = performance.now();
    const devDir = join(work, 'dev-hsm');
    dev = await startNode(
      copy,
      'dist/dev/start.js',
      // DRAIN_MS 0: the stop on SIGTERM is checked above with the default drain, as production runs it.
      { PATH: process.env.PATH ?? '', HSM_DEV_DIR: devDir, WORKERS: '1', LOG_LEVEL: 'silent', DRAIN_MS: '0' },
      join(work, 'dev.log'),
    );
    const demo = (await getJson(`http://127.0.0.1:${dev.port}/v1/keys`)) as { keys: { name: string }[] };
    assert.deepEqual(demo.keys.map((k) => k.name).sort(), ['demo-ec-p256', 'demo-ec-p384', 'demo-rsa-2048']);
    const devExit = await terminate(dev);
    assert.equal(devExit, 0, `node dist/dev/start.js exits 0 on SIGTERM; its log:\n${readFileSync(dev.logFile, 'utf8')}`);
    const devTime = seconds(t);

    console.log(
      `production build: compile ${compileTime}; npm ci --omit=dev ${installTime} (${installed.length - 1} packages); ` +
        `${KEY_SPECS.length} keys created by bin/hsm-signer-admin in ${keysTime}; dist/main.js ready in ${startTime} with ${pids.size} workers seen; ` +
        `${verified} signatures verified by openssl in ${signTime}; dist/dev/start.js (token, demo keys, serve, stop) ${devTime}; total ${seconds(t0)}`,
    );
  } finally {
    killGroup(service);
    killGroup(dev);
    token?.cleanup();
    rmSync(work, { recursive: true, force: true });
  }
});
