import { execFileSync, spawnSync } from 'node:child_process';
import { appendFileSync, existsSync, mkdtempSync, readFileSync, readlinkSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../../deploy/tools/helm.js';
import { CONFIG_OPTIONS } from '../../src/config.js';
import { K8S_OPTIONS } from '../../src/k8s/options.js';
import { WEBHOOK_OPTIONS } from '../../src/webhook/webhook-config.js';

/** deploy/systemd: the units (parsed, and verified by systemd-analyze where it exists), env files, install.sh. */

const SYSTEMD = join(REPO_ROOT, 'deploy/systemd');

/** Active `Key=value` lines of a unit file, by section. */
function parseUnit(text: string): Record<string, [string, string][]> {
  const out: Record<string, [string, string][]> = {};
  let section = '';
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#') || line.startsWith(';')) continue;
    const s = /^\[(.+)\]$/.exec(line);
    if (s) {
      section = s[1]!;
      out[section] = [];
      continue;
    }
    const kv = /^([A-Za-z]+)=(.*)$/.exec(line);
    if (!kv) throw new Error(`not a unit line: ${line}`);
    out[section]!.push([kv[1]!, kv[2]!]);
  }
  return out;
}

const agentUnit = readFileSync(join(SYSTEMD, 'spotwatch-agent.service'), 'utf8');
const agent = parseUnit(agentUnit);
const service = Object.fromEntries(agent.Service!);

/** Hardening that CRIU cannot live with (docs/deploy.md says why for each). */
const INCOMPATIBLE = [
  'User',
  'NoNewPrivileges',
  'CapabilityBoundingSet',
  'SystemCallFilter',
  'MemoryDenyWriteExecute',
  'ProtectSystem',
  'ProtectHome',
  'PrivateTmp',
  'PrivateDevices',
  'PrivateNetwork',
  'RestrictAddressFamilies',
  'ProtectKernelTunables',
  'ProtectControlGroups',
  'ProtectHostname',
  'PrivateIPC',
  'PrivateUsers',
  'RestrictNamespaces',
  'LockPersonality',
  'RestrictRealtime',
  'ProtectProc',
  'ProcSubset',
];

describe('spotwatch-agent.service', () => {
  it('runs the agent from the environment file and always restarts it', () => {
    expect(service).toMatchObject({
      Type: 'simple',
      EnvironmentFile: '/etc/spotwatch/agent.env',
      ExecStart: '/usr/local/bin/spotwatch agent',
      Restart: 'always',
      KillMode: 'process',
      StateDirectory: 'spotwatch',
      LimitMEMLOCK: 'infinity',
    });
    expect(Object.fromEntries(agent.Unit!).StartLimitIntervalSec).toBe('0');
    expect(Object.fromEntries(agent.Install!).WantedBy).toBe('multi-user.target');
    // The state directory is where the spool and images live by default.
    expect(CONFIG_OPTIONS.spoolPath.default.startsWith(`/var/lib/${service.StateDirectory}/`)).toBe(true);
    expect(CONFIG_OPTIONS.imageDir.default.startsWith(`/var/lib/${service.StateDirectory}/`)).toBe(true);
  });

  it('enables only hardening CRIU tolerates, and says why each other option is off', () => {
    expect(service).toMatchObject({ ProtectKernelModules: 'yes', ProtectKernelLogs: 'yes', ProtectClock: 'yes', RestrictSUIDSGID: 'yes' });
    const docs = readFileSync(join(REPO_ROOT, 'docs/deploy.md'), 'utf8');
    for (const key of INCOMPATIBLE) {
      expect(service[key], key).toBeUndefined();
      expect(agentUnit, `${key} explained in the unit`).toMatch(new RegExp(`^# .*\\b${key}=`, 'm'));
      expect(docs, `${key} explained in docs/deploy.md`).toContain(`${key}=`);
    }
  });
});

describe('spotwatch-webhook.service', () => {
  it('runs the webhook unprivileged and sandboxed', () => {
    const w = Object.fromEntries(parseUnit(readFileSync(join(SYSTEMD, 'spotwatch-webhook.service'), 'utf8')).Service!);
    expect(w).toMatchObject({
      EnvironmentFile: '/etc/spotwatch/webhook.env',
      ExecStart: '/usr/local/bin/spotwatch webhook',
      Restart: 'always',
      DynamicUser: 'yes',
      NoNewPrivileges: 'yes',
      CapabilityBoundingSet: '',
      ProtectSystem: 'strict',
    });
    // V8's JIT needs writable+executable memory.
    expect(w.MemoryDenyWriteExecute).toBeUndefined();
  });
});

const analyze = spawnSync('systemd-analyze', ['--version']).status === 0;
describe.skipIf(!analyze)('systemd-analyze', () => {
  let dir: string | undefined;
  afterEach(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('verifies both units, and rates the webhook sandbox OK', () => {
    dir = mkdtempSync(join(tmpdir(), 'spotwatch-units-'));
    // The binary and env file do not exist here: point ExecStart at /bin/true and make the env file optional.
    for (const name of ['spotwatch-agent.service', 'spotwatch-webhook.service']) {
      const text = readFileSync(join(SYSTEMD, name), 'utf8').replace('EnvironmentFile=/', 'EnvironmentFile=-/').replace('/usr/local/bin/spotwatch', '/bin/true');
      writeFileSync(join(dir, name), text);
    }
    const verify = spawnSync('systemd-analyze', ['verify', join(dir, 'spotwatch-agent.service'), join(dir, 'spotwatch-webhook.service')], { encoding: 'utf8' });
    expect(verify.stderr.split('\n').filter((l) => l.includes('spotwatch-'))).toEqual([]);
    expect(verify.status).toBe(0);
    const security = spawnSync('systemd-analyze', ['security', '--offline=true', join(dir, 'spotwatch-webhook.service')], { encoding: 'utf8' });
    if (security.status === 0) {
      const score = Number(/exposure level for spotwatch-webhook.service: ([\d.]+)/.exec(security.stdout)?.[1]);
      expect(score).toBeLessThan(2);
    }
  });
});

describe('environment files', () => {
  const lines = (file: string) =>
    readFileSync(join(SYSTEMD, file), 'utf8')
      .split('\n')
      .map((l) => /^#?([A-Z][A-Z0-9_]*)=/.exec(l)?.[1])
      .filter((n): n is string => n !== undefined);

  it('agent.env.example names every agent setting (and nothing else)', () => {
    const names = lines('agent.env.example');
    const want = [...Object.values(CONFIG_OPTIONS), ...Object.values(K8S_OPTIONS)].map((o) => o.env[0]);
    expect([...names].sort()).toEqual([...want].sort());
  });

  it('webhook.env.example names every webhook setting (and nothing else)', () => {
    const names = lines('webhook.env.example');
    expect([...names].sort()).toEqual(Object.values(WEBHOOK_OPTIONS).map((o) => o.env[0]).sort());
  });
});

describe('install.sh', () => {
  let root: string | undefined;
  afterEach(() => {
    if (root) rmSync(root, { recursive: true, force: true });
  });
  const install = (...args: string[]) => spawnSync('bash', [join(SYSTEMD, 'install.sh'), '--root', root!, '--skip-app', ...args], { encoding: 'utf8' });

  it('is valid bash and explains itself', () => {
    execFileSync('bash', ['-n', join(SYSTEMD, 'install.sh')]);
    const help = execFileSync('bash', [join(SYSTEMD, 'install.sh'), '--help'], { encoding: 'utf8' });
    for (const opt of ['--prefix', '--root', '--redis-url', '--cluster-token', '--webhook', '--no-criu', '--no-start']) expect(help).toContain(opt);
  });

  it('puts the CLI, the units and a private config in place, and keeps the config on a second run', () => {
    root = mkdtempSync(join(tmpdir(), 'spotwatch-root-'));
    let r = install('--redis-url', 'redis://10.0.0.5:6379', '--provider', 'aws', '--webhook');
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain('no SPOTWATCH_CLUSTER_TOKEN');
    expect(readlinkSync(join(root, 'usr/local/bin/spotwatch'))).toBe('/opt/spotwatch/bin/spotwatch.js');
    expect(readFileSync(join(root, 'etc/systemd/system/spotwatch-agent.service'), 'utf8')).toBe(agentUnit);
    expect(existsSync(join(root, 'etc/systemd/system/spotwatch-webhook.service'))).toBe(true);
    const envFile = join(root, 'etc/spotwatch/agent.env');
    expect(statSync(envFile).mode & 0o777).toBe(0o600);
    expect(statSync(join(root, 'etc/spotwatch/webhook.env')).mode & 0o777).toBe(0o600);
    let env = readFileSync(envFile, 'utf8');
    expect(env).toMatch(/^SPOTWATCH_REDIS_URL=redis:\/\/10\.0\.0\.5:6379$/m);
    expect(env).toMatch(/^SPOTWATCH_PROVIDER=aws$/m);
    expect(env.match(/^SPOTWATCH_REDIS_URL=/gm)).toHaveLength(1);

    appendFileSync(envFile, 'SPOTWATCH_POLL_INTERVAL_MS=250\n'); // an operator's edit
    r = install('--cluster-token', 'a-token-of-20-chars!');
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain('kept');
    expect(r.stdout).not.toContain('no SPOTWATCH_CLUSTER_TOKEN');
    env = readFileSync(envFile, 'utf8');
    expect(env).toMatch(/^SPOTWATCH_POLL_INTERVAL_MS=250$/m);
    expect(env).toMatch(/^SPOTWATCH_CLUSTER_TOKEN=a-token-of-20-chars!$/m);
    expect(env).toMatch(/^SPOTWATCH_REDIS_URL=redis:\/\/10\.0\.0\.5:6379$/m);
    expect(statSync(envFile).mode & 0o777).toBe(0o600);
  });

  it('refuses bad options before touching anything', () => {
    root = mkdtempSync(join(tmpdir(), 'spotwatch-root-'));
    for (const [args, message] of [
      [['--redis-url', 'http://x'], /redis:\/\/ or rediss:\/\//],
      [['--cluster-token', 'short'], /at least 16 characters/],
      [['--provider', 'oracle'], /aws, gcp, azure or auto/],
      [['--frobnicate'], /unknown option/],
    ] as const) {
      const r = install(...args);
      expect(r.status).not.toBe(0);
      expect(r.stderr).toMatch(message);
    }
    expect(existsSync(join(root, 'etc'))).toBe(false);
  });

  it('stages the application from the files the build needs', () => {
    // install.sh builds from a tar of these paths; each must exist in the source tree.
    const script = readFileSync(join(SYSTEMD, 'install.sh'), 'utf8');
    const paths = /tar cf - ([^)]*?) 2>/.exec(script)![1]!.split(/\s+/);
    for (const p of paths) expect(existsSync(join(REPO_ROOT, p)), p).toBe(true);
  });
});
