import { expect } from 'vitest';

/**
 * A token stream written by two copies of one task (one of them run from a checkpoint the other had already gone
 * past) may repeat lines but must not lose any: every line is the uninterrupted run's (`reference`), and the token
 * indices (`N value` lines) have no gap.
 */
export function expectRepeatsButNoGap(got: readonly string[], reference: readonly string[]): void {
  for (const line of got) expect(reference).toContain(line);
  const indices = [...new Set(got.map((l) => Number(l.split(' ')[0])))].sort((a, b) => a - b);
  expect(indices).toEqual(indices.map((_, i) => indices[0]! + i));
}
