import { Router, type Request, type Response } from 'express';
import type { AuditLog } from '../../audit/AuditLog.js';
import { ServiceError } from '../../errors.js';
import { digestOfInput, type SignInput, type SignOutput, type SigningService } from '../../service/SigningService.js';
import { allowed, permit } from '../auth.js';
import { auditorFor, RequestAudit, type AuditFacts } from '../requestAudit.js';
import { deadlineOf } from '../requestContext.js';
import type { SignResponseJson } from '../schemas/responses.js';
import { keyName, parseBatch, parseSign, parseVerify } from '../validation.js';

const signJson = (r: SignOutput): SignResponseJson => ({
  keyName: r.keyName,
  keyVersion: r.keyVersion,
  algorithm: r.algorithm,
  signature: r.signature.toString('base64'),
});

/** Sign, verify and batch sign. With an audit log, each answer waits for its record (requestAudit.ts). */
export function signingRouter(service: SigningService, audit?: AuditLog): Router {
  const r = Router();
  r.post('/v1/keys/:name/sign', async (req: Request<{ name: string }>, res) => {
    const out = audit ? await new RequestAudit(audit, req, res).run('sign', (facts) => sign(service, req, res, facts)) : await sign(service, req, res);
    res.json(signJson(out));
  });
  r.post('/v1/keys/:name/verify', async (req: Request<{ name: string }>, res) => {
    const out = audit ? await new RequestAudit(audit, req, res).run('verify', (facts) => verify(service, req, res, facts)) : await verify(service, req, res);
    res.json({ valid: out.valid, keyVersion: out.keyVersion });
  });
  r.post('/v1/sign/batch', async (req, res) => {
    const auditor = auditorFor(audit, req, res);
    auditor.assertAvailable();
    let facts: AuditFacts[] | undefined;
    let results: (SignOutput | ServiceError)[];
    try {
      const parsed = parseBatch(req.body);
      // What each item asked for; a malformed item is known by its position (and its key name, if that is well formed).
      if (audit) facts = parsed.map((item, i) => (item instanceof ServiceError ? batchItemKeyName(req.body, i) : requested(item)));
      const items = parsed.map((item) =>
        item instanceof ServiceError || allowed(res, 'sign', item.keyName)
          ? item
          : new ServiceError('PERMISSION_DENIED', `the client may not sign with key '${item.keyName}'`),
      );
      results = await service.signBatch(items, deadlineOf(res));
    } catch (e) {
      await auditor.writeFailure(facts, e);
      throw e;
    }
    const done = facts;
    if (done) {
      await auditor.writeItems(
        results.map((x, i) => {
          const f = done[i];
          // signBatch answers once per item, in order, and facts has one entry per item.
          if (f === undefined) throw new Error(`batch sign: result ${i} has no request facts (${results.length} results for ${done.length} items)`);
          return x instanceof ServiceError ? f : { ...f, keyVersion: x.keyVersion, digest: x.digest };
        }),
        results.map((x) => (x instanceof ServiceError ? x : undefined)),
      );
    }
    res.json({
      results: results.map((x) => (x instanceof ServiceError ? { error: { code: x.code, message: x.message } } : signJson(x))),
    });
  });
  return r;
}

/**
 * One sign. `facts` (only with an audit log) collects what the record says, as it becomes known:
 * a request refused at any step is recorded with what was known by then.
 */
async function sign(service: SigningService, req: Request<{ name: string }>, res: Response, facts?: AuditFacts): Promise<SignOutput> {
  const name = keyName(req.params.name);
  if (facts) facts.keyName = name;
  permit(res, 'sign', name);
  const input = parseSign(name, req.body);
  if (facts) Object.assign(facts, requested(input));
  const o = await service.sign(input, deadlineOf(res));
  if (facts) {
    facts.keyVersion = o.keyVersion;
    facts.digest = o.digest;
  }
  return o;
}

/** One verify; `facts` as for sign. */
async function verify(
  service: SigningService,
  req: Request<{ name: string }>,
  res: Response,
  facts?: AuditFacts,
): Promise<{ valid: boolean; keyVersion: number }> {
  const name = keyName(req.params.name);
  if (facts) facts.keyName = name;
  permit(res, 'verify', name);
  const input = parseVerify(name, req.body);
  if (facts) {
    Object.assign(facts, requested(input));
    // Hashed only if a record is written.
    facts.digest = () => digestOfInput(input);
  }
  const v = await service.verify(input, deadlineOf(res));
  if (facts) {
    facts.keyVersion = v.keyVersion;
    facts.valid = v.valid;
  }
  return v;
}

/** What a parsed request asked for. */
const requested = (input: SignInput): AuditFacts => ({
  keyName: input.keyName,
  algorithm: input.algorithm,
  ...(input.keyVersion !== undefined ? { keyVersion: input.keyVersion } : {}),
});

/** A malformed batch item's key name, if that is well formed (the item may hold anything). */
function batchItemKeyName(body: unknown, i: number): AuditFacts {
  const item = (body as { requests?: unknown[] }).requests?.[i] as { keyName?: unknown } | undefined;
  try {
    return { keyName: keyName(item?.keyName) };
  } catch {
    return {};
  }
}
