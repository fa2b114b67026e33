import type { LoadTestReport } from '../results.js';

/** Pretty JSON in the key order the runner built the report in, so diffs between runs stay readable. */
export function toJson(report: LoadTestReport): string {
  return `${JSON.stringify(report, null, 2)}\n`;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * The inverse of toJson, for compare: checks just enough of the shape that a wrong file
 * (another tool's JSON, a future version) fails here with a message, not deep in a reporter.
 */
export function parseReport(text: string, name = 'report'): LoadTestReport {
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (err) {
    throw new Error(`${name}: not JSON (${(err as Error).message})`);
  }
  if (!isObject(data)) throw new Error(`${name}: expected a JSON object`);
  if (data['version'] !== 1) throw new Error(`${name}: unsupported report version ${JSON.stringify(data['version'])}, expected 1`);
  for (const key of ['steps', 'ceilings', 'notes'] as const) {
    if (!Array.isArray(data[key])) throw new Error(`${name}: "${key}" must be an array`);
  }
  if (!isObject(data['machine'])) throw new Error(`${name}: "machine" must be an object`);
  if (!isObject(data['target'])) throw new Error(`${name}: "target" must be an object`);
  for (const [i, s] of (data['steps'] as unknown[]).entries()) {
    if (!isObject(s) || typeof s['scenario'] !== 'string' || typeof s['connections'] !== 'number' || !isObject(s['latency'])) {
      throw new Error(`${name}: steps[${i}] is not a step (needs scenario, connections, latency)`);
    }
  }
  return data as unknown as LoadTestReport;
}
