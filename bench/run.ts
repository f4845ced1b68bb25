/**
 * `npm run bench -- <name> [options]`: runs one benchmark from bench/. Each prints a summary table and ends
 * with one line of JSON (also written to bench/results/<name>.json).
 */
const BENCHES: Record<string, () => Promise<{ run(argv: string[]): Promise<void> }>> = {
  detect: () => import('./detect.js'),
  migrate: () => import('./migrate.js'),
};

const [name, ...rest] = process.argv.slice(2);
const load = name ? BENCHES[name] : undefined;
if (!load) {
  process.stderr.write(`usage: npm run bench -- <${Object.keys(BENCHES).join('|')}> [options]\n`);
  process.exit(2);
}
load()
  .then((bench) => bench.run(rest))
  .then(
    () => process.exit(0),
    (err: unknown) => {
      process.stderr.write(`bench ${name}: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      process.exit(1);
    },
  );
