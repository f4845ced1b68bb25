import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { REPO_ROOT } from '../../deploy/tools/helm.js';

/**
 * deploy/Dockerfile, checked statically (no Docker engine runs on the development machines or in CI): its
 * stages, base images, that every file it copies exists and passes its .dockerignore, the CRIU it installs,
 * the user it runs as and the entry point.
 */

interface Instruction {
  op: string;
  args: string;
  line: number;
}

function parseDockerfile(text: string): Instruction[] {
  const out: Instruction[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const start = i;
    let line = lines[i]!;
    if (/^\s*(#|$)/.test(line)) continue;
    while (line.endsWith('\\') && i + 1 < lines.length) line = `${line.slice(0, -1)} ${lines[++i]!.trim()}`;
    const m = /^\s*([A-Za-z]+)\s+(.*)$/.exec(line);
    if (!m) throw new Error(`Dockerfile line ${start + 1}: not an instruction: ${line}`);
    out.push({ op: m[1]!.toUpperCase(), args: m[2]!.trim(), line: start + 1 });
  }
  return out;
}

/** .dockerignore semantics: patterns in order, the last one matching a path decides; `!` re-includes. */
function dockerignore(text: string): (path: string) => boolean {
  const rules = text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'))
    .map((l) => {
      const negate = l.startsWith('!');
      const pattern = negate ? l.slice(1) : l;
      const re = pattern
        .split('/')
        .map((seg) => (seg === '**' ? '.*' : seg.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '[^/]*').replace(/\?/g, '[^/]')))
        .join('/')
        .replace(/\.\*\//g, '(?:.*/)?');
      return { negate, re: new RegExp(`^${re}(?:/.*)?$`) };
    });
  return (path) => {
    let excluded = false;
    for (const r of rules) if (r.re.test(path)) excluded = !r.negate;
    return excluded;
  };
}

const dockerfile = readFileSync(join(REPO_ROOT, 'deploy/Dockerfile'), 'utf8');
const instructions = parseDockerfile(dockerfile);
const ignored = dockerignore(readFileSync(join(REPO_ROOT, 'deploy/Dockerfile.dockerignore'), 'utf8'));
const args = Object.fromEntries(
  instructions.filter((i) => i.op === 'ARG' && i.args.includes('=')).map((i) => i.args.split('=', 2) as [string, string]),
);
const expand = (s: string) => s.replace(/\$\{(\w+)\}/g, (_, k: string) => args[k] ?? `\${${k}}`);

describe('deploy/Dockerfile', () => {
  const froms = instructions.filter((i) => i.op === 'FROM').map((i) => /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(i.args)!);
  const stages = froms.map((m) => m[2]);

  it('is multi-stage on Node.js 20 slim (Debian trixie)', () => {
    expect(stages).toEqual(['build', 'runtime']);
    for (const m of froms) expect(expand(m[1]!)).toBe('node:20-trixie-slim');
    const engines = (JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { engines: { node: string } }).engines.node;
    expect(engines).toBe('>=20');
  });

  it('copies only files that exist and that its .dockerignore lets into the context', () => {
    const copies = instructions.filter((i) => i.op === 'COPY' && !i.args.startsWith('--from'));
    expect(copies.length).toBeGreaterThan(5);
    for (const c of copies) {
      const parts = c.args.split(/\s+/).filter((p) => !p.startsWith('--'));
      for (const src of parts.slice(0, -1)) {
        expect(existsSync(join(REPO_ROOT, src)), `line ${c.line}: ${src} exists`).toBe(true);
        const files = statSync(join(REPO_ROOT, src)).isDirectory()
          ? execFileSync('git', ['ls-files', src], { cwd: REPO_ROOT, encoding: 'utf8' }).split('\n').filter(Boolean)
          : [src];
        expect(files.length, `line ${c.line}: ${src} has tracked files`).toBeGreaterThan(0);
        // Only benchmark results are meant to stay out.
        expect(files.filter((f) => ignored(f) && !f.startsWith('bench/results/')), `line ${c.line}: excluded by the .dockerignore`).toEqual([]);
      }
    }
    // The context never carries dependencies, builds, secrets or git history.
    for (const p of ['node_modules/x/index.js', 'dist/src/cli/run.js', '.criu/bin/criu', '.git/config', 'native/build/cuda-checkpoint-helper', '.env'])
      expect(ignored(p), p).toBe(true);
  });

  it('builds with the lockfile, compiles, and keeps only production dependencies', () => {
    const build = dockerfile.slice(dockerfile.indexOf('AS build'), dockerfile.indexOf('AS runtime'));
    expect(build).toMatch(/npm ci --ignore-scripts/);
    expect(build).toMatch(/npm run build/);
    expect(build).toMatch(/npm prune --omit=dev/);
    const scripts = (JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string> }).scripts;
    expect(scripts.build).toBe('tsc -p tsconfig.build.json');
    // Every file tsconfig.build.json compiles is copied into the build stage.
    const tsconfig = parse(readFileSync(join(REPO_ROOT, 'tsconfig.build.json'), 'utf8')) as { include: string[] };
    for (const dir of tsconfig.include) expect(build, dir).toContain(`COPY ${dir} ./${dir}`);
  });

  it('installs CRIU 4.x from Debian in the runtime stage and points spotwatch at it', () => {
    const runtime = dockerfile.slice(dockerfile.indexOf('AS runtime'));
    expect(runtime).toMatch(/ARG CRIU_SUITE=trixie/);
    expect(runtime).toMatch(/apt-get install -y --no-install-recommends -t "\$CRIU_SUITE" criu/);
    expect(runtime).toMatch(/criu --version \| grep -E '\^Version: \*\[4-9\]\\\.'/);
    expect(runtime).toMatch(/SPOTWATCH_CRIU=\/usr\/sbin\/criu/);
    const helm = readFileSync(join(REPO_ROOT, 'deploy/helm/spotwatch/templates/agent-daemonset.yaml'), 'utf8');
    expect(helm).toContain('value: /usr/sbin/criu');
  });

  it('runs as the unprivileged node user, through tini, with the CLI as entry point', () => {
    const users = instructions.filter((i) => i.op === 'USER');
    expect(users.at(-1)!.args).toBe('node');
    const entry = JSON.parse(instructions.find((i) => i.op === 'ENTRYPOINT')!.args) as string[];
    expect(entry).toEqual(['/usr/bin/tini', '--', 'node', '/opt/spotwatch/bin/spotwatch.js']);
    expect(JSON.parse(instructions.find((i) => i.op === 'CMD')!.args)).toEqual(['agent']);
    expect(existsSync(join(REPO_ROOT, 'bin/spotwatch.js'))).toBe(true);
    // COPY --from names a stage that exists, and what the runtime copies the build stage produced.
    for (const c of instructions.filter((i) => i.op === 'COPY' && i.args.startsWith('--from'))) {
      expect(stages).toContain(/--from=(\S+)/.exec(c.args)![1]);
    }
  });

  it('has the version the chart deploys', () => {
    const pkg = JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string };
    const chart = parse(readFileSync(join(REPO_ROOT, 'deploy/helm/spotwatch/Chart.yaml'), 'utf8')) as { appVersion: string };
    expect(chart.appVersion).toBe(pkg.version);
  });
});
