import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { TLSSocket } from 'node:tls';
import type { Request, RequestHandler, Response } from 'express';
import { z } from 'zod';
import { ConfigError } from '../config/config.js';
import { ServiceError } from '../errors.js';
import { certificateIdentity, normalizeSubject, type CertificateIdentity } from '../pki/certificateIdentity.js';
import { MAX_DN_LENGTH } from '../pki/distinguishedName.js';
import { dnsNameProblem } from '../pki/subjectAltNames.js';

/** Clients (by bearer token and/or client certificate) and what each may do, from CLIENTS_FILE (contract, "Auth"). */
export const OPERATIONS = ['read', 'sign', 'verify', 'csr', 'certificate', 'issue', 'revoke'] as const;
export type Operation = (typeof OPERATIONS)[number];

const certificateSchema = z
  .strictObject({ subject: z.string().min(1).max(MAX_DN_LENGTH).optional(), san: z.string().min(1).max(2048).optional() })
  .refine((c) => (c.subject === undefined) !== (c.san === undefined), { message: 'give exactly one of subject and san' });

const clientsSchema = z.strictObject({
  clients: z.array(
    z
      .strictObject({
        name: z.string().min(1).max(128),
        tokenSha256: z
          .string()
          .regex(/^[0-9a-fA-F]{64}$/, 'must be 64 hex characters')
          .optional(),
        certificate: certificateSchema.optional(),
        allow: z.array(z.strictObject({ keys: z.string().min(1).max(128), operations: z.array(z.enum(OPERATIONS)).min(1) })),
      })
      .refine((c) => c.tokenSha256 !== undefined || c.certificate !== undefined, { message: 'give tokenSha256, certificate or both' }),
  ),
});

/** A client certificate names the client by its subject (normalized, see CertificateIdentity) or by one URI or DNS SAN. */
export type CertificateMatch = { readonly subject: string } | { readonly uri: string } | { readonly dns: string };

export interface Client {
  readonly name: string;
  readonly tokenHash?: Buffer;
  readonly certificate?: CertificateMatch;
  readonly allow: readonly { readonly keys: RegExp; readonly operations: ReadonlySet<Operation> }[];
}

/** `payments-*` matches every name starting with `payments-`; `*` matches all. */
function globToRegExp(glob: string): RegExp {
  return new RegExp(
    `^${glob
      .split('*')
      .map((p) => p.replace(/[.+?^${}()|[\]\\]/g, '\\$&'))
      .join('.*')}$`,
  );
}

function certificateMatch(c: { subject?: string | undefined; san?: string | undefined }, field: string): CertificateMatch {
  if (c.subject !== undefined) {
    try {
      return { subject: normalizeSubject(c.subject, `${field}.subject`) };
    } catch (e) {
      throw new ConfigError(`CLIENTS_FILE: ${(e as Error).message}`);
    }
  }
  const { san } = c;
  // certificateSchema's refine lets exactly one of subject and san through.
  if (san === undefined) throw new Error(`certificateMatch: ${field} has neither subject nor san (the schema should have refused it)`);
  // A URI has a scheme (spiffe://..., urn:...); anything else must be a DNS name.
  if (/^[A-Za-z][A-Za-z0-9+.-]*:/.test(san)) {
    if (!URL.canParse(san)) throw new ConfigError(`CLIENTS_FILE: ${field}.san: is neither a URI nor a DNS name`);
    return { uri: san };
  }
  const problem = dnsNameProblem(san, false);
  if (problem) throw new ConfigError(`CLIENTS_FILE: ${field}.san: as a DNS name ${problem}`);
  return { dns: san.toLowerCase() };
}

const matchKey = (m: CertificateMatch): string => ('subject' in m ? `subject ${m.subject}` : 'uri' in m ? `uri ${m.uri}` : `dns ${m.dns}`);

/** Reads and checks CLIENTS_FILE. Every problem is a ConfigError naming the variable and the entry, never a token hash. */
export function loadClients(file: string): Client[] {
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw new ConfigError(`CLIENTS_FILE: cannot read it as JSON (${(e as NodeJS.ErrnoException).code ?? 'invalid JSON'})`);
  }
  const parsed = clientsSchema.safeParse(raw);
  if (!parsed.success) {
    const i = parsed.error.issues[0];
    // zod reports at least one issue on failure; without one, the file is still refused, without the detail.
    if (i === undefined) throw new ConfigError('CLIENTS_FILE: does not match the expected shape');
    throw new ConfigError(`CLIENTS_FILE: ${i.path.join('.')}: ${i.message}`);
  }
  const tokens = new Map<string, number>();
  const certificates = new Map<string, number>();
  const names = new Map<string, number>();
  return parsed.data.clients.map((c, i) => {
    const field = `clients.${i}`;
    // The in-flight limit and the audit trail know a client by its name: two entries must not share one.
    if (names.has(c.name)) throw new ConfigError(`CLIENTS_FILE: ${field}.name: the same as clients.${names.get(c.name)}'s`);
    names.set(c.name, i);
    // Two entries with one credential would make the client a request acts as depend on file order.
    if (c.tokenSha256 !== undefined) {
      const h = c.tokenSha256.toLowerCase();
      if (tokens.has(h)) throw new ConfigError(`CLIENTS_FILE: ${field}.tokenSha256: the same as clients.${tokens.get(h)}'s`);
      tokens.set(h, i);
    }
    const certificate = c.certificate && certificateMatch(c.certificate, `${field}.certificate`);
    if (certificate) {
      const k = matchKey(certificate);
      if (certificates.has(k)) throw new ConfigError(`CLIENTS_FILE: ${field}.certificate: the same as clients.${certificates.get(k)}'s`);
      certificates.set(k, i);
    }
    return {
      name: c.name,
      ...(c.tokenSha256 !== undefined ? { tokenHash: Buffer.from(c.tokenSha256, 'hex') } : {}),
      ...(certificate ? { certificate } : {}),
      allow: c.allow.map((a) => ({ keys: globToRegExp(a.keys), operations: new Set(a.operations) })),
    };
  });
}

function matches(m: CertificateMatch, id: CertificateIdentity): boolean {
  if ('subject' in m) return m.subject === id.subject;
  if ('uri' in m) return id.uris.includes(m.uri);
  return id.dnsNames.includes(m.dns);
}

/**
 * The clients of CLIENTS_FILE, replaced as a whole by reload() (SIGHUP): a request sees the old
 * list or the new one, never a mix. Without a file (client certificates only), every certificate
 * the CA verified is a client of its own that may do everything.
 */
export class ClientRegistry {
  private clients: readonly Client[];

  constructor(readonly file?: string) {
    this.clients = file !== undefined ? loadClients(file) : [];
  }

  /** Re-reads the file; on any problem throws a ConfigError and keeps the clients it had. */
  reload(): void {
    if (this.file !== undefined) this.clients = loadClients(this.file);
  }

  get size(): number {
    return this.clients.length;
  }

  byToken(token: string): Client | undefined {
    const hash = createHash('sha256').update(token).digest();
    return this.clients.find((c) => c.tokenHash !== undefined && timingSafeEqual(c.tokenHash, hash));
  }

  byCertificate(id: CertificateIdentity): Client[] {
    if (this.file === undefined) return [{ name: id.subject, allow: [{ keys: /^/, operations: new Set(OPERATIONS) }] }];
    return this.clients.filter((c) => c.certificate !== undefined && matches(c.certificate, id));
  }
}

// One TLS connection, one certificate (renegotiation is disabled in createServer): parsed once per connection.
const identities = new WeakMap<TLSSocket, CertificateIdentity | null>();

/** The identity of a client certificate the TLS layer verified; null when it cannot be parsed; undefined when there is none. */
function peerIdentity(req: Request): CertificateIdentity | null | undefined {
  const socket = req.socket as Partial<TLSSocket>;
  if (socket.encrypted !== true || socket.authorized !== true) return undefined;
  const tls = req.socket as TLSSocket;
  let id = identities.get(tls);
  if (id === undefined) {
    const cert = tls.getPeerX509Certificate();
    if (!cert) return undefined;
    try {
      id = certificateIdentity(cert.raw);
    } catch {
      id = null;
    }
    identities.set(tls, id);
  }
  return id;
}

const unauthenticated = (message: string): ServiceError => new ServiceError('UNAUTHENTICATED', message);

/**
 * 401 unless the request names exactly one client: by a client certificate (verified during the
 * TLS handshake), by its bearer token, or by both, naming the same client. The token itself is
 * never kept or logged.
 */
export function authenticate(registry: ClientRegistry): RequestHandler {
  return (req, res, next) => {
    let fromCertificate: Client | undefined;
    const id = peerIdentity(req);
    if (id === null) return next(unauthenticated('client certificate: cannot be read'));
    if (id !== undefined) {
      const found = registry.byCertificate(id);
      if (found.length === 0) return next(unauthenticated(`client certificate: no client in CLIENTS_FILE has its subject (${id.subject}) or one of its SANs`));
      if (found.length > 1) return next(unauthenticated('client certificate: matches more than one client in CLIENTS_FILE'));
      fromCertificate = found[0];
    }
    const header = req.get('authorization');
    let fromToken: Client | undefined;
    if (header !== undefined) {
      // The scheme name is case-insensitive (RFC 7235 section 2.1).
      // Group 1 is not optional: it is set whenever the pattern matches.
      const token = /^Bearer ([\x21-\x7e]{1,512})$/i.exec(header)?.[1];
      if (token === undefined) return next(unauthenticated('Authorization: must be "Bearer <token>"'));
      fromToken = registry.byToken(token);
      if (!fromToken) return next(unauthenticated('Authorization: unknown token'));
    }
    if (fromCertificate && fromToken && fromCertificate !== fromToken) {
      return next(unauthenticated('Authorization: the bearer token and the client certificate name different clients'));
    }
    const client = fromCertificate ?? fromToken;
    if (!client) return next(unauthenticated('Authorization: a Bearer token is required'));
    res.locals.client = client;
    next();
  };
}

/** Whether the request's client may do `op` on key `name` (always, when auth is off). */
export function allowed(res: Response, op: Operation, name: string): boolean {
  const client = res.locals.client as Client | undefined;
  if (!client) return true;
  return client.allow.some((a) => a.operations.has(op) && a.keys.test(name));
}

export function permit(res: Response, op: Operation, name: string): void {
  if (!allowed(res, op, name)) throw new ServiceError('PERMISSION_DENIED', `the client may not ${op} with key '${name}'`);
}
