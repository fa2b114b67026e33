/**
 * What the hop to the service's HSM threads costs per signature, without HTTP: ECDSA P-256 signs
 * through `ThreadedPkcs11` (the service's binding: calls as messages to HSM threads), 32 callers on
 * 32 sessions, against a plain loop of synchronous C_SignInit + C_Sign on the one thread of a
 * process of its own. CPU per signature of the whole process, and of the event loop alone.
 *
 *   node --import tsx bench/hsmThreadCost.ts [threads, default 4] [signatures per round, default 40000]
 *   node --import tsx bench/hsmThreadCost.ts plain [signatures per round]
 *
 * Three rounds each; the first includes the warm-up. The harness's token (.hsm/loadtest).
 */
import { signatureLength } from '../src/crypto/algorithms.js';
import { keyLabel } from '../src/hsm/keyLabel.js';
import { signingInput } from '../src/hsm/pkcs11/mechanisms.js';
import { P11 } from '../src/hsm/pkcs11/constants.js';
import { ThreadedPkcs11 } from '../src/hsm/pkcs11/ThreadedPkcs11.js';
import { DEFAULTS } from '../loadtest/defaults.js';
import { DirectToken } from '../loadtest/directToken.js';
import { prepareToken } from '../loadtest/harnessToken.js';
import { cpuSecondsOf } from '../testkit/processProbe.js';

const [mode = '4', perRound = '40000'] = process.argv.slice(2);
if (process.argv.length > 4) throw new Error('usage: hsmThreadCost.ts [threads | plain] [signatures per round]');
const plain = mode === 'plain';
const threads = plain ? 0 : Number(mode);
const n = Number(perRound);
if (!plain && !(Number.isInteger(threads) && threads >= 1 && threads <= 256)) throw new Error('threads: give a whole number from 1 to 256, or "plain"');
if (!(Number.isInteger(n) && n >= 1000)) throw new Error('signatures per round: give a whole number of 1000 or more');

const { token, keys } = await prepareToken(DEFAULTS.tokenDir, DEFAULTS.tokenLabel, ['ECC_NIST_P256']);
// The module finds the token through SOFTHSM2_CONF, in this process and its HSM threads.
process.env.SOFTHSM2_CONF = token.conf;
const setup = {
  modulePath: token.modulePath,
  tokenLabel: token.label,
  pin: token.pin,
  keyLabel: keyLabel(keys.get('ECC_NIST_P256')!, 1),
  algorithm: 'ECDSA_SHA_256',
  signatureBytes: signatureLength('ECC_NIST_P256'),
} as const;
const { mechanism, data } = signingInput(setup.algorithm, Buffer.alloc(32, 7));

/** CPU seconds of this process's main thread (the event loop), in clock ticks of 10 ms: ±0.01 s a round. */
const eventLoopCpuSeconds = (): number => cpuSecondsOf(process.pid, process.pid) ?? 0;

/** `n` signatures by `callers` loops at once; loop i signs with `sign(i)`. */
async function round(sign: (caller: number) => unknown, callers: number): Promise<string> {
  let next = 0;
  const loop0 = eventLoopCpuSeconds();
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: callers }, async (_, caller) => {
      while (next++ < n) await sign(caller);
    }),
  );
  const ms = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  const loopUs = ((eventLoopCpuSeconds() - loop0) * 1e6) / n;
  const totalUs = (cpu.user + cpu.system) / n;
  const loop = plain ? '' : `, event loop ${loopUs.toFixed(1)} µs, other threads ${(totalUs - loopUs).toFixed(1)} µs`;
  return `${Math.round((n / ms) * 1000)} signatures/s, ${totalUs.toFixed(1)} µs CPU per signature${loop}`;
}

const lines: string[] = [];
if (plain) {
  const t = new DirectToken(setup);
  try {
    for (let r = 0; r < 3; r++) lines.push(await round(() => t.signSync(t.loginSession), 1));
  } finally {
    t.close();
  }
} else {
  const p11 = await ThreadedPkcs11.start(token.modulePath, threads);
  try {
    let slot: Buffer | undefined;
    for (const s of await p11.getSlotList(true)) if ((await p11.getTokenLabel(s)) === token.label) slot = s;
    if (!slot) throw new Error(`no token labelled ${token.label}`);
    const flags = P11.CKF_SERIAL_SESSION | P11.CKF_RW_SESSION;
    const login = await p11.openSession(slot, flags);
    await p11.login(login, P11.CKU_USER, token.pin);
    const [key] = await p11.findObjects(
      login,
      [
        { type: P11.CKA_CLASS, value: P11.CKO_PRIVATE_KEY },
        { type: P11.CKA_LABEL, value: setup.keyLabel },
      ],
      1,
    );
    if (!key) throw new Error(`no private key labelled ${setup.keyLabel}`);
    const sessions = await Promise.all(Array.from({ length: 32 }, () => p11.openSession(slot, flags)));
    // Each caller keeps to its own session: a session runs one operation at a time.
    for (let r = 0; r < 3; r++) lines.push(await round((caller) => p11.sign(sessions[caller]!, mechanism, key, data, setup.signatureBytes), sessions.length));
  } finally {
    await p11.close();
  }
}
console.log(`${plain ? 'plain synchronous loop, one thread' : `ThreadedPkcs11, ${threads} HSM thread(s), 32 callers`}, ${n} ECDSA P-256 signatures per round:`);
for (const line of lines) console.log(`  ${line}`);
