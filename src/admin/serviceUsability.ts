import { z } from 'zod';

/**
 * Whether the running service can sign with each key version, as one of its workers answers
 * `GET /v1/keys`: the admin CLI holds the key-manager credential, not the service's, so only the
 * service can say what its HSM user may use.
 */
export interface VersionUsability {
  /** The service lists the version (its scan found it with the service's HSM user). */
  readonly served: boolean;
  readonly usable?: boolean;
  readonly unusableReason?: string;
}

export interface ServiceUsability {
  of(name: string, version: number): VersionUsability;
}

const answer = z.object({
  keys: z.array(
    z.object({
      name: z.string(),
      versions: z.array(z.object({ version: z.number(), usable: z.boolean().optional(), unusableReason: z.string().optional() })),
    }),
  ),
});

const TIMEOUT_MS = 5000;

/** Asks the service at `baseUrl` (with a bearer token, if given); throws a sentence naming what failed, never the token. */
export async function serviceUsability(baseUrl: string, token?: string, fetchImpl: typeof fetch = fetch): Promise<ServiceUsability> {
  const url = new URL('/v1/keys', baseUrl);
  let res: Response;
  try {
    res = await fetchImpl(url, {
      headers: { accept: 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
      signal: AbortSignal.timeout(TIMEOUT_MS),
    });
  } catch (e) {
    const cause = (e as { cause?: { code?: string } }).cause?.code ?? (e as Error).name;
    throw new Error(`GET ${url.href} failed (${cause})`);
  }
  if (!res.ok) throw new Error(`GET ${url.href} answered ${res.status}${res.status === 401 ? ' (set HSM_SIGNER_TOKEN to a token with read on the keys)' : ''}`);
  const parsed = answer.safeParse(await res.json().catch(() => undefined));
  if (!parsed.success) throw new Error(`GET ${url.href} did not answer a key list`);
  const byVersion = new Map<string, VersionUsability>();
  for (const k of parsed.data.keys) {
    for (const v of k.versions) {
      byVersion.set(`${k.name}/v${v.version}`, {
        served: true,
        ...(v.usable !== undefined ? { usable: v.usable } : {}),
        ...(v.unusableReason !== undefined ? { unusableReason: v.unusableReason } : {}),
      });
    }
  }
  return { of: (name, version) => byVersion.get(`${name}/v${version}`) ?? { served: false } };
}

/** The `keys list` column. */
export function usabilityColumn(u: VersionUsability): string {
  if (!u.served) return 'not served (the service has not found it: not scanned yet, or not visible to its HSM user)';
  if (u.usable === undefined) return 'usability unknown (the service does not say)';
  return u.usable ? 'usable' : `not usable (${u.unusableReason ?? 'no reason given'})`;
}
