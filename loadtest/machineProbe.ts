/**
 * How steady the machine is while a run measures it. Two fixed loops, timed a few times each:
 * one that stays in the core's registers and caches (compute), one that reads at random over
 * 64 MiB, more than a shared L3 (memory). On a cloud VM the other tenants of the host share its
 * memory system but not the core: the compute loop keeps its time, the memory loop's time moves,
 * and every memory-heavy rate (HTTP serving, the service, its garbage collector) moves with it.
 * The memory loop's spread tells how far apart two measurements of the same code can land.
 *
 * The harness probes at the start and the end of a run (report.json `machine.probe`, and a note).
 * Alone: `node --import tsx loadtest/machineProbe.ts [samples]`.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { isMainModule } from '../src/isMainModule.js';
import type { MachineProbe } from './results.js';
import { probeSummary } from './format.js';

const MEMORY_WORDS = (64 * 1024 * 1024) / 4;

function computePass(): number {
  let x = 1;
  for (let i = 0; i < 30_000_000; i++) x = (Math.imul(x, 1664525) + 1013904223) | 0;
  return x;
}

function memoryPass(words: Uint32Array): number {
  let x = 1;
  let sum = 0;
  const mask = words.length - 1;
  for (let i = 0; i < 4_000_000; i++) {
    x = (Math.imul(x, 1664525) + 1013904223) | 0;
    sum = (sum + words[(x >>> 6) & mask]!) | 0;
  }
  return sum;
}

function timed(pass: () => number): number {
  const t0 = performance.now();
  pass();
  return Math.round((performance.now() - t0) * 10) / 10;
}

/**
 * `samples` passes of each loop, alternating, `pauseMs` apart, so that they spread over a second
 * or two. Blocks the event loop for one pass at a time (~30 to ~100 ms): run it when nothing is
 * being measured.
 */
export async function probeMachine(samples: number, pauseMs = 100): Promise<MachineProbe> {
  const words = new Uint32Array(MEMORY_WORDS);
  for (let i = 0; i < words.length; i++) words[i] = Math.imul(i, 2654435761) >>> 0;
  // The first passes map pages and compile the loops: not part of the machine's answer.
  computePass();
  memoryPass(words);
  const probe: MachineProbe = { computeMs: [], memoryMs: [] };
  for (let i = 0; i < samples; i++) {
    probe.computeMs.push(timed(computePass));
    probe.memoryMs.push(timed(() => memoryPass(words)));
    if (i + 1 < samples) await sleep(pauseMs);
  }
  return probe;
}

export function probeNote(start: MachineProbe, end: MachineProbe): string {
  return (
    `Machine steadiness (loadtest/machineProbe.ts, ${start.memoryMs.length} samples): at the start ${probeSummary(start)}; at the end ${probeSummary(end)}. ` +
    'The same work took that much longer from one second to the next with nothing else of this run running: ' +
    'rates of memory-heavy work (HTTP, the service) move by as much, so two runs of the same code can differ by that spread; ' +
    "a run whose memory-loop median is slower than another's ran on a busier host."
  );
}

if (isMainModule(import.meta.url)) {
  const samples = Number(process.argv[2] ?? '10');
  if (!Number.isInteger(samples) || samples < 2) {
    console.error('usage: node --import tsx loadtest/machineProbe.ts [samples >= 2]');
    process.exit(2);
  }
  const p = await probeMachine(samples);
  console.log(`compute loop, ms per pass: ${p.computeMs.join(' ')}`);
  console.log(`memory loop,  ms per pass: ${p.memoryMs.join(' ')}`);
  console.log(probeSummary(p));
}
