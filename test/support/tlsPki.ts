/**
 * Real certificates for TLS tests, made by the openssl CLI in a temp dir: a client CA, a second
 * (untrusted) CA, a server certificate for 127.0.0.1 and client certificates on demand. And a
 * node:https client to talk to the service with them.
 */
import { readFileSync } from 'node:fs';
import https from 'node:https';
import type { TLSSocket } from 'node:tls';
import { makeRoot, opensslCsr, signAsRoot, TempDir } from '../unit/pki/openssl.js';
import { onJsonBody } from './jsonBody.js';

export interface Leaf {
  readonly certFile: string;
  readonly keyFile: string;
  readonly cert: string;
  readonly key: string;
}

export interface LeafOptions {
  /** openssl -subj form, e.g. /O=Example/CN=payments-api (RFC 4514: CN=payments-api,O=Example). */
  readonly subject: string;
  /** subjectAltName entries, e.g. URI:spiffe://example/payments-api, DNS:payments.example. */
  readonly san?: readonly string[];
  /** Negative: already expired. */
  readonly days?: number;
  /** Which CA signs: the trusted one (default) or the other one. */
  readonly ca?: 'ca' | 'other-ca';
  readonly usage?: 'client' | 'server';
}

async function issueLeaf(dir: TempDir, name: string, o: LeafOptions): Promise<Leaf> {
  const csr = await opensslCsr(dir, { name, subject: o.subject });
  const ext = [
    'basicConstraints = critical,CA:FALSE',
    'keyUsage = critical,digitalSignature',
    `extendedKeyUsage = ${o.usage === 'server' ? 'serverAuth' : 'clientAuth'}`,
    ...(o.san?.length ? [`subjectAltName = ${o.san.join(',')}`] : []),
  ].join('\n');
  await signAsRoot(dir, csr, { root: o.ca ?? 'ca', out: name, ext: `${ext}\n`, days: o.days ?? 30, digest: 'sha256' });
  const certFile = dir.file(`${name}.pem`);
  const keyFile = dir.file(`${name}.key`);
  return { certFile, keyFile, cert: readFileSync(certFile, 'utf8'), key: readFileSync(keyFile, 'utf8') };
}

export class TestPki {
  private constructor(
    readonly dir: TempDir,
    /** The CA that issues client certificates and the server's; clients and service trust it. */
    readonly caFile: string,
    readonly ca: string,
    readonly server: Leaf,
  ) {}

  static async create(): Promise<TestPki> {
    const dir = await TempDir.create();
    const ca = await makeRoot(dir, { name: 'ca', subject: '/O=Example/CN=Test Client CA', days: 30 });
    await makeRoot(dir, { name: 'other-ca', subject: '/O=Elsewhere/CN=Other CA', days: 30 });
    const server = await issueLeaf(dir, 'server', { subject: '/O=Example/CN=localhost', san: ['IP:127.0.0.1', 'DNS:localhost'], usage: 'server' });
    return new TestPki(dir, dir.file('ca.pem'), ca, server);
  }

  leaf(name: string, o: LeafOptions): Promise<Leaf> {
    return issueLeaf(this.dir, name, o);
  }

  remove(): Promise<void> {
    return this.dir.remove();
  }
}

export interface HttpsResult {
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly body: unknown;
  readonly text: string;
  /** SHA-256 fingerprint of the certificate the server presented. */
  readonly serverFingerprint: string;
  readonly protocol: string | null;
}

export interface HttpsOptions {
  readonly method?: string;
  readonly path: string;
  readonly body?: unknown;
  readonly headers?: Record<string, string>;
  /** The CA the client trusts for the server's certificate. */
  readonly ca: string;
  readonly client?: Leaf;
  readonly minVersion?: 'TLSv1' | 'TLSv1.1' | 'TLSv1.2' | 'TLSv1.3';
  readonly maxVersion?: 'TLSv1' | 'TLSv1.1' | 'TLSv1.2' | 'TLSv1.3';
  readonly timeoutMs?: number;
  /** A keep-alive agent (made with the same ca and client certificate) to reuse its connections; default none. */
  readonly agent?: https.Agent;
}

/** One request to 127.0.0.1:port, on a new TLS connection unless `agent` has one open. Rejects when the handshake fails. */
export function httpsRequest(port: number, o: HttpsOptions): Promise<HttpsResult> {
  const payload = o.body === undefined ? undefined : JSON.stringify(o.body);
  return new Promise((resolve, reject) => {
    const req = https.request(
      {
        host: '127.0.0.1',
        port,
        method: o.method ?? (payload ? 'POST' : 'GET'),
        path: o.path,
        agent: o.agent ?? false,
        ca: o.ca,
        ...(o.client ? { cert: o.client.cert, key: o.client.key } : {}),
        ...(o.minVersion ? { minVersion: o.minVersion } : {}),
        ...(o.maxVersion ? { maxVersion: o.maxVersion } : {}),
        headers: { ...(payload ? { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(payload)) } : {}), ...o.headers },
      },
      (res) => {
        const socket = res.socket as TLSSocket;
        const serverFingerprint = socket.getPeerCertificate().fingerprint256;
        const protocol = socket.getProtocol();
        onJsonBody(res, (text, body) => {
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body, text, serverFingerprint, protocol });
        });
        res.on('error', reject);
      },
    );
    req.setTimeout(o.timeoutMs ?? 10_000, () => req.destroy(new Error('no answer in time')));
    req.on('error', reject);
    req.end(payload);
  });
}
