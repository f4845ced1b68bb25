/**
 * The task-control hook (src/engines/task-control-hook.ts) against a real HTTP server standing in for the task's
 * control endpoints: what it sends, when it calls resume (rollback on the source, after the restore on the target),
 * that it returns only once the task's end of the connection is closed (CRIU cannot dump an open one), and how it
 * fails: a non-2xx answer, no answer in time, a URL that is not the task's http endpoint.
 */
import { createServer } from 'node:http';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { HookContext } from '../../src/engines/checkpoint-engine.js';
import { TaskControlError, TaskControlHook, postControl } from '../../src/engines/task-control-hook.js';
import { TaskStageError, stageTask } from '../../src/migration/task-stage.js';

interface Call {
  path: string;
  body: Record<string, unknown>;
}

let server: Server | undefined;
afterEach(async () => {
  server?.closeAllConnections();
  await new Promise<void>((r) => (server ? server.close(() => r()) : r()));
  server = undefined;
});

/**
 * A task's control server; `answer` decides the status per path (default 200) and may act on the call first (write
 * staged files). Tracks open connections.
 */
async function taskServer(answer: (path: string, body: Record<string, unknown>) => number | 'hang' = () => 200): Promise<{ base: string; calls: Call[]; open: Set<Socket> }> {
  const calls: Call[] = [];
  const open = new Set<Socket>();
  server = createServer((req: IncomingMessage, res: ServerResponse) => {
    let text = '';
    req.setEncoding('utf8').on('data', (d: string) => (text += d));
    req.on('end', () => {
      const body = JSON.parse(text || '{}') as Record<string, unknown>;
      calls.push({ path: req.url ?? '', body });
      const status = answer(req.url ?? '', body);
      if (status === 'hang') return;
      res.statusCode = status;
      res.setHeader('connection', 'close');
      res.end(status === 200 ? '{"ok":true}' : 'not now');
    });
  });
  server.on('connection', (s: Socket) => {
    open.add(s);
    s.on('close', () => open.delete(s));
  });
  await new Promise<void>((r) => server!.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  return { base: `http://127.0.0.1:${port}`, calls, open };
}

function ctx(base: string, msLeft = 60_000): HookContext {
  return {
    task: { kind: 'process', pid: 1234, id: 't1', control: { prepareUrl: `${base}/prepare`, resumeUrl: `${base}/resume` } },
    migrationId: 'm-1',
    deadline: Date.now() + msLeft,
    signal: new AbortController().signal,
    pids: [1234],
  };
}

describe('task-control hook', () => {
  const hook = new TaskControlHook();

  it('applies only to tasks with control endpoints', async () => {
    expect(await hook.appliesTo({ kind: 'process', pid: 1 })).toBe(false);
    expect(await hook.appliesTo({ kind: 'process', pid: 1, control: { resumeUrl: 'http://127.0.0.1:1/r' } })).toBe(true);
  });

  it('prepare: POSTs the event, the migration and the deadline, and returns with the connection closed', async () => {
    const t = await taskServer();
    const c = ctx(t.base);
    await hook.beforeCheckpoint(c);
    expect(t.calls).toEqual([{ path: '/prepare', body: { event: 'prepare', migrationId: 'm-1', deadline: new Date(c.deadline).toISOString() } }]);
    expect(t.open.size).toBe(0);
  });

  it('resumes on the source when the task is still running after the checkpoint, not when it is gone', async () => {
    const t = await taskServer();
    await hook.afterCheckpoint({ ...ctx(t.base), ok: false, taskState: 'running' });
    await hook.afterCheckpoint({ ...ctx(t.base), ok: true, taskState: 'gone' });
    expect(t.calls.map((x) => `${x.path} ${String(x.body.event)}`)).toEqual(['/resume resume']);
  });

  it('resumes after the restore', async () => {
    const t = await taskServer();
    await hook.afterRestore(ctx(t.base));
    expect(t.calls.map((x) => x.path)).toEqual(['/resume']);
  });

  it('a prepare the task refuses fails with the status and its text, and the task is told to resume', async () => {
    const t = await taskServer((p) => (p === '/prepare' ? 503 : 200));
    const err = await hook.beforeCheckpoint(ctx(t.base)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TaskControlError);
    expect((err as TaskControlError).code).toBe('TASK_CONTROL_FAILED');
    expect((err as Error).message).toMatch(/answered prepare at http:\/\/127\.0\.0\.1:\d+\/prepare with HTTP 503: not now/);
    expect(t.calls.map((x) => x.path)).toEqual(['/prepare', '/resume']);
  });

  it('a task that does not answer in time fails the call within its share of the time left', async () => {
    const t = await taskServer(() => 'hang');
    const started = Date.now();
    // 4 s left: a quarter of it, but at least 1 s.
    await expect(hook.afterRestore(ctx(t.base, 4000))).rejects.toThrow(/did not answer within 1000 ms/);
    expect(Date.now() - started).toBeLessThan(2500);
  });

  it('only plain http endpoints, and a dead endpoint says so', async () => {
    await expect(postControl('https://127.0.0.1:1/prepare', {}, 1000)).rejects.toThrow(/plain http on the task's node/);
    await expect(postControl('not a url', {}, 1000)).rejects.toThrow(/is not a URL/);
    await expect(postControl('http://127.0.0.1:1/prepare', {}, 1000)).rejects.toThrow(/ECONNREFUSED/);
  });
});

describe('staging (pre-copy with the task\'s help)', () => {
  it('prepare and resume name the staged directory when there is one', async () => {
    const t = await taskServer();
    const c = { ...ctx(t.base), stagedDirectory: '/var/lib/spotwatch/images/m-1.staged' };
    await new TaskControlHook().beforeCheckpoint(c);
    await new TaskControlHook().afterRestore(c);
    expect(t.calls.map((x) => [x.path, x.body.stagedDirectory])).toEqual([
      ['/prepare', '/var/lib/spotwatch/images/m-1.staged'],
      ['/resume', '/var/lib/spotwatch/images/m-1.staged'],
    ]);
  });

  it('stageTask: the task writes into the directory it is given (emptied first); files and bytes are counted', async () => {
    const dir = join(mkdtempSync(join(tmpdir(), 'sw-stage-')), 'm-1.stage');
    mkdirSync(dir);
    writeFileSync(join(dir, 'left-over.bin'), 'from an earlier attempt');
    const t = await taskServer((_path, body) => {
      const d = String(body.directory);
      writeFileSync(join(d, 'kv-prefix.bin'), Buffer.alloc(1_000_000, 7));
      writeFileSync(join(d, 'kv-prefix.json'), '{"tokens":32768}');
      return 200;
    });
    const deadline = Date.now() + 60_000;
    const staged = await stageTask(`${t.base}/stage`, 'm-1', dir, deadline, 5000);
    expect(staged).toMatchObject({ directory: dir, files: 2, bytes: 1_000_000 + 16 });
    expect(t.calls).toEqual([{ path: '/stage', body: { event: 'stage', migrationId: 'm-1', deadline: new Date(deadline).toISOString(), directory: dir } }]);
    expect(t.open.size).toBe(0);
  });

  it('stageTask refuses what it cannot send (a subdirectory) and a task that says no', async () => {
    const dir = join(mkdtempSync(join(tmpdir(), 'sw-stage-')), 'm-2.stage');
    const t = await taskServer((path, body) => {
      if (path === '/stage') mkdirSync(join(String(body.directory), 'layers'));
      return path === '/stage' ? 200 : 500;
    });
    const nested = await stageTask(`${t.base}/stage`, 'm-2', dir, Date.now() + 60_000, 5000).catch((e: unknown) => e);
    expect(nested).toBeInstanceOf(TaskStageError);
    expect((nested as TaskStageError).code).toBe('TASK_STAGE_FAILED');
    expect((nested as Error).message).toMatch(/staged "layers" .*only plain files/);
    await expect(stageTask(`${t.base}/nope`, 'm-2', dir, Date.now() + 60_000, 5000)).rejects.toThrow(/answered stage at .*\/nope with HTTP 500/);
  });
});
