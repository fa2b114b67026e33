/**
 * The repair counters of /metrics, each driven by the failure it counts: the service runs in this
 * process on the p11shim module over a real SoftHSMv2 token, and the shim fails chosen calls with
 * a chosen CK_RV (as in faultRepair.test.ts). Handle re-lookups, retries by failure, retry-budget
 * refusals, breaker transitions, module re-initializations and failed HSM calls are read from GET /metrics.
 */
import { join } from 'node:path';
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { pino } from 'pino';
import request from 'supertest';
import { composeService, type RunningService } from '../../src/composeService.js';
import { loadConfig } from '../../src/config/config.js';
import { CKR } from '../../src/hsm/errors.js';
import { ensureShimBuilt, ShimControl } from '../../testkit/p11shim.js';
import { createTestToken, type TestToken } from '../support/testToken.js';

const KEY = 'rm-ec';
let token: TestToken;
let shim: ShimControl;
let svc: RunningService;

before(async () => {
  token = await createTestToken([{ name: KEY, spec: 'ECC_NIST_P256' }]);
  const shimPath = ensureShimBuilt();
  shim = new ShimControl(join(token.dir, 'shim.control'));
  Object.assign(process.env, shim.env());
  const config = loadConfig(token.env({ HSM_MODULE: shimPath, HSM_SESSIONS: '4', BREAKER_RESET_MS: '500' }));
  svc = await composeService(config, pino({ level: 'silent' }));
});

after(async () => {
  shim?.reset();
  await svc?.close();
  token?.cleanup();
});

async function metrics(): Promise<string> {
  const r = await request(svc.app).get('/metrics');
  assert.equal(r.status, 200);
  return r.text;
}

function sample(text: string, name: string, labels = ''): number {
  const line = text.split('\n').find((l) => l.startsWith(`${name}${labels} `));
  return line === undefined ? 0 : Number(line.slice(line.lastIndexOf(' ') + 1));
}

/** What `act` added to each of `series` (name{labels} as printed). */
async function deltas(series: readonly string[], act: () => Promise<void>): Promise<Record<string, number>> {
  const split = (s: string): [string, string] => {
    const i = s.indexOf('{');
    return i < 0 ? [s, ''] : [s.slice(0, i), s.slice(i)];
  };
  const before = await metrics();
  await act();
  const text = await metrics();
  return Object.fromEntries(series.map((s) => [s, sample(text, ...split(s)) - sample(before, ...split(s))]));
}

const sign = (): Promise<request.Response> =>
  request(svc.app)
    .post(`/v1/keys/${KEY}/sign`)
    .send({ algorithm: 'ECDSA_SHA_256', message: Buffer.from('repair metrics').toString('base64') });

async function failing(fn: string, rv: number, count: number, act: () => Promise<void>): Promise<void> {
  shim.fail(fn, rv, count);
  await shim.settle();
  try {
    await act();
  } finally {
    shim.reset();
    await shim.settle();
  }
}

const SIGN_ERROR = 'hsm_signer_hsm_call_duration_seconds_count{operation="sign",mechanism="CKM_ECDSA",result="error"}';

test('a stale key handle: one failed sign call, one re-lookup, one retry (handleStale)', async () => {
  const d = await deltas(['hsm_signer_hsm_handle_relookups_total', 'hsm_signer_retries_total{failure="handleStale"}', SIGN_ERROR], () =>
    failing('C_Sign', CKR.OBJECT_HANDLE_INVALID, 1, async () => {
      assert.equal((await sign()).status, 200);
    }),
  );
  assert.deepEqual(d, { hsm_signer_hsm_handle_relookups_total: 1, 'hsm_signer_retries_total{failure="handleStale"}': 1, [SIGN_ERROR]: 1 });
});

test('a throttled HSM twice: two retries (throttled), no re-lookup', async () => {
  const d = await deltas(['hsm_signer_hsm_handle_relookups_total', 'hsm_signer_retries_total{failure="throttled"}', SIGN_ERROR], () =>
    failing('C_Sign', CKR.FUNCTION_FAILED, 2, async () => {
      assert.equal((await sign()).status, 200);
    }),
  );
  assert.deepEqual(d, { hsm_signer_hsm_handle_relookups_total: 0, 'hsm_signer_retries_total{failure="throttled"}': 2, [SIGN_ERROR]: 2 });
});

test('a stale handle on every sign: each is re-looked up and retried until the retry budget runs out (a repair does not count against the breaker)', {
  timeout: 30_000,
}, async (t) => {
  const series = [
    'hsm_signer_retry_budget_refusals_total',
    'hsm_signer_retries_total{failure="handleStale"}',
    'hsm_signer_breaker_transitions_total{to="open"}',
  ];
  const statuses: number[] = [];
  // One failure per sign: the handle fails as stale, the re-lookup finds it, the retry signs. (A
  // handle that fails again after its re-lookup would make the version unusable, not retried.)
  const d = await deltas(series, async () => {
    for (let i = 0; i < 30; i++) await failing('C_Sign', CKR.OBJECT_HANDLE_INVALID, 1, async () => void statuses.push((await sign()).status));
  });
  t.diagnostic(`statuses: ${statuses.join(' ')}; counters: ${JSON.stringify(d)}`);
  assert.ok(d[series[0]!]! > 0, 'retries refused by the budget');
  // Each sign is retried until the budget (10 tokens, 5 a second more) is empty, then refused.
  assert.ok(d[series[1]!]! >= 10 && d[series[1]!]! < 30, `retries: ${d[series[1]!]}`);
  assert.ok(statuses.filter((s) => s === 200).length >= 10, 'the retried signs succeeded');
  assert.equal(d[series[2]!], 0);
  // No fault: the version signs again (a good signature clears what the failures left).
  assert.equal((await sign()).status, 200);
});

test('an HSM that keeps failing (throttled): the breaker opens, then half-opens and closes once the HSM answers', { timeout: 30_000 }, async (t) => {
  const series = [
    'hsm_signer_breaker_transitions_total{to="open"}',
    'hsm_signer_breaker_transitions_total{to="half_open"}',
    'hsm_signer_breaker_transitions_total{to="closed"}',
  ];
  const d = await deltas(series, async () => {
    await failing('C_Sign', CKR.FUNCTION_FAILED, 100_000, async () => {
      for (let i = 0; i < 30 && !(await sign()).text.includes('circuit breaker is open'); i++);
    });
    // The breaker lets a probe through after BREAKER_RESET_MS; the HSM answers again, so it closes.
    for (let i = 0; i < 50 && (await sign()).status !== 200; i++) await sleep(100);
  });
  t.diagnostic(`counters: ${JSON.stringify(d)}`);
  assert.equal(d[series[0]!], 1, 'opened once');
  assert.equal(d[series[1]!], 1, 'half-opened once');
  assert.equal(d[series[2]!], 1, 'closed once');
});

test('a lost connection: the module is re-initialized (reason recovery)', { timeout: 30_000 }, async () => {
  const series = ['hsm_signer_hsm_module_initializations_total{reason="recovery"}', 'hsm_signer_hsm_module_initializations_total{reason="start"}'];
  const d = await deltas(series, async () => {
    await failing('C_Sign', CKR.DEVICE_ERROR, 1, async () => {
      await sign();
    });
    for (let i = 0; i < 100 && (await sign()).status !== 200; i++) await sleep(100);
    assert.equal((await sign()).status, 200);
  });
  assert.deepEqual(d, { [series[0]!]: 1, [series[1]!]: 0 });
});
