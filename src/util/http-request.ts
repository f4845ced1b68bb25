import { Agent, request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';

/**
 * One small HTTP client for metadata services: keep-alive connections (a poll every 100 ms–1 s must not
 * open a socket each time), a hard per-request timeout, abort support, a capped response size, and
 * errors classified the way the metrics count them.
 */
export type RequestFailureReason = 'timeout' | 'connection' | 'too_large' | 'aborted';

export class HttpRequestError extends Error {
  constructor(
    readonly reason: RequestFailureReason,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'HttpRequestError';
  }
}

export interface HttpResponse {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}

export interface HttpRequestOptions {
  method?: string;
  headers?: Record<string, string>;
  body?: string;
  timeoutMs: number;
  signal?: AbortSignal | undefined;
  maxBytes?: number;
}

const httpAgent = new Agent({ keepAlive: true, maxSockets: 16, keepAliveMsecs: 10_000 });
const httpsAgent = new HttpsAgent({ keepAlive: true, maxSockets: 16 });

export function request(url: string, options: HttpRequestOptions): Promise<HttpResponse> {
  const target = new URL(url);
  const send = target.protocol === 'https:' ? httpsRequest : httpRequest;
  const maxBytes = options.maxBytes ?? 1024 * 1024;
  return new Promise<HttpResponse>((resolve, reject) => {
    let settled = false;
    const finish = (err: Error | undefined, value?: HttpResponse) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      options.signal?.removeEventListener('abort', onAbort);
      if (err) reject(err);
      else resolve(value!);
    };
    const req = send(
      target,
      {
        method: options.method ?? 'GET',
        headers: { ...options.headers, ...(options.body !== undefined ? { 'content-length': String(Buffer.byteLength(options.body)) } : {}) },
        agent: target.protocol === 'https:' ? httpsAgent : httpAgent,
      },
      (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (chunk: Buffer) => {
          size += chunk.length;
          if (size > maxBytes) {
            req.destroy();
            finish(new HttpRequestError('too_large', `${url}: response larger than ${maxBytes} bytes`));
            return;
          }
          chunks.push(chunk);
        });
        res.on('end', () => finish(undefined, { status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', (err) => finish(new HttpRequestError('connection', `${url}: ${err.message}`, { cause: err })));
      },
    );
    const timer = setTimeout(() => {
      req.destroy();
      finish(new HttpRequestError('timeout', `${url}: no answer within ${options.timeoutMs} ms`));
    }, options.timeoutMs);
    const onAbort = () => {
      req.destroy();
      finish(new HttpRequestError('aborted', `${url}: aborted`));
    };
    // The error handler goes first: destroying a request (abort, timeout) emits 'error' on it.
    req.on('error', (err) => finish(new HttpRequestError('connection', `${url}: ${err.message}`, { cause: err })));
    if (options.signal?.aborted) {
      onAbort();
      return;
    }
    options.signal?.addEventListener('abort', onAbort, { once: true });
    if (options.body !== undefined) req.write(options.body);
    req.end();
  });
}
