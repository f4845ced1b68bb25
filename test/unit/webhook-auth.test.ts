import { generateKeyPairSync, sign } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { secretsEqual, TokenBucket } from '../../src/webhook/http.js';
import { JwksCache, JwksUnavailableError, JwtError, verifyJwt } from '../../src/webhook/jwt.js';
import { readSnsMessage, SNS_HOST, snsHostUrl, snsStringToSign } from '../../src/webhook/sns.js';
import { makeSigner, signJwt, startJwksServer, type JwksServer, type TestSigner } from '../fixtures/webhook/jwt.js';

describe('shared secrets and rate limits', () => {
  it('compares secrets exactly', () => {
    expect(secretsEqual('abc', 'abc')).toBe(true);
    expect(secretsEqual('abd', 'abc')).toBe(false);
    expect(secretsEqual('ab', 'abc')).toBe(false);
    expect(secretsEqual(undefined, 'abc')).toBe(false);
  });

  it('token bucket: burst, then the rate', () => {
    let t = 0;
    const bucket = new TokenBucket(2, 3, () => t);
    expect([bucket.take(), bucket.take(), bucket.take()]).toEqual([0, 0, 0]);
    expect(bucket.take()).toBeCloseTo(0.5);
    t = 500;
    expect(bucket.take()).toBe(0);
    expect(bucket.take()).toBeGreaterThan(0);
  });
});

describe('JWT verification and the JWKS cache', () => {
  let signer: TestSigner;
  let server: JwksServer;
  const expectations = (now = Date.now()) => ({ issuers: ['https://issuer'], audience: 'aud-1', now: () => now });
  const claims = (over: Record<string, unknown> = {}) => ({ iss: 'https://issuer', aud: 'aud-1', exp: Math.floor(Date.now() / 1000) + 600, ...over });
  beforeAll(async () => {
    signer = makeSigner('k1');
    server = await startJwksServer([signer.publicJwk]);
  });
  afterAll(() => server.close());

  it('accepts a valid token (aud as an array too) and tolerates 60 s of clock skew', async () => {
    const jwks = new JwksCache({ url: server.url, cacheMs: 60_000 });
    await expect(verifyJwt(signJwt(signer, claims({ aud: ['other', 'aud-1'] })), jwks, expectations())).resolves.toMatchObject({ iss: 'https://issuer' });
    const justExpired = claims({ exp: Math.floor(Date.now() / 1000) - 30 });
    await expect(verifyJwt(signJwt(signer, justExpired), jwks, expectations())).resolves.toBeDefined();
    await expect(verifyJwt(signJwt(signer, claims({ nbf: Math.floor(Date.now() / 1000) + 600 })), jwks, expectations())).rejects.toThrow(/nbf/);
    await expect(verifyJwt(signJwt(signer, claims({ exp: undefined })), jwks, expectations())).rejects.toThrow(/no exp/);
    await expect(verifyJwt(signJwt(signer, claims(), { crit: ['b64'] }), jwks, expectations())).rejects.toThrow(/critical/);
  });

  it('verifies ES256 tokens', async () => {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const es = await startJwksServer([{ ...publicKey.export({ format: 'jwk' }), kid: 'ec1', alg: 'ES256' }]);
    try {
      const h = Buffer.from(JSON.stringify({ alg: 'ES256', kid: 'ec1' })).toString('base64url');
      const p = Buffer.from(JSON.stringify(claims())).toString('base64url');
      const s = sign('sha256', Buffer.from(`${h}.${p}`), { key: privateKey, dsaEncoding: 'ieee-p1363' }).toString('base64url');
      await expect(verifyJwt(`${h}.${p}.${s}`, new JwksCache({ url: es.url, cacheMs: 60_000 }), expectations())).resolves.toBeDefined();
    } finally {
      await es.close();
    }
  });

  it('refetches for a rotated key (an unknown kid) at most every 30 s, and keeps old keys when the JWKS is down', async () => {
    let now = 1_000_000;
    const before = server.fetches();
    const jwks = new JwksCache({ url: server.url, cacheMs: 3600_000, now: () => now });
    await verifyJwt(signJwt(signer, claims()), jwks, expectations());
    const rotated = makeSigner('k2');
    server.setKeys([signer.publicJwk, rotated.publicJwk]);
    // Within the cooldown: no refetch, the new kid is unknown.
    await expect(verifyJwt(signJwt(rotated, claims()), jwks, expectations())).rejects.toThrow(JwtError);
    now += 31_000;
    await expect(verifyJwt(signJwt(rotated, claims()), jwks, expectations())).resolves.toBeDefined();
    expect(server.fetches() - before).toBe(2);
    server.setKeys([signer.publicJwk]);
    // JWKS unreachable, nothing cached: a distinct error (the webhook answers 503).
    const down = new JwksCache({ url: 'http://127.0.0.1:9/keys', cacheMs: 60_000 });
    await expect(verifyJwt(signJwt(signer, claims()), down, expectations())).rejects.toBeInstanceOf(JwksUnavailableError);
  });
});

describe('SNS message rules', () => {
  const base = { MessageId: 'm1', TopicArn: 'arn:aws:sns:us-east-1:123456789012:t', Message: 'hello', Timestamp: '2026-01-01T00:00:00.000Z', SignatureVersion: '1', Signature: 'AAAA', SigningCertURL: 'https://sns.us-east-1.amazonaws.com/SimpleNotificationService-x.pem' };

  it('builds the documented string to sign (Subject only when present; confirmation fields in order)', () => {
    const withoutSubject = readSnsMessage({ ...base, Type: 'Notification' }, 'Notification');
    expect(snsStringToSign(withoutSubject)).toBe('Message\nhello\nMessageId\nm1\nTimestamp\n2026-01-01T00:00:00.000Z\nTopicArn\narn:aws:sns:us-east-1:123456789012:t\nType\nNotification\n');
    const withSubject = readSnsMessage({ ...base, Type: 'Notification', Subject: 's' }, undefined);
    expect(snsStringToSign(withSubject)).toContain('MessageId\nm1\nSubject\ns\nTimestamp\n');
    const confirmation = readSnsMessage({ ...base, Type: 'SubscriptionConfirmation', Token: 'tok', SubscribeURL: 'https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription' }, 'SubscriptionConfirmation');
    expect(snsStringToSign(confirmation)).toBe('Message\nhello\nMessageId\nm1\nSubscribeURL\nhttps://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription\nTimestamp\n2026-01-01T00:00:00.000Z\nToken\ntok\nTopicArn\narn:aws:sns:us-east-1:123456789012:t\nType\nSubscriptionConfirmation\n');
    expect(() => readSnsMessage({ ...base, Type: 'SubscriptionConfirmation' }, undefined)).toThrow(/Token/);
  });

  it('accepts certificate hosts sns.<region>.amazonaws.com(.cn) over https only', () => {
    for (const host of ['sns.us-east-1.amazonaws.com', 'sns.us-gov-west-1.amazonaws.com', 'sns.cn-north-1.amazonaws.com.cn', 'sns.ap-southeast-4.amazonaws.com']) expect(SNS_HOST.test(host), host).toBe(true);
    for (const host of ['sns.amazonaws.com', 'evil.com', 'sns.us-east-1.amazonaws.com.evil.com', 'sns.us-east-1.evil.com', 'xsns.us-east-1.amazonaws.com']) expect(SNS_HOST.test(host), host).toBe(false);
    expect(() => snsHostUrl('https://user@sns.us-east-1.amazonaws.com/x.pem', 'url')).toThrow();
    expect(snsHostUrl('https://sns.eu-west-1.amazonaws.com/x.pem', 'url').hostname).toBe('sns.eu-west-1.amazonaws.com');
  });
});
