/**
 * What /proc says about a process: its RSS, its CPU time, its children. Shared by the load
 * harness (worker RSS and CPU per step) and the tests (a leak or a stray worker is a failure).
 */
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';

/** VmRSS of a process in bytes, or undefined if it is gone (or this is not Linux). */
export function rssOf(pid: number): number | undefined {
  try {
    const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}

const CLOCK_TICKS = 100;

/**
 * CPU seconds a process has used so far, all its threads (utime + stime), or only its thread `tid`
 * when given (the main thread's tid is the pid); undefined if it is gone.
 */
export function cpuSecondsOf(pid: number, tid?: number): number | undefined {
  try {
    const stat = readFileSync(tid === undefined ? `/proc/${pid}/stat` : `/proc/${pid}/task/${tid}/stat`, 'utf8');
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th there.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
  } catch {
    return undefined;
  }
}

/** Direct children of a process (the cluster workers of a primary): /proc first, pgrep where the kernel lacks CONFIG_PROC_CHILDREN. */
export function childPids(pid: number): number[] {
  try {
    const out: number[] = [];
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      const text = readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8').trim();
      if (text) out.push(...text.split(/\s+/).map(Number));
    }
    return out;
  } catch {
    // No /proc children file (a kernel without CONFIG_PROC_CHILDREN), or the process is gone.
    try {
      return execFileSync('pgrep', ['-P', String(pid)], { encoding: 'utf8' })
        .trim()
        .split('\n')
        .filter(Boolean)
        .map(Number);
    } catch {
      return [];
    }
  }
}

/** The cluster workers among a primary's children (node:cluster sets NODE_UNIQUE_ID in theirs; tsx's esbuild is a child too). */
export function clusterWorkerPids(primary: number): number[] {
  return childPids(primary).filter((pid) => {
    try {
      return readFileSync(`/proc/${pid}/environ`, 'latin1')
        .split('\0')
        .some((e) => e.startsWith('NODE_UNIQUE_ID='));
    } catch {
      return false;
    }
  });
}

/** Whether a process exists (a zombie not yet reaped counts as gone). */
export function processExists(pid: number): boolean {
  try {
    return !/^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, 'utf8'));
  } catch {
    return false;
  }
}
