/**
 * Capacity-plan arithmetic: from measured per-HSM and per-instance rates to "how many HSMs and
 * service instances for N signatures a second, surviving the loss of one availability zone".
 * Pure: no I/O, so the numbers can be checked by hand and by a brute-force test.
 */
import {
  AWS_CLOUDHSM_QUOTAS,
  AWS_MIN_HSMS_FOR_DURABLE_NEW_KEYS,
  AWS_PUBLISHED_SIGN_RATES,
  DEFAULTS,
  MIN_HSMS_SIGNING_ONLY,
  MIN_INSTANCES,
} from './defaults.js';
import type { BindingRule, CapacityPlan, PlanInput, ResolvedPlanInput, TierPlan } from './results.js';
import { formatInt, formatNumber, formatPercent, formatRate, formatSignedPercent } from './format.js';

export type { CapacityPlan, PlanInput, TierPlan } from './results.js';

function requirePositive(name: string, v: number): void {
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) {
    throw new RangeError(`planCapacity: ${name} must be a finite number > 0, got ${String(v)}`);
  }
}

function requireInteger(name: string, v: number, min: number): void {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min) {
    throw new RangeError(`planCapacity: ${name} must be an integer >= ${min}, got ${String(v)}`);
  }
}

export function resolvePlanInput(input: PlanInput): ResolvedPlanInput {
  const resolved: ResolvedPlanInput = {
    targetOpsPerSec: input.targetOpsPerSec,
    perHsmOpsPerSec: input.perHsmOpsPerSec,
    perInstanceOpsPerSec: input.perInstanceOpsPerSec,
    bestConnectionsPerInstance: input.bestConnectionsPerInstance,
    zones: input.zones ?? DEFAULTS.zones,
    spareHsms: input.spareHsms ?? DEFAULTS.spareHsms,
    maxUtilization: input.maxUtilization ?? DEFAULTS.maxUtilization,
    ...(input.scenario === undefined ? {} : { scenario: input.scenario }),
  };
  requirePositive('targetOpsPerSec', resolved.targetOpsPerSec);
  requirePositive('perHsmOpsPerSec', resolved.perHsmOpsPerSec);
  requirePositive('perInstanceOpsPerSec', resolved.perInstanceOpsPerSec);
  requireInteger('bestConnectionsPerInstance', resolved.bestConnectionsPerInstance, 1);
  requireInteger('zones', resolved.zones, 1);
  requireInteger('spareHsms', resolved.spareHsms, 0);
  requirePositive('maxUtilization', resolved.maxUtilization);
  if (resolved.maxUtilization > 1) {
    throw new RangeError(`planCapacity: maxUtilization must be in (0, 1], got ${resolved.maxUtilization}`);
  }
  return resolved;
}

/**
 * ceil(target / (perUnit × maxUtil)), forgiving the float noise of e.g. 1000 × 0.7 =
 * 700.0000000000001: a quotient within 1e-9 of an integer is that integer, otherwise an
 * exact 5 would round up to 6 units.
 */
export function unitsForLoad(target: number, perUnit: number, maxUtilization: number): number {
  const x = target / (perUnit * maxUtilization);
  const r = Math.round(x);
  const n = Math.abs(x - r) <= 1e-9 * Math.max(1, x) ? r : Math.ceil(x);
  if (!Number.isSafeInteger(n)) throw new RangeError(`planCapacity: ${x} units is not a plannable number`);
  return Math.max(1, n);
}

/**
 * Smallest T with T − ceil(T / zones) ≥ n: what is left after losing the fullest zone is
 * floor(T·(z−1)/z), which is ≥ n exactly when T ≥ n·z/(z−1). With a single zone nothing
 * survives its loss, so only the load counts (and a note says so).
 */
export function unitsForZoneLoss(n: number, zones: number): number {
  if (zones <= 1) return n;
  // Integer ceil-division: exact where the float quotient could land a hair above an integer.
  return Math.floor((n * zones + zones - 2) / (zones - 1));
}

/** Even spread, the remainder on the first zones: [4, 4, 3] for 11 over 3. */
export function spreadOverZones(total: number, zones: number): number[] {
  const base = Math.floor(total / zones);
  const extra = total % zones;
  return Array.from({ length: zones }, (_, i) => base + (i < extra ? 1 : 0));
}

function sizeTier(unit: TierPlan['unit'], perUnit: number, p: ResolvedPlanInput, spare: number, minimum: number): TierPlan {
  const neededForLoad = unitsForLoad(p.targetOpsPerSec, perUnit, p.maxUtilization);
  const neededForZoneLoss = unitsForZoneLoss(neededForLoad, p.zones);
  // Order = which rule gets the credit on a tie: the stricter reason first.
  const candidates: Array<[BindingRule, number]> = [
    ['zone-loss', p.zones > 1 ? neededForZoneLoss : 0],
    ['spare', spare > 0 ? neededForLoad + spare : 0],
    ['minimum', minimum],
    ['load', neededForLoad],
  ];
  const total = Math.max(...candidates.map(([, v]) => v));
  const binding = candidates.find(([, v]) => v === total)?.[0] ?? 'load';
  const perZone = spreadOverZones(total, p.zones);
  const remainingAfterZoneLoss = total - Math.max(...perZone);
  return {
    unit,
    perUnitOpsPerSec: perUnit,
    neededForLoad,
    neededForZoneLoss,
    total,
    perZone,
    remainingAfterZoneLoss,
    capacityAllZonesOpsPerSec: total * perUnit,
    capacityAfterZoneLossOpsPerSec: remainingAfterZoneLoss * perUnit,
    binding,
  };
}

const plural = (n: number, word: string): string => `${formatInt(n)} ${word}${n === 1 ? '' : 's'}`;

function tierSentences(t: TierPlan, p: ResolvedPlanInput, spare: number, minimum: number, why: string): string[] {
  const word = t.unit;
  const out = [
    `Load: at most ${formatPercent(p.maxUtilization, 0)} utilisation, ${formatRate(p.targetOpsPerSec)} ops/s needs ` +
      `ceil(${formatRate(p.targetOpsPerSec)} / (${formatRate(t.perUnitOpsPerSec)} × ${formatNumber(p.maxUtilization, 2)})) = ${plural(t.neededForLoad, word)}.`,
  ];
  if (p.zones > 1) {
    const biggest = Math.ceil(t.neededForZoneLoss / p.zones);
    out.push(
      `Zone loss: spread evenly over ${p.zones} zones, losing the zone with the most ${word}s must leave at least ${formatInt(t.neededForLoad)}, ` +
        `so the total T is the smallest with T − ceil(T / ${p.zones}) ≥ ${formatInt(t.neededForLoad)}: ` +
        `T = ${formatInt(t.neededForZoneLoss)} (${formatInt(t.neededForZoneLoss)} − ${formatInt(biggest)} = ${formatInt(t.neededForZoneLoss - biggest)}).`,
    );
  } else {
    out.push(`Zone loss: a single zone, so no number of ${word}s survives losing it; sized for the load only.`);
  }
  if (spare > 0) {
    out.push(
      `Spare: AWS advises load-testing to the peak and then adding one more HSM; with ${plural(spare, 'spare')}, at least ` +
        `${formatInt(t.neededForLoad)} + ${formatInt(spare)} = ${formatInt(t.neededForLoad + spare)}.`,
    );
  }
  out.push(`Minimum: at least ${plural(minimum, word)} ${why}.`);
  out.push(
    `${word === 'HSM' ? 'HSMs' : 'Service instances'}: ${formatInt(t.total)} (set by the ${t.binding} rule), ` +
      `${t.perZone.map(formatInt).join(' + ')} across the zones; at 100% they do ${formatRate(t.capacityAllZonesOpsPerSec)} ops/s ` +
      `with every zone up and ${formatInt(t.remainingAfterZoneLoss)} × ${formatRate(t.perUnitOpsPerSec)} = ` +
      `${formatRate(t.capacityAfterZoneLossOpsPerSec)} ops/s after losing the fullest zone.`,
  );
  return out;
}

export function planCapacity(input: PlanInput): CapacityPlan {
  const p = resolvePlanInput(input);
  const hsms = sizeTier('HSM', p.perHsmOpsPerSec, p, p.spareHsms, MIN_HSMS_SIGNING_ONLY);
  // The spare-HSM advice is about HSMs; instances are cheap to add, so only load, zone loss and a minimum.
  const instances = sizeTier('instance', p.perInstanceOpsPerSec, p, 0, MIN_INSTANCES);

  const systemAll = Math.min(hsms.capacityAllZonesOpsPerSec, instances.capacityAllZonesOpsPerSec);
  const systemAfter = Math.min(hsms.capacityAfterZoneLossOpsPerSec, instances.capacityAfterZoneLossOpsPerSec);
  const headroom = {
    allZones: (systemAll - p.targetOpsPerSec) / p.targetOpsPerSec,
    afterZoneLoss: (systemAfter - p.targetOpsPerSec) / p.targetOpsPerSec,
    systemAllZonesOpsPerSec: systemAll,
    systemAfterZoneLossOpsPerSec: systemAfter,
  };
  const concurrency = {
    perInstance: p.bestConnectionsPerInstance,
    totalAfterZoneLoss: instances.remainingAfterZoneLoss * p.bestConnectionsPerInstance,
    totalAllZones: instances.total * p.bestConnectionsPerInstance,
  };

  const explanation = [
    `Target ${formatRate(p.targetOpsPerSec)} ops/s${p.scenario ? ` of ${p.scenario}` : ''}; measured ${formatRate(p.perHsmOpsPerSec)} ops/s per HSM ` +
      `and ${formatRate(p.perInstanceOpsPerSec)} ops/s per service instance.`,
    ...tierSentences(hsms, p, p.spareHsms, MIN_HSMS_SIGNING_ONLY, 'so one can fail while signing continues'),
    ...tierSentences(instances, p, 0, MIN_INSTANCES, 'so one can be replaced or redeployed without an outage'),
    `Concurrency: each instance did best at ${plural(p.bestConnectionsPerInstance, 'concurrent request')} (the knee of the sweep); ` +
      `with ${plural(instances.remainingAfterZoneLoss, 'instance')} left after a zone loss the callers together should keep about ` +
      `${formatInt(concurrency.totalAfterZoneLoss)} requests in flight (${formatInt(concurrency.totalAllZones)} with every zone up); more only queues.`,
    `Headroom: the weaker tier limits the system to ${formatRate(systemAll)} ops/s with every zone up ` +
      `(${formatSignedPercent(headroom.allZones)} over target) and ${formatRate(systemAfter)} ops/s after losing a zone ` +
      `(${formatSignedPercent(headroom.afterZoneLoss)}).`,
  ];

  const notes = [
    `AWS recommends at least ${AWS_MIN_HSMS_FOR_DURABLE_NEW_KEYS} HSMs in different zones when new keys are generated, so a key ` +
      `created just before an HSM fails is not lost; this plan uses a minimum of ${MIN_HSMS_SIGNING_ONLY} because signing-only ` +
      `clusters do not create keys.`,
  ];
  if (p.zones === 1) {
    notes.push('Only one zone was given: the plan cannot survive a zone outage; AWS advises HSMs in at least two zones for production.');
  }
  if (hsms.total > AWS_CLOUDHSM_QUOTAS.maxHsmsPerCluster) {
    const clusters = Math.ceil(hsms.total / AWS_CLOUDHSM_QUOTAS.maxHsmsPerCluster);
    notes.push(
      `${formatInt(hsms.total)} HSMs exceed the hard limit of ${AWS_CLOUDHSM_QUOTAS.maxHsmsPerCluster} per CloudHSM cluster: ` +
        `split the load over at least ${clusters} clusters, each holding the keys it signs with.`,
    );
  }
  if (hsms.total > AWS_CLOUDHSM_QUOTAS.defaultHsmsPerRegion) {
    notes.push(
      `${formatInt(hsms.total)} HSMs exceed the default quota of ${AWS_CLOUDHSM_QUOTAS.defaultHsmsPerRegion} HSMs per account ` +
        `and region; request an increase before you need it.`,
    );
  }
  if (p.maxUtilization === 1) {
    notes.push('maxUtilization is 1: the plan leaves no margin for bursts and latency will sit at the knee.');
  }

  return {
    inputs: p,
    hsms,
    instances,
    concurrency,
    headroom,
    explanation,
    notes,
    awsPublished: AWS_PUBLISHED_SIGN_RATES,
  };
}
