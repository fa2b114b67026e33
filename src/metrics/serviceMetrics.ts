/**
 * The service's Prometheus metrics that do not belong to HTTP: the HSM calls, resilience (retries,
 * the retry budget, the breaker), shed requests, build info, and prom-client's default process
 * metrics. Imports only prom-client: the HSM adapter and the resilience code get plain callbacks
 * from the composition root, and this module gives them.
 *
 * Every worker records into prom-client's global registry; the cluster primary merges the workers'
 * registries (src/http/metrics.ts) per metric by its `aggregator`: counters and histograms are
 * summed (bucket by bucket), each gauge says how it merges.
 */
import { createRequire } from 'node:module';
import { basename } from 'node:path';
import { collectDefaultMetrics, Counter, Gauge, Histogram, register } from 'prom-client';

const hsmCallDuration = new Histogram({
  name: 'hsm_signer_hsm_call_duration_seconds',
  help: 'PKCS#11 calls by operation (function family), mechanism (CKM_* name or none) and result (ok, error); summed over workers',
  labelNames: ['operation', 'mechanism', 'result'],
  buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
});
const moduleInitializations = new Counter({
  name: 'hsm_signer_hsm_module_initializations_total',
  help: 'PKCS#11 module initializations with login by reason (start; recovery: after C_Finalize); summed over workers',
  labelNames: ['reason'],
});
const handleRelookups = new Counter({
  name: 'hsm_signer_hsm_handle_relookups_total',
  help: 'key handles the HSM no longer knew, looked up again; summed over workers',
});
const retries = new Counter({
  name: 'hsm_signer_retries_total',
  help: 'HSM operations retried by the failure that caused the retry; summed over workers',
  labelNames: ['failure'],
});
const retryBudgetRefusals = new Counter({
  name: 'hsm_signer_retry_budget_refusals_total',
  help: 'retryable failures not retried because the retry budget was empty; summed over workers',
});
const breakerTransitions = new Counter({
  name: 'hsm_signer_breaker_transitions_total',
  help: 'HSM circuit breaker state changes by the state entered (open, half_open, closed); summed over workers',
  labelNames: ['to'],
});
const shed = new Counter({
  name: 'hsm_signer_requests_shed_total',
  help: 'requests refused to protect the service by reason (overloaded: 503 OVERLOADED; client_limit: 429 RESOURCE_EXHAUSTED); summed over workers',
  labelNames: ['reason'],
});
const inventoryFailures = new Counter({
  name: 'hsm_signer_inventory_failures_total',
  help: 'certificate inventory (ISSUANCE_DB) opens and operations that failed, by operation (open, record, list, get, revoke, ...); each answered 503 INVENTORY_UNAVAILABLE; summed over workers',
  labelNames: ['operation'],
});
const buildInfo = new Gauge({
  name: 'hsm_signer_build_info',
  help: 'always 1: the version, commit (GIT_COMMIT at build time), Node version and PKCS#11 module file name; merged by max over workers',
  labelNames: ['version', 'commit', 'node', 'module'],
  aggregator: 'max',
});

// Every known label value at 0 from the start, so rate() and increase() see the first event.
for (const reason of ['start', 'recovery']) moduleInitializations.inc({ reason }, 0);
for (const to of ['open', 'half_open', 'closed']) breakerTransitions.inc({ to }, 0);
for (const reason of ['overloaded', 'client_limit']) shed.inc({ reason }, 0);
for (const operation of ['open', 'record']) inventoryFailures.inc({ operation }, 0);

/** The HsmMetrics sink (src/hsm/HsmMetrics.ts) for the PKCS#11 adapter. */
export const hsmMetrics = {
  hsmCall(operation: string, mechanism: string, seconds: number, ok: boolean): void {
    hsmCallDuration.observe({ operation, mechanism, result: ok ? 'ok' : 'error' }, seconds);
  },
  moduleInitialized(reason: 'start' | 'recovery'): void {
    moduleInitializations.inc({ reason });
  },
  handleRelookup(): void {
    handleRelookups.inc();
  },
};

/** `failure`: the HsmError failure class (a fixed set) or 'other'. */
export function countRetry(failure: string): void {
  retries.inc({ failure });
}

export function countRetryBudgetRefusal(): void {
  retryBudgetRefusals.inc();
}

export function countBreakerTransition(to: 'open' | 'half_open' | 'closed'): void {
  breakerTransitions.inc({ to });
}

export function countShed(reason: 'overloaded' | 'client_limit'): void {
  shed.inc({ reason });
}

/** `operation`: `open` or the inventory operation's name (InventoryAccess.run: a fixed set). */
export function countInventoryFailure(operation: string): void {
  inventoryFailures.inc({ operation });
}

let started = false;

/**
 * Once per serving process: prom-client's default metrics (process CPU, memory, heap, event-loop
 * lag, GC, handles; merged over workers as prom-client sets: summed, the lag averaged with its min
 * and max taken, the start time omitted) and the build info.
 */
export function startProcessMetrics(modulePath: string, commit: string): void {
  if (started) return;
  started = true;
  collectDefaultMetrics({ register });
  const pkg = createRequire(import.meta.url)('../../package.json') as { version: string };
  buildInfo.set({ version: pkg.version, commit, node: process.version, module: basename(modulePath) }, 1);
}
