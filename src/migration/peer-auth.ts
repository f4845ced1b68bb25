import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Socket } from 'node:net';
import { X509Certificate } from 'node:crypto';
import { TLSSocket, connect as tlsConnect, type SecureContextOptions } from 'node:tls';
import type { Authenticator } from '../engines/criu/transport.js';
import { readLine } from '../util/stream-read.js';

/**
 * Authentication between agents for image streams: a mutual challenge-response on a shared cluster token (the
 * token itself never crosses the wire: each side proves it knows it with an HMAC over both sides' nonces), over
 * TLS when certificates are configured (then the peer's certificate must chain to the configured CA).
 *
 *   server → client   SWAUTH1 <server nonce>
 *   client → server   <client nonce> <HMAC(token, "client|" + server nonce + "|" + client nonce)>
 *   server → client   OK <HMAC(token, "server|" + client nonce + "|" + server nonce)>   (or ERR <reason>)
 *
 * After the last line the connection belongs to the image stream.
 */
export interface PeerAuthOptions {
  token: string;
  tls?: { cert: string | Buffer; key: string | Buffer; ca: string | Buffer } | undefined;
}

const MAX_LINE = 256;

export function clusterAuthenticator(options: PeerAuthOptions): Authenticator {
  if (options.token.length < 16) throw new Error('the cluster token must be at least 16 characters (use e.g. `openssl rand -hex 32`)');
  const key = Buffer.from(options.token, 'utf8');
  const mac = (text: string) => createHmac('sha256', key).update(text).digest('hex');
  return async (socket, role, signal) => {
    const conn: Socket = options.tls ? await wrapTls(socket, role, options.tls, signal) : socket;
    if (role === 'server') {
      const serverNonce = randomBytes(16).toString('hex');
      conn.write(`SWAUTH1 ${serverNonce}\n`);
      const [clientNonce, proof] = (await readLine(conn, MAX_LINE, signal)).split(' ');
      if (!clientNonce || !/^[0-9a-f]{32}$/.test(clientNonce) || !proof || !safeEqual(proof, mac(`client|${serverNonce}|${clientNonce}`))) {
        conn.end('ERR authentication failed\n');
        throw new Error('peer failed the cluster-token handshake (wrong --cluster-token?)');
      }
      conn.write(`OK ${mac(`server|${clientNonce}|${serverNonce}`)}\n`);
      return conn;
    }
    const hello = await readLine(conn, MAX_LINE, signal);
    const serverNonce = /^SWAUTH1 ([0-9a-f]{32})$/.exec(hello)?.[1];
    if (!serverNonce) throw new Error(`peer is not a spotwatch agent (it said "${hello.slice(0, 40)}")`);
    const clientNonce = randomBytes(16).toString('hex');
    conn.write(`${clientNonce} ${mac(`client|${serverNonce}|${clientNonce}`)}\n`);
    const answer = await readLine(conn, MAX_LINE, signal);
    const serverProof = /^OK ([0-9a-f]{64})$/.exec(answer)?.[1];
    if (!serverProof) throw new Error(`peer refused the cluster token: ${answer.slice(0, 80)}`);
    if (!safeEqual(serverProof, mac(`server|${clientNonce}|${serverNonce}`))) throw new Error('peer does not know the cluster token (its proof is wrong)');
    return conn;
  };
}

function safeEqual(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

async function wrapTls(socket: Socket, role: 'client' | 'server', tls: NonNullable<PeerAuthOptions['tls']>, signal: AbortSignal): Promise<Socket> {
  const context: SecureContextOptions = { cert: tls.cert, key: tls.key, ca: tls.ca, minVersion: 'TLSv1.3' };
  return new Promise<Socket>((resolve, reject) => {
    const onAbort = () => reject(new Error('TLS handshake timed out'));
    signal.addEventListener('abort', onAbort, { once: true });
    if (role === 'client') {
      // Agents reach each other by address; identity is "holds a certificate from the cluster CA".
      const secure = tlsConnect({ socket, ...context, checkServerIdentity: () => undefined });
      secure.once('secureConnect', () => {
        signal.removeEventListener('abort', onAbort);
        resolve(secure);
      });
      secure.once('error', reject);
    } else {
      const secure = new TLSSocket(socket, { isServer: true, ...context, requestCert: true, rejectUnauthorized: true });
      secure.once('secure', () => {
        signal.removeEventListener('abort', onAbort);
        // A server TLSSocket made by hand (outside a tls.Server) never verifies the client's certificate:
        // check it here against the cluster CA, which must sign agent certificates directly.
        const problem = clientCertificateProblem(secure, tls.ca);
        if (problem) {
          secure.destroy();
          reject(new Error(`peer certificate refused: ${problem}`));
          return;
        }
        resolve(secure);
      });
      secure.once('error', reject);
    }
  });
}

function clientCertificateProblem(socket: TLSSocket, caPem: string | Buffer): string | undefined {
  const peer = socket.getPeerX509Certificate();
  if (!peer) return 'the peer sent no certificate';
  const ca = new X509Certificate(caPem);
  if (!peer.checkIssued(ca) || !peer.verify(ca.publicKey)) return `"${peer.subject}" is not signed by the cluster CA "${ca.subject}"`;
  const now = Date.now();
  if (now < Date.parse(peer.validFrom) || now > Date.parse(peer.validTo)) return `"${peer.subject}" is not valid now (${peer.validFrom} – ${peer.validTo})`;
  return undefined;
}
