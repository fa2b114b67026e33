/**
 * The ceilings a service run is measured against, on the harness token: the direct PKCS#11 rate
 * of each key and algorithm (no HTTP), and the bare-HTTP rate of each scenario (no HSM).
 */
import type { KeySpec } from '../src/crypto/algorithms.js';
import { SOFTHSM_MODULE, type LocalToken } from '../src/dev/softHsm.js';
import { keyLabel } from '../src/hsm/keyLabel.js';
import { ceilingFrom, medianStep, typicalSignatureBytes } from './analysis.js';
import { DEFAULTS } from './defaults.js';
import { measureDirectRate, type DirectTarget } from './directRate.js';
import { startLocalService } from './localService.js';
import { bareHttpNote, batchCeilingNote, directRateNote } from './notes.js';
import type { LoadTestOptions, RunContext } from './options.js';
import { buildTemplates, type KeyUnderTest } from './requests.js';
import type { StepResult } from './results.js';
import { isCeilingScenario } from './scenarios.js';
import { ServiceProbe } from './serviceProbe.js';
import { runStep } from './stepRunner.js';

/** Every round's ceiling measurements, until finishCeilings keeps the medians. */
export interface CeilingRounds {
  readonly direct: Map<string, Awaited<ReturnType<typeof measureDirectRate>>[]>;
  readonly http: Map<string, StepResult[]>;
}

/** How the direct PKCS#11 rate is measured, for the ceilings and for `loadtest hsm`. */
export function directRateOptions(o: LoadTestOptions): Parameters<typeof measureDirectRate>[1] {
  return {
    processes: o.workers,
    inFlight: o.directInFlight,
    threadpool: o.directThreadpool,
    durationSec: o.ceilingDurationSec,
    warmupSec: o.ceilingWarmupSec ?? 1,
  };
}

/**
 * One round of the ceilings: the direct PKCS#11 rate of each key and algorithm, then the bare-HTTP
 * rate of each scenario. The rounds interleave with the service's (see LoadTest.runRounds); finishCeilings
 * keeps the medians.
 */
export async function measureCeilingRound(ctx: RunContext, token: LocalToken, keyNames: Map<KeySpec, string>, rounds: CeilingRounds): Promise<void> {
  const specs = ctx.specs.filter(isCeilingScenario);
  if (specs.length === 0) return;
  const measured = new Set<string>();
  for (const spec of specs) {
    const id = `${spec.keySpec}:${spec.algorithm}`;
    if (measured.has(id)) continue;
    measured.add(id);
    ctx.phase(`ceiling: direct PKCS#11 ${id}, ${ctx.o.workers} process(es)`);
    const target: DirectTarget = {
      modulePath: SOFTHSM_MODULE,
      env: { SOFTHSM2_CONF: token.conf },
      tokenLabel: token.label,
      pin: token.pin,
      keyLabel: keyLabel(keyNames.get(spec.keySpec)!, 1),
      keySpec: spec.keySpec,
      algorithm: spec.algorithm,
    };
    const x = await measureDirectRate(target, directRateOptions(ctx.o));
    rounds.direct.set(id, [...(rounds.direct.get(id) ?? []), x]);
    ctx.note(directRateNote(id, x));
  }

  ctx.phase(`ceiling: bare HTTP (Express, ${ctx.o.workers} worker(s))`);
  const sizes = Object.fromEntries([...keyNames].map(([spec, name]) => [name, typicalSignatureBytes(spec)]));
  const server = await startLocalService({
    script: 'loadtest/httpCeilingServer.ts',
    env: { CEILING_SIGNATURE_BYTES: JSON.stringify(sizes) },
    workers: ctx.o.workers,
    readyPath: '/healthz',
  });
  try {
    for (const spec of specs) {
      const key: KeyUnderTest = { name: keyNames.get(spec.keySpec)!, keySpec: spec.keySpec, publicKeys: new Map() };
      const templates = await buildTemplates(spec, key, DEFAULTS.bodiesPerScenario);
      const common = { scenario: spec.name, urls: [server.url], templates, sampleRate: 0, timeoutSec: ctx.o.timeoutSec, connections: ctx.o.ceilingConnections };
      await runStep({ ...common, durationSec: ctx.o.ceilingWarmupSec ?? 1 });
      const probe = new ServiceProbe({ pids: () => server.workerPids(), intervalMs: ctx.o.probeIntervalMs });
      const step = await runStep({ ...common, durationSec: ctx.o.ceilingDurationSec, probe });
      rounds.http.set(spec.name, [...(rounds.http.get(spec.name) ?? []), step]);
    }
  } finally {
    await server.stop();
  }
}

/** The ceilings from every round's measurements: the median of each. */
export function finishCeilings(ctx: RunContext, rounds: CeilingRounds): void {
  for (const spec of ctx.specs.filter(isCeilingScenario)) {
    const httpRounds = rounds.http.get(spec.name) ?? [];
    const directRounds = rounds.direct.get(`${spec.keySpec}:${spec.algorithm}`) ?? [];
    if (httpRounds.length === 0 || directRounds.length === 0) continue;
    const http = medianStep(httpRounds)!;
    ctx.note(bareHttpNote(spec.name, httpRounds, http));
    const d = [...directRounds].sort((a, b) => a.opsPerSec - b.opsPerSec)[Math.floor((directRounds.length - 1) / 2)]!;
    const items = spec.ops[0]!.op.items;
    const ceiling = ceilingFrom(spec.name, d, { reqPerSec: http.requestsPerSec, items });
    if (items > 1) ctx.note(batchCeilingNote(spec.name, http.requestsPerSec, items));
    if (Object.keys(http.errors).length > 0) ctx.note(`Bare-HTTP ceiling of ${spec.name} had errors: ${JSON.stringify(http.errors)}.`);
    ctx.addCeiling(ceiling);
  }
}
