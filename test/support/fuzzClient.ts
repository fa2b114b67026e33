import assert from 'node:assert/strict';
import http from 'node:http';
import { ERROR_CODES, type ErrorCode } from '../../src/errors.js';

/**
 * The fuzz tests' side of the wire: one keep-alive connection to the real service on 127.0.0.1,
 * and the contract every answer must keep whatever was sent (CONTRACT.md, "Conventions").
 */

export interface FuzzRequest {
  readonly method: string;
  /** Sent as is in the request line: printable ASCII only (the HTTP parser refuses the rest before the app sees it). */
  readonly path: string;
  readonly headers?: Readonly<Record<string, string | readonly string[]>>;
  readonly body?: string | Buffer;
}

export interface FuzzResponse {
  readonly status: number;
  readonly headers: http.IncomingHttpHeaders;
  readonly text: string;
  /** From the first byte written to the last byte read. */
  readonly ms: number;
}

/** Longer than any deadline: a request still unanswered then is a hang. */
const HANG_MS = 15_000;

export class FuzzClient {
  private readonly agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  sent = 0;

  constructor(
    private readonly port: number,
    private readonly host = '127.0.0.1',
  ) {}

  async send(req: FuzzRequest): Promise<FuzzResponse> {
    this.sent++;
    try {
      return await this.once(req);
    } catch (e) {
      // The server may close a kept-alive connection (after a 413, say) as the next request is
      // written on it: Node's documented race. The request never reached the app; send it again.
      if ((e as { reused?: boolean }).reused) return this.once(req);
      throw e;
    }
  }

  private once(req: FuzzRequest): Promise<FuzzResponse> {
    return new Promise((resolve, reject) => {
      const body = req.body === undefined ? undefined : Buffer.isBuffer(req.body) ? req.body : Buffer.from(req.body, 'utf8');
      const headers: http.OutgoingHttpHeaders = { ...(req.headers as http.OutgoingHttpHeaders) };
      if (body !== undefined && !Object.keys(headers).some((h) => h.toLowerCase() === 'content-length')) headers['content-length'] = body.length;
      const start = performance.now();
      const r = http.request({ host: this.host, port: this.port, method: req.method, path: req.path, headers, agent: this.agent }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, headers: res.headers, text: Buffer.concat(chunks).toString('utf8'), ms: performance.now() - start }),
        );
      });
      r.setTimeout(HANG_MS, () => r.destroy(new Error(`no answer within ${HANG_MS} ms (a hang)`)));
      r.on('error', (e: NodeJS.ErrnoException) => reject(Object.assign(e, { reused: r.reusedSocket && (e.code === 'ECONNRESET' || e.code === 'EPIPE') })));
      r.end(body);
    });
  }

  /** The process still serves: GET /healthz is a 200 {"status":"ok"}. */
  async assertHealthy(): Promise<void> {
    const res = await this.once({ method: 'GET', path: '/healthz' });
    assert.equal(res.status, 200, `/healthz: ${res.status} ${res.text}`);
    assert.deepEqual(JSON.parse(res.text), { status: 'ok' });
  }

  close(): void {
    this.agent.destroy();
  }
}

const SAFE_ID = /^[A-Za-z0-9._:-]{1,128}$/;
/** An INVALID_ARGUMENT message starts with the field it is about: `digest:`, `requests[2].keyName:`, `X-Deadline-Ms:`. */
const NAMES_A_FIELD = /^[A-Za-z][A-Za-z0-9_.[\]-]*: \S/;
/** What only a stack trace or an internal path would put in a body. */
const LEAK_MARKERS = [
  '/src/',
  'node_modules',
  '.ts:',
  '.js:',
  '    at ',
  'at async ',
  'file://',
  'Error: ',
  'TypeError',
  'RangeError',
  'SyntaxError',
  'ReferenceError',
];
/** 5xx are failures, except a 504 for a deadline the caller set this short (the contract's answer to it). */
const SHORT_DEADLINE_MS = 250;

export interface CheckContext {
  /** REQUEST_DEADLINE_MS of the service under test. */
  readonly defaultDeadlineMs: number;
  /** How far past its deadline an answer may come (scheduling, a GC pause on a shared machine). */
  readonly marginMs: number;
  /** Strings no response may contain (the PIN). */
  readonly secrets: readonly string[];
}

const header = (req: FuzzRequest, name: string): string | readonly string[] | undefined =>
  Object.entries(req.headers ?? {}).find(([k]) => k.toLowerCase() === name)?.[1];

/** The deadline the service must keep for `req`: X-Deadline-Ms may only lower the default. */
export function deadlineOf(req: FuzzRequest, defaultMs: number): number {
  const h = header(req, 'x-deadline-ms');
  const v = typeof h === 'string' ? h.trim() : undefined;
  return v !== undefined && /^[0-9]{1,9}$/.test(v) && Number(v) >= 1 ? Math.min(Number(v), defaultMs) : defaultMs;
}

function checkErrorObject(e: unknown, where: string, withRequestId: string | undefined): ErrorCode {
  assert.ok(typeof e === 'object' && e !== null && !Array.isArray(e), `${where}: error is not an object`);
  const keys = Object.keys(e).sort();
  assert.deepEqual(keys, withRequestId === undefined ? ['code', 'message'] : ['code', 'message', 'requestId'], `${where}: error fields`);
  const { code, message, requestId } = e as Record<string, unknown>;
  assert.ok(typeof code === 'string' && Object.hasOwn(ERROR_CODES, code), `${where}: code ${String(code)} is not in the registry`);
  assert.ok(typeof message === 'string' && message.length > 0, `${where}: message`);
  if (withRequestId !== undefined) assert.equal(requestId, withRequestId, `${where}: requestId is not the X-Request-Id header`);
  if (code === 'INVALID_ARGUMENT') {
    assert.match(message, NAMES_A_FIELD, `${where}: an INVALID_ARGUMENT message names the field`);
    // The error handler's last resort for a 4xx it cannot place: it names no field.
    assert.ok(!message.startsWith('request:'), `${where}: "${message}" names no field`);
  }
  return code as ErrorCode;
}

/**
 * What every answer keeps, whatever the request: no 5xx, the contract's error body with a
 * registered code and its status, JSON, X-Request-Id (the caller's when safe), within the
 * deadline, no stack trace, internal path or secret. Returns the parsed body (undefined when none).
 */
export function checkResponse(req: FuzzRequest, res: FuzzResponse, ctx: CheckContext): unknown {
  const deadline = deadlineOf(req, ctx.defaultDeadlineMs);
  const id = res.headers['x-request-id'];
  assert.ok(typeof id === 'string' && SAFE_ID.test(id), `X-Request-Id header missing or unsafe: ${String(id)}`);
  const given = header(req, 'x-request-id');
  if (typeof given === 'string' && SAFE_ID.test(given)) assert.equal(id, given, 'a safe X-Request-Id is echoed');
  assert.ok(res.ms <= deadline + ctx.marginMs, `answered after ${res.ms.toFixed(0)} ms; the deadline was ${deadline} ms`);
  const requestText = `${req.path}\n${JSON.stringify(req.headers ?? {})}\n${req.body?.toString('latin1') ?? ''}`;
  for (const marker of LEAK_MARKERS) {
    // A message may quote the caller's own input; only what the caller did not send is a leak.
    if (res.text.includes(marker) && !requestText.includes(marker))
      assert.fail(`the body holds "${marker}" (stack trace or internal path): ${res.text.slice(0, 500)}`);
  }
  for (const s of ctx.secrets) assert.ok(!res.text.includes(s) && !JSON.stringify(res.headers).includes(s), 'a secret in the response');

  const bodyless = res.status === 204 || req.method === 'HEAD';
  if (bodyless) assert.equal(res.text, '', `a ${res.status} to ${req.method} has no body`);
  else assert.match(String(res.headers['content-type']), /^application\/json(;|$)/, `content type of a ${res.status}: ${String(res.headers['content-type'])}`);
  let body: unknown;
  if (!bodyless) {
    try {
      body = JSON.parse(res.text);
    } catch {
      assert.fail(`a ${res.status} whose body is not JSON: ${res.text.slice(0, 300)}`);
    }
  }
  if (res.status >= 400 && !bodyless) {
    assert.ok(typeof body === 'object' && body !== null && !Array.isArray(body), 'an error body is an object');
    assert.deepEqual(Object.keys(body), ['error'], 'an error body has only "error"');
    const code = checkErrorObject((body as { error: unknown }).error, 'error', id);
    assert.equal(ERROR_CODES[code].status, res.status, `${code} is ${ERROR_CODES[code].status} in the registry, answered ${res.status}`);
  }
  const shortDeadline504 = res.status === 504 && deadline < SHORT_DEADLINE_MS;
  assert.ok(res.status < 500 || shortDeadline504, `a ${res.status}: ${res.text.slice(0, 500)}`);
  assert.ok(res.status >= 200, `status ${res.status}`);
  return body;
}

/** Each item of a batch answer: a signature or that item's own error (no requestId), never an INTERNAL one. */
export function checkBatchResults(body: unknown, items: number): readonly Record<string, unknown>[] {
  const results = (body as { results?: unknown }).results;
  assert.ok(Array.isArray(results) && results.length === items, 'one result per batch item, in order');
  results.forEach((r: Record<string, unknown>, i) => {
    if ('error' in r) {
      const code = checkErrorObject(r.error, `results[${i}].error`, undefined);
      assert.ok(ERROR_CODES[code].status < 500, `results[${i}]: ${code}`);
    } else {
      assert.deepEqual(Object.keys(r).sort(), ['algorithm', 'keyName', 'keyVersion', 'signature'], `results[${i}] fields`);
    }
  });
  return results as Record<string, unknown>[];
}

/** Status counts per property, for the run's summary. */
export class Tally {
  private readonly counts = new Map<number, number>();
  total = 0;
  /** The slowest answer, in ms, and the least time any answer had left before its deadline. */
  slowestMs = 0;
  leastSlackMs = Infinity;

  add(status: number, ms = 0, deadlineMs = Infinity): void {
    this.total++;
    this.slowestMs = Math.max(this.slowestMs, ms);
    this.leastSlackMs = Math.min(this.leastSlackMs, deadlineMs - ms);
    this.counts.set(status, (this.counts.get(status) ?? 0) + 1);
  }

  count(pred: (status: number) => boolean): number {
    return [...this.counts].filter(([s]) => pred(s)).reduce((n, [, c]) => n + c, 0);
  }

  toString(): string {
    return [...this.counts]
      .sort(([a], [b]) => a - b)
      .map(([s, c]) => `${s}×${c}`)
      .join(' ');
  }
}
