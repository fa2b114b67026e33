import { Router, type Request } from 'express';
import { z } from 'zod';
import { CERTIFICATE_PROFILES, MAX_VALIDITY_DAYS, type SubjectAltNamesInput } from '../../pki/index.js';
import { MAX_PATH_LENGTH } from '../../pki/createCsr.js';
import type { AuditLog } from '../../audit/AuditLog.js';
import type { PkiService } from '../../service/PkiService.js';
import { permit } from '../auth.js';
import { auditorFor } from '../requestAudit.js';
import { deadlineOf } from '../requestContext.js';
import { keyName, keyVersion, parseBody, parseKeyVersionQuery } from '../validation.js';

// Shapes only: names, PEM and SANs are checked by the PKI layer, whose messages name the exact element.
const sans = z.unknown().optional();
const days = `must be an integer from 1 to ${MAX_VALIDITY_DAYS}`;
const pathLength = `must be an integer from 0 to ${MAX_PATH_LENGTH}`;

const csrBody = z.strictObject({
  subject: z.string(),
  keyVersion: keyVersion.optional(),
  ca: z.strictObject({ pathLength: z.number().int(pathLength).min(0, pathLength).max(MAX_PATH_LENGTH, pathLength).optional() }).optional(),
  subjectAltNames: sans,
});

const attachBody = z.strictObject({
  certificatePem: z.string(),
  chainPem: z.string().optional(),
  keyVersion: keyVersion.optional(),
});

const issueBody = z.strictObject({
  csrPem: z.string(),
  profile: z.enum(CERTIFICATE_PROFILES, { error: `must be one of ${CERTIFICATE_PROFILES.join(', ')}` }),
  validityDays: z.number().int(days).min(1, days).max(MAX_VALIDITY_DAYS, days),
  subjectAltNames: sans,
});

const withSans = <T extends { subjectAltNames?: unknown }>(b: T): Omit<T, 'subjectAltNames'> & { subjectAltNames?: SubjectAltNamesInput } => {
  const { subjectAltNames, ...rest } = b;
  return subjectAltNames === undefined ? rest : { ...rest, subjectAltNames: subjectAltNames as SubjectAltNamesInput };
};

/**
 * The contract's PKI section: an intermediate CA whose key stays on the HSM. With an audit log,
 * a CSR or certificate is returned only after its record is written (requestAudit.ts).
 */
export function pkiRouter(pki: PkiService, audit?: AuditLog): Router {
  const r = Router();
  r.post('/v1/keys/:name/csr', async (req: Request<{ name: string }>, res) => {
    const out = await auditorFor(audit, req, res).run('csr', async (facts) => {
      const name = keyName(req.params.name);
      facts.keyName = name;
      permit(res, 'csr', name);
      const body = withSans(parseBody(csrBody, req.body));
      return pki.csr(name, body, deadlineOf(res), (f) => Object.assign(facts, f));
    });
    res.json(out);
  });
  r.put('/v1/keys/:name/certificate', async (req: Request<{ name: string }>, res) => {
    await auditorFor(audit, req, res).run('certificate', async (facts) => {
      const name = keyName(req.params.name);
      facts.keyName = name;
      permit(res, 'certificate', name);
      await pki.attach(name, parseBody(attachBody, req.body), deadlineOf(res), (f) => Object.assign(facts, f));
    });
    res.status(204).end();
  });
  r.get('/v1/keys/:name/certificate', async (req: Request<{ name: string }>, res) => {
    const name = keyName(req.params.name);
    permit(res, 'read', name);
    res.json(await pki.getCertificate(name, parseKeyVersionQuery(req.query.keyVersion), deadlineOf(res)));
  });
  r.post('/v1/keys/:name/certificates', async (req: Request<{ name: string }>, res) => {
    const out = await auditorFor(audit, req, res).run('issue', async (facts) => {
      const name = keyName(req.params.name);
      facts.keyName = name;
      permit(res, 'issue', name);
      const body = withSans(parseBody(issueBody, req.body));
      facts.profile = body.profile;
      return pki.issue(name, body, deadlineOf(res), (f) => Object.assign(facts, f));
    });
    res.status(201).json(out);
  });
  return r;
}
