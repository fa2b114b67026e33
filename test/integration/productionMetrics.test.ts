/**
 * Production serves /metrics on a listener of its own (METRICS_HOST:METRICS_PORT), never on the
 * API's port: the service as `npm run serve` starts it (from the sources), NODE_ENV=production, with the default
 * workers (the primary merges them) and with one worker (the process serves its own registry).
 */
import { createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import http from 'node:http';
import { join } from 'node:path';
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { freePort } from '../../testkit/localHttp.js';
import { startServiceProcess, type ServiceProcess } from '../support/faultService.js';
import { createTestToken, type TestToken } from '../support/testToken.js';

const TOKEN = 'tok-metrics-test-0123456789';
let token: TestToken;
let clientsFile: string;

before(async () => {
  token = await createTestToken([{ name: 'pm-ec', spec: 'ECC_NIST_P256' }]);
  clientsFile = join(token.dir, 'clients.json');
  const tokenSha256 = createHash('sha256').update(TOKEN).digest('hex');
  writeFileSync(clientsFile, JSON.stringify({ clients: [{ name: 'signer', tokenSha256, allow: [{ keys: '*', operations: ['sign', 'read'] }] }] }));
});
after(() => token?.cleanup());

function get(port: number, path: string): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, path, agent: false }, (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (text += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
      })
      .on('error', reject);
  });
}

const signs = (text: string): number =>
  Number(/hsm_signer_http_requests_total\{method="POST",route="\/v1\/keys\/:name\/sign",status="200"\} (\d+)/.exec(text)?.[1] ?? NaN);

for (const workers of [undefined, '1'] as const) {
  test(`production, ${workers ? `WORKERS=${workers}` : 'the default workers'}: /metrics on METRICS_PORT only`, { timeout: 60_000 }, async () => {
    const metricsPort = await freePort();
    let svc: ServiceProcess | undefined;
    try {
      svc = await startServiceProcess(
        token.env({
          NODE_ENV: 'production',
          CLIENTS_FILE: clientsFile,
          METRICS_PORT: String(metricsPort),
          LOG_LEVEL: 'warn',
          ...(workers ? { WORKERS: workers } : {}),
        }),
      );
      const body = { algorithm: 'ECDSA_SHA_256', message: Buffer.from('production metrics').toString('base64') };
      for (let i = 0; i < 6; i++) {
        const r = await svc.driver.request('POST', '/v1/keys/pm-ec/sign', body, { authorization: `Bearer ${TOKEN}` });
        assert.equal(r.status, 200, r.text);
      }
      const onApi = await svc.driver.request('GET', '/metrics');
      assert.equal(onApi.status, 404, 'not on the API port');
      assert.equal((onApi.body as { error: { code: string } }).error.code, 'NOT_FOUND');
      const scrape = await get(metricsPort, '/metrics');
      assert.equal(scrape.status, 200, scrape.text);
      assert.equal(signs(scrape.text), 6, 'every sign counted, whichever worker signed');
      assert.ok(!scrape.text.includes(TOKEN) && !scrape.text.includes(token.pin));
      assert.equal((await get(metricsPort, '/v1/keys')).status, 404, 'the metrics listener serves nothing else');
    } finally {
      await svc?.stop();
    }
  });
}
