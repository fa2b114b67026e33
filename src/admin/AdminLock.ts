import { createHash } from 'node:crypto';
import { closeSync, openSync, readFileSync, unlinkSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * One hsm-signer-admin command at a time per token on this host. Key generation is serialized
 * on the HSM anyway, and two commands interleaved would both read version N and both create
 * N+1 (SoftHSMv2 also fails spuriously when processes write one token at once). PKCS#11 has no
 * locks, so this is a lock file: O_EXCL create, holder's pid inside, a dead holder's lock taken over.
 */
export class AdminLock {
  private constructor(
    readonly file: string,
    private readonly owner: string,
  ) {}

  /** The lock file for a token: per module, token and (SoftHSMv2) configuration. */
  static fileFor(token: { modulePath: string; tokenLabel?: string; slotIndex?: number; softhsmConf?: string }): string {
    const key = JSON.stringify([token.modulePath, token.tokenLabel ?? null, token.slotIndex ?? null, token.softhsmConf ?? null]);
    return join(tmpdir(), `hsm-signer-admin-${createHash('sha256').update(key).digest('hex').slice(0, 16)}.lock`);
  }

  /** Waits for the lock (telling `onWait` once who holds it), up to `timeoutMs`. */
  static async acquire(file: string, o: { timeoutMs?: number; onWait?: (holderPid: string) => void } = {}): Promise<AdminLock> {
    const owner = String(process.pid);
    const deadline = Date.now() + (o.timeoutMs ?? 120_000);
    let told = false;
    for (;;) {
      try {
        const fd = openSync(file, 'wx', 0o600);
        writeSync(fd, owner);
        closeSync(fd);
        return new AdminLock(file, owner);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      }
      const holder = readHolder(file);
      if (holder !== undefined && !alive(holder)) {
        unlinkQuietly(file);
        continue;
      }
      if (Date.now() > deadline) throw new Error(`another hsm-signer-admin (pid ${holder ?? 'unknown'}) still holds ${file}`);
      if (!told && holder !== undefined) {
        o.onWait?.(holder);
        told = true;
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  release(): void {
    if (readHolder(this.file) === this.owner) unlinkQuietly(this.file);
  }
}

function readHolder(file: string): string | undefined {
  try {
    const pid = readFileSync(file, 'utf8').trim();
    return /^[1-9][0-9]*$/.test(pid) ? pid : undefined;
  } catch {
    return undefined;
  }
}

function alive(pid: string): boolean {
  try {
    process.kill(Number(pid), 0);
    return true;
  } catch (e) {
    // EPERM: the process exists but belongs to someone else.
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function unlinkQuietly(file: string): void {
  try {
    unlinkSync(file);
  } catch {
    // Already gone: another waiter took over the stale lock first.
  }
}
