const settled = (): void => undefined;

/**
 * Readers run side by side; a writer runs alone, after the readers and writer before it, and the
 * readers after it wait for it. In this process only. Used for the token's certificate objects:
 * SoftHSMv2 (through pkcs11js) does not survive an object being destroyed while another thread
 * reads it: besides CKR_OBJECT_HANDLE_INVALID it answers CKR_GENERAL_ERROR or
 * CKR_FUNCTION_FAILED, or crashes the process in C_GetAttributeValue.
 */
export class ReadWriteLock {
  /** The last writer's run (never rejects). */
  private writing: Promise<unknown> = Promise.resolve();
  private readonly reading = new Set<Promise<unknown>>();

  read<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.writing.then(fn);
    const done = run.then(settled, settled);
    this.reading.add(done);
    void done.then(() => this.reading.delete(done));
    return run;
  }

  write<T>(fn: () => Promise<T>): Promise<T> {
    const run = Promise.all([this.writing, ...this.reading]).then(fn);
    this.writing = run.then(settled, settled);
    return run;
  }
}
