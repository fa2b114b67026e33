import type { IRouter, Request } from 'express';
import { ServiceError } from '../../errors.js';
import type { SignOutput, SigningService } from '../../service/SigningService.js';
import { allowed, permit } from '../auth.js';
import { deadlineOf } from '../requestContext.js';
import { keyName, parseBatch, parseSign, parseVerify } from '../validation.js';

const signJson = (r: SignOutput): object => ({
  keyName: r.keyName,
  keyVersion: r.keyVersion,
  algorithm: r.algorithm,
  signature: r.signature.toString('base64'),
});

/** Sign, verify and batch sign, added to the app itself: the hot path skips a nested Router's dispatch. */
export function addSigningRoutes(r: IRouter, service: SigningService): void {
  r.post('/v1/keys/:name/sign', async (req: Request<{ name: string }>, res) => {
    const name = keyName(req.params.name);
    permit(res, 'sign', name);
    const input = parseSign(name, req.body);
    res.json(signJson(await service.sign(input, deadlineOf(res))));
  });
  r.post('/v1/keys/:name/verify', async (req: Request<{ name: string }>, res) => {
    const name = keyName(req.params.name);
    permit(res, 'verify', name);
    const input = parseVerify(name, req.body);
    res.json(await service.verify(input, deadlineOf(res)));
  });
  r.post('/v1/sign/batch', async (req, res) => {
    const items = parseBatch(req.body).map((item) =>
      item instanceof ServiceError || allowed(res, 'sign', item.keyName) ? item : new ServiceError('PERMISSION_DENIED', `the client may not sign with key '${item.keyName}'`),
    );
    const results = await service.signBatch(items, deadlineOf(res));
    res.json({
      results: results.map((x) => (x instanceof ServiceError ? { error: { code: x.code, message: x.message } } : signJson(x))),
    });
  });
}
