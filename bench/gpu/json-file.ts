import { readFile } from 'node:fs/promises';

export type Json = Record<string, unknown>;

/** A JSON file the bench wrote earlier, or undefined when it is missing or unreadable (a step that did not run). */
export async function readJson(path: string): Promise<Json | undefined> {
  try {
    return JSON.parse(await readFile(path, 'utf8')) as Json;
  } catch {
    return undefined;
  }
}
