import { execFileSync } from 'node:child_process';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

/**
 * Builds one of the project's native programs (native/NAME.c) with scripts/build-native.sh into `outDir`, freshly,
 * as an install would: the tests run the binary they built, not whatever native/build/ holds. Returns its path.
 */
export function buildNative(name: string, outDir: string): string {
  return execFileSync('bash', [join(ROOT, 'scripts/build-native.sh'), name], { encoding: 'utf8', env: { ...process.env, SPOTWATCH_NATIVE_OUT: outDir } })
    .trim()
    .split('\n')
    .at(-1)!;
}
