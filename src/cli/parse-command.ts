import { parseArgs } from 'node:util';
import { PayloadError, describeError } from '../errors.js';
import type { PayloadParser } from '../provider.js';
import { PROVIDER_LIST } from '../../providers/index.js';
import { EXIT, readAll, type CliIo } from './io.js';

/** Payloads larger than this are refused: no metadata document or cloud event comes close. */
export const MAX_PAYLOAD_BYTES = 1024 * 1024;

export const PARSE_HELP = `usage: spotwatch parse --source <source> [--instance-id ID] [--now ISO]

Reads one payload on stdin and prints each resulting Notice as one JSON line.
A payload that carries no notice prints nothing (exit 0); a malformed one exits 2.

sources:
${allParsers()
  .map(([name]) => `  ${name}`)
  .join('\n')}
`;

function allParsers(): [string, PayloadParser][] {
  return PROVIDER_LIST.flatMap((p) => Object.entries(p.parsers));
}

export function findParser(source: string): PayloadParser | undefined {
  return allParsers().find(([name]) => name === source)?.[1];
}

export async function parseCommand(argv: string[], io: CliIo): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        source: { type: 'string' },
        'instance-id': { type: 'string' },
        now: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
    }));
  } catch (err) {
    io.stderr.write(`spotwatch parse: ${describeError(err)}\n`);
    return EXIT.usage;
  }
  if (values.help) {
    io.stdout.write(PARSE_HELP);
    return EXIT.ok;
  }
  if (!values.source) {
    io.stderr.write(`spotwatch parse: --source is required (one of: ${allParsers().map(([n]) => n).join(', ')})\n`);
    return EXIT.usage;
  }
  const parser = findParser(values.source);
  if (!parser) {
    io.stderr.write(`spotwatch parse: unknown source "${values.source}" (one of: ${allParsers().map(([n]) => n).join(', ')})\n`);
    return EXIT.usage;
  }
  let now = new Date();
  if (values.now !== undefined) {
    now = new Date(values.now);
    if (Number.isNaN(now.getTime())) {
      io.stderr.write(`spotwatch parse: --now "${values.now}" is not an ISO-8601 time\n`);
      return EXIT.usage;
    }
  }
  const { text, tooLarge } = await readAll(io.stdin, MAX_PAYLOAD_BYTES);
  if (tooLarge) {
    io.stderr.write(`spotwatch parse: payload is larger than ${MAX_PAYLOAD_BYTES} bytes; no ${values.source} document is that big\n`);
    return EXIT.usage;
  }
  try {
    const notices = parser(text, { now, instanceId: values['instance-id'] });
    for (const notice of notices) io.stdout.write(`${JSON.stringify(notice)}\n`);
    return EXIT.ok;
  } catch (err) {
    if (err instanceof PayloadError) {
      io.stderr.write(`spotwatch parse: malformed ${values.source} payload: ${err.message}\n`);
      return EXIT.usage;
    }
    throw err;
  }
}
