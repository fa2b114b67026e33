/**
 * deploy/kubernetes/loadtest renders with `kubectl kustomize`, and its Job is what several load
 * generators need: Indexed, all of them at once (parallelism = completions = GENERATORS), each a
 * `loadtest --generator-only` writing under its completion index to a ReadWriteMany volume,
 * generator 0 merging them, as a non-root user.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { parseCommandLine } from '../../loadtest/cliArgs.js';
import { type K8sObject, kubectl, MANIFESTS, render } from '../support/kubernetesManifests.js';

const KUBECTL = kubectl();

interface Env {
  name: string;
  value?: string;
  valueFrom?: { fieldRef?: { fieldPath?: string } };
}
interface JobSpec {
  completionMode?: string;
  completions?: number;
  parallelism?: number;
  template?: {
    spec?: {
      securityContext?: { runAsNonRoot?: boolean; runAsUser?: number };
      containers?: {
        image?: string;
        command?: string[];
        env?: Env[];
        envFrom?: { configMapRef?: { name?: string } }[];
        securityContext?: { runAsNonRoot?: boolean; runAsUser?: number; allowPrivilegeEscalation?: boolean };
        volumeMounts?: { name: string; mountPath: string }[];
      }[];
      volumes?: { name: string; persistentVolumeClaim?: { claimName?: string } }[];
    };
  };
}

/** The problems of the rendered load-generator bundle, as sentences (none: it is fine). */
function loadgenProblems(objects: readonly K8sObject[]): string[] {
  const problems: string[] = [];
  const jobs = objects.filter((o) => o.kind === 'Job');
  if (jobs.length !== 1) return [`expected one Job, found ${jobs.length}`];
  const spec = jobs[0]!.spec as JobSpec;
  if (spec.completionMode !== 'Indexed') problems.push(`completionMode is ${spec.completionMode}, not Indexed`);
  if (!(spec.completions !== undefined && spec.completions >= 2)) problems.push(`completions is ${spec.completions}, not 2 or more`);
  if (spec.parallelism !== spec.completions)
    problems.push(`parallelism ${spec.parallelism} is not completions ${spec.completions}: the generators would not run at once`);
  const pod = spec.template?.spec ?? {};
  const [c] = pod.containers ?? [];
  if (!c) return [...problems, 'no container'];
  const env = new Map((c.env ?? []).map((e) => [e.name, e]));
  if (env.get('GENERATORS')?.value !== String(spec.completions))
    problems.push(`GENERATORS is ${env.get('GENERATORS')?.value}, not completions ${spec.completions}`);
  if (!/^metadata\.labels\['batch\.kubernetes\.io\/controller-uid'\]$/.test(env.get('JOB_UID')?.valueFrom?.fieldRef?.fieldPath ?? '')) {
    problems.push('JOB_UID does not come from the Job controller uid label');
  }
  const script = (c.command ?? []).join(' ');
  if (!/npm run loadtest -- --generator-only --url "\$LOADTEST_URL"/.test(script))
    problems.push('the command does not run loadtest --generator-only against $LOADTEST_URL');
  if (!/--out "\$run\/\$JOB_COMPLETION_INDEX"/.test(script)) problems.push('the command does not write under its completion index');
  if (!/--start-at "\$start"/.test(script)) problems.push('the generators do not start together (--start-at)');
  if (!/npm run loadtest -- merge /.test(script)) problems.push('no merge step');
  if (pod.securityContext?.runAsNonRoot !== true || c.securityContext?.runAsNonRoot !== true) problems.push('not runAsNonRoot');
  if (!(c.securityContext?.runAsUser !== undefined && c.securityContext.runAsUser > 0)) problems.push('runAsUser is root or unset');
  if (c.securityContext?.allowPrivilegeEscalation !== false) problems.push('allowPrivilegeEscalation is not false');
  const results = c.volumeMounts?.find((m) => m.mountPath === '/results');
  const claim = pod.volumes?.find((v) => v.name === results?.name)?.persistentVolumeClaim?.claimName;
  const pvc = objects.find((o) => o.kind === 'PersistentVolumeClaim' && o.metadata?.name === claim);
  if (!pvc) problems.push(`/results is not a PersistentVolumeClaim of the bundle (${claim})`);
  else if (!((pvc.spec?.['accessModes'] as string[] | undefined) ?? []).includes('ReadWriteMany')) problems.push(`${claim} is not ReadWriteMany`);
  const cmName = c.envFrom?.[0]?.configMapRef?.name;
  const cm = objects.find((o) => o.kind === 'ConfigMap' && o.metadata?.name === cmName);
  if (!cm?.data?.['LOADTEST_URL']) problems.push('no LOADTEST_URL in the ConfigMap of envFrom');
  return problems;
}

test('deploy/kubernetes/loadtest renders an Indexed Job of generators that merge', {
  skip: KUBECTL ? false : 'kubectl (with kustomize) is not on PATH',
}, () => {
  const objects = render(join(MANIFESTS, 'loadtest'));
  assert.deepEqual(loadgenProblems(objects), []);
  const job = objects.find((o) => o.kind === 'Job')!;
  const container = (job.spec as JobSpec).template!.spec!.containers![0]!;
  assert.match(container.image ?? '', /^hsm-signer-build:/, "the image of the Dockerfile's build target");
  // The generator's flags as the ConfigMap gives them parse as a generator-only run.
  const cm = objects.find((o) => o.kind === 'ConfigMap')!;
  const args = ['--generator-only', '--url', cm.data!['LOADTEST_URL']!, ...cm.data!['LOADTEST_ARGS']!.split(' '), '--out', '/results/x/0'];
  const parsed = parseCommandLine(args, {});
  assert.equal(parsed.kind === 'run' && parsed.options.generatorOnly, true);
  const merge = parseCommandLine(['merge', '/results/x/0', '/results/x/1', '--out', '/results/x/merged', ...cm.data!['MERGE_ARGS']!.split(' ')], {});
  assert.ok(merge.kind === 'merge' && merge.plan, 'MERGE_ARGS make a plan');

  // Each check can fail.
  const broken = (edit: (spec: JobSpec) => void): string[] => {
    const copy = structuredClone(objects);
    edit(copy.find((o) => o.kind === 'Job')!.spec as JobSpec);
    return loadgenProblems(copy);
  };
  assert.match(broken((s) => delete s.completionMode).join('\n'), /not Indexed/);
  assert.match(broken((s) => (s.parallelism = 1)).join('\n'), /parallelism 1 is not completions/);
  assert.match(broken((s) => (s.template!.spec!.containers![0]!.command = ['npm', 'run', 'loadtest'])).join('\n'), /--generator-only/);
  assert.match(broken((s) => (s.template!.spec!.containers![0]!.securityContext!.runAsUser = 0)).join('\n'), /root/);
});
