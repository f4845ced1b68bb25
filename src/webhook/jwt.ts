import { createPublicKey, verify as cryptoVerify, type JsonWebKey, type KeyObject } from 'node:crypto';
import { describeError } from '../errors.js';
import { request } from '../util/http-request.js';

/**
 * Verification of the bearer JWTs cloud bridges send (Google's push OIDC token, Entra ID access tokens):
 * signature against a JWKS fetched over HTTP(S) and cached, then the registered claims. No `alg: none`,
 * no HMAC (a public JWKS can never verify an HMAC token), only the algorithms the clouds sign with.
 */

export class JwtError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'JwtError';
  }
}

const ALGORITHMS: Record<string, { hash: string; kty: 'RSA' | 'EC'; pss?: boolean; curve?: string }> = {
  RS256: { hash: 'sha256', kty: 'RSA' },
  RS384: { hash: 'sha384', kty: 'RSA' },
  RS512: { hash: 'sha512', kty: 'RSA' },
  PS256: { hash: 'sha256', kty: 'RSA', pss: true },
  ES256: { hash: 'sha256', kty: 'EC', curve: 'P-256' },
  ES384: { hash: 'sha384', kty: 'EC', curve: 'P-384' },
};

/** An unknown `kid` refetches the JWKS (keys rotate), but at most this often. */
const REFETCH_COOLDOWN_MS = 30_000;
const FAILED_FETCH_BACKOFF_MS = 2000;
const MAX_JWKS_BYTES = 256 * 1024;
const MAX_TOKEN_LENGTH = 16 * 1024;

interface CachedKey {
  kid: string | undefined;
  kty: string;
  alg: string | undefined;
  key: KeyObject;
}

export interface JwksCacheOptions {
  url: string;
  /** How long fetched keys are used before the JWKS is fetched again. */
  cacheMs: number;
  timeoutMs?: number;
  /** Called after each fetch (for metrics). */
  onFetch?: (result: 'ok' | 'error') => void;
  now?: () => number;
}

/** A JWKS fetched on first use, kept for `cacheMs`, refetched early (rate-limited) for an unknown kid. */
export class JwksCache {
  private keys: CachedKey[] = [];
  private fetchedAt = -Infinity;
  private inFlight: Promise<void> | undefined;
  private lastError: { at: number; error: JwksUnavailableError } | undefined;
  private readonly now: () => number;

  constructor(private readonly options: JwksCacheOptions) {
    this.now = options.now ?? Date.now;
  }

  async keyFor(kid: string | undefined, alg: string): Promise<KeyObject> {
    let error: unknown;
    const attempt = async () => {
      try {
        await this.refresh();
      } catch (err) {
        error = err;
      }
    };
    if (this.now() - this.fetchedAt >= this.options.cacheMs) await attempt();
    let found = this.match(kid, alg);
    if (!found && error === undefined && this.now() - this.fetchedAt >= REFETCH_COOLDOWN_MS) {
      await attempt();
      found = this.match(kid, alg);
    }
    if (found) return found.key;
    if (error !== undefined) throw error;
    throw new JwtError(kid ? `no key with kid "${kid.slice(0, 64)}" in the JWKS` : 'token has no kid and the JWKS has no single matching key');
  }

  private match(kid: string | undefined, alg: string): CachedKey | undefined {
    const kty = ALGORITHMS[alg]!.kty;
    const candidates = this.keys.filter((k) => k.kty === kty && (k.alg === undefined || k.alg === alg));
    if (kid !== undefined) return candidates.find((k) => k.kid === kid);
    return candidates.length === 1 ? candidates[0] : undefined;
  }

  private refresh(): Promise<void> {
    // After a failed fetch, wait a moment before trying again (every delivery would otherwise hit the JWKS).
    if (this.lastError && this.now() - this.lastError.at < FAILED_FETCH_BACKOFF_MS) return Promise.reject(this.lastError.error);
    this.inFlight ??= this.fetchKeys().finally(() => {
      this.inFlight = undefined;
    });
    return this.inFlight;
  }

  private async fetchKeys(): Promise<void> {
    try {
      const response = await request(this.options.url, { timeoutMs: this.options.timeoutMs ?? 5000, maxBytes: MAX_JWKS_BYTES, headers: { accept: 'application/json' } });
      if (response.status !== 200) throw new Error(`HTTP ${response.status}`);
      const doc = JSON.parse(response.body) as { keys?: unknown };
      if (!Array.isArray(doc.keys)) throw new Error('no "keys" array');
      const keys: CachedKey[] = [];
      for (const raw of doc.keys as JsonWebKey[]) {
        if (typeof raw !== 'object' || raw === null || (raw.use !== undefined && raw.use !== 'sig')) continue;
        if (raw.kty !== 'RSA' && raw.kty !== 'EC') continue;
        try {
          const { kty, n, e, crv, x, y } = raw;
          const key = createPublicKey({ key: kty === 'RSA' ? { kty, n, e } : { kty, crv, x, y }, format: 'jwk' });
          keys.push({ kid: typeof raw.kid === 'string' ? raw.kid : undefined, kty: raw.kty, alg: typeof raw.alg === 'string' ? raw.alg : undefined, key });
        } catch {
          // A key this runtime cannot load is skipped; the others still verify.
        }
      }
      this.keys = keys;
      this.fetchedAt = this.now();
      this.lastError = undefined;
      this.options.onFetch?.('ok');
    } catch (err) {
      this.options.onFetch?.('error');
      // The previous keys (if any) stay in use; the caller decides what an unknown kid means.
      const error = new JwksUnavailableError(`JWKS ${this.options.url} could not be fetched: ${describeError(err)}`);
      this.lastError = { at: this.now(), error };
      throw error;
    }
  }
}

/** The signer's keys could not be fetched: the caller answers 503 so that the bridge retries later. */
export class JwksUnavailableError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'JwksUnavailableError';
  }
}

export interface JwtExpectations {
  /** Accepted `iss` values (exact match). */
  issuers: readonly string[];
  /** The `aud` that must appear (as the string, or in the array). */
  audience: string;
  /** Tolerated clock difference in seconds (default 60). */
  clockSkewSeconds?: number;
  now?: () => number;
}

export type JwtClaims = Record<string, unknown>;

function decodeSegment(segment: string, what: string): Record<string, unknown> {
  if (!/^[A-Za-z0-9_-]+$/.test(segment)) throw new JwtError(`${what} is not base64url`);
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(segment, 'base64url').toString('utf8'));
  } catch {
    throw new JwtError(`${what} is not JSON`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new JwtError(`${what} is not a JSON object`);
  return value as Record<string, unknown>;
}

/** Verifies a compact JWS: signature (key from `jwks`), then exp / nbf / iat, iss, aud. Returns the claims. */
export async function verifyJwt(token: string, jwks: JwksCache, expect: JwtExpectations): Promise<JwtClaims> {
  if (token.length > MAX_TOKEN_LENGTH) throw new JwtError('token is too long');
  const parts = token.split('.');
  if (parts.length !== 3) throw new JwtError('not a compact JWT (three dot-separated parts)');
  const [h, p, s] = parts as [string, string, string];
  const header = decodeSegment(h, 'JWT header');
  const claims = decodeSegment(p, 'JWT payload');
  const alg = header.alg;
  if (typeof alg !== 'string' || !(alg in ALGORITHMS)) throw new JwtError(`algorithm ${JSON.stringify(alg)} is not accepted (${Object.keys(ALGORITHMS).join(', ')})`);
  if (header.crit !== undefined) throw new JwtError('critical header parameters are not supported');
  const kid = header.kid === undefined ? undefined : typeof header.kid === 'string' ? header.kid : undefined;
  const key = await jwks.keyFor(kid, alg);
  if (!/^[A-Za-z0-9_-]*$/.test(s)) throw new JwtError('signature is not base64url');
  const spec = ALGORITHMS[alg]!;
  const signature = Buffer.from(s, 'base64url');
  const data = Buffer.from(`${h}.${p}`, 'ascii');
  let valid = false;
  try {
    valid = spec.kty === 'EC'
      ? cryptoVerify(spec.hash, data, { key, dsaEncoding: 'ieee-p1363' }, signature)
      : cryptoVerify(spec.hash, data, spec.pss ? { key, padding: 6 /* RSA_PKCS1_PSS_PADDING */, saltLength: 32 } : key, signature);
  } catch {
    valid = false;
  }
  if (!valid) throw new JwtError('signature does not verify against the signer\'s keys');

  const now = (expect.now ?? Date.now)() / 1000;
  const skew = expect.clockSkewSeconds ?? 60;
  const exp = claims.exp;
  if (typeof exp !== 'number') throw new JwtError('token has no exp');
  if (now > exp + skew) throw new JwtError(`token expired at ${new Date(exp * 1000).toISOString()}`);
  if (claims.nbf !== undefined && (typeof claims.nbf !== 'number' || now + skew < claims.nbf)) throw new JwtError('token is not valid yet (nbf)');
  if (claims.iat !== undefined && (typeof claims.iat !== 'number' || now + skew < claims.iat)) throw new JwtError('token is issued in the future (iat)');
  if (typeof claims.iss !== 'string' || !expect.issuers.includes(claims.iss)) throw new JwtError(`issuer ${JSON.stringify(claims.iss)?.slice(0, 100)} is not accepted`);
  const aud = claims.aud;
  const audiences = Array.isArray(aud) ? aud : [aud];
  if (!audiences.includes(expect.audience)) throw new JwtError(`audience ${JSON.stringify(aud)?.slice(0, 200)} is not ${JSON.stringify(expect.audience)}`);
  return claims;
}

/** The token of an `Authorization: Bearer <token>` header, or undefined. */
export function bearerToken(authorization: string | undefined): string | undefined {
  const match = authorization ? /^Bearer\s+([A-Za-z0-9._~+/-]+=*)\s*$/i.exec(authorization) : null;
  return match?.[1];
}
