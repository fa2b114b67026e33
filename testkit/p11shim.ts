/**
 * The fault- and latency-injecting PKCS#11 module in testkit/p11shim (see its README for the
 * control file format): its build, and a control file that tests and the load harness write.
 */
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { existsSync, renameSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { SOFTHSM_MODULE } from '../src/dev/softHsm.js';

export const SHIM_DIR = fileURLToPath(new URL('./p11shim/', import.meta.url)).replace(/\/$/, '');
export const SHIM_LIBRARY = join(SHIM_DIR, 'build', 'libp11shim.so');

function mtimeMs(path: string): number | undefined {
  return existsSync(path) ? statSync(path).mtimeMs : undefined;
}

/** Builds the shim if it is missing or older than its sources; returns the .so's absolute path. */
export function ensureShimBuilt(): string {
  const built = mtimeMs(SHIM_LIBRARY);
  const sources = ['p11shim.c', 'Makefile'].map((f) => mtimeMs(join(SHIM_DIR, f)) ?? Infinity);
  if (built !== undefined && sources.every((m) => m <= built)) return SHIM_LIBRARY;
  try {
    execFileSync('make', ['--no-print-directory', '-C', SHIM_DIR], {
      stdio: ['ignore', 'pipe', 'pipe'],
      encoding: 'utf8',
    });
  } catch (e) {
    const err = e as { stderr?: string; stdout?: string; message: string };
    const output = `${err.stdout ?? ''}${err.stderr ?? ''}`.trim() || err.message;
    throw new Error(
      `building the p11shim PKCS#11 test module failed; it needs make, gcc and p11-kit's pkcs11.h ` +
        `(Debian/Ubuntu: apt-get install make gcc libp11-kit-dev):\n${output}`,
    );
  }
  if (!existsSync(SHIM_LIBRARY)) throw new Error(`make -C ${SHIM_DIR} succeeded but did not produce ${SHIM_LIBRARY}`);
  return SHIM_LIBRARY;
}

/**
 * The shim stats its control file at most this often, so a change can take this long to be
 * seen; the stall poll is faster, and C_Initialize always rechecks.
 */
export const SHIM_CHECK_INTERVAL_MS = 20;

export interface ShimFailure {
  /** A PKCS#11 function name such as 'C_Sign', or '*' for every forwarded function. */
  readonly fn: string;
  /** The CK_RV to return instead of forwarding. */
  readonly rv: number;
  /** Fail only this many calls (counted from this write of the file); omitted: every call. */
  readonly count?: number;
  /** Only calls on the key with this CKA_LABEL (C_SignInit and C_VerifyInit, or `*` for both). */
  readonly label?: string;
}

export interface ShimControlOptions {
  /** The real module the shim forwards to; defaults to $P11SHIM_MODULE, then SoftHSMv2. */
  readonly realModule?: string;
}

/**
 * Owns one shim control file. Every method rewrites the whole file, so the file always states
 * the full desired state and the C side never acts on half of an update.
 */
export class ShimControl {
  readonly path: string;
  readonly realModule: string;
  private latencyUs: number | undefined;
  private fails: ShimFailure[] = [];
  private stalled = false;
  private isDown = false;
  // Part of the content so that rewriting an identical state still restarts fail budgets:
  // the shim only resets them when the bytes change.
  private generation = 0;

  constructor(path: string, options: ShimControlOptions = {}) {
    this.path = path;
    this.realModule = options.realModule ?? process.env.P11SHIM_MODULE ?? SOFTHSM_MODULE;
    this.write();
  }

  /** Delay before every call that would cross the network; undefined falls back to $P11SHIM_LATENCY_US. */
  latency(us: number | undefined): this {
    if (us !== undefined && (!Number.isSafeInteger(us) || us < 0)) throw new RangeError(`bad latency ${us}`);
    this.latencyUs = us;
    return this.write();
  }

  fail(fn: string, rv: number, count?: number): this {
    return this.failKey(fn, rv, undefined, count);
  }

  /** As fail, for one key only: calls naming the key whose CKA_LABEL is `label` (C_SignInit, C_VerifyInit). */
  failKey(fn: string, rv: number, label: string | undefined, count?: number): this {
    if (!/^(\*|C_[A-Za-z]+)$/.test(fn)) throw new RangeError(`bad function name ${fn}`);
    if (!Number.isSafeInteger(rv) || rv <= 0) throw new RangeError(`bad CK_RV ${rv}: must be a non-zero error`);
    if (count !== undefined && (!Number.isSafeInteger(count) || count < 0)) throw new RangeError(`bad count ${count}`);
    if (label !== undefined && !/^[^:#@\s][^:#@\n]{0,126}$/.test(label))
      throw new RangeError(`bad label ${JSON.stringify(label)}: 1 to 127 characters, no ':', '#', '@' or newline`);
    this.fails.push({ fn, rv, ...(count !== undefined ? { count } : {}), ...(label !== undefined ? { label } : {}) });
    return this.write();
  }

  clearFails(): this {
    this.fails = [];
    return this.write();
  }

  stall(on: boolean): this {
    this.stalled = on;
    return this.write();
  }

  down(on: boolean): this {
    this.isDown = on;
    return this.write();
  }

  /** Back to plain forwarding (latency from $P11SHIM_LATENCY_US, if any). */
  reset(): this {
    this.latencyUs = undefined;
    this.fails = [];
    this.stalled = false;
    this.isDown = false;
    return this.write();
  }

  /** Environment a process needs to load the shim with this control file. */
  env(): Record<string, string> {
    return { P11SHIM_MODULE: this.realModule, P11SHIM_CONTROL: this.path };
  }

  /** Waits long enough for the shim to have noticed the last write. */
  async settle(): Promise<void> {
    await sleep(SHIM_CHECK_INTERVAL_MS + 15);
  }

  render(): string {
    const lines = [`# p11shim control file, generation ${this.generation}`];
    if (this.latencyUs !== undefined) lines.push(`latency_us=${this.latencyUs}`);
    for (const f of this.fails) {
      const rv = `0x${f.rv.toString(16)}`;
      const fn = f.label === undefined ? f.fn : `${f.fn}@${f.label}`;
      lines.push(f.count === undefined ? `fail=${fn}:${rv}` : `fail=${fn}:${rv}:${f.count}`);
    }
    if (this.stalled) lines.push('stall=1');
    if (this.isDown) lines.push('down=1');
    return `${lines.join('\n')}\n`;
  }

  private write(): this {
    this.generation++;
    // Same directory, so the rename is atomic.
    const tmp = join(dirname(this.path), `.${basename(this.path)}.${process.pid}.${this.generation}.tmp`);
    try {
      writeFileSync(tmp, this.render());
      renameSync(tmp, this.path);
    } catch (e) {
      try {
        unlinkSync(tmp);
      } catch {
        // Nothing to clean up.
      }
      throw e;
    }
    return this;
  }
}
