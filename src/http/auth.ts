import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { RequestHandler, Response } from 'express';
import { z } from 'zod';
import { ServiceError } from '../errors.js';

/** Bearer-token clients and what each may do, from CLIENTS_FILE (contract, "Auth"). */
export const OPERATIONS = ['read', 'sign', 'verify', 'csr', 'certificate', 'issue'] as const;
export type Operation = (typeof OPERATIONS)[number];

const clientsSchema = z.strictObject({
  clients: z.array(
    z.strictObject({
      name: z.string().min(1).max(128),
      tokenSha256: z.string().regex(/^[0-9a-fA-F]{64}$/, 'must be 64 hex characters'),
      allow: z.array(z.strictObject({ keys: z.string().min(1).max(128), operations: z.array(z.enum(OPERATIONS)).min(1) })),
    }),
  ),
});

export interface Client {
  readonly name: string;
  readonly tokenHash: Buffer;
  readonly allow: readonly { readonly keys: RegExp; readonly operations: ReadonlySet<Operation> }[];
}

/** `payments-*` matches every name starting with `payments-`; `*` matches all. */
function globToRegExp(glob: string): RegExp {
  return new RegExp(`^${glob.split('*').map((p) => p.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('.*')}$`);
}

export function loadClients(file: string): Client[] {
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw new Error(`CLIENTS_FILE: cannot read it as JSON (${(e as NodeJS.ErrnoException).code ?? 'invalid JSON'})`);
  }
  const parsed = clientsSchema.safeParse(raw);
  if (!parsed.success) {
    const i = parsed.error.issues[0]!;
    throw new Error(`CLIENTS_FILE: ${i.path.join('.')}: ${i.message}`);
  }
  return parsed.data.clients.map((c) => ({
    name: c.name,
    tokenHash: Buffer.from(c.tokenSha256, 'hex'),
    allow: c.allow.map((a) => ({ keys: globToRegExp(a.keys), operations: new Set(a.operations) })),
  }));
}

/** 401 unless the bearer token's SHA-256 is a known client's. The token itself is never kept or logged. */
export function authenticate(clients: readonly Client[]): RequestHandler {
  return (req, res, next) => {
    const m = /^Bearer ([\x21-\x7e]{1,512})$/.exec(req.get('authorization') ?? '');
    if (!m) return next(new ServiceError('UNAUTHENTICATED', 'Authorization: a Bearer token is required'));
    const hash = createHash('sha256').update(m[1]!).digest();
    const client = clients.find((c) => timingSafeEqual(c.tokenHash, hash));
    if (!client) return next(new ServiceError('UNAUTHENTICATED', 'Authorization: unknown token'));
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
