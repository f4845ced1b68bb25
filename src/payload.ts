import { PayloadError } from './errors.js';

/**
 * Small strict readers for untrusted payloads. Each failure throws a PayloadError whose message names the
 * field (as a dotted path) and what was expected, e.g. `detail.instance-id: expected a string, got number`.
 */

export type JsonObject = Record<string, unknown>;

/** Parses JSON text; the error names `what` and the parser's reason. Rejects an empty body. */
export function parseJson(text: string, what: string): unknown {
  if (text.trim() === '') throw new PayloadError(`${what}: empty body, expected JSON`);
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw new PayloadError(`${what}: not valid JSON (${err instanceof Error ? err.message : String(err)})`, { cause: err });
  }
}

function typeName(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'array';
  return typeof value;
}

export function asObject(value: unknown, path: string): JsonObject {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new PayloadError(`${path}: expected an object, got ${typeName(value)}`);
  }
  return value as JsonObject;
}

export function asArray(value: unknown, path: string): unknown[] {
  if (!Array.isArray(value)) throw new PayloadError(`${path}: expected an array, got ${typeName(value)}`);
  return value;
}

export function asString(value: unknown, path: string): string {
  if (typeof value !== 'string') throw new PayloadError(`${path}: expected a string, got ${typeName(value)}`);
  return value;
}

export function asNonEmptyString(value: unknown, path: string): string {
  const s = asString(value, path);
  if (s.trim() === '') throw new PayloadError(`${path}: must not be empty`);
  return s;
}

export function optionalString(value: unknown, path: string): string | undefined {
  return value === undefined || value === null ? undefined : asString(value, path);
}

/** Field `key` of `obj` as a string; the error path is `${path}.${key}`. */
export function field(obj: JsonObject, key: string, path: string): string {
  return asNonEmptyString(obj[key], `${path}.${key}`);
}

/** Parses a timestamp (ISO-8601 or RFC 1123 / RFC 2822 style); the error names the field and value. */
export function asDate(value: unknown, path: string): Date {
  const s = asNonEmptyString(value, path);
  const date = new Date(s);
  if (Number.isNaN(date.getTime())) throw new PayloadError(`${path}: "${truncate(s)}" is not a valid time`);
  return date;
}

export function oneOf<T extends string>(value: unknown, allowed: readonly T[], path: string): T {
  const s = asString(value, path);
  if (!(allowed as readonly string[]).includes(s)) {
    throw new PayloadError(`${path}: "${truncate(s)}" is not one of ${allowed.join(', ')}`);
  }
  return s as T;
}

export function truncate(s: string, max = 60): string {
  return s.length > max ? `${s.slice(0, max)}…` : s;
}
