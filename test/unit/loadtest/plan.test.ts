import { test } from 'node:test';
import assert from 'node:assert/strict';
import { planCapacity, spreadOverZones, unitsForLoad, unitsForZoneLoss } from '../../../loadtest/plan.js';
import { AWS_PUBLISHED_SIGN_RATES, DEFAULTS } from '../../../loadtest/defaults.js';
import type { PlanInput } from '../../../loadtest/results.js';
import { seededRandom } from '../../../testkit/seededRandom.js';

const base: PlanInput = {
  targetOpsPerSec: 5000,
  perHsmOpsPerSec: 1000,
  perInstanceOpsPerSec: 2500,
  bestConnectionsPerInstance: 50,
};

test('5,000 ops/s at 1,000 per HSM and 80%: 7 for the load, 11 to survive losing one of 3 zones', () => {
  const plan = planCapacity(base);
  assert.equal(plan.hsms.neededForLoad, 7);
  assert.equal(plan.hsms.neededForZoneLoss, 11);
  assert.equal(plan.hsms.total, 11);
  assert.deepEqual(plan.hsms.perZone, [4, 4, 3]);
  assert.equal(
    plan.hsms.perZone.reduce((a, b) => a + b, 0),
    plan.hsms.total,
  );
  assert.equal(plan.hsms.remainingAfterZoneLoss, 7);
  assert.equal(plan.hsms.binding, 'zone-loss');
  assert.equal(plan.hsms.capacityAllZonesOpsPerSec, 11_000);
  assert.equal(plan.hsms.capacityAfterZoneLossOpsPerSec, 7_000);
  // Defaults filled in and echoed back.
  assert.equal(plan.inputs.zones, 3);
  assert.equal(plan.inputs.spareHsms, 1);
  assert.equal(plan.inputs.maxUtilization, 0.8);
  assert.ok(
    plan.explanation.some((s) => s.includes('T = 11 (11 − 4 = 7)')),
    plan.explanation.join('\n'),
  );
  assert.ok(
    plan.explanation.some((s) => s.includes('ceil(5,000 / (1,000 × 0.80)) = 7 HSMs')),
    plan.explanation.join('\n'),
  );
});

test('instances, concurrency and headroom follow the same rules', () => {
  const plan = planCapacity(base);
  // ceil(5000 / (2500 × 0.8)) = 3; smallest T with T − ceil(T/3) ≥ 3 is 5.
  assert.equal(plan.instances.neededForLoad, 3);
  assert.equal(plan.instances.total, 5);
  assert.deepEqual(plan.instances.perZone, [2, 2, 1]);
  assert.equal(plan.instances.remainingAfterZoneLoss, 3);
  assert.deepEqual(plan.concurrency, { perInstance: 50, totalAfterZoneLoss: 150, totalAllZones: 250 });
  // HSMs are the weaker tier: 7,000 after a zone loss, 11,000 with all up (instances: 7,500 / 12,500).
  assert.equal(plan.headroom.systemAfterZoneLossOpsPerSec, 7000);
  assert.equal(plan.headroom.systemAllZonesOpsPerSec, 11000);
  assert.ok(Math.abs(plan.headroom.afterZoneLoss - 0.4) < 1e-12);
  assert.ok(Math.abs(plan.headroom.allZones - 1.2) < 1e-12);
});

test('two zones: losing one must leave n, so T = 2n', () => {
  const plan = planCapacity({ ...base, zones: 2 });
  assert.equal(plan.hsms.total, 14);
  assert.deepEqual(plan.hsms.perZone, [7, 7]);
  assert.equal(plan.hsms.remainingAfterZoneLoss, 7);
});

test('spare and minimum rules win when they are the larger', () => {
  const single = planCapacity({ ...base, zones: 1 });
  assert.equal(single.hsms.total, 8); // 7 + 1 spare
  assert.equal(single.hsms.binding, 'spare');
  assert.equal(single.hsms.remainingAfterZoneLoss, 0);
  assert.ok(single.notes.some((n) => n.includes('one zone')));
  assert.ok(single.explanation.some((s) => s.includes('single zone')));

  const tiny = planCapacity({ ...base, targetOpsPerSec: 10, zones: 1, spareHsms: 0 });
  assert.equal(tiny.hsms.neededForLoad, 1);
  assert.equal(tiny.hsms.total, 2);
  assert.equal(tiny.hsms.binding, 'minimum');
});

test('notes: durable-keys advice always, quotas when exceeded', () => {
  const plan = planCapacity(base);
  assert.ok(plan.notes.some((n) => n.includes('at least 3 HSMs')));
  assert.ok(plan.notes.some((n) => n.includes('default quota of 6')));
  assert.ok(!plan.notes.some((n) => n.includes('per CloudHSM cluster')));
  const huge = planCapacity({ ...base, targetOpsPerSec: 50_000 });
  assert.ok(huge.notes.some((n) => n.includes('hard limit of 28')));
});

test('published AWS rates are carried as data with their source', () => {
  const plan = planCapacity(base);
  assert.equal(plan.awsPublished.source, 'AWS CloudHSM documentation, performance section');
  assert.ok(plan.awsPublished.rows.some((r) => r.keySpec === 'RSA_2048' && r.hsms === 6 && r.opsPerSec === 5000));
  assert.ok(plan.awsPublished.rows.some((r) => r.keySpec === 'ECC_NIST_P256' && r.hsmType === 'hsm2m.medium' && r.hsms === 2 && r.opsPerSec === 3000));
  assert.equal(plan.awsPublished, AWS_PUBLISHED_SIGN_RATES);
});

test('float noise does not add a unit: 4.2 / (3 × 0.7) is 2, not 3', () => {
  assert.ok(4.2 / (3 * 0.7) > 2); // the noise this guards against
  assert.equal(unitsForLoad(4.2, 3, 0.7), 2);
  assert.equal(unitsForLoad(4000, 1000, 0.8), 5);
  assert.equal(unitsForLoad(4001, 1000, 0.8), 6);
});

test('invalid inputs throw a RangeError naming the field', () => {
  const bad: Array<[Partial<PlanInput>, RegExp]> = [
    [{ targetOpsPerSec: 0 }, /targetOpsPerSec/],
    [{ targetOpsPerSec: -5 }, /targetOpsPerSec/],
    [{ targetOpsPerSec: Number.NaN }, /targetOpsPerSec/],
    [{ perHsmOpsPerSec: -1000 }, /perHsmOpsPerSec/],
    [{ perHsmOpsPerSec: Infinity }, /perHsmOpsPerSec/],
    [{ perInstanceOpsPerSec: 0 }, /perInstanceOpsPerSec/],
    [{ bestConnectionsPerInstance: 0 }, /bestConnectionsPerInstance/],
    [{ zones: 0 }, /zones/],
    [{ zones: 2.5 }, /zones/],
    [{ spareHsms: -1 }, /spareHsms/],
    [{ maxUtilization: 0 }, /maxUtilization/],
    [{ maxUtilization: 1.2 }, /maxUtilization/],
  ];
  for (const [patch, msg] of bad) {
    assert.throws(
      () => planCapacity({ ...base, ...patch }),
      (err: unknown) => err instanceof RangeError && msg.test(err.message),
    );
  }
});

test('defaults object', () => {
  assert.deepEqual([...DEFAULTS.connections], [1, 8, 25, 50, 75, 100, 150]);
  assert.equal(DEFAULTS.durationSec, 10);
  assert.equal(DEFAULTS.warmupSec, 3);
  assert.deepEqual([...DEFAULTS.scenarios], ['sign:RSA_2048:RSASSA_PKCS1_V1_5_SHA_256', 'sign:ECC_NIST_P256:ECDSA_SHA_256']);
  assert.equal(DEFAULTS.outDir, 'reports');
  assert.equal(DEFAULTS.sampleRate, 0.02);
  assert.equal(DEFAULTS.zones, 3);
  assert.equal(DEFAULTS.spareHsms, 1);
  assert.equal(DEFAULTS.maxUtilization, 0.8);
  assert.ok(Object.isFrozen(DEFAULTS) && Object.isFrozen(DEFAULTS.connections));
});

// ---- property test against brute force ----

function bruteLoad(target: number, perUnit: number, util: number): number {
  let n = 1;
  while (n * perUnit * util < target * (1 - 1e-9)) n++;
  return n;
}

function bruteTotal(n: number, zones: number, spare: number, minimum: number): number {
  for (let t = 1; ; t++) {
    const survives = zones === 1 || t - Math.ceil(t / zones) >= n;
    if (survives && t >= n + spare && t >= minimum) return t;
  }
}

test('property: plan matches a brute-force search (seeded)', () => {
  const rand = seededRandom(0x5eed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)] as T;
  for (let i = 0; i < 2000; i++) {
    const input = {
      targetOpsPerSec: 1 + Math.floor(rand() * 20_000),
      perHsmOpsPerSec: 50 + Math.floor(rand() * 3000),
      perInstanceOpsPerSec: 100 + Math.floor(rand() * 8000),
      bestConnectionsPerInstance: 1 + Math.floor(rand() * 200),
      zones: 1 + Math.floor(rand() * 5),
      spareHsms: Math.floor(rand() * 4),
      maxUtilization: pick([0.5, 0.6, 0.7, 0.75, 0.8, 0.9, 1]),
    };
    const ctx = JSON.stringify(input);
    const plan = planCapacity(input);
    const n = bruteLoad(input.targetOpsPerSec, input.perHsmOpsPerSec, input.maxUtilization);
    const m = bruteLoad(input.targetOpsPerSec, input.perInstanceOpsPerSec, input.maxUtilization);
    assert.equal(plan.hsms.neededForLoad, n, ctx);
    assert.equal(plan.instances.neededForLoad, m, ctx);
    assert.equal(plan.hsms.total, bruteTotal(n, input.zones, input.spareHsms, 2), ctx);
    assert.equal(plan.instances.total, bruteTotal(m, input.zones, 0, 2), ctx);
    for (const tier of [plan.hsms, plan.instances]) {
      assert.equal(tier.perZone.length, input.zones, ctx);
      assert.equal(
        tier.perZone.reduce((a, b) => a + b, 0),
        tier.total,
        ctx,
      );
      assert.ok(Math.max(...tier.perZone) - Math.min(...tier.perZone) <= 1, ctx);
      assert.equal(tier.remainingAfterZoneLoss, tier.total - Math.max(...tier.perZone), ctx);
      if (input.zones > 1) {
        assert.ok(tier.remainingAfterZoneLoss >= tier.neededForLoad, ctx);
        // What is left still carries the target within maxUtilization.
        assert.ok(tier.capacityAfterZoneLossOpsPerSec * input.maxUtilization >= input.targetOpsPerSec * (1 - 1e-9), ctx);
      }
    }
    if (input.zones > 1) assert.ok(plan.headroom.afterZoneLoss >= 1 / input.maxUtilization - 1 - 1e-9, ctx);
    assert.equal(plan.concurrency.totalAfterZoneLoss, plan.instances.remainingAfterZoneLoss * input.bestConnectionsPerInstance);
  }
});

test('unitsForZoneLoss is the smallest T with T − ceil(T/z) ≥ n, and spreadOverZones is even', () => {
  for (let z = 2; z <= 6; z++) {
    for (let n = 1; n <= 200; n++) {
      const t = unitsForZoneLoss(n, z);
      assert.ok(t - Math.ceil(t / z) >= n, `z=${z} n=${n} t=${t}`);
      assert.ok(t - 1 - Math.ceil((t - 1) / z) < n, `z=${z} n=${n} t=${t} not minimal`);
      assert.equal(t - Math.max(...spreadOverZones(t, z)), t - Math.ceil(t / z));
    }
  }
});
