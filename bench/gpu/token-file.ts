import { readFile } from 'node:fs/promises';

/** One line of a token stream file, as the GPU bench's tasks write them. */
export interface TokenLine {
  i: number;
  /** The token's identity: every field but the index and the wall clock (decoder: token + logit; toy: token). */
  key: string;
  /** Wall clock in ms (decoder lines only). */
  ts: number | undefined;
}

/** Reads a token file: decoder lines are "index token logit wallclock", toy LLM lines "index token". Missing: none. */
export async function readTokens(path: string): Promise<TokenLine[]> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch {
    return [];
  }
  const out: TokenLine[] = [];
  for (const line of text.split('\n')) {
    if (!/^\d+ /.test(line)) continue;
    const f = line.trim().split(' ');
    out.push({ i: Number(f[0]), key: f.length >= 4 ? `${f[1]} ${f[2]}` : f.slice(1).join(' '), ts: f.length >= 4 ? Number(f[3]) * 1000 : undefined });
  }
  return out;
}

/** How a token stream compares with the reference: every token there, in order, and each one the same. */
export function compareTokens(got: TokenLine[], ref: TokenLine[]): Record<string, unknown> {
  const contiguous = got.every((t, i) => t.i === i);
  const same = got.length === ref.length && got.every((t, i) => t.key === ref[i]?.key);
  const out: Record<string, unknown> = { tokens: got.length, referenceTokens: ref.length, tokensContiguous: contiguous, tokensMatch: contiguous && same };
  if (!same) {
    const k = got.findIndex((t, i) => t.key !== ref[i]?.key);
    out.firstMismatch = { index: k, got: got[k], ref: ref[k] };
  }
  return out;
}
