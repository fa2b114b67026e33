import { Router } from 'express';
import type { KeyInfo } from '../../hsm/KeyManager.js';
import { algorithmsFor } from '../../crypto/algorithms.js';
import type { SigningService } from '../../service/SigningService.js';
import { allowed, permit } from '../auth.js';
import { deadlineOf } from '../requestContext.js';
import type { KeyInfoJson } from '../schemas/responses.js';
import { keyName } from '../validation.js';

export function keyInfoJson(k: KeyInfo): KeyInfoJson {
  return {
    name: k.name,
    currentVersion: k.currentVersion,
    keySpec: k.keySpec,
    signingAlgorithms: algorithmsFor(k.keySpec),
    versions: k.versions.map((v) => ({
      version: v.version,
      keySpec: v.keySpec,
      publicKeyPem: v.publicKeyPem,
      hasCertificate: v.hasCertificate,
      usable: v.unusableReason === undefined,
      ...(v.unusableReason !== undefined ? { unusableReason: v.unusableReason } : {}),
    })),
  };
}

export function keysRouter(service: SigningService): Router {
  const r = Router();
  r.get('/v1/keys', async (_req, res) => {
    const keys = await service.listKeys(deadlineOf(res));
    res.json({ keys: keys.filter((k) => allowed(res, 'read', k.name)).map(keyInfoJson) });
  });
  r.get('/v1/keys/:name', async (req, res) => {
    const name = keyName(req.params.name);
    permit(res, 'read', name);
    res.json(keyInfoJson(await service.getKey(name, deadlineOf(res))));
  });
  r.get('/v1/keys/:name/jwks', async (req, res) => {
    const name = keyName(req.params.name);
    permit(res, 'read', name);
    const key = await service.getKey(name, deadlineOf(res));
    res.json({
      keys: key.versions.map((v) => ({
        ...v.publicKey.export({ format: 'jwk' }),
        kid: `${key.name}/v${v.version}`,
        use: 'sig',
      })),
    });
  });
  return r;
}
