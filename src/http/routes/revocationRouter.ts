import express, { Router, type Request, type Response } from 'express';
import type { AuditLog } from '../../audit/AuditLog.js';
import { serialForDisplay } from '../../pki/serialNumber.js';
import { invalid, ServiceError } from '../../errors.js';
import { MAX_OCSP_REQUEST_BYTES, OCSPResponseStatus, ocspErrorResponse } from '../../pki/ocsp.js';
import { toPem } from '../../pki/pem.js';
import type { RevocationService } from '../../service/RevocationService.js';
import { permit } from '../auth.js';
import { auditorFor } from '../requestAudit.js';
import { deadlineOf } from '../requestContext.js';
import { revokeBody } from '../schemas/requests.js';
import { keyName, parseBody, parseKeyVersionQuery, parseSerial } from '../validation.js';

/** POST .../revoke: under /v1, authenticated (operation `revoke`) and audited like issuance. */
export function revocationRouter(revocation: RevocationService, audit?: AuditLog): Router {
  const r = Router();
  r.post('/v1/keys/:name/certificates/:serial/revoke', async (req: Request<{ name: string; serial: string }>, res) => {
    const out = await auditorFor(audit, req, res).run('revoke', async (facts) => {
      const name = keyName(req.params.name);
      facts.keyName = name;
      permit(res, 'revoke', name);
      const serialNumber = parseSerial(req.params.serial);
      facts.serialNumber = serialForDisplay(serialNumber);
      const body = parseBody(revokeBody, req.body);
      facts.reason = body.reason;
      return revocation.revoke(name, serialNumber, body.reason, deadlineOf(res), (f) => Object.assign(facts, f));
    });
    res.json(out);
  });
  return r;
}

const OCSP_RESPONSE = 'application/ocsp-response';

/** A 400 that an OCSP client can read: an OCSPResponse with status malformedRequest. */
function malformed(res: Response): void {
  res.status(400).type(OCSP_RESPONSE).send(ocspErrorResponse(OCSPResponseStatus.malformedRequest));
}

/**
 * What relying parties fetch: CRLs and OCSP. Served without credentials, before the /v1 guard: the
 * TLS clients and servers that check a certificate have no token of this service, and what they get
 * is signed by the CA and public by design (RFC 5280 §5, RFC 6960). Nothing here changes state.
 */
export function publicRevocationRouter(revocation: RevocationService): Router {
  const r = Router();
  r.get('/v1/keys/:name/crl', async (req: Request<{ name: string }>, res) => {
    const name = keyName(req.params.name);
    const format = req.query.format;
    if (format !== undefined && format !== 'der' && format !== 'pem') throw invalid('format: must be der or pem');
    const crl = await revocation.crl(name, parseKeyVersionQuery(req.query.keyVersion), deadlineOf(res));
    // Caches (and CDNs) may keep it until the service would regenerate it anyway.
    res.setHeader('Cache-Control', 'public, max-age=60');
    res.setHeader('X-Crl-Number', crl.crlNumber.toString());
    res.setHeader('X-Key-Version', String(crl.keyVersion));
    if (format === 'pem') res.type('application/x-pem-file').send(toPem('X509 CRL', crl.der));
    else res.type('application/pkix-crl').send(crl.der);
  });

  const ocsp = async (name: string, der: Buffer, res: Response): Promise<void> => {
    let answer: Buffer;
    try {
      answer = await revocation.ocsp(name, der, deadlineOf(res));
    } catch (e) {
      if (e instanceof ServiceError && e.code === 'INVALID_ARGUMENT') return malformed(res);
      throw e;
    }
    res.setHeader('Cache-Control', 'no-store');
    res.type(OCSP_RESPONSE).send(answer);
  };
  const body = express.raw({ type: () => true, limit: MAX_OCSP_REQUEST_BYTES });
  r.post('/ocsp/:name', body, async (req: Request<{ name: string }>, res) => {
    const name = keyName(req.params.name);
    if (!req.is('application/ocsp-request')) throw new ServiceError('UNSUPPORTED_MEDIA_TYPE', 'body: Content-Type must be application/ocsp-request');
    await ocsp(name, Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0), res);
  });
  // RFC 6960 Appendix A.1: the URL-encoded base64 of the DER request as the last path segment.
  r.get('/ocsp/:name/:request', async (req: Request<{ name: string; request: string }>, res) => {
    const name = keyName(req.params.name);
    const b64 = req.params.request;
    if (b64.length > MAX_OCSP_REQUEST_BYTES * 2 || !/^[A-Za-z0-9+/]+={0,2}$/.test(b64) || b64.length % 4 !== 0) return malformed(res);
    await ocsp(name, Buffer.from(b64, 'base64'), res);
  });
  return r;
}
