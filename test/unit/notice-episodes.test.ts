import { describe, expect, it } from 'vitest';
import { awsParsers } from '../../providers/aws/parsers.js';
import { gcpParsers } from '../../providers/gcp/parsers.js';
import { azureParsers } from '../../providers/azure/parsers.js';
import { AWS_EPISODE_GAP_MS, GCP_EPISODE_GAP_MS, episodeNoticeId, episodeRule } from '../../src/notice-episodes.js';
import { noticeSchema } from '../../src/notice.js';
import { readFileSync } from 'node:fs';

const fixture = (path: string) => readFileSync(new URL(`../fixtures/${path}`, import.meta.url), 'utf8');
const ctx = { now: new Date('2026-01-01T00:00:00Z'), instanceId: 'i-0123456789abcdef0' };

describe('episode rules', () => {
  it('apply to the ids that recur across interruptions of one instance', () => {
    expect(episodeRule({ provider: 'aws', kind: 'interruption', action: 'stop' })).toEqual({ gapMs: AWS_EPISODE_GAP_MS });
    expect(episodeRule({ provider: 'aws', kind: 'interruption', action: 'hibernate' })).toEqual({ gapMs: AWS_EPISODE_GAP_MS });
    expect(episodeRule({ provider: 'gcp', kind: 'interruption', action: 'terminate' })).toEqual({ gapMs: GCP_EPISODE_GAP_MS });
    expect(episodeRule({ provider: 'gcp', kind: 'cancelled', action: 'terminate' })).toEqual({ gapMs: GCP_EPISODE_GAP_MS });
  });

  it('leave ids alone that name one event or can never recur', () => {
    expect(episodeRule({ provider: 'aws', kind: 'interruption', action: 'terminate' })).toBeUndefined();
    expect(episodeRule({ provider: 'aws', kind: 'maintenance', action: 'reboot' })).toBeUndefined();
    expect(episodeRule({ provider: 'aws', kind: 'rebalance', action: 'none' })).toBeUndefined();
    expect(episodeRule({ provider: 'gcp', kind: 'maintenance', action: 'terminate' })).toBeUndefined();
    expect(episodeRule({ provider: 'azure', kind: 'interruption', action: 'terminate' })).toBeUndefined();
  });

  it('are wider than one episode spreads and narrower than a stop / start / interrupt cycle', () => {
    // One AWS episode: IMDS `time` vs the warning + 120 s; hibernation starts at once, so up to 120 s apart.
    expect(AWS_EPISODE_GAP_MS).toBeGreaterThan(120_000);
    // A second episode needs a stop, a start, a boot and a new two-minute warning: keep the gap well under that.
    expect(AWS_EPISODE_GAP_MS).toBeLessThanOrEqual(5 * 60_000);
    expect(GCP_EPISODE_GAP_MS).toBeGreaterThan(30_000);
    expect(GCP_EPISODE_GAP_MS).toBeLessThanOrEqual(2 * 60_000);
  });

  it('match what the parsers produce', () => {
    const stop = awsParsers['aws-instance-action']!(fixture('aws/imds-instance-action-stop.json'), ctx)[0]!;
    const terminate = awsParsers['aws-instance-action']!(fixture('aws/imds-instance-action-terminate.json'), ctx)[0]!;
    const preempted = gcpParsers['gcp-preempted']!('TRUE', { now: ctx.now, instanceId: '4520031799277581759' })[0]!;
    const pushed = gcpParsers.pubsub!(fixture('gcp/pubsub-push-preempted.json'), ctx)[0]!;
    const annotation = azureParsers.eventgrid!(fixture('azure/eventgrid-annotation-preempted.json'), ctx)[0]!;
    expect(episodeRule(stop)).toBeDefined();
    expect(episodeRule(terminate)).toBeUndefined();
    expect(episodeRule(preempted)).toBeDefined();
    expect(episodeRule(pushed)).toBeDefined();
    expect(pushed.id).toBe(preempted.id);
    expect(episodeRule(annotation)).toBeUndefined();
  });
});

describe('episode ids', () => {
  it('are the notice id for the first episode and <id>~<n> after it, valid notice ids', () => {
    expect(episodeNoticeId('aws-0123456789abcdef01234567', 1)).toBe('aws-0123456789abcdef01234567');
    expect(episodeNoticeId('aws-0123456789abcdef01234567', 2)).toBe('aws-0123456789abcdef01234567~2');
    const stop = awsParsers['aws-instance-action']!(fixture('aws/imds-instance-action-stop.json'), ctx)[0]!;
    const later = { ...stop, id: episodeNoticeId(stop.id, 3) };
    expect(noticeSchema.parse(later).id).toBe(`${stop.id}~3`);
    // BullMQ refuses custom job ids with ':' (and all-digit ones); `~` is neither.
    expect(later.id).not.toMatch(/:|^\d+$/);
  });
});
