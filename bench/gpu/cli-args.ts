/** `--key value` / `--flag` arguments of the GPU bench's node scripts (run.sh passes them; no validation library on the GPU box). */
export type Args = Record<string, string>;

export function parseArgs(argv: string[]): Args {
  const a: Args = {};
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i] as string;
    if (!k.startsWith('--')) continue;
    const v = argv[i + 1];
    if (v === undefined || v.startsWith('--')) a[k.slice(2)] = 'true';
    else {
      a[k.slice(2)] = v;
      i++;
    }
  }
  return a;
}

export function need(a: Args, k: string): string {
  const v = a[k];
  if (v === undefined) throw new Error(`missing --${k}`);
  return v;
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
