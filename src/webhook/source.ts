import type { IncomingHttpHeaders } from 'node:http';
import { PayloadError } from '../errors.js';
import type { Notice } from '../notice.js';
import type { PayloadParser } from '../provider.js';
import { findParser } from '../cli/parse-command.js';
import { malformed, WebhookRejection } from './http.js';

/** The routes: `POST /v1/events/<name>`. */
export const SOURCE_NAMES = ['eventbridge', 'sns', 'pubsub', 'eventgrid'] as const;
export type SourceName = (typeof SOURCE_NAMES)[number];

export interface Delivery {
  method: string;
  headers: IncomingHttpHeaders;
  query: URLSearchParams;
  /** When the delivery arrived: the notices' `detectedAt`. */
  now: Date;
  /** Reads the body (size-limited) and decodes it as strict JSON; call after header-level authentication. */
  readJson(): Promise<{ text: string; value: unknown }>;
}

export type SourceResult =
  /** A handshake or other answer that enqueues nothing. */
  | { type: 'reply'; status: number; body?: unknown; headers?: Record<string, string>; handshake?: string }
  /** Notices to store (possibly none: `ignored` says why, for the log line). 2xx only after all are stored. */
  | { type: 'notices'; notices: Notice[]; ignored?: string; detail?: Record<string, unknown> };

export interface EventSource {
  name: SourceName;
  /** Is this source configured? An unconfigured route answers 404. */
  enabled: boolean;
  /** Methods the route answers (POST, and OPTIONS for Event Grid's CloudEvents handshake). */
  methods: readonly string[];
  handle(delivery: Delivery): Promise<SourceResult>;
}

/**
 * The `spotwatch parse` parser of a source: deliveries normalize exactly like `spotwatch parse --source <name>`,
 * so a notice has the same id whichever way it arrives.
 */
export function parserFor(source: string): PayloadParser {
  const parser = findParser(source);
  if (!parser) throw new WebhookRejection(503, 'not_configured', `no "${source}" parser in this build`);
  return parser;
}

/** Runs a parser; a malformed payload becomes a 400 naming the field. */
export function parseWith(source: string, text: string, now: Date): Notice[] {
  try {
    return parserFor(source)(text, { now });
  } catch (err) {
    if (err instanceof PayloadError) throw malformed(`malformed ${source} payload: ${err.message}`);
    throw err;
  }
}

export function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** A short, log-safe rendering of an untrusted string. */
export function short(value: unknown, max = 120): string {
  const s = typeof value === 'string' ? value : JSON.stringify(value) ?? String(value);
  return s.length > max ? `${s.slice(0, max)}…` : s;
}
