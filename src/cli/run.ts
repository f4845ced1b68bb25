import { main } from './main.js';

// The process entry point (bin/spotwatch.js runs the compiled copy; tests run this file through tsx).
// Exit explicitly: a command is done when main resolves, even if a client library keeps a timer alive.
main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`spotwatch: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  },
);
