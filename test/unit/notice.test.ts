import { describe, expect, it } from 'vitest';
import { makeNotice, noticeSchema, type NoticeFacts } from '../../src/notice.js';

const base: NoticeFacts = {
  provider: 'aws',
  kind: 'interruption',
  action: 'terminate',
  instanceId: 'i-0123456789abcdef0',
  deadline: new Date('2026-01-01T00:02:00Z'),
  detectedAt: new Date('2026-01-01T00:00:00Z'),
  source: 'imds',
};

describe('notice ids', () => {
  it('are the same for the same event whenever and wherever it is seen', () => {
    const a = makeNotice(base);
    const b = makeNotice({ ...base, detectedAt: new Date('2026-01-01T00:00:05Z'), source: 'eventbridge' });
    expect(a.id).toBe(b.id);
    expect(a.id).toMatch(/^aws-[0-9a-f]{24}$/);
  });

  it('differ when instance, kind, action, event id or deadline differ', () => {
    const ids = new Set([
      makeNotice(base).id,
      makeNotice({ ...base, instanceId: 'i-0fedcba9876543210' }).id,
      makeNotice({ ...base, kind: 'maintenance' }).id,
      makeNotice({ ...base, action: 'stop' }).id,
      makeNotice({ ...base, deadline: new Date('2026-01-01T00:03:00Z') }).id,
      makeNotice({ ...base, eventId: 'evt-1' }).id,
      makeNotice({ ...base, provider: 'gcp' }).id,
    ]);
    expect(ids.size).toBe(7);
  });

  it('use the provider identity instead of the deadline when one is given', () => {
    const imds = makeNotice({ ...base, identity: 'interruption-episode' });
    const bridge = makeNotice({ ...base, identity: 'interruption-episode', deadline: new Date('2026-01-01T00:02:01Z'), eventId: 'e-1' });
    expect(imds.id).toBe(bridge.id);
  });

  it('produce notices that satisfy the schema', () => {
    expect(noticeSchema.parse(makeNotice({ ...base, eventId: 'x' }))).toBeTruthy();
    expect(() => noticeSchema.parse({ ...makeNotice(base), extra: 1 })).toThrow();
  });
});
