import assert from 'node:assert/strict';
import { constants, createHash, createPublicKey, verify as cryptoVerify, type KeyObject } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { gzipSync } from 'node:zlib';
import { after, before, test } from 'node:test';
import fc from 'fast-check';
import request from 'supertest';
import { algorithmInfo, algorithmsFor, SIGNING_ALGORITHMS, type KeySpec, type SigningAlgorithm } from '../../src/crypto/algorithms.js';
import { isKeyName } from '../../src/hsm/keyLabel.js';
import {
  anyJson,
  b64Variant,
  badKeyName,
  base64,
  bytes,
  contentEncodingHeader,
  contentTypeHeader,
  JSON_CONTENT_TYPES,
  deadlineHeader,
  encodeComponent,
  MAX_SEGMENT,
  JsonObject,
  jsonText,
  nastyString,
  obj,
  RawJson,
  rawNumbers,
  rarely,
  requestIdHeader,
  segment,
  segmentEncoding,
  type B64Variant,
  type SegmentEncoding,
} from '../support/fuzzArbitraries.js';
import { checkBatchResults, checkResponse, deadlineOf, FuzzClient, Tally, type CheckContext, type FuzzRequest } from '../support/fuzzClient.js';
import {
  certSpec,
  csrSpec,
  dnString,
  makeAttachParties,
  makeCertificate,
  makeCsr,
  makeSoftKeys,
  sanInput,
  type AttachParties,
  type CertSpec,
  type CsrSpec,
  type SoftKeys,
} from '../support/fuzzPki.js';
import { createTestToken, startTestService, type TestToken } from '../support/testToken.js';
import { INTERMEDIATE_EXT, makeRoot, signAsRoot, TempDir } from '../unit/pki/openssl.js';

/**
 * Property-based fuzzing of every /v1 endpoint, PKI included, against the real app on a real
 * SoftHSMv2 token through a real socket. Whatever is sent, the answer keeps the contract (see
 * checkResponse); near-valid requests (a valid one with one thing changed) also have an oracle,
 * so the deep code paths (HSM signing, verification, CSR and certificate checks, issuance) run
 * and their answers are checked, not just the first validation.
 *
 * Reproducible: FUZZ_SEED (default below) seeds property i with FUZZ_SEED + i; FUZZ_RUNS (default
 * 10,000) is the number of generated requests, shared out by SHARES. A failure prints fast-check's
 * shrunk counterexample with its seed and path.
 */

const SEED = Number(process.env.FUZZ_SEED ?? 20_270_412);
const RUNS = Number(process.env.FUZZ_RUNS ?? 10_000);
const SHARES = { shapes: 0.2, signing: 0.25, pki: 0.15, paths: 0.2, headers: 0.2 } as const;
const runsOf = (p: keyof typeof SHARES): number => Math.max(1, Math.round(RUNS * SHARES[p]));
const HEALTH_EVERY = 250;

/** The keys on the test token; `ca` gets an intermediate certificate, `att` is the attach target. */
const KEYS = { rsa: 'RSA_2048', ec: 'ECC_NIST_P256', ca: 'ECC_NIST_P384', att: 'ECC_NIST_P256' } as const satisfies Record<string, KeySpec>;
type KeyName = keyof typeof KEYS;
const KEY_NAMES = Object.keys(KEYS) as KeyName[];
type SignKey = 'rsa' | 'ec' | 'ca';
const SIGN_KEYS: SignKey[] = ['rsa', 'ec', 'ca'];
const INT_DAYS = 365;

let token: TestToken;
let svc: Awaited<ReturnType<typeof startTestService>>;
let server: ReturnType<Awaited<ReturnType<typeof startTestService>>['app']['listen']>;
let client: FuzzClient;
let ctx: CheckContext;
let dir: TempDir;
let soft: SoftKeys;
let parties: AttachParties;
/** Fixed message M and a valid signature of it per key, algorithm and format (for verify's oracle). */
const M = Buffer.from('fuzz me, but verify me first');
const goodSignatures = new Map<string, Buffer>();
const sigKey = (key: SignKey, alg: SigningAlgorithm, format: string | undefined): string => `${key}|${alg}|${format ?? 'der'}`;
let goodCsrPem: string;
let goodAttach: { certificatePem: string; chainPem: unknown };
/** Each signing key's public key, from GET /v1/keys/{name}: a 200 signature must verify with it. */
const publicKeys = new Map<string, KeyObject>();
const totals = new Map<string, number>();

before(async () => {
  token = await createTestToken(KEY_NAMES.map((name) => ({ name, spec: KEYS[name] })));
  svc = await startTestService(token);
  server = svc.app.listen(0, '127.0.0.1');
  await new Promise<void>((resolve) => server.once('listening', () => resolve()));
  client = new FuzzClient((server.address() as AddressInfo).port);
  ctx = { defaultDeadlineMs: svc.config.requestDeadlineMs, marginMs: 250, secrets: [token.pin] };
  const json = (method: string, path: string, body: unknown): FuzzRequest => ({
    method,
    path,
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  const ok = async (req: FuzzRequest, status = 200): Promise<Record<string, unknown>> => {
    const res = await client.send(req);
    assert.equal(res.status, status, `${req.method} ${req.path}: ${res.text}`);
    return res.text ? (JSON.parse(res.text) as Record<string, unknown>) : {};
  };
  // The issuing CA, as the PKI walkthrough makes it: CSR from the service, an openssl root signs, attach.
  dir = await TempDir.create();
  const rootPem = await makeRoot(dir, { name: 'root', alg: 'ec-p384', subject: '/C=US/O=Example/CN=Fuzz Offline Root' });
  const csr = await ok(json('POST', '/v1/keys/ca/csr', { subject: 'CN=Fuzz Issuing CA,O=Example,C=US', ca: { pathLength: 0 } }));
  const intPem = await signAsRoot(dir, csr.csrPem as string, { root: 'root', out: 'ca-v1', ext: INTERMEDIATE_EXT, days: INT_DAYS });
  await ok(json('PUT', '/v1/keys/ca/certificate', { certificatePem: intPem, chainPem: rootPem }), 204);
  // Valid signatures of M, made by the service.
  for (const key of SIGN_KEYS) {
    for (const alg of algorithmsFor(KEYS[key])) {
      for (const format of algorithmInfo(alg).padding === 'ECDSA' ? (['der', 'raw'] as const) : [undefined]) {
        const r = await ok(
          json('POST', `/v1/keys/${key}/sign`, { algorithm: alg, message: M.toString('base64'), ...(format ? { signatureFormat: format } : {}) }),
        );
        goodSignatures.set(sigKey(key, alg, format), Buffer.from(r.signature as string, 'base64'));
      }
    }
  }
  soft = await makeSoftKeys();
  const att = await ok({ method: 'GET', path: '/v1/keys/att' });
  parties = await makeAttachParties((att.versions as { publicKeyPem: string }[])[0]!.publicKeyPem, rootPem);
  goodCsrPem = await makeCsr(soft, BASE_CSR);
  goodAttach = await makeCertificate(parties, BASE_CERT);
  for (const key of SIGN_KEYS)
    publicKeys.set(key, createPublicKey(((await ok({ method: 'GET', path: `/v1/keys/${key}` })).versions as { publicKeyPem: string }[])[0]!.publicKeyPem));
});

after(async () => {
  client?.close();
  await new Promise((resolve) => (server ? server.close(resolve) : resolve(undefined)));
  await svc?.close();
  token?.cleanup();
  await dir?.remove();
});

// ---------------------------------------------------------------------------------------------
// A case: a request, and for near-valid ones what the answer must be.

interface ItemExpect {
  readonly code?: string;
  /** The item's error message starts with this. */
  readonly field?: string;
}

interface Expect {
  readonly status: number;
  readonly code?: string;
  /** The error message starts with one of these. */
  readonly field?: string | readonly string[];
  /** For a 200 verify: the verdict. */
  readonly valid?: boolean;
  /** For a 200 batch: per item, a signature ({}) or an error. */
  readonly items?: readonly ItemExpect[];
  /** Extra checks of a success body. */
  readonly body?: (body: Record<string, unknown>) => void;
}

interface Case {
  readonly req: FuzzRequest;
  readonly expect?: Expect;
}

const JSON_TYPE = { 'content-type': 'application/json' } as const;
const jsonReq = (method: string, path: string, body: unknown, headers: Record<string, string> = {}): FuzzRequest => ({
  method,
  path,
  headers: { ...JSON_TYPE, ...headers },
  body: jsonText(body),
});
/** An X-Deadline-Ms the service refuses (HTTP trims the spaces around a header value). */
const badDeadline = (h: string | readonly string[] | undefined): boolean =>
  h !== undefined && (typeof h !== 'string' || !/^[0-9]{1,9}$/.test(h.trim()) || Number(h) < 1);
const invalidArg = (field: string | readonly string[]): Expect => ({ status: 400, code: 'INVALID_ARGUMENT', field });

/** Sends the case, checks the contract, then the oracle. */
async function exchange(c: Case, tally: Tally): Promise<void> {
  const res = await client.send(c.req);
  tally.add(res.status, res.ms, deadlineOf(c.req, ctx.defaultDeadlineMs));
  const body = checkResponse(c.req, res, ctx) as Record<string, unknown> | undefined;
  const e = c.expect;
  if (e) {
    const hasDeadline = Object.keys(c.req.headers ?? {}).some((h) => h.toLowerCase() === 'x-deadline-ms');
    const say = `${c.req.method} ${c.req.path.slice(0, 120)}: expected ${e.status}${e.code ? ` ${e.code}` : ''}${e.field ? ` naming ${String(e.field)}` : ''}, got ${res.status} ${res.text.slice(0, 400)}`;
    // A caller's short deadline may come first; that is a 504 (checkResponse allows it), and no verdict.
    if (!(hasDeadline && res.status === 504)) {
      assert.equal(res.status, e.status, say);
      const err = (body as { error?: { code: string; message: string } } | undefined)?.error;
      if (e.code) assert.equal(err?.code, e.code, say);
      if (e.field !== undefined) {
        const fields = typeof e.field === 'string' ? [e.field] : e.field;
        assert.ok(err && fields.some((f) => err.message.startsWith(f)), say);
      }
      if (e.valid !== undefined) assert.equal(body?.valid, e.valid, say);
      if (e.items) {
        const results = checkBatchResults(body, e.items.length);
        e.items.forEach((ie, i) => {
          const r = results[i]!;
          const ierr = r.error as { code: string; message: string } | undefined;
          if (!ie.code) assert.ok(!ierr, `results[${i}] should be a signature: ${JSON.stringify(r)}; ${say}`);
          else {
            assert.equal(ierr?.code, ie.code, `results[${i}]: ${JSON.stringify(r)}; ${say}`);
            // Checks of the service layer name the item's field without its `requests[i].` prefix (the position says which item).
            if (ie.field)
              assert.ok(
                [ie.field, ie.field.replace(/^requests\[\d+\]\./, '')].some((f) => ierr!.message.startsWith(f)),
                `results[${i}] names ${ie.field}: ${ierr!.message}`,
              );
          }
        });
      }
      if (e.body && body) e.body(body);
    }
  }
  if (client.sent % HEALTH_EVERY === 0) await client.assertHealthy();
}

/** One fuzz property: `runs` generated requests, then the service must still be healthy and ready. */
async function fuzz<T>(
  t: { diagnostic(m: string): void },
  name: keyof typeof SHARES,
  arb: fc.Arbitrary<T>,
  toCase: (x: T) => Case | Promise<Case>,
  minOk: number,
): Promise<Tally> {
  const tally = new Tally();
  const seed = SEED + Object.keys(SHARES).indexOf(name);
  const start = performance.now();
  await fc.assert(
    fc.asyncProperty(arb, async (x) => exchange(await toCase(x), tally)),
    { seed, numRuns: runsOf(name), endOnFailure: process.env.FUZZ_SHRINK === '0', includeErrorInReport: true },
  );
  await client.assertHealthy();
  const ready = await client.send({ method: 'GET', path: '/readyz' });
  assert.equal(ready.status, 200, `/readyz after the ${name} property: ${ready.text}`);
  totals.set(name, tally.total);
  t.diagnostic(
    `${name}: seed ${seed}, ${runsOf(name)} runs, ${tally.total} requests in ${((performance.now() - start) / 1000).toFixed(1)} s; statuses ${tally}; slowest answer ${tally.slowestMs.toFixed(0)} ms, least slack ${tally.leastSlackMs.toFixed(0)} ms before its deadline`,
  );
  // Near-valid requests must get through validation often enough to exercise what lies behind it.
  assert.ok(
    tally.count((s) => s >= 200 && s < 300) >= Math.floor(minOk * tally.total),
    `${name}: too few successes (${tally}) - the fuzzing no longer reaches the deep paths`,
  );
  return tally;
}

// ---------------------------------------------------------------------------------------------
// Property 1: random JSON shapes on every POST and PUT route.

const FIELD_VALUES: Record<string, fc.Arbitrary<unknown>> = {
  algorithm: fc.constantFrom<unknown>(...SIGNING_ALGORITHMS, 'ecdsa_sha_256', 'ECDSA_SHA_1', 'ECDSA_SHA_256 '),
  message: fc.constantFrom<unknown>('eA==', '', 'eA', 'e A==', Buffer.alloc(64).toString('base64')),
  digest: fc.constantFrom<unknown>(
    Buffer.alloc(32, 1).toString('base64'),
    Buffer.alloc(48, 1).toString('base64'),
    Buffer.alloc(64, 1).toString('base64'),
    'AAAA',
  ),
  signature: fc.constantFrom<unknown>('AAAA', Buffer.alloc(64).toString('base64'), Buffer.alloc(256).toString('base64')),
  keyVersion: fc.constantFrom<unknown>(1, 2, 0, -1, 1.5, '1', ...rawNumbers),
  signatureFormat: fc.constantFrom<unknown>('der', 'raw', 'DER', ''),
  keyName: fc.constantFrom<unknown>(...KEY_NAMES, 'nope', '', '../ec'),
  subject: fc.oneof(dnString, fc.constant('CN=x')),
  ca: fc.constantFrom<unknown>({}, { pathLength: 0 }, { pathLength: 11 }, { pathLength: -1 }, { pathLength: 1.5 }, { pathLength: '1' }, { pathLen: 0 }, []),
  subjectAltNames: sanInput,
  certificatePem: fc.constantFrom<unknown>('-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n', '-----BEGIN CERTIFICATE-----', 'hello', ''),
  chainPem: fc.constantFrom<unknown>('', ' ', '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n'),
  csrPem: fc.constantFrom<unknown>(
    '-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n',
    '-----BEGIN NEW CERTIFICATE REQUEST-----\nMA==\n-----END NEW CERTIFICATE REQUEST-----\n',
    '',
  ),
  profile: fc.constantFrom<unknown>('tls-server', 'tls-client', 'code-signing', 'sub-ca', 'TLS-SERVER', 'web', ''),
  validityDays: fc.constantFrom<unknown>(1, 30, 365, 366, 3650, 3651, 0, -1, 1.5, '30', ...rawNumbers),
};

const SIGN_FIELDS = ['algorithm', 'message', 'digest', 'keyVersion', 'signatureFormat'];
const ROUTES: readonly { method: string; path: (key: string) => string; fields: readonly string[] }[] = [
  { method: 'POST', path: (k) => `/v1/keys/${k}/sign`, fields: SIGN_FIELDS },
  { method: 'POST', path: (k) => `/v1/keys/${k}/verify`, fields: [...SIGN_FIELDS, 'signature'] },
  { method: 'POST', path: () => '/v1/sign/batch', fields: ['requests'] },
  { method: 'POST', path: (k) => `/v1/keys/${k}/csr`, fields: ['subject', 'keyVersion', 'ca', 'subjectAltNames'] },
  { method: 'PUT', path: (k) => `/v1/keys/${k}/certificate`, fields: ['certificatePem', 'chainPem', 'keyVersion'] },
  { method: 'POST', path: (k) => `/v1/keys/${k}/certificates`, fields: ['csrPem', 'profile', 'validityDays', 'subjectAltNames'] },
];

/** An object of some of `fields` (values of the right kind or not) and maybe a stray member. */
const shapedObject = (fields: readonly string[], depth: number): fc.Arbitrary<JsonObject> =>
  fc
    .tuple(
      fc.subarray([...fields]),
      fc.array(fc.tuple(fc.constantFrom(...fields, '__proto__', 'constructor', 'extra', ''), anyJson), { maxLength: 2 }),
      fc.nat(),
    )
    .chain(([chosen, strays, n]) =>
      fc
        .tuple(
          ...chosen.map((f) =>
            f === 'requests' && depth > 0
              ? fc.array(fc.oneof(shapedObject([...SIGN_FIELDS, 'keyName'], 0), anyJson), { minLength: 0, maxLength: 6 })
              : fc.oneof({ weight: 3, arbitrary: FIELD_VALUES[f] ?? anyJson }, { weight: 1, arbitrary: anyJson }),
          ),
        )
        .map((values) => new JsonObject([...chosen.map((f, i) => [f, values[i]] as const), ...(n % 3 === 0 ? strays : [])])),
    );

const shapesArb = fc
  .record({
    route: fc.constantFrom(...ROUTES),
    key: fc.oneof({ weight: 5, arbitrary: fc.constantFrom<string>(...KEY_NAMES) }, { weight: 1, arbitrary: fc.constant('nope') }),
    body: fc.oneof(
      { weight: 6, arbitrary: fc.constant(undefined) },
      { weight: 2, arbitrary: fc.jsonValue({ maxDepth: 4 }) },
      { weight: 1, arbitrary: fc.constantFrom<unknown>(...rawNumbers, null, 'string', [], 0, true) },
      { weight: 1, arbitrary: fc.integer({ min: 1, max: 20_000 }).map((n) => new RawJson(`${'['.repeat(n)}${']'.repeat(n)}`)) },
      { weight: 1, arbitrary: fc.integer({ min: 1, max: 5_000 }).map((n) => new RawJson(`${'{"a":'.repeat(n)}1${'}'.repeat(n)}`)) },
    ),
  })
  .chain(({ route, key, body }) =>
    (body === undefined ? shapedObject(route.fields, 1) : fc.constant(body)).map((b): Case => ({ req: jsonReq(route.method, route.path(key), b) })),
  );

test('random JSON shapes on every POST and PUT route: the contract holds', async (t) => {
  await fuzz(t, 'shapes', shapesArb, (c) => c, 0);
});

// ---------------------------------------------------------------------------------------------
// Property 2: near-valid sign, verify and batch requests.

type Field = 'algorithm' | 'message' | 'digest' | 'signature' | 'keyVersion' | 'signatureFormat' | 'keyName';
type Mutation =
  | { readonly kind: 'none' }
  | { readonly kind: 'b64'; readonly variant: B64Variant; readonly at: number; readonly pick: number }
  | { readonly kind: 'bytes'; readonly bytes: Buffer; readonly pick: number }
  | { readonly kind: 'type'; readonly field: Field; readonly value: unknown }
  | { readonly kind: 'set'; readonly field: 'algorithm' | 'keyVersion' | 'signatureFormat'; readonly value: unknown }
  | { readonly kind: 'delete'; readonly field: Field }
  | { readonly kind: 'unknown-field'; readonly key: string; readonly value: unknown }
  | { readonly kind: 'both' }
  | { readonly kind: 'duplicate'; readonly value: unknown }
  | { readonly kind: 'key'; readonly name: string; readonly enc: SegmentEncoding };

const FIELDS: readonly Field[] = ['algorithm', 'message', 'digest', 'signature', 'keyVersion', 'signatureFormat', 'keyName'];
const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  { weight: 4, arbitrary: fc.constant({ kind: 'none' as const }) },
  { weight: 4, arbitrary: fc.record({ kind: fc.constant('b64' as const), variant: b64Variant, at: fc.nat(), pick: fc.nat() }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('bytes' as const), bytes, pick: fc.nat() }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('type' as const), field: fc.constantFrom(...FIELDS), value: anyJson }) },
  {
    weight: 3,
    arbitrary: fc.oneof(
      fc.record({
        kind: fc.constant('set' as const),
        field: fc.constant('algorithm' as const),
        value: fc.oneof(fc.constantFrom<unknown>(...SIGNING_ALGORITHMS), nastyString),
      }),
      fc.record({
        kind: fc.constant('set' as const),
        field: fc.constant('keyVersion' as const),
        value: fc.constantFrom<unknown>(1, 2, 3, 0, -1, 1.5, 999_999_999, 1_000_000_000, 2 ** 53, ...rawNumbers),
      }),
      fc.record({
        kind: fc.constant('set' as const),
        field: fc.constant('signatureFormat' as const),
        value: fc.constantFrom<unknown>('der', 'raw', 'DER', 'RAW', '', ' der', 'pem', 'jws'),
      }),
    ),
  },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('delete' as const), field: fc.constantFrom(...FIELDS) }) },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant('unknown-field' as const),
      key: fc.oneof(fc.constantFrom('messsage', 'Algorithm', '__proto__', 'constructor', 'keyname', ''), nastyString),
      value: anyJson,
    }),
  },
  { weight: 1, arbitrary: fc.constant({ kind: 'both' as const }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('duplicate' as const), value: anyJson }) },
  {
    weight: 2,
    arbitrary: fc.record({ kind: fc.constant('key' as const), name: fc.oneof(fc.constantFrom<string>(...KEY_NAMES), badKeyName), enc: segmentEncoding }),
  },
);

interface SignBase {
  readonly key: SignKey;
  readonly alg: SigningAlgorithm;
  readonly digest: boolean;
  readonly version: boolean;
  readonly format: 'der' | 'raw' | undefined;
  readonly message: Buffer;
}

const signBase: fc.Arbitrary<SignBase> = fc
  .record({
    key: fc.constantFrom(...SIGN_KEYS),
    algIndex: fc.nat(),
    digest: fc.boolean(),
    version: fc.boolean(),
    format: fc.constantFrom(undefined, 'der' as const, 'raw' as const),
    message: bytes,
  })
  .map(({ key, algIndex, format, ...rest }) => {
    const algs = algorithmsFor(KEYS[key]);
    const alg = algs[algIndex % algs.length]!;
    return { key, alg, format: algorithmInfo(alg).padding === 'ECDSA' ? format : undefined, ...rest };
  });

const digestOf = (alg: SigningAlgorithm, m: Buffer): Buffer => createHash(algorithmInfo(alg).hash).update(m).digest();
const isStdBase64 = (s: unknown): boolean => typeof s === 'string' && /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/.test(s);

/** What a decoded path segment names: the key name the route sees, or why there is none. */
function routedName(name: string, enc: SegmentEncoding): { name: string } | 'bad-encoding' | 'unknown' {
  const seg = segment(name, enc);
  if (seg === '' || /[/?#]/.test(seg) || seg === '.' || seg === '..') return 'unknown';
  try {
    return { name: decodeURIComponent(seg) };
  } catch {
    return 'bad-encoding';
  }
}

/**
 * A sign or verify body (or a batch item, with keyName) of `base` with `m` applied, and what the
 * answer must be. `prefix` is the batch item's field prefix (`requests[2].`).
 */
function nearValid(
  kind: 'sign' | 'verify' | 'item',
  base: SignBase,
  m: Mutation,
  prefix = '',
): { body: JsonObject; expect: Expect | 'generic'; keyName: string; seg: string } {
  const verify = kind === 'verify';
  const message = verify ? M : base.message;
  const members: [string, unknown][] = [['algorithm', base.alg]];
  if (kind === 'item') members.unshift(['keyName', base.key]);
  members.push(base.digest ? ['digest', digestOf(base.alg, message).toString('base64')] : ['message', message.toString('base64')]);
  if (base.version) members.push(['keyVersion', 1]);
  if (base.format) members.push(['signatureFormat', base.format]);
  const signature = goodSignatures.get(sigKey(base.key, base.alg, base.format))!;
  if (verify) members.push(['signature', signature.toString('base64')]);
  let body = new JsonObject(members);
  const ok: Expect = verify ? { status: 200, valid: true } : { status: 200 };
  const bad = (field: string): Expect => invalidArg(`${prefix}${field}`);
  const dataField = base.digest ? 'digest' : 'message';
  const binaryFields = verify ? [dataField, 'signature'] : [dataField];
  let keyName: string = base.key;
  let seg: string = base.key;
  let expect: Expect | 'generic' = ok;
  switch (m.kind) {
    case 'none':
      break;
    case 'b64': {
      const field = binaryFields[m.pick % binaryFields.length]!;
      const raw = field === 'signature' ? signature : field === 'digest' ? digestOf(base.alg, message) : message;
      const text = base64(raw, m.variant, m.at);
      body = body.with(field, text);
      if (!isStdBase64(text)) expect = bad(field);
      break;
    }
    case 'bytes': {
      const field = binaryFields[m.pick % binaryFields.length]!;
      body = body.with(field, m.bytes.toString('base64'));
      if (field === 'digest' && m.bytes.length !== algorithmInfo(base.alg).digestLength) expect = bad('digest');
      else if (verify) {
        const same = field === 'signature' ? m.bytes.equals(signature) : field === 'digest' ? m.bytes.equals(digestOf(base.alg, M)) : m.bytes.equals(M);
        expect = { status: 200, valid: same };
      }
      break;
    }
    case 'type': {
      if (m.field === 'keyName' && kind !== 'item') return nearValid(kind, base, { kind: 'none' }, prefix);
      if (m.field === 'signature' && !verify) return nearValid(kind, base, { kind: 'none' }, prefix);
      body = body.with(m.field, m.value);
      // Strings and numbers may happen to be valid; everything else is the wrong type for every field.
      expect = typeof m.value === 'string' || typeof m.value === 'number' || m.value instanceof RawJson ? 'generic' : bad(m.field);
      break;
    }
    case 'set':
      body = body.with(m.field, m.value);
      expect = 'generic';
      break;
    case 'delete':
      body = body.with(m.field, undefined);
      if (m.field === 'algorithm' || (m.field === 'signature' && verify) || (m.field === 'keyName' && kind === 'item')) expect = bad(m.field);
      else if (m.field === dataField) expect = bad('message');
      // Without its format, a raw r||s signature is read as DER: not valid, not an error.
      else if (m.field === 'signatureFormat' && verify && base.format === 'raw') expect = { status: 200, valid: false };
      break;
    case 'unknown-field':
      if (['keyName', 'requests', ...FIELDS].includes(m.key)) return nearValid(kind, base, { kind: 'none' }, prefix);
      body = body.with(m.key, m.value);
      expect = kind === 'item' ? invalidArg(`requests[`) : invalidArg('body');
      break;
    case 'both':
      body = body.with('message', message.toString('base64')).with('digest', digestOf(base.alg, message).toString('base64'));
      expect = bad('message');
      break;
    case 'duplicate':
      // JSON.parse keeps the last of two members with one name: the first one's value does not matter.
      body = new JsonObject([['algorithm', m.value], ...body.members]);
      break;
    case 'key': {
      if (kind === 'item') {
        keyName = m.name;
        body = body.with('keyName', m.name);
        if (!isKeyName(m.name)) expect = bad('keyName');
        else if (!(m.name in KEYS)) expect = { status: 404, code: 'NOT_FOUND' };
        else if (m.name !== base.key) expect = 'generic';
        break;
      }
      seg = segment(m.name, m.enc);
      const routed = routedName(m.name, m.enc);
      if (routed === 'unknown') expect = 'generic';
      else if (routed === 'bad-encoding') expect = invalidArg(['name', 'path']);
      else if (!isKeyName(routed.name)) expect = invalidArg('name');
      else if (!(routed.name in KEYS)) expect = { status: 404, code: 'NOT_FOUND' };
      else if (routed.name !== base.key) expect = 'generic';
      break;
    }
  }
  if (kind === 'sign' && expect === ok) expect = { status: 200, body: signedBy(base, body) };
  return { body, expect, keyName, seg };
}

/** The value JSON.parse keeps: the last member of that name. */
const lastMember = (o: JsonObject, key: string): unknown => o.members.filter(([k]) => k === key).at(-1)?.[1];

/** A sign answer for `body` on `base`'s key: its fields, and a signature that verifies (node:crypto, with the key's public key). */
const signedBy =
  (base: SignBase, body: JsonObject) =>
  (answer: Record<string, unknown>): void => {
    const alg = lastMember(body, 'algorithm') as SigningAlgorithm;
    assert.deepEqual([answer.keyName, answer.keyVersion, answer.algorithm], [base.key, 1, alg], JSON.stringify(answer));
    assert.ok(isStdBase64(answer.signature), 'signature is standard base64');
    const message = lastMember(body, 'message');
    if (typeof message !== 'string') return; // a digest: node:crypto cannot verify a prehashed PSS or ECDSA signature
    const info = algorithmInfo(alg);
    const key = {
      key: publicKeys.get(base.key)!,
      ...(info.padding === 'PSS' ? { padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: info.digestLength } : {}),
      dsaEncoding: lastMember(body, 'signatureFormat') === 'raw' ? ('ieee-p1363' as const) : ('der' as const),
    };
    assert.ok(
      cryptoVerify(info.hash, Buffer.from(message, 'base64'), key, Buffer.from(answer.signature as string, 'base64')),
      `the ${alg} signature does not verify: ${JSON.stringify(answer)}`,
    );
  };

/** Batch-level changes: none (items decide), or one that fails the whole request. */
type BatchMutation = 'none' | 'empty' | 'too-many' | 'not-array' | 'missing' | 'unknown-field' | 'non-objects' | 'many-valid';

const signingArb = fc.oneof(
  {
    weight: 5,
    arbitrary: fc
      .record({ kind: fc.constantFrom('sign' as const, 'verify' as const), base: signBase, m: mutation, deadline: rarely(deadlineHeader, 12) })
      .map(({ kind, base, m, deadline }): Case => {
        const { body, expect, seg } = nearValid(kind, base, m);
        const headers: Record<string, string | readonly string[]> = deadline === undefined ? {} : { 'x-deadline-ms': deadline };
        const e = badDeadline(deadline) ? invalidArg('X-Deadline-Ms') : expect === 'generic' ? undefined : expect;
        return { req: { ...jsonReq('POST', `/v1/keys/${seg}/${kind}`, body), headers: { ...JSON_TYPE, ...headers } }, ...(e ? { expect: e } : {}) };
      }),
  },
  {
    weight: 2,
    arbitrary: fc
      .record({
        items: fc.array(fc.tuple(signBase, mutation), { minLength: 1, maxLength: 6 }),
        batch: fc.oneof(
          { weight: 8, arbitrary: fc.constant<BatchMutation>('none') },
          { weight: 3, arbitrary: fc.constantFrom<BatchMutation>('empty', 'too-many', 'not-array', 'missing', 'unknown-field', 'non-objects', 'many-valid') },
        ),
        count: fc.integer({ min: 17, max: 80 }),
        junk: anyJson,
      })
      .map(({ items, batch, count, junk }): Case => {
        const path = '/v1/sign/batch';
        /** The items from index `from` on, with their expectations (undefined when some item has no oracle). */
        const build = (from: number): { bodies: JsonObject[]; expect: ItemExpect[] | undefined } => {
          const built = items.map(([b, m], i) => nearValid('item', b, m, `requests[${from + i}].`));
          const expect: ItemExpect[] = [];
          for (const b of built) {
            if (b.expect === 'generic') return { bodies: built.map((x) => x.body), expect: undefined };
            const field = typeof b.expect.field === 'string' ? { field: b.expect.field } : {};
            expect.push(b.expect.status === 200 ? {} : { code: b.expect.code ?? 'INVALID_ARGUMENT', ...field });
          }
          return { bodies: built.map((x) => x.body), expect };
        };
        const withItems = (bodies: unknown[], expect: ItemExpect[] | undefined): Case => ({
          req: jsonReq('POST', path, obj({ requests: bodies })),
          ...(expect ? { expect: { status: 200, items: expect } } : {}),
        });
        switch (batch) {
          case 'none': {
            const b = build(0);
            return withItems(b.bodies, b.expect);
          }
          case 'empty':
            return { req: jsonReq('POST', path, { requests: [] }), expect: invalidArg('requests') };
          case 'too-many':
            return { req: jsonReq('POST', path, { requests: Array.from({ length: 257 }, () => ({})) }), expect: invalidArg('requests') };
          case 'not-array':
            return { req: jsonReq('POST', path, obj({ requests: Array.isArray(junk) || junk === undefined ? 'x' : junk })), expect: invalidArg('requests') };
          case 'missing':
            return { req: jsonReq('POST', path, obj({})), expect: invalidArg('requests') };
          case 'unknown-field':
            return { req: jsonReq('POST', path, obj({ requests: build(0).bodies, request: [] })), expect: invalidArg('body') };
          case 'non-objects': {
            // An item that is not an object fails alone; the others are answered as usual.
            const notObject = typeof junk === 'object' && junk !== null && !Array.isArray(junk) ? 0 : junk;
            const b = build(1);
            return withItems([notObject, ...b.bodies], b.expect && [{ code: 'INVALID_ARGUMENT', field: 'requests[0]' }, ...b.expect]);
          }
          case 'many-valid': {
            // More than one HSM chunk (16 items), all good: every one signed, in order.
            const good = Array.from({ length: count }, (_, i) => ({
              keyName: i % 5 === 4 ? 'rsa' : 'ec',
              algorithm: i % 5 === 4 ? 'RSASSA_PSS_SHA_256' : 'ECDSA_SHA_256',
              message: Buffer.from(`item ${i}`).toString('base64'),
            }));
            return { req: jsonReq('POST', path, { requests: good }), expect: { status: 200, items: good.map(() => ({})) } };
          }
          default: {
            // Every mutation has its case (tsc checks it here); a new one must get one.
            const unhandled: never = batch;
            throw new Error(`no case for batch mutation ${String(unhandled)}`);
          }
        }
      }),
  },
);

test('near-valid sign, verify and batch requests: each answer is the right one', async (t) => {
  await fuzz(t, 'signing', signingArb, (c) => c, 0.25);
});

// ---------------------------------------------------------------------------------------------
// Property 3: near-valid PKI requests (CSR, attach, read certificate, issue).

const BASE_CSR: CsrSpec = {
  key: 'p256',
  hash: 'SHA-256',
  subject: [[['2.5.4.3', 'fuzz.example.com']]],
  sans: [{ type: 'dns', value: 'fuzz.example.com' }],
  extras: [],
  breakSignature: false,
  pem: 'none',
  at: 0,
};
const BASE_CERT: CertSpec = {
  subjectKey: 'hsm',
  issuer: 'root',
  subject: [[['2.5.4.3', 'Fuzz Issuing CA']]],
  notBeforeDays: -1,
  notAfterDays: 365,
  basicConstraints: 'ca-pathlen-0',
  keyUsage: 'cert-sign',
  ski: 'auto',
  aki: 'auto',
  serial: '1000000000000001',
  chain: 'root',
  pem: 'none',
  at: 0,
};

const pathKey = (main: KeyName): fc.Arbitrary<{ name: string; enc: SegmentEncoding }> =>
  fc.oneof(
    { weight: 12, arbitrary: fc.constant({ name: main as string, enc: 'encode' as SegmentEncoding }) },
    { weight: 2, arbitrary: fc.record({ name: fc.constantFrom<string>(...KEY_NAMES), enc: fc.constant<SegmentEncoding>('encode') }) },
    { weight: 1, arbitrary: fc.record({ name: badKeyName, enc: segmentEncoding }) },
  );
const keyVersionValue = fc.oneof(
  { weight: 6, arbitrary: fc.constant(undefined) },
  { weight: 1, arbitrary: fc.constantFrom<unknown>(1, 2, 0, -1, 1.5, '1', null, 999_999_999, ...rawNumbers) },
);
const stray = fc.oneof(
  { weight: 12, arbitrary: fc.constant(undefined) },
  { weight: 1, arbitrary: fc.tuple(fc.constantFrom('subjectAltName', 'profile', '__proto__', 'x'), anyJson) },
);

/** What every PKI plan names: the key, and for a body, an optional stray field and whether it starts from a valid one. */
interface PlanKey {
  readonly key: { name: string; enc: SegmentEncoding };
}
interface PlanBody extends PlanKey {
  readonly stray?: readonly [string, unknown];
  readonly base: boolean;
}
type PkiPlan =
  | (PlanBody & { readonly op: 'csr'; readonly subject: string; readonly ca: unknown; readonly sans: unknown; readonly keyVersion: unknown })
  | (PlanBody & { readonly op: 'attach'; readonly cert: CertSpec; readonly keyVersion: unknown })
  | (PlanKey & { readonly op: 'get'; readonly query: string })
  | (PlanBody & {
      readonly op: 'issue';
      readonly csr: CsrSpec;
      readonly profile: unknown;
      readonly validityDays: unknown;
      readonly sans: unknown;
      readonly deadline?: string;
    });

const QUERIES = [
  '',
  '?keyVersion=1',
  '?keyVersion=2',
  '?keyVersion=0',
  '?keyVersion=-1',
  '?keyVersion=01',
  '?keyVersion=1.0',
  '?keyVersion=abc',
  '?keyVersion=',
  '?keyVersion=%31',
  '?keyVersion=1&keyVersion=1',
  '?keyVersion[]=1',
  '?keyVersion=999999999',
  '?keyVersion=1000000000',
  '?KeyVersion=1',
  '?__proto__=1',
  '?keyVersion=%zz',
  '?keyVersion=+1',
  '?keyVersion=1e0',
];

const pkiArb: fc.Arbitrary<PkiPlan> = fc.oneof(
  {
    weight: 3,
    arbitrary: fc.oneof(
      {
        weight: 1,
        arbitrary: fc.constantFrom<PkiPlan>(
          {
            op: 'csr',
            key: { name: 'ca', enc: 'encode' },
            subject: 'CN=Fuzz,O=Example,C=US',
            ca: undefined,
            sans: undefined,
            keyVersion: undefined,
            base: true,
          },
          {
            op: 'csr',
            key: { name: 'rsa', enc: 'encode' },
            subject: 'CN=Fuzz RSA',
            ca: { pathLength: 1 },
            sans: { dns: ['rsa.example.com'] },
            keyVersion: 1,
            base: true,
          },
        ),
      },
      {
        weight: 5,
        arbitrary: fc.record({
          op: fc.constant('csr' as const),
          key: pathKey('ca'),
          subject: fc.oneof({ weight: 1, arbitrary: fc.constant('CN=Fuzz,O=Example,C=US') }, { weight: 3, arbitrary: dnString }),
          ca: fc.oneof({ weight: 3, arbitrary: fc.constant(undefined) }, { weight: 1, arbitrary: FIELD_VALUES.ca! }, { weight: 1, arbitrary: anyJson }),
          sans: fc.oneof({ weight: 2, arbitrary: fc.constant(undefined) }, { weight: 2, arbitrary: sanInput }),
          keyVersion: keyVersionValue,
          stray,
          base: fc.constant(false),
        }),
      },
    ),
  },
  {
    weight: 3,
    arbitrary: fc.oneof(
      { weight: 1, arbitrary: fc.constant<PkiPlan>({ op: 'attach', key: { name: 'att', enc: 'encode' }, cert: BASE_CERT, keyVersion: undefined, base: true }) },
      {
        weight: 5,
        arbitrary: fc.record({
          op: fc.constant('attach' as const),
          key: pathKey('att').filter((k) => k.name !== 'ca'),
          cert: certSpec,
          keyVersion: keyVersionValue,
          stray,
          base: fc.constant(false),
        }),
      },
    ),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      op: fc.constant('get' as const),
      key: pathKey('ca'),
      query: fc.oneof(
        fc.constantFrom(...QUERIES),
        nastyString.map((s) => `?keyVersion=${encodeComponent(s).slice(0, MAX_SEGMENT)}`),
      ),
    }),
  },
  {
    weight: 4,
    arbitrary: fc.oneof(
      {
        weight: 1,
        arbitrary: fc.constant<PkiPlan>({
          op: 'issue',
          key: { name: 'ca', enc: 'encode' },
          csr: BASE_CSR,
          profile: 'tls-server',
          validityDays: 30,
          sans: undefined,
          base: true,
        }),
      },
      {
        weight: 5,
        arbitrary: fc.record({
          op: fc.constant('issue' as const),
          key: pathKey('ca'),
          csr: fc.oneof({ weight: 1, arbitrary: fc.constant(BASE_CSR) }, { weight: 3, arbitrary: csrSpec }),
          profile: fc.oneof(
            { weight: 6, arbitrary: fc.constantFrom('tls-server', 'tls-client', 'code-signing', 'sub-ca') },
            { weight: 1, arbitrary: FIELD_VALUES.profile! },
            { weight: 1, arbitrary: anyJson },
          ),
          validityDays: fc.oneof({ weight: 6, arbitrary: fc.integer({ min: 1, max: INT_DAYS + 5 }) }, { weight: 1, arbitrary: FIELD_VALUES.validityDays! }),
          sans: fc.oneof({ weight: 3, arbitrary: fc.constant(undefined) }, { weight: 2, arbitrary: sanInput }),
          stray,
          base: fc.constant(false),
          deadline: rarely(fc.constantFrom('1', '2', '5', '10', '50'), 10),
        }),
      },
    ),
  },
);

async function pkiCase(p: PkiPlan): Promise<Case> {
  const path = (rest: string): string => `/v1/keys/${segment(p.key.name, p.key.enc)}/${rest}`;
  const withStray = (o: JsonObject, s?: readonly [string, unknown]): JsonObject => (s ? new JsonObject([...o.members, s]) : o);
  switch (p.op) {
    case 'csr': {
      const body = withStray(obj({ subject: p.subject, ca: p.ca, subjectAltNames: p.sans, keyVersion: p.keyVersion }), p.stray);
      return {
        req: jsonReq('POST', path('csr'), body),
        ...(p.base ? { expect: { status: 200, body: (b) => assert.match(String(b.csrPem), /^-----BEGIN CERTIFICATE REQUEST-----\n/) } } : {}),
      };
    }
    case 'attach': {
      const { certificatePem, chainPem } = await makeCertificate(parties, p.cert);
      const body = withStray(obj({ certificatePem, chainPem, keyVersion: p.keyVersion }), p.stray);
      return { req: jsonReq('PUT', path('certificate'), body), ...(p.base ? { expect: { status: 204 } } : {}) };
    }
    case 'get':
      return {
        req: { method: 'GET', path: path('certificate') + p.query },
        ...(p.key.name === 'ca' && p.key.enc === 'encode' && p.query === '' ? { expect: { status: 200 } } : {}),
      };
    case 'issue': {
      const csrPem = p.csr === BASE_CSR ? goodCsrPem : await makeCsr(soft, p.csr);
      const body = withStray(obj({ csrPem, profile: p.profile, validityDays: p.validityDays, subjectAltNames: p.sans }), p.stray);
      return {
        req: jsonReq('POST', path('certificates'), body, p.deadline ? { 'x-deadline-ms': p.deadline } : {}),
        ...(p.base ? { expect: { status: 201, body: (b) => assert.equal(typeof b.serialNumber, 'string') } } : {}),
      };
    }
  }
}

test('near-valid PKI requests (csr, attach, read certificate, issue): the contract holds', async (t) => {
  await fuzz(t, 'pki', pkiArb, pkiCase, 0.1);
});

// ---------------------------------------------------------------------------------------------
// Property 4: methods and paths.

const METHODS = ['GET', 'GET', 'GET', 'POST', 'POST', 'PUT', 'DELETE', 'PATCH', 'HEAD', 'OPTIONS', 'TRACE', 'PROPFIND', 'PURGE', 'SEARCH'];
const SEGMENTS = [
  'keys',
  'keys',
  'sign',
  'verify',
  'batch',
  'jwks',
  'csr',
  'certificate',
  'certificates',
  'ec',
  'rsa',
  'ca',
  'att',
  'nope',
  '..',
  '.',
  '',
  'v1',
  'healthz',
  'readyz',
  'metrics',
  'openapi.json',
  'crl',
  'revoke',
];
const ACTIONS = ['sign', 'verify', 'jwks', 'csr', 'certificate', 'certificates', '', 'certificates/01', 'crl', 'revoke', 'SIGN', 'sign/', 'sign/extra'];
/** The API's routes below /v1/keys/{name}, with their methods. */
const ROUTED: readonly (readonly [string, string])[] = [
  ['GET', ''],
  ['GET', 'jwks'],
  ['GET', 'certificate'],
  ['HEAD', ''],
  ['POST', 'sign'],
  ['POST', 'verify'],
  ['POST', 'csr'],
  ['PUT', 'certificate'],
  ['POST', 'certificates'],
];
const pathsArb = fc
  .record({
    shape: fc.oneof(
      // A route of the API with its key name in some encoding, behind a prefix that may or may not still match.
      {
        weight: 4,
        arbitrary: fc
          .tuple(
            fc.oneof(
              { weight: 3, arbitrary: fc.constantFrom(...ROUTED) },
              { weight: 1, arbitrary: fc.tuple(fc.constantFrom(...METHODS), fc.constantFrom(...ACTIONS)) },
            ),
            fc.oneof({ weight: 3, arbitrary: fc.constantFrom<string>(...KEY_NAMES, 'nope') }, { weight: 2, arbitrary: badKeyName }),
            segmentEncoding,
            fc.oneof(
              { weight: 4, arbitrary: fc.constant('/v1/keys/') },
              {
                weight: 1,
                arbitrary: fc.constantFrom('/v1//keys/', '/v1/keys/./', '/v1/keys/x/../', '/v1/Keys/', '/V1/KEYS/', '/v1/keys/%2E/', '/v1/%6Beys/'),
              },
            ),
          )
          .map(([[method, action], name, enc, prefix]) => ({ method, path: `${prefix}${segment(name, enc)}${action ? `/${action}` : ''}` })),
      },
      {
        weight: 1,
        arbitrary: fc
          .tuple(
            fc.constantFrom(...METHODS),
            fc.constantFrom(
              '/v1/keys',
              '/v1/keys/',
              '/v1/sign/batch',
              '/v1/sign',
              '/v1',
              '/v1/',
              '/healthz',
              '/readyz',
              '/openapi.json',
              '/v1/openapi.json',
              '/v1/healthz',
              '/',
            ),
          )
          .map(([method, path]) => ({ method, path })),
      },
      // Anything else built of the API's words and junk.
      {
        weight: 2,
        arbitrary: fc
          .tuple(
            fc.constantFrom(...METHODS),
            fc.constantFrom('/v1', '/v1', '/V1', '/v2', '', '/v1/', '//v1', '/./v1', '/v1/..', '/%76%31', '/v1%2F', '/v1;x'),
            fc.array(fc.tuple(fc.oneof({ weight: 4, arbitrary: fc.constantFrom(...SEGMENTS) }, { weight: 1, arbitrary: badKeyName }), segmentEncoding), {
              maxLength: 5,
            }),
          )
          .map(([method, prefix, segs]) => ({ method, path: `${prefix}/${segs.map(([s, enc]) => segment(s, enc)).join('/')}` })),
      },
    ),
    trailing: fc.oneof(
      { weight: 6, arbitrary: fc.constant('') },
      { weight: 1, arbitrary: fc.constantFrom('/', '//', '/.', '/..', '%2F', ';x=1', '.json', '%00', '%') },
    ),
    query: fc.oneof(
      { weight: 3, arbitrary: fc.constant('') },
      { weight: 1, arbitrary: fc.constantFrom(...QUERIES, '?a=1&a=2', '?%zz', '?&&&', '?=', '?a[b][c]=1') },
    ),
    long: rarely(fc.integer({ min: 200, max: 6000 }), 8),
    body: fc.constantFrom<'none' | 'sign' | 'empty-json'>('none', 'sign', 'sign', 'empty-json'),
  })
  .map(({ shape: { method, path: p }, trailing, query, long, body }): Case => {
    let path = `${p}${trailing}`;
    if (!path.startsWith('/')) path = `/${path}`;
    if (long !== undefined) path += `/${'a'.repeat(long)}`;
    path += query;
    const withBody = (method === 'POST' || method === 'PUT' || method === 'PATCH') && body !== 'none';
    return {
      req: withBody
        ? { method, path, headers: JSON_TYPE, body: body === 'sign' ? JSON.stringify({ algorithm: 'ECDSA_SHA_256', message: 'eA==' }) : '{}' }
        : { method, path },
      ...(method === 'GET' && path === '/v1/keys' ? { expect: { status: 200 } } : {}),
    };
  });

test('methods and paths (encoded, overlong, dot-segments, unicode, queries): the contract holds', async (t) => {
  await fuzz(t, 'paths', pathsArb, (c) => c, 0);
});

// ---------------------------------------------------------------------------------------------
// Property 5: headers, content types, content encodings and raw bodies on valid requests.

interface ValidRequest {
  readonly method: string;
  readonly path: string;
  readonly body?: () => unknown;
}
const VALID: readonly ValidRequest[] = [
  { method: 'GET', path: '/v1/keys' },
  { method: 'GET', path: '/v1/keys/ec' },
  { method: 'GET', path: '/v1/keys/rsa/jwks' },
  { method: 'GET', path: '/v1/keys/ca/certificate' },
  { method: 'POST', path: '/v1/keys/ec/sign', body: () => ({ algorithm: 'ECDSA_SHA_256', message: 'aGVsbG8=' }) },
  {
    method: 'POST',
    path: '/v1/keys/rsa/verify',
    body: () => ({
      algorithm: 'RSASSA_PKCS1_V1_5_SHA_256',
      message: M.toString('base64'),
      signature: goodSignatures.get(sigKey('rsa', 'RSASSA_PKCS1_V1_5_SHA_256', undefined))!.toString('base64'),
    }),
  },
  {
    method: 'POST',
    path: '/v1/sign/batch',
    body: () => ({ requests: [{ keyName: 'ec', algorithm: 'ECDSA_SHA_256', digest: Buffer.alloc(32, 9).toString('base64') }] }),
  },
  { method: 'POST', path: '/v1/keys/ca/csr', body: () => ({ subject: 'CN=Headers Fuzz' }) },
  { method: 'PUT', path: '/v1/keys/att/certificate', body: () => goodAttach },
  { method: 'POST', path: '/v1/keys/ca/certificates', body: () => ({ csrPem: goodCsrPem, profile: 'tls-client', validityDays: 7 }) },
];
const JSON_TYPES = new Set(JSON_CONTENT_TYPES);

type BodyKind = 'valid' | 'raw-bytes' | 'form' | 'bom' | 'empty' | 'utf16' | 'latin1' | 'nul' | 'huge' | 'deep';
const headersArb = fc
  .record({
    route: fc.constantFrom(...VALID),
    deadline: rarely(deadlineHeader, 1),
    requestId: rarely(requestIdHeader, 1),
    contentType: contentTypeHeader,
    contentEncoding: contentEncodingHeader,
    compress: fc.boolean(),
    body: fc.oneof(
      { weight: 10, arbitrary: fc.constant<BodyKind>('valid') },
      { weight: 6, arbitrary: fc.constantFrom<BodyKind>('raw-bytes', 'form', 'bom', 'empty', 'utf16', 'latin1', 'nul', 'deep') },
      { weight: 1, arbitrary: fc.constant<BodyKind>('huge') },
    ),
    raw: fc.uint8Array({ maxLength: 200 }),
    accept: rarely(fc.constantFrom('text/html', 'application/xml', '*/*', 'application/json;q=0'), 4),
  })
  .map(({ route, deadline, requestId, contentType, contentEncoding, compress, body, raw, accept }): Case => {
    const headers: Record<string, string | readonly string[]> = {};
    if (deadline !== undefined) headers['X-Deadline-Ms'] = deadline;
    if (requestId !== undefined) headers['X-Request-Id'] = requestId;
    if (accept !== undefined) headers.Accept = accept;
    const hasBody = route.body !== undefined;
    let payload: Buffer | undefined;
    if (hasBody) {
      const valid = jsonText(route.body!());
      payload = {
        valid: Buffer.from(valid),
        'raw-bytes': Buffer.from(raw),
        form: Buffer.from('algorithm=ECDSA_SHA_256&message=aGVsbG8%3D'),
        bom: Buffer.from(`\ufeff${valid}`),
        empty: Buffer.alloc(0),
        utf16: Buffer.from(valid, 'utf16le'),
        latin1: Buffer.from('{"subject":"CN=caf\u00e9"}', 'latin1'),
        nul: Buffer.from(`${valid}\u0000`),
        huge: Buffer.from(`{"algorithm":"ECDSA_SHA_256","message":"${'A'.repeat(1024 * 1024 + 16)}"}`),
        deep: Buffer.from(`${'['.repeat(30_000)}${']'.repeat(30_000)}`),
      }[body];
      if (contentType !== undefined) headers['Content-Type'] = contentType;
      if (contentEncoding !== undefined) {
        headers['Content-Encoding'] = contentEncoding;
        if (compress && contentEncoding.toLowerCase() === 'gzip') payload = gzipSync(payload);
      }
    } else if (body === 'raw-bytes' && contentType !== undefined) {
      // A GET with a body it should not have.
      headers['Content-Type'] = contentType;
      payload = Buffer.from(raw);
    }
    const req: FuzzRequest = { method: route.method, path: route.path, headers, ...(payload !== undefined ? { body: payload } : {}) };
    if (badDeadline(deadline)) return { req, expect: invalidArg('X-Deadline-Ms') };
    if (hasBody && !(contentType !== undefined && JSON_TYPES.has(contentType)))
      return { req, expect: { status: 415, code: 'UNSUPPORTED_MEDIA_TYPE', field: 'body' } };
    return { req };
  });

test('headers, content types, encodings and raw bodies: the contract holds', async (t) => {
  await fuzz(t, 'headers', headersArb, (c) => c, 0.1);
});

// ---------------------------------------------------------------------------------------------
// Regressions: what the properties found, as fixed cases.

test('fuzz regression: overlapping attaches and reads of one key version all succeed (were 503s, and a crash)', async () => {
  // Found by the headers property (seed 6): an attach whose X-Deadline-Ms passed (504) ran on to its end, and the next
  // attach's C_DestroyObject met an object the first one had destroyed: 503 HSM_UNAVAILABLE.
  const abandoned = await client.send(jsonReq('PUT', '/v1/keys/att/certificate', goodAttach, { 'X-Deadline-Ms': '1' }));
  assert.ok(abandoned.status === 504 || abandoned.status === 204, abandoned.text);
  const next = await client.send({
    ...jsonReq('PUT', '/v1/keys/att/certificate', goodAttach),
    headers: { 'Content-Type': 'application/json; charset="utf-8"', 'Content-Encoding': 'gzip' },
    body: gzipSync(jsonText(goodAttach)),
  });
  assert.equal(next.status, 204, next.text);
  // The same race, on purpose: replacements and reads of one version side by side. Before the certificate objects'
  // ReadWriteLock, SoftHSMv2 also answered CKR_GENERAL_ERROR / CKR_FUNCTION_FAILED here, and (in longer runs, with the
  // periodic key scan reading the objects too) crashed the process in C_GetAttributeValue.
  const api = () => request(svc.app);
  for (let round = 0; round < 25; round++) {
    const answers = await Promise.all([
      ...Array.from({ length: 4 }, () =>
        api()
          .put('/v1/keys/att/certificate')
          .send(goodAttach as object),
      ),
      ...Array.from({ length: 2 }, () => api().get('/v1/keys/att/certificate')),
    ]);
    assert.deepEqual(
      answers.map((r) => r.status),
      [204, 204, 204, 204, 200, 200],
      JSON.stringify(answers.map((r) => r.body)),
    );
  }
  const got = await api().get('/v1/keys/att/certificate').expect(200);
  assert.equal(got.body.certificatePem, goodAttach.certificatePem);
});

test('fuzz totals', (t) => {
  const total = [...totals.values()].reduce((a, b) => a + b, 0);
  t.diagnostic(
    `seed ${SEED} (FUZZ_SEED), ${RUNS} runs planned (FUZZ_RUNS), ${total} generated requests: ${[...totals].map(([k, v]) => `${k} ${v}`).join(', ')}; ${client.sent} requests sent in all`,
  );
  assert.ok(total >= RUNS, `${total} generated requests, fewer than the ${RUNS} planned`);
});
