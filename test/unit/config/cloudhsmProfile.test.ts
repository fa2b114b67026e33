/**
 * deploy/cloudhsm/cloudhsm.env, the CloudHSM profile: every variable in it is one the service
 * knows, the service's own loadConfig accepts it in production (its files replaced by placeholder
 * files), and it sets the HSM the way the Kubernetes overlay does.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { parseEnv } from 'node:util';
import { loadConfig } from '../../../src/config/config.js';
import { REPO_ROOT } from '../../../testkit/repoRoot.js';
import { AWS_CLOUDHSM_QUOTAS } from '../../../loadtest/defaults.js';
import { CLOUDHSM_MODULE, configVariables, MANIFESTS, readKustomization } from '../../support/kubernetesManifests.js';

const PROFILE = join(REPO_ROOT, 'deploy/cloudhsm/cloudhsm.env');
const profile = (): Record<string, string> => parseEnv(readFileSync(PROFILE, 'utf8')) as Record<string, string>;
const dir = mkdtempSync(join(tmpdir(), 'hsm-signer-cloudhsm-profile-'));
after(() => rmSync(dir, { recursive: true, force: true }));

/** The profile with every file it names replaced by a placeholder file of the same base name in a temp dir. */
function withPlaceholders(env: Record<string, string>): Record<string, string> {
  const out = { ...env };
  for (const [name, value] of Object.entries(env)) {
    if (!name.endsWith('_FILE')) continue;
    const file = join(dir, value.replaceAll('/', '_'));
    writeFileSync(file, name === 'HSM_PIN_FILE' ? 'signer-cu:placeholder-password\n' : 'placeholder\n', { mode: 0o600 });
    out[name] = file;
  }
  return out;
}

test('every variable of the CloudHSM profile is one the service knows', () => {
  const known = configVariables();
  const env = profile();
  assert.ok(Object.keys(env).length >= 10, `parsed only ${Object.keys(env).length} variables`);
  const unknown = Object.keys(env).filter((name) => !known.has(name));
  assert.deepEqual(unknown, [], `not in src/config/config.ts: ${unknown.join(', ')}`);
});

test('loadConfig accepts the CloudHSM profile in production, with placeholder files', () => {
  const env = profile();
  const c = loadConfig(withPlaceholders(env));
  assert.equal(c.production, true);
  assert.equal(c.devMode, false);
  assert.equal(c.hsm.modulePath, CLOUDHSM_MODULE);
  assert.equal(c.hsm.slotIndex, 0);
  assert.equal(c.hsm.pin, 'signer-cu:placeholder-password');
  // A networked HSM: one HSM thread per session, so every session's round trip overlaps.
  assert.equal(c.hsm.threads, c.hsm.sessions);
  assert.ok(c.hsm.sessions <= AWS_CLOUDHSM_QUOTAS.maxSessionsPerApplication);
  assert.ok(c.tls, 'TLS is on');
  assert.ok(c.clientsFile, 'callers are identified');
  assert.deepEqual(c.warnings, []);
  // Without its PIN file the profile does not start: the check above is not vacuous.
  assert.throws(() => loadConfig({ ...withPlaceholders(env), HSM_PIN_FILE: join(dir, 'missing.pin') }), /HSM_PIN_FILE/);
});

test('the profile sets the HSM as the Kubernetes overlay does', () => {
  const literals = (sub: string): Record<string, string> =>
    Object.fromEntries(
      (readKustomization(join(MANIFESTS, sub)).configMapGenerator ?? [])
        .filter((g) => g.name === 'hsm-signer-config')
        .flatMap((g) => g.literals ?? [])
        .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
    );
  // The overlay's generator merges into the base's: its literals win.
  const overlay = { ...literals('base'), ...literals('cloudhsm') };
  const env = profile();
  for (const name of ['NODE_ENV', 'HSM_MODULE', 'HSM_SLOT', 'WORKERS', 'HSM_SESSIONS', 'HSM_THREADS', 'PORT', 'REQUEST_DEADLINE_MS', 'AUDIT_LOG']) {
    assert.equal(env[name], overlay[name], `${name}: profile ${String(env[name])}, overlay ${String(overlay[name])}`);
  }
});
