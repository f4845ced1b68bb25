/**
 * The exec holder (native/exec-holder.c): a `criu` started ahead of time, minus its command line.
 *
 * Why: libuv forks the agent to start a child, and a fork copies the agent's page tables on its event loop's
 * thread — with the ~50 MiB of heap an agent holds, 3–4 ms per `criu` here (a bare `/bin/true` from a Node
 * process: 1 ms with no heap, 3 ms with 50 MiB, 6.5 ms with 150 MiB). On the target of a migration two CRIUs start
 * inside the task's downtime, one after the other: `criu lazy-pages` (post-copy) and `criu restore`. The agent
 * therefore starts a holder for each as soon as the source announces the migration (before the freeze, while the
 * source dumps), with the descriptors CRIU will need already in place; when CRIU is to run, the agent writes its
 * command line into the holder, which execs it — the same pid, session and descriptors, without the fork.
 *
 * Built by scripts/build-native.sh into native/build/exec-holder; where it is missing or does not run here, CRIU
 * is spawned directly as before (`SPOTWATCH_EXEC_HOLDER=off` forces that; `SPOTWATCH_EXEC_HOLDER_BIN` names another
 * binary).
 */
import { findProjectExecutable, probeNativeUsage } from '../../util/find-executable.js';

export const EXEC_HOLDER_NAME = 'exec-holder';

/**
 * The holder binary when it exists, runs here and is not switched off (`SPOTWATCH_EXEC_HOLDER=off`); undefined
 * otherwise.
 */
export async function locateExecHolder(env: NodeJS.ProcessEnv = process.env): Promise<string | undefined> {
  if (env.SPOTWATCH_EXEC_HOLDER === 'off') return undefined;
  const binary = await findProjectExecutable(EXEC_HOLDER_NAME, env.SPOTWATCH_EXEC_HOLDER_BIN);
  return binary !== undefined && (await probeNativeUsage(binary, 'error usage: exec-holder')) ? binary : undefined;
}

/** The holder's command line: the file to execute, then its arguments, each NUL-terminated. */
export function holderCommandLine(file: string, args: readonly string[]): Buffer {
  for (const a of [file, ...args]) if (a.includes('\0')) throw new RangeError(`a command-line argument holds a NUL byte: ${JSON.stringify(a)}`);
  return Buffer.from([file, ...args].map((a) => `${a}\0`).join(''), 'utf8');
}
