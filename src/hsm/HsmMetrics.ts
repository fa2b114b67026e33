/**
 * What the PKCS#11 adapter reports for /metrics. The composition root passes an implementation
 * (src/metrics/serviceMetrics.ts); the adapter knows nothing of Prometheus or HTTP.
 */
export interface HsmMetrics {
  /**
   * One AsyncPkcs11 call settled after `seconds`. `operation` is the PKCS#11 function family
   * (a bounded set, see MeasuredPkcs11), `mechanism` a CKM_* name or 'none'.
   */
  hsmCall(operation: string, mechanism: string, seconds: number, ok: boolean): void;
  /** The module was initialized and logged in: at start, or again by a recovery (after C_Finalize). */
  moduleInitialized(reason: 'start' | 'recovery'): void;
  /** A key handle the HSM no longer knew was looked up again by label and id. */
  handleRelookup(): void;
}
