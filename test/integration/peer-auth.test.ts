import { describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import { listenForImageStreams, tcpImageSink } from '../../src/engines/criu/transport.js';
import { clusterAuthenticator, type PeerAuthOptions } from '../../src/migration/peer-auth.js';

const TOKEN = 'a-cluster-token-of-enough-length';

/** Sends `payload` from a client to a server over the authenticated connection; returns what arrived. */
async function roundTrip(server: PeerAuthOptions, client: PeerAuthOptions, payload: string): Promise<{ received?: string; clientError?: string; serverError?: string }> {
  let serverError: string | undefined;
  let resolveReceived: (s: string) => void = () => {};
  const received = new Promise<string>((r) => (resolveReceived = r));
  const listener = await listenForImageStreams({
    authenticate: clusterAuthenticator(server),
    authTimeoutMs: 3000,
    onConnection: (conn: Duplex) => {
      let text = '';
      conn.on('data', (d: Buffer) => (text += d.toString()));
      conn.on('end', () => resolveReceived(text));
    },
    onError: (err) => {
      serverError = err.message;
      resolveReceived('');
    },
  });
  try {
    const conn = await tcpImageSink({ host: '127.0.0.1', port: listener.port }, clusterAuthenticator(client)).open(AbortSignal.timeout(3000));
    conn.end(payload);
    return { received: await received, serverError };
  } catch (err) {
    await Promise.race([received, new Promise((r) => setTimeout(r, 500))]);
    return { clientError: (err as Error).message, serverError };
  } finally {
    await listener.close();
  }
}

describe('agent-to-agent authentication', () => {
  it('lets agents with the same token through, with the stream bytes intact', async () => {
    const result = await roundTrip({ token: TOKEN }, { token: TOKEN }, 'image bytes\nmore bytes');
    expect(result).toEqual({ received: 'image bytes\nmore bytes', serverError: undefined });
  });

  it('refuses a peer with another token, on both sides', async () => {
    const result = await roundTrip({ token: TOKEN }, { token: 'some-other-token-entirely-wrong' }, 'x');
    expect(result.clientError).toMatch(/refused the cluster token/);
    expect(result.serverError).toMatch(/cluster-token handshake/);
  });

  it('rejects short tokens up front', () => {
    expect(() => clusterAuthenticator({ token: 'short' })).toThrow(/at least 16/);
  });

  it('runs the handshake inside TLS when certificates are configured, and refuses a certificate from another CA', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'peer-tls-'));
    try {
      const openssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'ignore' });
      const makeCa = (name: string) => openssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.crt`, '-days', '1', '-subj', `/CN=${name}`);
      const makeLeaf = (name: string, ca: string) => {
        openssl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}`);
        openssl('x509', '-req', '-in', `${name}.csr`, '-CA', `${ca}.crt`, '-CAkey', `${ca}.key`, '-CAcreateserial', '-out', `${name}.crt`, '-days', '1');
      };
      makeCa('ca');
      makeCa('evil-ca');
      makeLeaf('agent-a', 'ca');
      makeLeaf('agent-b', 'ca');
      makeLeaf('intruder', 'evil-ca');
      const read = (f: string) => readFileSync(join(dir, f));
      const tls = (name: string, ca = 'ca') => ({ cert: read(`${name}.crt`), key: read(`${name}.key`), ca: read(`${ca}.crt`) });
      const ok = await roundTrip({ token: TOKEN, tls: tls('agent-a') }, { token: TOKEN, tls: tls('agent-b') }, 'over tls');
      expect(ok, JSON.stringify(ok)).toMatchObject({ received: "over tls" });
      const bad = await roundTrip({ token: TOKEN, tls: tls('agent-a') }, { token: TOKEN, tls: tls('intruder', 'ca') }, 'x');
      expect(bad.received).toBeUndefined();
      expect(bad.serverError ?? bad.clientError).toBeTruthy();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
