import type { PayloadParser } from '../../src/provider.js';

/** `spotwatch parse` sources for AWS (filled in by the parser work). */
export const awsParsers: Record<string, PayloadParser> = {};
