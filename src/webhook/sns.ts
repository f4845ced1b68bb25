import { X509Certificate, createVerify, type KeyObject } from 'node:crypto';
import { request as httpsRequest } from 'node:https';
import { rootCertificates } from 'node:tls';
import { describeError } from '../errors.js';
import { forbidden, malformed, unauthenticated, WebhookRejection } from './http.js';

/**
 * Amazon SNS HTTP(S) deliveries: message shape, signature verification (SignatureVersion 1 = SHA1withRSA,
 * 2 = SHA256withRSA) against the signing certificate, which is only ever fetched from the SNS certificate
 * host (`https://sns.<region>.amazonaws.com/….pem`) and cached, topic allow-list, replay window, and the
 * subscription confirmation (a GET of SubscribeURL, on the same host pattern).
 */

export type SnsMessageType = 'Notification' | 'SubscriptionConfirmation' | 'UnsubscribeConfirmation';
const TYPES: readonly SnsMessageType[] = ['Notification', 'SubscriptionConfirmation', 'UnsubscribeConfirmation'];

export interface SnsMessage {
  Type: SnsMessageType;
  MessageId: string;
  TopicArn: string;
  Message: string;
  Timestamp: string;
  SignatureVersion: '1' | '2';
  Signature: string;
  SigningCertURL: string;
  Subject?: string;
  Token?: string;
  SubscribeURL?: string;
  UnsubscribeURL?: string;
}

/** The SNS certificate (and confirmation) host: `sns.<region>.amazonaws.com`, and the China partition's `.com.cn`. */
export const SNS_HOST = /^sns\.[a-z]{2}(?:-[a-z]+)+-\d\.amazonaws\.com(?:\.cn)?$/;

/** Fields covered by the signature, in the documented order, per message type. */
const SIGNED_FIELDS: Record<SnsMessageType, (keyof SnsMessage)[]> = {
  Notification: ['Message', 'MessageId', 'Subject', 'Timestamp', 'TopicArn', 'Type'],
  SubscriptionConfirmation: ['Message', 'MessageId', 'SubscribeURL', 'Timestamp', 'Token', 'TopicArn', 'Type'],
  UnsubscribeConfirmation: ['Message', 'MessageId', 'SubscribeURL', 'Timestamp', 'Token', 'TopicArn', 'Type'],
};

/** Reads a delivery body (already JSON-parsed) as an SNS message; `headerType` is `x-amz-sns-message-type`. */
export function readSnsMessage(value: unknown, headerType: string | undefined): SnsMessage {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw malformed('SNS message: expected a JSON object');
  const o = value as Record<string, unknown>;
  const str = (key: string, required: boolean): string | undefined => {
    const v = o[key];
    if (v === undefined || v === null) {
      if (required) throw malformed(`SNS message: ${key} is missing`);
      return undefined;
    }
    if (typeof v !== 'string') throw malformed(`SNS message: ${key} must be a string`);
    return v;
  };
  const type = str('Type', true)!;
  if (!(TYPES as readonly string[]).includes(type)) throw malformed(`SNS message: Type "${type.slice(0, 40)}" is not one of ${TYPES.join(', ')}`);
  if (headerType !== undefined && headerType !== type) throw malformed(`SNS message: x-amz-sns-message-type ${headerType.slice(0, 40)} does not match Type ${type}`);
  const version = str('SignatureVersion', true)!;
  if (version !== '1' && version !== '2') throw unauthenticated(`SNS message: SignatureVersion "${version.slice(0, 10)}" is not 1 or 2`);
  const confirmation = type !== 'Notification';
  return {
    Type: type as SnsMessageType,
    MessageId: str('MessageId', true)!,
    TopicArn: str('TopicArn', true)!,
    Message: str('Message', true)!,
    Timestamp: str('Timestamp', true)!,
    SignatureVersion: version,
    Signature: str('Signature', true)!,
    SigningCertURL: str('SigningCertURL', true)!,
    Subject: str('Subject', false),
    Token: str('Token', confirmation),
    SubscribeURL: str('SubscribeURL', confirmation),
    UnsubscribeURL: str('UnsubscribeURL', false),
  };
}

/** The exact string SNS signs: `Key\nValue\n` for each signed field that is present, in order. */
export function snsStringToSign(msg: SnsMessage): string {
  return SIGNED_FIELDS[msg.Type]
    .filter((key) => msg[key] !== undefined)
    .map((key) => `${key}\n${msg[key]}\n`)
    .join('');
}

/** A URL on the SNS host pattern over https on the default port, or a rejection naming `what`. */
export function snsHostUrl(raw: string, what: string): URL {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw unauthenticated(`${what} is not a URL`);
  }
  if (url.protocol !== 'https:' || url.port !== '' || url.username !== '' || url.password !== '' || !SNS_HOST.test(url.hostname)) {
    throw unauthenticated(`${what} ${url.protocol}//${url.host} is not https://sns.<region>.amazonaws.com`);
  }
  return url;
}

/**
 * How the verifier reaches the SNS host. Production: public DNS and the system CAs. `ca` adds trusted roots
 * (a TLS-intercepting proxy; tests use their own CA); `connectTo` sends the connection to another address
 * while TLS still verifies the certificate for the SNS host name (tests only; not a CLI option).
 */
export interface SnsHttpsOptions {
  ca?: string | Buffer | undefined;
  connectTo?: { host: string; port: number } | undefined;
  timeoutMs?: number | undefined;
}

const MAX_CERT_BYTES = 64 * 1024;

export function snsHttpsGet(url: URL, options: SnsHttpsOptions): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(
      {
        host: options.connectTo?.host ?? url.hostname,
        port: options.connectTo?.port ?? 443,
        servername: url.hostname,
        path: `${url.pathname}${url.search}`,
        method: 'GET',
        headers: { host: url.hostname, accept: '*/*' },
        ...(options.ca ? { ca: [...rootCertificates, options.ca.toString()] } : {}),
        timeout: options.timeoutMs ?? 5000,
        agent: false,
      },
      (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (chunk: Buffer) => {
          size += chunk.length;
          if (size > MAX_CERT_BYTES) {
            req.destroy(new Error(`response larger than ${MAX_CERT_BYTES} bytes`));
            return;
          }
          chunks.push(chunk);
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error(`no answer within ${options.timeoutMs ?? 5000} ms`)));
    req.on('error', reject);
    req.end();
  });
}

export interface SnsVerifierOptions {
  topicArns: readonly string[];
  /** Messages whose Timestamp is older than this are refused. */
  maxAgeMs: number;
  https?: SnsHttpsOptions | undefined;
  /** Called after each certificate fetch (for metrics). */
  onFetch?: ((result: 'ok' | 'error') => void) | undefined;
  now?: (() => number) | undefined;
}

const CERT_CACHE_MAX = 32;
const CERT_CACHE_TTL_MS = 24 * 3600 * 1000;

export class SnsVerifier {
  private readonly certs = new Map<string, { key: KeyObject; expiresAt: number }>();
  private readonly inFlight = new Map<string, Promise<KeyObject>>();
  private readonly now: () => number;

  constructor(private readonly options: SnsVerifierOptions) {
    this.now = options.now ?? Date.now;
  }

  /** Topic allowed, signed timestamp fresh, signature valid; throws the matching rejection otherwise. */
  async verify(msg: SnsMessage): Promise<void> {
    if (!this.options.topicArns.includes(msg.TopicArn)) throw forbidden(`SNS topic ${msg.TopicArn.slice(0, 300)} is not in --sns-topic-arns`);
    const certUrl = snsHostUrl(msg.SigningCertURL, 'SigningCertURL');
    if (!certUrl.pathname.endsWith('.pem')) throw unauthenticated('SigningCertURL is not a .pem certificate');
    if (!/^[A-Za-z0-9+/]+={0,2}$/.test(msg.Signature)) throw unauthenticated('Signature is not base64');
    const key = await this.certificateKey(certUrl);
    const verifier = createVerify(msg.SignatureVersion === '1' ? 'RSA-SHA1' : 'RSA-SHA256');
    verifier.update(snsStringToSign(msg), 'utf8');
    let valid = false;
    try {
      valid = verifier.verify(key, Buffer.from(msg.Signature, 'base64'));
    } catch {
      valid = false;
    }
    if (!valid) throw unauthenticated('SNS signature does not verify against the signing certificate');
    // Checked after the signature: the Timestamp is only meaningful once it is known to be SNS's.
    const at = Date.parse(msg.Timestamp);
    if (Number.isNaN(at)) throw malformed('SNS message: Timestamp is not a time');
    if (this.now() - at > this.options.maxAgeMs) {
      throw new WebhookRejection(400, 'stale', `SNS message of ${msg.Timestamp} is older than the ${Math.round(this.options.maxAgeMs / 1000)} s replay window`);
    }
  }

  /** Confirms a verified SubscriptionConfirmation by GETting its SubscribeURL (on the SNS host only). */
  async confirm(msg: SnsMessage): Promise<void> {
    const url = snsHostUrl(msg.SubscribeURL ?? '', 'SubscribeURL');
    if (url.searchParams.get('Action') !== 'ConfirmSubscription') throw unauthenticated('SubscribeURL is not a ConfirmSubscription call');
    let response: { status: number; body: string };
    try {
      response = await snsHttpsGet(url, this.options.https ?? {});
    } catch (err) {
      throw new WebhookRejection(502, 'upstream_failed', `confirming the subscription failed: ${describeError(err)}`);
    }
    if (response.status !== 200) throw new WebhookRejection(502, 'upstream_failed', `confirming the subscription failed: SNS answered HTTP ${response.status}`);
  }

  private async certificateKey(url: URL): Promise<KeyObject> {
    const href = url.href;
    const cached = this.certs.get(href);
    if (cached && cached.expiresAt > this.now()) return cached.key;
    let pending = this.inFlight.get(href);
    if (!pending) {
      pending = this.fetchCertificate(url).finally(() => this.inFlight.delete(href));
      this.inFlight.set(href, pending);
    }
    return pending;
  }

  private async fetchCertificate(url: URL): Promise<KeyObject> {
    let response: { status: number; body: string };
    try {
      response = await snsHttpsGet(url, this.options.https ?? {});
      if (response.status !== 200) throw new Error(`HTTP ${response.status}`);
    } catch (err) {
      this.options.onFetch?.('error');
      // The certificate host is AWS's; not reaching it is a transient failure, not a forgery: SNS retries.
      throw new WebhookRejection(503, 'upstream_failed', `the SNS signing certificate could not be fetched: ${describeError(err)}`, { 'retry-after': '10' });
    }
    let cert: X509Certificate;
    try {
      cert = new X509Certificate(response.body);
    } catch {
      this.options.onFetch?.('error');
      throw unauthenticated('SigningCertURL does not serve a PEM certificate');
    }
    this.options.onFetch?.('ok');
    const now = this.now();
    const notAfter = Date.parse(cert.validTo);
    if (now < Date.parse(cert.validFrom) || now > notAfter) throw unauthenticated('the SNS signing certificate is not valid now');
    if (this.certs.size >= CERT_CACHE_MAX) this.certs.delete(this.certs.keys().next().value!);
    this.certs.set(url.href, { key: cert.publicKey, expiresAt: Math.min(now + CERT_CACHE_TTL_MS, notAfter) });
    return cert.publicKey;
  }
}
