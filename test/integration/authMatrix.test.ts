/**
 * The auth matrix: every operation against every way a caller can be refused, on the real service
 * (src/main.ts in its own process, NODE_ENV=production), a real SoftHSMv2 token and real HTTPS.
 * Two services on one token and one clients file:
 *  - bearer tokens over HTTPS (no client CA: a caller without a credential reaches HTTP, and is a 401);
 *  - mutual TLS (a caller without a certificate the CA issued never reaches HTTP).
 * Certificates and the offline root come from openssl; signatures are checked with node:crypto,
 * CSRs and issued certificates with openssl. The matrix, with what each cell got, is printed as
 * test diagnostics by the last test.
 */
import { createHash, createPublicKey, randomBytes, verify as verifySignature, X509Certificate, type KeyObject } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import https from 'node:https';
import tls from 'node:tls';
import { join } from 'node:path';
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { freePort } from '../../testkit/localHttp.js';
import { OPERATIONS, type Operation } from '../../src/http/auth.js';
import { startServiceProcess, type ServiceProcess } from '../support/faultService.js';
import { createTestToken, type TestToken } from '../support/testToken.js';
import { httpsRequest, TestPki, type HttpsResult, type Leaf, type LeafOptions } from '../support/tlsPki.js';
import { INTERMEDIATE_EXT, makeRoot, openssl, opensslCsr, signAsRoot } from '../unit/pki/openssl.js';

// The grants cover app-*; other-ec is outside every glob but the other client's.
const KEY = 'app-ec';
const CA_KEY = 'app-ca';
const OUTSIDE = 'other-ec';
const TOKEN_KEYS = [CA_KEY, KEY, OUTSIDE];

const sha = (s: string): string => createHash('sha256').update(s).digest('hex');
const newToken = (): string => randomBytes(24).toString('base64url');
type ClientName = 'owner' | 'other' | `lacks-${Operation}`;
/** One `lacks-<op>` entry per operation. */
const perLacking = <T>(f: (op: Operation) => T): Record<`lacks-${Operation}`, T> =>
  Object.fromEntries(OPERATIONS.map((op) => [`lacks-${op}`, f(op)])) as Record<`lacks-${Operation}`, T>;
const TOKENS: Record<ClientName, string> = { owner: newToken(), other: newToken(), ...perLacking(newToken) };
const UNKNOWN_TOKEN = newToken();

/** Every client has a token and a certificate (CN=<name>,O=Example). `lacks-<op>` may do all but <op>, on the owner's keys. */
const GRANTS: Record<ClientName, { keys: string; operations: readonly Operation[] }> = {
  owner: { keys: 'app-*', operations: OPERATIONS },
  other: { keys: 'other-*', operations: OPERATIONS },
  ...perLacking((op) => ({ keys: 'app-*', operations: OPERATIONS.filter((o) => o !== op) })),
};
/** The keys a client's GET /v1/keys lists: those its grant lets it read. */
const readable = (c: ClientName): string[] => {
  const g = GRANTS[c];
  const glob = new RegExp(`^${g.keys.replace('*', '.*')}$`);
  return g.operations.includes('read') ? TOKEN_KEYS.filter((k) => glob.test(k)).sort() : [];
};

const ALG = 'ECDSA_SHA_256';
const MESSAGE = Buffer.from('auth matrix');

// Filled by before(): the keys' public keys, the intermediate CA made for app-ca, a signature to verify, a CSR to issue for.
let fx: { pub: KeyObject; caPub: KeyObject; rootPem: string; intPem: string; signature: string; leafCsrPem: string };

// ---------------------------------------------------------------------------------------------
// Operations: the rows. Each says how to ask for it on a key, and what its permitted answer is.

interface Endpoint {
  readonly op: Operation;
  readonly route: string;
  /** A list has no key in its path (it is filtered); a batch refuses per item. */
  readonly kind: 'key' | 'list' | 'batch';
  /** The key it acts on when the caller's grant covers it. */
  readonly key: string;
  readonly okStatus: 200 | 201 | 204;
  request(key: string): { method: string; path: string; body?: unknown };
  /** Checks the real result of a permitted request. */
  ok(r: HttpsResult): Promise<void>;
}

const b64 = (b: Buffer): string => b.toString('base64');
const der = (pem: string): Buffer => new X509Certificate(pem).raw;
const spki = (k: KeyObject): Buffer => k.export({ type: 'spki', format: 'der' });
const json = <T>(r: HttpsResult): T => r.body as T;
const signatureValid = (sig: string): boolean => verifySignature('sha256', MESSAGE, { key: fx.pub, dsaEncoding: 'der' }, Buffer.from(sig, 'base64'));
let issued = 0;
/** The serial of the last certificate the issue row got: the revoke row revokes it (revoking is idempotent). */
let lastSerial = '';

const ENDPOINTS: readonly Endpoint[] = [
  {
    op: 'read',
    route: 'GET /v1/keys',
    kind: 'list',
    key: KEY,
    okStatus: 200,
    request: () => ({ method: 'GET', path: '/v1/keys' }),
    ok: async (r) =>
      assert.deepEqual(
        json<{ keys: { name: string }[] }>(r)
          .keys.map((k) => k.name)
          .sort(),
        readable('owner'),
      ),
  },
  {
    op: 'read',
    route: 'GET /v1/keys/{name}',
    kind: 'key',
    key: KEY,
    okStatus: 200,
    request: (k) => ({ method: 'GET', path: `/v1/keys/${k}` }),
    ok: async (r) => {
      const b = json<{ name: string; versions: { publicKeyPem: string }[] }>(r);
      assert.equal(b.name, KEY);
      assert.deepEqual(spki(createPublicKey(b.versions[0]!.publicKeyPem)), spki(fx.pub));
    },
  },
  {
    op: 'read',
    route: 'GET /v1/keys/{name}/jwks',
    kind: 'key',
    key: KEY,
    okStatus: 200,
    request: (k) => ({ method: 'GET', path: `/v1/keys/${k}/jwks` }),
    ok: async (r) => {
      const jwk = json<{ keys: (Record<string, string> & { kid: string })[] }>(r).keys[0]!;
      assert.equal(jwk.kid, `${KEY}/v1`);
      assert.deepEqual(spki(createPublicKey({ key: jwk, format: 'jwk' })), spki(fx.pub));
    },
  },
  {
    op: 'read',
    route: 'GET /v1/keys/{name}/certificate',
    kind: 'key',
    key: CA_KEY,
    okStatus: 200,
    request: (k) => ({ method: 'GET', path: `/v1/keys/${k}/certificate` }),
    ok: async (r) => {
      const b = json<{ certificatePem: string; chainPem: string }>(r);
      assert.deepEqual(der(b.certificatePem), der(fx.intPem));
      assert.deepEqual(der(b.chainPem), der(fx.rootPem));
    },
  },
  {
    op: 'sign',
    route: 'POST /v1/keys/{name}/sign',
    kind: 'key',
    key: KEY,
    okStatus: 200,
    request: (k) => ({ method: 'POST', path: `/v1/keys/${k}/sign`, body: { algorithm: ALG, message: b64(MESSAGE) } }),
    ok: async (r) => {
      const b = json<{ keyName: string; keyVersion: number; signature: string }>(r);
      assert.deepEqual([b.keyName, b.keyVersion], [KEY, 1]);
      assert.ok(signatureValid(b.signature), 'the signature verifies with node:crypto');
    },
  },
  {
    op: 'sign',
    route: 'POST /v1/sign/batch',
    kind: 'batch',
    key: KEY,
    okStatus: 200,
    request: (k) => ({ method: 'POST', path: '/v1/sign/batch', body: { requests: [{ keyName: k, algorithm: ALG, message: b64(MESSAGE) }] } }),
    ok: async (r) => {
      const [item] = json<{ results: { signature?: string }[] }>(r).results;
      assert.ok(item?.signature !== undefined && signatureValid(item.signature), 'the signature verifies with node:crypto');
    },
  },
  {
    op: 'verify',
    route: 'POST /v1/keys/{name}/verify',
    kind: 'key',
    key: KEY,
    okStatus: 200,
    request: (k) => ({ method: 'POST', path: `/v1/keys/${k}/verify`, body: { algorithm: ALG, message: b64(MESSAGE), signature: fx.signature } }),
    ok: async (r) => assert.deepEqual(r.body, { valid: true, keyVersion: 1 }),
  },
  {
    op: 'csr',
    route: 'POST /v1/keys/{name}/csr',
    kind: 'key',
    key: CA_KEY,
    okStatus: 200,
    request: (k) => ({ method: 'POST', path: `/v1/keys/${k}/csr`, body: { subject: 'CN=App Issuing CA,O=Example', ca: { pathLength: 0 } } }),
    ok: async (r) => {
      const file = await pki.dir.write(`csr-${++issued}.csr`, json<{ csrPem: string }>(r).csrPem);
      const v = await openssl(pki.dir.path, 'req', '-verify', '-in', file, '-noout', '-pubkey');
      assert.equal(v.code, 0, v.stderr);
      assert.match(v.stderr + v.stdout, /verify OK/, 'openssl req -verify');
      const pem = /-----BEGIN PUBLIC KEY-----[\s\S]+?-----END PUBLIC KEY-----/.exec(v.stdout)?.[0];
      assert.ok(pem && spki(createPublicKey(pem)).equals(spki(fx.caPub)), "the CSR carries the key's public key");
    },
  },
  {
    op: 'certificate',
    route: 'PUT /v1/keys/{name}/certificate',
    kind: 'key',
    key: CA_KEY,
    okStatus: 204,
    request: (k) => ({ method: 'PUT', path: `/v1/keys/${k}/certificate`, body: { certificatePem: fx.intPem, chainPem: fx.rootPem } }),
    ok: async (r) => assert.equal(r.text, ''),
  },
  {
    op: 'issue',
    route: 'POST /v1/keys/{name}/certificates',
    kind: 'key',
    key: CA_KEY,
    okStatus: 201,
    request: (k) => ({ method: 'POST', path: `/v1/keys/${k}/certificates`, body: { csrPem: fx.leafCsrPem, profile: 'tls-client', validityDays: 1 } }),
    ok: async (r) => {
      const n = ++issued;
      lastSerial = json<{ serialNumber: string }>(r).serialNumber;
      await pki.dir.write(`issued-${n}.pem`, json<{ certificatePem: string }>(r).certificatePem);
      await pki.dir.write('app-ca-int.pem', fx.intPem);
      const v = await openssl(
        pki.dir.path,
        'verify',
        '-x509_strict',
        '-purpose',
        'sslclient',
        '-CAfile',
        'root.pem',
        '-untrusted',
        'app-ca-int.pem',
        `issued-${n}.pem`,
      );
      assert.equal(v.stdout.trim(), `issued-${n}.pem: OK`, `openssl verify: ${v.stdout}${v.stderr}`);
    },
  },
  {
    op: 'read',
    route: 'GET /v1/keys/{name}/certificates',
    kind: 'key',
    key: CA_KEY,
    okStatus: 200,
    request: (k) => ({ method: 'GET', path: `/v1/keys/${k}/certificates` }),
    ok: async (r) => {
      const { certificates } = json<{ certificates: { certificatePem: string; sha256: string }[] }>(r);
      assert.ok(certificates.length >= 1, 'the certificates issued above are listed');
      for (const c of certificates) assert.equal(createHash('sha256').update(der(c.certificatePem)).digest('hex'), c.sha256);
    },
  },
  {
    op: 'revoke',
    route: 'POST /v1/keys/{name}/certificates/{serial}/revoke',
    kind: 'key',
    key: CA_KEY,
    okStatus: 200,
    request: (k) => ({ method: 'POST', path: `/v1/keys/${k}/certificates/${lastSerial}/revoke`, body: { reason: 'superseded' } }),
    ok: async (r) => assert.equal(json<{ serialNumber: string }>(r).serialNumber, lastSerial),
  },
];

// ---------------------------------------------------------------------------------------------
// Cases: the columns. Each says who calls (token, certificate) and on which key.

interface Caller {
  readonly authorization?: string;
  /** The client certificate presented (mutual TLS only). */
  readonly leaf?: string;
  /** The key acted on: the endpoint's own (default) or one outside the caller's glob. */
  readonly outside?: boolean;
  /** The clients-file entry the request acts as, for the lists and batches that are filtered, not refused. */
  readonly client?: ClientName;
}
interface Case {
  readonly id: string;
  caller(ep: Endpoint): Caller;
}

const bearer = (c: ClientName): string => `Bearer ${TOKENS[c]}`;
const lacks = (ep: Endpoint): ClientName => `lacks-${ep.op}`;

const TOKEN_CASES: readonly Case[] = [
  { id: 'right client', caller: () => ({ authorization: bearer('owner'), client: 'owner' }) },
  { id: 'none', caller: () => ({}) },
  // The right token, with something after it: still not "Bearer <token>".
  { id: 'malformed', caller: () => ({ authorization: `${bearer('owner')} extra` }) },
  { id: 'unknown', caller: () => ({ authorization: `Bearer ${UNKNOWN_TOKEN}` }) },
  { id: "other's token", caller: () => ({ authorization: bearer('other'), client: 'other' }) },
  { id: 'lacks op', caller: (ep) => ({ authorization: bearer(lacks(ep)), client: lacks(ep) }) },
  { id: 'outside glob', caller: () => ({ authorization: bearer('owner'), client: 'owner', outside: true }) },
];

// A bearer token of the right client goes along with every refused handshake: it does not help.
const CERT_CASES: readonly Case[] = [
  { id: 'right client', caller: () => ({ leaf: 'owner', client: 'owner' }) },
  { id: 'lacks op', caller: (ep) => ({ leaf: lacks(ep), client: lacks(ep) }) },
  { id: 'outside glob', caller: () => ({ leaf: 'owner', client: 'owner', outside: true }) },
  // The other client's certificate with the owner's token: would be allowed if the token won.
  { id: 'cert≠token', caller: () => ({ leaf: 'other', authorization: bearer('owner') }) },
  { id: 'no entry', caller: () => ({ leaf: 'stranger' }) },
  { id: 'untrusted', caller: () => ({ leaf: 'untrusted', authorization: bearer('owner') }) },
  { id: 'expired', caller: () => ({ leaf: 'expired', authorization: bearer('owner') }) },
  { id: 'no cert', caller: () => ({ authorization: bearer('owner') }) },
];

/**
 * Expected: a status; `200 own` = 200 listing only the keys the caller may read (none without
 * read); `item 403` = 200 whose one item is PERMISSION_DENIED; `TLS` = refused in the handshake:
 * no HTTP answer over TLS 1.3, the client's own handshake fails over TLS 1.2, and the service
 * handles no request from either; `-` = does not apply (a list has no key to be outside a glob).
 */
type Expected = 200 | 201 | 204 | 401 | 403 | '200 own' | 'item 403' | 'TLS' | '-';

// prettier-ignore
const TOKEN_MATRIX: Record<string, readonly Expected[]> = {
  //                                   right  none  malformed  unknown  other's     lacks op    outside glob
  'GET /v1/keys': [200, 401, 401, 401, '200 own', '200 own', '-'],
  'GET /v1/keys/{name}': [200, 401, 401, 401, 403, 403, 403],
  'GET /v1/keys/{name}/jwks': [200, 401, 401, 401, 403, 403, 403],
  'GET /v1/keys/{name}/certificate': [200, 401, 401, 401, 403, 403, 403],
  'POST /v1/keys/{name}/sign': [200, 401, 401, 401, 403, 403, 403],
  'POST /v1/sign/batch': [200, 401, 401, 401, 'item 403', 'item 403', 'item 403'],
  'POST /v1/keys/{name}/verify': [200, 401, 401, 401, 403, 403, 403],
  'POST /v1/keys/{name}/csr': [200, 401, 401, 401, 403, 403, 403],
  'PUT /v1/keys/{name}/certificate': [204, 401, 401, 401, 403, 403, 403],
  'POST /v1/keys/{name}/certificates': [201, 401, 401, 401, 403, 403, 403],
  'GET /v1/keys/{name}/certificates': [200, 401, 401, 401, 403, 403, 403],
  'POST /v1/keys/{name}/certificates/{serial}/revoke': [200, 401, 401, 401, 403, 403, 403],
};

// prettier-ignore
const CERT_MATRIX: Record<string, readonly Expected[]> = {
  //                                   right  lacks op    outside glob  cert≠token  no entry  untrusted  expired  no cert
  'GET /v1/keys': [200, '200 own', '-', 401, 401, 'TLS', 'TLS', 'TLS'],
  'GET /v1/keys/{name}': [200, 403, 403, 401, 401, 'TLS', 'TLS', 'TLS'],
  'GET /v1/keys/{name}/jwks': [200, 403, 403, 401, 401, 'TLS', 'TLS', 'TLS'],
  'GET /v1/keys/{name}/certificate': [200, 403, 403, 401, 401, 'TLS', 'TLS', 'TLS'],
  'POST /v1/keys/{name}/sign': [200, 403, 403, 401, 401, 'TLS', 'TLS', 'TLS'],
  'POST /v1/sign/batch': [200, 'item 403', 'item 403', 401, 401, 'TLS', 'TLS', 'TLS'],
  'POST /v1/keys/{name}/verify': [200, 403, 403, 401, 401, 'TLS', 'TLS', 'TLS'],
  'POST /v1/keys/{name}/csr': [200, 403, 403, 401, 401, 'TLS', 'TLS', 'TLS'],
  'PUT /v1/keys/{name}/certificate': [204, 403, 403, 401, 401, 'TLS', 'TLS', 'TLS'],
  'POST /v1/keys/{name}/certificates': [201, 403, 403, 401, 401, 'TLS', 'TLS', 'TLS'],
  'GET /v1/keys/{name}/certificates': [200, 403, 403, 401, 401, 'TLS', 'TLS', 'TLS'],
  'POST /v1/keys/{name}/certificates/{serial}/revoke': [200, 403, 403, 401, 401, 'TLS', 'TLS', 'TLS'],
};

// ---------------------------------------------------------------------------------------------

let token: TestToken;
let pki: TestPki;
const leaves: Record<string, Leaf> = {};
let bearerSvc: ServiceProcess;
let mtlsSvc: ServiceProcess;
/** Keep-alive agents: one for the bearer service, one per client certificate for the mTLS one. */
const agents = new Map<string, https.Agent>();

/** What the answers must never contain: the tokens, their hashes, the PIN. Named by label, never by value. */
let secrets: { label: string; value: string }[] = [];
const leaked = (text: string): string[] => secrets.filter((s) => text.includes(s.value)).map((s) => s.label);
const redact = (text: string): string => secrets.reduce((t, s) => t.split(s.value).join(`[${s.label}]`), text);

function agentFor(leaf: string | undefined): https.Agent {
  const id = leaf ?? '';
  let a = agents.get(id);
  if (!a) {
    const l = leaf === undefined ? undefined : leaves[leaf]!;
    a = new https.Agent({ keepAlive: true, maxSockets: 1, ca: pki.ca, ...(l ? { cert: l.cert, key: l.key } : {}) });
    agents.set(id, a);
  }
  return a;
}

function call(
  svc: ServiceProcess,
  c: Caller,
  req: { method: string; path: string; body?: unknown },
  o: { fresh?: boolean; requestId?: string } = {},
): Promise<HttpsResult> {
  const l = c.leaf === undefined ? undefined : leaves[c.leaf];
  const headers = {
    ...(c.authorization !== undefined ? { authorization: c.authorization } : {}),
    ...(o.requestId !== undefined ? { 'x-request-id': o.requestId } : {}),
  };
  return httpsRequest(svc.port, {
    ...req,
    ca: pki.ca,
    ...(l ? { client: l } : {}),
    headers,
    // A refused handshake gets a connection of its own; everything else reuses its caller's.
    ...(o.fresh ? {} : { agent: agentFor(c.leaf) }),
  });
}

/**
 * One TLS 1.2 connection of its own that sends GET /v1/keys with the owner's token once its
 * handshake is done: whether the client's handshake finished, the bytes it got back, its error.
 * In TLS 1.2 the server has the client's certificate before it sends its own Finished, so a
 * refused certificate fails the client's handshake itself. (In TLS 1.3 the client finishes first;
 * node's server then closes an untrusted or expired certificate's connection without an alert.)
 */
function tls12Handshake(port: number, leaf: Leaf | undefined, requestId: string): Promise<{ secure: boolean; bytes: number; error?: string }> {
  return new Promise((resolve) => {
    let secure = false;
    let bytes = 0;
    let error: string | undefined;
    const s = tls.connect({ host: '127.0.0.1', port, ca: pki.ca, maxVersion: 'TLSv1.2', ...(leaf ? { cert: leaf.cert, key: leaf.key } : {}) });
    s.on('secureConnect', () => {
      secure = true;
      s.write(`GET /v1/keys HTTP/1.1\r\nHost: localhost\r\nAuthorization: ${bearer('owner')}\r\nX-Request-Id: ${requestId}\r\n\r\n`);
    });
    s.on('data', (d: Buffer) => (bytes += d.length));
    s.on('error', (e: NodeJS.ErrnoException) => (error = e.code ?? e.message));
    s.on('close', () => resolve({ secure, bytes, ...(error !== undefined ? { error } : {}) }));
    s.setTimeout(5000, () => s.destroy(new Error('no end in time')));
  });
}

before(async () => {
  [token, pki] = await Promise.all([createTestToken(TOKEN_KEYS.map((name) => ({ name, spec: 'ECC_NIST_P256' as const }))), TestPki.create()]);
  secrets = [
    ...Object.entries(TOKENS).flatMap(([c, t]) => [
      { label: `${c}'s token`, value: t },
      { label: `${c}'s token hash`, value: sha(t) },
    ]),
    { label: 'an unknown token', value: UNKNOWN_TOKEN },
    { label: 'the PIN', value: token.pin },
  ];
  const clientNames = Object.keys(TOKENS) as ClientName[];
  const clientsFile = join(pki.dir.path, 'clients.json');
  writeFileSync(
    clientsFile,
    JSON.stringify({
      clients: clientNames.map((c) => ({
        name: c,
        tokenSha256: sha(TOKENS[c]),
        certificate: { subject: `CN=${c},O=Example` },
        allow: [{ keys: GRANTS[c].keys, operations: GRANTS[c].operations }],
      })),
    }),
  );
  // Client certificates, the offline root and a CSR to issue for: made by openssl while the services start.
  const leafSpecs: Record<string, LeafOptions> = {
    ...Object.fromEntries(clientNames.map((c) => [c, { subject: `/O=Example/CN=${c}` }])),
    stranger: { subject: '/O=Example/CN=stranger' },
    untrusted: { subject: '/O=Example/CN=owner', ca: 'other-ca' },
    expired: { subject: '/O=Example/CN=owner', days: -1 },
  };
  fx = {} as typeof fx;
  const made = Promise.all([
    ...Object.entries(leafSpecs).map(async ([name, spec]) => (leaves[name] = await pki.leaf(name, spec))),
    makeRoot(pki.dir, { name: 'root', subject: '/O=Example/CN=Auth Matrix Root' }).then((pem) => (fx.rootPem = pem)),
    opensslCsr(pki.dir, { name: 'leaf', subject: '/O=Example/CN=issued-client' }).then((pem) => (fx.leafCsrPem = pem)),
  ]);
  const env = async (extra: Record<string, string>): Promise<NodeJS.ProcessEnv> =>
    token.env({
      NODE_ENV: 'production',
      WORKERS: '1',
      LOG_LEVEL: 'debug',
      METRICS_PORT: String(await freePort()),
      CLIENTS_FILE: clientsFile,
      TLS_CERT_FILE: pki.server.certFile,
      TLS_KEY_FILE: pki.server.keyFile,
      ...extra,
    });
  const readyz = async (port: number, client?: Leaf): Promise<boolean> =>
    (await httpsRequest(port, { path: '/readyz', ca: pki.ca, ...(client ? { client } : {}) })).status === 200;
  [bearerSvc, mtlsSvc] = await Promise.all([
    startServiceProcess(await env({}), { ready: (port) => readyz(port) }),
    startServiceProcess(await env({ TLS_CLIENT_CA_FILE: pki.caFile }), {
      ready: async (port) => {
        // The client certificate exists once the PKI is made.
        await made;
        return readyz(port, leaves.owner);
      },
    }),
    made,
  ]);

  // The intermediate CA for app-ca, as an operator makes it: CSR from the service, signed by the offline root, attached.
  const owner: Caller = { authorization: bearer('owner') };
  const got = async (r: Promise<HttpsResult>, status: number): Promise<HttpsResult> => {
    const res = await r;
    assert.equal(res.status, status, redact(res.text));
    return res;
  };
  const keyPem = async (k: string) =>
    json<{ versions: { publicKeyPem: string }[] }>(await got(call(bearerSvc, owner, { method: 'GET', path: `/v1/keys/${k}` }), 200)).versions[0]!.publicKeyPem;
  fx.pub = createPublicKey(await keyPem(KEY));
  fx.caPub = createPublicKey(await keyPem(CA_KEY));
  const csr = await got(call(bearerSvc, owner, ENDPOINTS.find((e) => e.op === 'csr')!.request(CA_KEY)), 200);
  fx.intPem = await signAsRoot(pki.dir, json<{ csrPem: string }>(csr).csrPem, { root: 'root', out: 'app-ca', ext: INTERMEDIATE_EXT, days: 30 });
  await got(call(bearerSvc, owner, ENDPOINTS.find((e) => e.op === 'certificate')!.request(CA_KEY)), 204);
  const signed = await got(call(bearerSvc, owner, ENDPOINTS.find((e) => e.route === 'POST /v1/keys/{name}/sign')!.request(KEY)), 200);
  fx.signature = json<{ signature: string }>(signed).signature;
  assert.ok(signatureValid(fx.signature));
});

after(async () => {
  for (const a of agents.values()) a.destroy();
  await Promise.all([bearerSvc?.stop(), mtlsSvc?.stop()]);
  await pki?.remove();
  token?.cleanup();
});

// ---------------------------------------------------------------------------------------------

/** Outcomes per matrix, route and case: what was observed, and what is wrong with it (empty: as expected). */
const outcomes = new Map<string, { observed: string; problems: string[]; detail?: string }>();
/** X-Request-Id of every request sent on a handshake that must fail: none may reach HTTP (the service logs each request it handles). */
const REFUSED_ID = 'refused-handshake-';
let refusedHandshakes = 0;
const cellKey = (matrix: string, route: string, c: string): string => `${matrix} | ${route} | ${c}`;

/** The contract's error body, with its request id, for a refused request. */
function errorProblems(r: HttpsResult, status: number, code: string): string[] {
  const e = (r.body as { error?: Record<string, unknown> } | undefined)?.error;
  if (r.status !== status) return [`status ${r.status}, wanted ${status}: ${redact(r.text.slice(0, 200))}`];
  if (!e || Object.keys(e).sort().join() !== 'code,message,requestId') return [`not the contract's error body: ${redact(r.text.slice(0, 200))}`];
  const problems: string[] = [];
  if (e.code !== code) problems.push(`code ${String(e.code)}, wanted ${code}`);
  if (typeof e.message !== 'string' || e.message === '') problems.push('no message');
  if (typeof e.requestId !== 'string' || e.requestId !== r.headers['x-request-id']) problems.push('requestId is not the X-Request-Id header');
  return problems;
}

function observedOf(ep: Endpoint, r: HttpsResult): string {
  if (r.status !== 200) return String(r.status);
  if (ep.kind === 'list')
    return `200 [${json<{ keys: { name: string }[] }>(r)
      .keys.map((k) => k.name)
      .sort()
      .join(',')}]`;
  if (ep.kind === 'batch') {
    const item = json<{ results: { signature?: string; error?: { code: string } }[] }>(r).results[0];
    return item?.error ? `item ${item.error.code}` : '200';
  }
  return '200';
}

async function runCell(matrix: string, svc: ServiceProcess, ep: Endpoint, c: Case, expected: Expected): Promise<void> {
  if (expected === '-') return void outcomes.set(cellKey(matrix, ep.route, c.id), { observed: '-', problems: [] });
  const caller = c.caller(ep);
  const req = ep.request(caller.outside ? OUTSIDE : ep.key);
  const problems: string[] = [];
  if (expected === 'TLS') {
    const requestId = `${REFUSED_ID}${++refusedHandshakes}`;
    // As HTTPS clients connect by default (TLS 1.3): no HTTP answer, but an alert, or the connection closed.
    const v13 = await call(svc, caller, req, { fresh: true, requestId }).then(
      (r) => `HTTP ${r.status}`,
      (e: NodeJS.ErrnoException) => e.code ?? e.message,
    );
    const v12 = await tls12Handshake(svc.port, caller.leaf === undefined ? undefined : leaves[caller.leaf], requestId);
    const observed = v13.startsWith('HTTP') ? v13 : 'TLS';
    if (v13.startsWith('HTTP')) problems.push(`TLS 1.3: the handshake succeeded: ${v13}`);
    else if (!/^(ERR_SSL_|ECONNRESET$)/.test(v13)) problems.push(`TLS 1.3: ${v13}: neither a TLS alert nor the connection closed`);
    if (v12.secure || v12.bytes > 0) problems.push('TLS 1.2: the client finished its handshake');
    outcomes.set(cellKey(matrix, ep.route, c.id), { observed, problems, detail: `TLS 1.3: ${v13}; TLS 1.2: handshake failed, ${v12.error ?? 'closed'}` });
    return;
  }
  const r = await call(svc, caller, req);
  const observed = observedOf(ep, r);
  const found = leaked(r.text + JSON.stringify(r.headers));
  if (found.length) problems.push(`the answer contains ${found.join(', ')}`);
  if (expected === 401 || expected === 403) {
    problems.push(...errorProblems(r, expected, expected === 401 ? 'UNAUTHENTICATED' : 'PERMISSION_DENIED'));
  } else if (expected === '200 own') {
    const want = `200 [${readable(caller.client!).join(',')}]`;
    if (observed !== want) problems.push(`${observed}, wanted ${want}`);
  } else if (expected === 'item 403') {
    const item = json<{ results?: { error?: Record<string, unknown>; signature?: unknown }[] }>(r)?.results?.[0];
    if (r.status !== 200 || item?.error?.code !== 'PERMISSION_DENIED' || item.signature !== undefined || typeof item.error.message !== 'string') {
      problems.push(`wanted 200 with the item PERMISSION_DENIED: ${redact(r.text.slice(0, 200))}`);
    }
  } else if (r.status !== expected) {
    problems.push(`status ${r.status}, wanted ${expected}: ${redact(r.text.slice(0, 200))}`);
  } else {
    await ep.ok(r).catch((e: Error) => problems.push(`the result: ${redact(e.message)}`));
  }
  outcomes.set(cellKey(matrix, ep.route, c.id), { observed, problems });
}

function matrixTests(matrix: string, svc: () => ServiceProcess, cases: readonly Case[], table: Record<string, readonly Expected[]>): void {
  for (const ep of ENDPOINTS) {
    test(`${ep.op}: ${ep.route}`, async () => {
      const row = table[ep.route];
      assert.equal(row?.length, cases.length, `the ${matrix} table has a full row for ${ep.route}`);
      for (const [i, c] of cases.entries()) await runCell(matrix, svc(), ep, c, row![i]!);
      const wrong = cases.flatMap((c) => outcomes.get(cellKey(matrix, ep.route, c.id))!.problems.map((p) => `${c.id}: ${p}`));
      assert.deepEqual(wrong, []);
    });
  }
}

/** A batch with one permitted and one forbidden item: a 200, with the forbidden one a 403 of its own. */
async function mixedBatch(svc: ServiceProcess, caller: Caller): Promise<void> {
  const r = await call(svc, caller, {
    method: 'POST',
    path: '/v1/sign/batch',
    body: { requests: [KEY, OUTSIDE].map((keyName) => ({ keyName, algorithm: ALG, message: b64(MESSAGE) })) },
  });
  assert.equal(r.status, 200, redact(r.text));
  const [signed, refused] = json<{ results: { keyName?: string; signature?: string; error?: { code: string; message: string } }[] }>(r).results;
  assert.ok(signed?.signature !== undefined && signatureValid(signed.signature), 'the permitted item is signed, and verifies');
  assert.equal(refused?.error?.code, 'PERMISSION_DENIED');
  assert.equal(refused.error.message, `the client may not sign with key '${OUTSIDE}'`);
  assert.equal(refused.signature, undefined);
  assert.deepEqual(leaked(r.text), []);
}

describe('bearer tokens over HTTPS', () => {
  matrixTests('bearer', () => bearerSvc, TOKEN_CASES, TOKEN_MATRIX);
  test('batch: one permitted and one forbidden item is a 200 with a 403 item', () => mixedBatch(bearerSvc, { authorization: bearer('owner') }));
});

describe('client certificates over mutual TLS', () => {
  matrixTests('mtls', () => mtlsSvc, CERT_CASES, CERT_MATRIX);
  test('batch: one permitted and one forbidden item is a 200 with a 403 item', () => mixedBatch(mtlsSvc, { leaf: 'owner' }));
});

test('service logs: no token, token hash or PIN; no request from a refused handshake', () => {
  for (const svc of [bearerSvc, mtlsSvc]) {
    const logs = svc.logs();
    assert.ok(
      logs.some((l) => l.includes('"msg":"request"')),
      'the debug log has a line per request handled',
    );
    assert.deepEqual(leaked(logs.join('\n')), []);
    assert.deepEqual(logs.filter((l) => l.includes(REFUSED_ID)).length, 0, 'a request sent on a refused handshake was handled');
  }
  assert.ok(refusedHandshakes > 0);
});

test('the matrix: operation x case, expected and observed', (t) => {
  const print = (matrix: string, cases: readonly Case[], table: Record<string, readonly Expected[]>): void => {
    const width = Math.max(...ENDPOINTS.map((e) => e.route.length)) + 14;
    const cellWidth = (i: number): number => Math.max(cases[i]!.id.length, 12);
    t.diagnostic(`${matrix}: ${'operation'.padEnd(width)}${cases.map((c, i) => c.id.padEnd(cellWidth(i))).join(' ')}`);
    for (const ep of ENDPOINTS) {
      const cells = cases.map((c, i) => {
        const o = outcomes.get(cellKey(matrix, ep.route, c.id));
        const expected = String(table[ep.route]![i]);
        const cell = !o ? `${expected} ?` : o.problems.length ? `${expected}✗${o.observed}` : expected === '-' ? '-' : `${expected} ✓`;
        return cell.padEnd(cellWidth(i));
      });
      t.diagnostic(`${matrix}: ${`${ep.op.padEnd(12)}${ep.route}`.padEnd(width)}${cells.join(' ')}`);
    }
    // What the TLS cells saw: the alert each refused handshake ended with.
    const alerts = cases.filter((_, i) => Object.values(table).some((row) => row[i] === 'TLS'));
    for (const c of alerts) {
      const seen = new Set(ENDPOINTS.map((ep) => outcomes.get(cellKey(matrix, ep.route, c.id))?.detail));
      t.diagnostic(`${matrix}: ${c.id}: ${[...seen].join(', ')}`);
    }
  };
  print('bearer', TOKEN_CASES, TOKEN_MATRIX);
  print('mtls', CERT_CASES, CERT_MATRIX);
  const missing = [
    ...ENDPOINTS.flatMap((ep) => TOKEN_CASES.map((c) => cellKey('bearer', ep.route, c.id))),
    ...ENDPOINTS.flatMap((ep) => CERT_CASES.map((c) => cellKey('mtls', ep.route, c.id))),
  ].filter((k) => !outcomes.has(k));
  assert.deepEqual(missing, [], 'every cell ran');
});
