import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { DELETE, edit, parseCli } from '../support/in-process-cli.js';

/**
 * The GCP parsers through the CLI contract: `spotwatch parse --source S` reads one payload on stdin, prints
 * one Notice per line and exits 0, or exits 2 with one stderr line naming what is wrong.
 */

const INSTANCE = '4520031799277581759';
const NOW = '2023-09-16T10:42:40.000Z';

function fixture(name: string): string {
  return readFileSync(new URL(`../fixtures/gcp/${name}`, import.meta.url), 'utf8');
}

const { parse, one, none, malformed } = parseCli({ now: NOW, instanceId: INSTANCE });

function envelope(data: string, extra: Record<string, unknown> = {}): string {
  return JSON.stringify({ message: { data, messageId: '1', ...extra }, subscription: 'projects/p/subscriptions/s' });
}

const b64 = (value: unknown) => Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64');

describe('gcp-preempted', () => {
  it('TRUE is an interruption/terminate with a 30 s deadline from detection', async () => {
    const notice = await one('gcp-preempted', fixture('preempted-true.txt'));
    expect(notice).toMatchObject({
      provider: 'gcp',
      kind: 'interruption',
      action: 'terminate',
      instanceId: INSTANCE,
      source: 'imds',
      detectedAt: NOW,
      deadline: '2023-09-16T10:43:10.000Z',
    });
    expect(notice.id).toMatch(/^gcp-[0-9a-f]{24}$/);
    expect(notice.eventId).toBeUndefined();
  });

  it('tolerates the trailing newline of `curl` output', async () => {
    const notice = await one('gcp-preempted', 'TRUE\n');
    expect(notice.kind).toBe('interruption');
  });

  it('FALSE carries no notice', async () => {
    await none('gcp-preempted', fixture('preempted-false.txt'));
  });

  it('refuses anything but TRUE/FALSE, naming the key', async () => {
    await malformed('gcp-preempted', 'true', 'instance/preempted: expected TRUE or FALSE, got "true"');
    await malformed('gcp-preempted', '<html>proxy error</html>', 'instance/preempted: expected TRUE or FALSE');
    await malformed('gcp-preempted', '', 'instance/preempted: expected TRUE or FALSE, got an empty body');
  });

  it('needs --instance-id, and says so', async () => {
    await malformed('gcp-preempted', 'TRUE', 'pass --instance-id', { instanceId: null });
  });
});

describe('gcp-maintenance-event', () => {
  it('TERMINATE_ON_HOST_MAINTENANCE is maintenance/terminate with a 60 s deadline', async () => {
    const notice = await one('gcp-maintenance-event', fixture('maintenance-event-terminate.txt'));
    expect(notice).toMatchObject({ provider: 'gcp', kind: 'maintenance', action: 'terminate', instanceId: INSTANCE, deadline: '2023-09-16T10:43:40.000Z', source: 'imds' });
  });

  it('the legacy SHUTDOWN_ON_HOST_MAINTENANCE means the same, with its own identity', async () => {
    const legacy = await one('gcp-maintenance-event', fixture('maintenance-event-shutdown-legacy.txt'));
    const current = await one('gcp-maintenance-event', fixture('maintenance-event-terminate.txt'));
    expect(legacy).toMatchObject({ kind: 'maintenance', action: 'terminate', deadline: '2023-09-16T10:43:40.000Z' });
    expect(legacy.id).not.toBe(current.id);
  });

  it('MIGRATE_ON_HOST_MAINTENANCE is maintenance/migrate without a deadline', async () => {
    const notice = await one('gcp-maintenance-event', fixture('maintenance-event-migrate.txt'));
    expect(notice).toMatchObject({ kind: 'maintenance', action: 'migrate', instanceId: INSTANCE });
    expect(notice.deadline).toBeUndefined();
  });

  it('NONE and unknown well-formed values carry no notice', async () => {
    await none('gcp-maintenance-event', fixture('maintenance-event-none.txt'));
    await none('gcp-maintenance-event', 'SOME_FUTURE_MAINTENANCE_KIND');
  });

  it('refuses a malformed value', async () => {
    await malformed('gcp-maintenance-event', '{"maintenance": "TERMINATE"}', 'instance/maintenance-event: expected NONE');
    await malformed('gcp-maintenance-event', 'terminate_on_host_maintenance', 'instance/maintenance-event');
  });
});

describe('pubsub (Cloud Audit Log compute.instances.preempted)', () => {
  it('a push delivery gives the interruption of resource.labels.instance_id, deadline = entry time + 30 s', async () => {
    const notice = await one('pubsub', fixture('pubsub-push-preempted.json'), { instanceId: 'some-other-node' });
    expect(notice).toMatchObject({
      provider: 'gcp',
      kind: 'interruption',
      action: 'terminate',
      instanceId: INSTANCE,
      source: 'pubsub',
      detectedAt: NOW,
      deadline: '2023-09-16T10:43:01.325Z',
      eventId: 'systemevent-1694860946116-60575bf6c0a4b-0d3e1a7b-7bc36a25',
    });
  });

  it('the message_id / publish_time spelling is the same notice', async () => {
    const camel = await one('pubsub', fixture('pubsub-push-preempted.json'));
    const snake = await one('pubsub', fixture('pubsub-push-preempted-snake-case.json'));
    expect(snake).toEqual(camel);
  });

  it('the same preemption seen through metadata and through Pub/Sub is ONE notice id', async () => {
    const viaMetadata = await one('gcp-preempted', 'TRUE');
    const viaPubsub = await one('pubsub', fixture('pubsub-push-preempted.json'));
    expect(viaPubsub.id).toBe(viaMetadata.id);
    expect(viaPubsub.deadline).not.toBe(viaMetadata.deadline);
  });

  it('other audit log entries and non-audit messages carry no notice', async () => {
    await none('pubsub', fixture('pubsub-push-instance-stop.json'));
    await none('pubsub', envelope(b64({ textPayload: 'hello', resource: { type: 'gce_instance' } })));
  });

  it('refuses malformed envelopes, naming the field', async () => {
    await malformed('pubsub', '[]', 'envelope: expected an object, got array');
    await malformed('pubsub', JSON.stringify({ subscription: 's' }), 'message: expected an object');
    await malformed('pubsub', JSON.stringify({ message: { data: b64('{}') } }), 'message.messageId (or message_id): expected a string');
    await malformed('pubsub', envelope('not base64 at all!'), 'message.data: not valid base64');
    await malformed('pubsub', envelope(b64('{"protoPayload": ')), 'message.data (base64-decoded log entry): not valid JSON');
    await malformed('pubsub', envelope(b64([1, 2])), 'message.data: expected an object, got array');
  });

  it('refuses a preemption entry without a usable instance id or time', async () => {
    const entry = JSON.parse(fixture('audit-log-preempted.json')) as unknown;
    const noId = edit(entry, ['resource', 'labels', 'instance_id'], DELETE);
    await malformed('pubsub', envelope(b64(noId)), 'message.data.resource.labels.instance_id: expected a string, got undefined');
    const badId = edit(entry, ['resource', 'labels', 'instance_id'], '../../etc/passwd');
    await malformed('pubsub', envelope(b64(badId)), 'message.data.resource.labels.instance_id: "../../etc/passwd" is not a numeric GCE instance id');
    const badTime = edit(entry, ['timestamp'], 'yesterday');
    await malformed('pubsub', envelope(b64(badTime)), 'message.data.timestamp: "yesterday" is not an RFC 3339 time');
    const badMethod = edit(entry, ['protoPayload', 'methodName'], 42);
    await malformed('pubsub', envelope(b64(badMethod)), 'message.data.protoPayload.methodName: expected a string, got number');
  });

  it('refuses hostile input without crashing', async () => {
    await malformed('pubsub', '{"message": {"data": "' + 'A'.repeat(10) + '"', 'pubsub push envelope: not valid JSON');
    await malformed('pubsub', JSON.stringify({ message: { data: 12, messageId: '1' } }), 'message.data: expected a string, got number');
    const r = await parse('pubsub', 'x'.repeat(1024 * 1024 + 1));
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('larger than');
  });
});
