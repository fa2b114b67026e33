import { Router, type Request } from 'express';
import type { SubjectAltNamesInput } from '../../pki/index.js';
import type { AuditLog } from '../../audit/AuditLog.js';
import type { CertificateRecord } from '../../inventory/CertificateInventory.js';
import { serialForDisplay } from '../../pki/serialNumber.js';
import { certificateStatus, type PkiService } from '../../service/PkiService.js';
import { toPem } from '../../pki/pem.js';
import { type Client, permit } from '../auth.js';
import { auditorFor } from '../requestAudit.js';
import { deadlineOf } from '../requestContext.js';
import { attachBody, csrBody, issueBody } from '../schemas/requests.js';
import type { IssuedCertificateJson } from '../schemas/responses.js';
import { keyName, parseBody, parseKeyVersionQuery, parseListQuery, parseSerial } from '../validation.js';

const withSans = <T extends { subjectAltNames?: unknown }>(b: T): Omit<T, 'subjectAltNames'> & { subjectAltNames?: SubjectAltNamesInput } => {
  const { subjectAltNames, ...rest } = b;
  return subjectAltNames === undefined ? rest : { ...rest, subjectAltNames: subjectAltNames as SubjectAltNamesInput };
};

export function issuedCertificateJson(r: CertificateRecord, now: Date): IssuedCertificateJson {
  return {
    serialNumber: serialForDisplay(r.serialNumber),
    issuerKeyVersion: r.issuerKeyVersion,
    subject: r.subject,
    subjectAltNames: [...r.subjectAltNames],
    profile: r.profile,
    notBefore: r.notBefore.toISOString(),
    notAfter: r.notAfter.toISOString(),
    sha256: r.sha256,
    certificatePem: toPem('CERTIFICATE', r.certificateDer),
    status: certificateStatus(r, now),
    ...(r.revocation ? { revocation: { revokedAt: r.revocation.revokedAt.toISOString(), reason: r.revocation.reason } } : {}),
    issuedAt: r.issuedAt.toISOString(),
    ...(r.clientId !== undefined ? { clientId: r.clientId } : {}),
  };
}

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
      const clientId = (res.locals.client as Client | undefined)?.name;
      return pki.issue(name, body, deadlineOf(res), (f) => Object.assign(facts, f), {
        ...(clientId !== undefined ? { clientId } : {}),
        requestId: res.locals.requestId as string,
      });
    });
    res.status(201).json(out);
  });
  r.get('/v1/keys/:name/certificates', async (req: Request<{ name: string }>, res) => {
    const name = keyName(req.params.name);
    permit(res, 'read', name);
    const page = await pki.listIssued(name, parseListQuery(req.query as Record<string, unknown>), deadlineOf(res));
    const now = new Date();
    res.json({ certificates: page.items.map((c) => issuedCertificateJson(c, now)), ...(page.nextCursor !== undefined ? { nextCursor: page.nextCursor } : {}) });
  });
  r.get('/v1/keys/:name/certificates/:serial', async (req: Request<{ name: string; serial: string }>, res) => {
    const name = keyName(req.params.name);
    permit(res, 'read', name);
    const serial = parseSerial(req.params.serial);
    res.json(issuedCertificateJson(await pki.getIssued(name, serial, deadlineOf(res)), new Date()));
  });
  return r;
}
