/**
 * Bytes allocated per ECDSA P-256 sign request, and by which functions: the service (one worker's
 * graph, in this process, on the harness token) or, with --bare, the bare-HTTP ceiling's app. The
 * load comes from autocannon in a child process, so only the server's allocations are sampled
 * (V8's sampling heap profiler, with the objects garbage-collected since included).
 *
 * Unlike a throughput figure this barely moves with the host's noise, and every byte is work for
 * the garbage collector on the event loop.
 *
 *   node --import tsx bench/allocationPerRequest.ts [--bare] [--top N]
 */
import { spawn } from 'node:child_process';
import type { AddressInfo } from 'node:net';
import { Session } from 'node:inspector/promises';
import { parseArgs } from 'node:util';
import type { Express } from 'express';
import { pino } from 'pino';
import { composeService } from '../src/composeService.js';
import { loadConfig } from '../src/config/config.js';
import { DEFAULTS } from '../loadtest/defaults.js';
import { typicalSignatureBytes } from '../loadtest/analysis.js';
import { prepareToken, serviceEnvFor } from '../loadtest/harnessToken.js';
import { createCeilingApp } from '../loadtest/httpCeilingServer.js';
import { REPO_ROOT } from '../testkit/repoRoot.js';

const { values } = parseArgs({ options: { bare: { type: 'boolean' }, top: { type: 'string' } } });
const top = Number(values.top ?? '25');
const CONNECTIONS = 32;

const { token, keys } = await prepareToken(DEFAULTS.tokenDir, DEFAULTS.tokenLabel, ['ECC_NIST_P256']);
const keyName = keys.get('ECC_NIST_P256')!;
let close = async (): Promise<void> => undefined;
let app: Express;
if (values.bare) {
  app = createCeilingApp({ [keyName]: typicalSignatureBytes('ECC_NIST_P256') });
} else {
  const config = loadConfig({ ...serviceEnvFor(token), WORKERS: '1', LOG_LEVEL: 'silent' });
  const running = await composeService(config, pino({ level: 'silent' }));
  app = running.app;
  close = () => running.close();
}
const server = app.listen(0, '127.0.0.1');
server.keepAliveTimeout = 65_000;
await new Promise((resolve) => server.once('listening', resolve));
const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1/keys/${keyName}/sign`;

/** autocannon in a child process for `seconds`; resolves with the number of 2xx answers. */
function load(seconds: number): Promise<number> {
  const script = `
    const autocannon = require('autocannon');
    const body = JSON.stringify({ algorithm: 'ECDSA_SHA_256', digest: require('node:crypto').randomBytes(32).toString('base64') });
    autocannon({ url: ${JSON.stringify(url)}, method: 'POST', headers: { 'content-type': 'application/json' }, body, connections: ${CONNECTIONS}, duration: ${seconds} },
      (err, r) => { if (err) throw err; if (r.non2xx) throw new Error(r.non2xx + ' answers were not 2xx'); console.log(r['2xx']); });`;
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['-e', script], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.on('exit', (code) => (code === 0 ? resolve(Number(out.trim())) : reject(new Error(`the load generator exited with ${code}`))));
  });
}

interface ProfileNode {
  callFrame: { functionName: string; url: string; lineNumber: number };
  selfSize: number;
  children: ProfileNode[];
}

await load(2); // warm-up: JIT, pools, caches
const session = new Session();
session.connect();
await session.post('HeapProfiler.enable');
await session.post('HeapProfiler.startSampling', { samplingInterval: 1024, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: true });
const requests = await load(4);
const { profile } = (await session.post('HeapProfiler.stopSampling')) as unknown as { profile: { head: ProfileNode } };
session.disconnect();

const byFunction = new Map<string, number>();
let total = 0;
const walk = (node: ProfileNode): void => {
  const f = node.callFrame;
  const where = f.url.replace(/^.*node_modules\//, '').replace(`file://${REPO_ROOT}`, '');
  const name = `${f.functionName || '(anonymous)'} ${where}${where ? `:${f.lineNumber + 1}` : ''}`;
  total += node.selfSize;
  if (node.selfSize > 0) byFunction.set(name, (byFunction.get(name) ?? 0) + node.selfSize);
  node.children.forEach(walk);
};
walk(profile.head);
console.log(
  `${values.bare ? 'bare-HTTP ceiling app' : 'service'}: ${requests} sign requests at ${CONNECTIONS} connections, ${(total / requests / 1024).toFixed(1)} KiB allocated per request (sampled)`,
);
for (const [name, bytes] of [...byFunction].sort((a, b) => b[1] - a[1]).slice(0, top)) {
  console.log(`${(bytes / requests).toFixed(0).padStart(7)} B/request  ${name}`);
}
server.close();
await close();
process.exit(0);
