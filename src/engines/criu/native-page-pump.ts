/**
 * The native page pump (native/page-pump.c): moves the dump's page-server conversation into the direct page
 * channel outside the agent's event loop.
 *
 * Why: in the direct-channel path (page-channel.ts) the source agent copied `criu dump`'s socketpair into the TCP
 * channel itself, 64 KiB per read and an event-loop turn per chunk, while the same loop also serves the framed
 * connection, Redis and the metrics endpoint. On an H100 host that path moved a 28 GB GPU image at 0.73 GB/s
 * where CRIU straight into TCP reached 1.3 GB/s. The pump is a small C program with one thread per direction and
 * 4 MiB reads; the agent hands it both sockets (as fds 0 and 1, which libuv makes blocking) and closes its own
 * descriptors in the same tick, so not a byte of the conversation is read by the agent.
 *
 * Built by scripts/build-native.sh into native/build/page-pump; where it is missing the agent pumps in Node, as
 * before (`SPOTWATCH_PAGE_PUMP=node` forces that; `SPOTWATCH_PAGE_PUMP_BIN` names another binary).
 */
import { spawn } from 'node:child_process';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { findProjectExecutable, probeNativeUsage } from '../../util/find-executable.js';
import { transportError } from './image-stream.js';

export const PAGE_PUMP_NAME = 'page-pump';

export interface NativePagePump {
  /**
   * Resolves with the bytes moved from the dump into the channel; rejects with a retryable `TRANSPORT_FAILED`
   * ImageStreamError carrying the pump's own error line (a broken channel is the network's fault, not CRIU's).
   */
  done: Promise<number>;
  kill(): void;
}

/**
 * Which pump to use: `SPOTWATCH_PAGE_PUMP` = `native` (default, when built) | `node` (the agent's event loop) |
 * `criu` (`criu dump` writes the channel itself, no pump: for measurements).
 */
export function pagePumpMode(env: NodeJS.ProcessEnv = process.env): 'node' | 'native' | 'criu' {
  const v = env.SPOTWATCH_PAGE_PUMP;
  return v === 'node' || v === 'criu' ? v : 'native';
}

/**
 * Whether `binary` runs here: started without sockets it must refuse with exit 2 and its usage line. A pump that
 * fails only after it took the sockets would fail the checkpoint (retryable, the task resumes), so this is
 * checked before: a pump that cannot run leaves the pages to the agent's own pump.
 */
export function probePagePump(binary: string): Promise<boolean> {
  return probeNativeUsage(binary, 'must be sockets');
}

/**
 * The pump binary (`SPOTWATCH_PAGE_PUMP_BIN`, else native/build/ or .spotwatch/bin/ of the project) when it exists
 * and runs here (probePagePump); undefined otherwise, and with `SPOTWATCH_PAGE_PUMP` other than `native`.
 */
export async function locatePagePump(env: NodeJS.ProcessEnv = process.env): Promise<string | undefined> {
  if (pagePumpMode(env) !== 'native') return undefined;
  const binary = await findProjectExecutable(PAGE_PUMP_NAME, env.SPOTWATCH_PAGE_PUMP_BIN);
  return binary !== undefined && (await probePagePump(binary)) ? binary : undefined;
}

/**
 * Starts the pump on `channel` (fd 0) and `pageSocket` (fd 1) and closes this process's descriptors of both at
 * once. `onBytes` gets the running total (every 32 MiB and at the end).
 */
export function startNativePagePump(binary: string, channel: Socket, pageSocket: Duplex, onBytes: (total: number) => void): NativePagePump {
  const child = spawn(binary, [], { stdio: [channel, pageSocket as Socket, 'pipe'] });
  // Same tick as the spawn: the agent never reads a byte the pump should move.
  channel.destroy();
  pageSocket.destroy();
  let bytes = 0;
  let error: string | undefined;
  let rest = '';
  child.stderr?.setEncoding('utf8').on('data', (d: string) => {
    rest += d;
    let nl: number;
    while ((nl = rest.indexOf('\n')) >= 0) {
      const line = rest.slice(0, nl);
      rest = rest.slice(nl + 1);
      if (line.startsWith('bytes ')) {
        bytes = Number(line.slice(6)) || bytes;
        onBytes(bytes);
      } else if (line.startsWith('error ')) error ??= line.slice(6);
      else if (line) error ??= line;
    }
  });
  const done = new Promise<number>((resolve, reject) => {
    child.once('error', (err) => reject(transportError(`page pump ${binary} could not start: ${err.message}`, err)));
    child.once('close', (code, signal) => {
      if (code === 0) resolve(bytes);
      else reject(transportError(`page pump failed (${signal ?? `exit ${code}`}): ${error ?? 'no message'}`));
    });
  });
  return {
    done,
    kill: () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    },
  };
}
