/**
 * `npm test`'s first step: the Debian packages the suite needs (SoftHSMv2; p11-kit and its client
 * module for the fault tests over a real process boundary; p11-kit's header and a C compiler
 * to build the fault-injecting PKCS#11 module; openssl as the independent verifier; haproxy for the
 * load-balancer test; docker-compose to validate docker-compose.yml; prometheus for promtool, which
 * checks deploy/prometheus/alerts.yml; postgresql for the inventory tests, which start throwaway
 * servers of their own from its binaries and never use a cluster the package may have started).
 */
import { existsSync, readdirSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { ensureSystemPackages, SOFTHSM_PACKAGE } from '../src/dev/softHsm.js';

const postgresInstalled = (): boolean =>
  existsSync('/usr/lib/postgresql') && readdirSync('/usr/lib/postgresql').some((v) => existsSync(`/usr/lib/postgresql/${v}/bin/initdb`));
const onPath = (cmd: string): boolean => spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;

try {
  ensureSystemPackages([
    SOFTHSM_PACKAGE,
    { name: 'p11-kit', present: () => onPath('p11-kit') },
    {
      name: 'p11-kit-modules',
      present: () => existsSync('/usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so') || existsSync('/usr/lib/aarch64-linux-gnu/pkcs11/p11-kit-client.so'),
    },
    { name: 'libp11-kit-dev', present: () => existsSync('/usr/include/p11-kit-1/p11-kit/pkcs11.h') },
    { name: 'gcc', present: () => onPath('gcc') },
    { name: 'make', present: () => onPath('make') },
    { name: 'openssl', present: () => onPath('openssl') },
    { name: 'haproxy', present: () => onPath('haproxy') },
    // Without its recommendation, the Docker engine: the suite only validates docker-compose.yml.
    { name: 'docker-compose', present: () => onPath('docker-compose'), withoutRecommends: true },
    // Only for promtool; without its recommendation, the node exporter.
    { name: 'prometheus', present: () => onPath('promtool'), withoutRecommends: true },
    // Its binaries under /usr/lib/postgresql/<version>/bin; without its recommendation, sysstat.
    { name: 'postgresql', present: () => postgresInstalled(), withoutRecommends: true },
  ]);
} catch (e) {
  console.error(`npm test: ${(e as Error).message}`);
  process.exit(1);
}
