import { closeSync, writeSync } from 'node:fs';
import { hostname, userInfo } from 'node:os';
import { openAuditTarget } from '../audit/AuditLog.js';
import { auditLine, type AuditRecord } from '../audit/auditRecord.js';

export type AdminOperation = 'create' | 'rotate' | 'retire' | 'backups.prune';

/** Who ran the command, where: an admin record's answer to the service's requestId, client and source. */
function operator(env: NodeJS.ProcessEnv): Pick<AuditRecord, 'osUser' | 'sudoUser' | 'host' | 'pid'> {
  let osUser: string;
  try {
    osUser = userInfo().username;
  } catch {
    osUser = `uid ${process.getuid?.() ?? 'unknown'}`;
  }
  return { osUser, ...(env.SUDO_USER ? { sudoUser: env.SUDO_USER } : {}), host: hostname(), pid: process.pid };
}

/**
 * The admin CLI's audit records (AUDIT_LOG, the service's format): one line per create, rotate
 * and retire, ok or failed, and one per `backups prune --execute`. Opened before the HSM is touched, so a log that cannot be written stops
 * the command before it changes anything; each line is one synchronous O_APPEND write.
 */
export class AdminAudit {
  private constructor(
    private readonly fd: number,
    private readonly who: ReturnType<typeof operator>,
  ) {}

  static open(target: string, env: NodeJS.ProcessEnv): AdminAudit {
    return new AdminAudit(openAuditTarget(target), operator(env));
  }

  /** Throws if the line cannot be written whole. */
  write(
    operation: AdminOperation,
    facts: Pick<AuditRecord, 'keyName' | 'keyVersion' | 'keySpec' | 'approvers' | 'region' | 'clusterId' | 'sourceClusterId' | 'deleted' | 'failed'>,
    outcome: string,
  ): void {
    const line = Buffer.from(auditLine({ time: new Date().toISOString(), client: 'hsm-signer-admin', ...this.who, operation, ...facts, outcome }));
    let written: number;
    try {
      written = writeSync(this.fd, line);
    } catch (e) {
      throw new Error(`AUDIT_LOG: the record could not be written (${(e as NodeJS.ErrnoException).code ?? 'error'})`);
    }
    if (written !== line.length) throw new Error('AUDIT_LOG: the record could not be written whole (short write)');
  }

  close(): void {
    if (this.fd !== 1) closeSync(this.fd);
  }
}
