import { createHash } from 'node:crypto';
import { z } from 'zod';

/**
 * The normalized Notice: one shape for every cloud and every source (see shared/ARCHITECTURE.md).
 */
export const PROVIDERS = ['aws', 'gcp', 'azure'] as const;
export type ProviderName = (typeof PROVIDERS)[number];

export const NOTICE_KINDS = ['interruption', 'rebalance', 'maintenance', 'cancelled'] as const;
export type NoticeKind = (typeof NOTICE_KINDS)[number];

export const NOTICE_ACTIONS = ['terminate', 'stop', 'hibernate', 'reboot', 'redeploy', 'freeze', 'migrate', 'none'] as const;
export type NoticeAction = (typeof NOTICE_ACTIONS)[number];

export const NOTICE_SOURCES = ['imds', 'eventbridge', 'sns', 'pubsub', 'eventgrid', 'simulator'] as const;
export type NoticeSource = (typeof NOTICE_SOURCES)[number];

export const noticeSchema = z
  .object({
    id: z.string().min(1),
    provider: z.enum(PROVIDERS),
    kind: z.enum(NOTICE_KINDS),
    action: z.enum(NOTICE_ACTIONS),
    instanceId: z.string().min(1),
    deadline: z.iso.datetime().optional(),
    detectedAt: z.iso.datetime(),
    source: z.enum(NOTICE_SOURCES),
    eventId: z.string().min(1).optional(),
  })
  .strict();

export type Notice = z.infer<typeof noticeSchema>;

/** What a parser knows about an event; `makeNotice` turns it into a Notice with its deterministic id. */
export interface NoticeFacts {
  provider: ProviderName;
  kind: NoticeKind;
  action: NoticeAction;
  instanceId: string;
  deadline?: Date | undefined;
  detectedAt: Date;
  source: NoticeSource;
  eventId?: string | undefined;
  /**
   * What makes this real-world event unique, when it is not simply the event id or the deadline.
   * Providers set it when two sources of the same event share neither (see `noticeIdentity`).
   */
  identity?: string | undefined;
}

/**
 * The part of a notice that identifies the real-world event. The same event seen through IMDS and
 * through an event bridge, or seen again after a restart, must produce the same string.
 *
 * Default rule: provider, instance, kind, action, and the cloud's event id or else the deadline.
 * `identity`, when a provider sets it, replaces the event id / deadline part.
 */
export function noticeIdentity(facts: NoticeFacts): string {
  const discriminator = facts.identity ?? facts.eventId ?? (facts.deadline ? facts.deadline.toISOString() : '-');
  return [facts.provider, facts.instanceId, facts.kind, facts.action, discriminator].join('|');
}

/** Deterministic notice id: `<provider>-<first 24 hex chars of sha256(identity)>`. Safe as a BullMQ job id. */
export function noticeId(facts: NoticeFacts): string {
  const hash = createHash('sha256').update(noticeIdentity(facts)).digest('hex').slice(0, 24);
  return `${facts.provider}-${hash}`;
}

export function makeNotice(facts: NoticeFacts): Notice {
  // Keys in the documented order, so printed notices read the same everywhere.
  return {
    id: noticeId(facts),
    provider: facts.provider,
    kind: facts.kind,
    action: facts.action,
    instanceId: facts.instanceId,
    ...(facts.deadline ? { deadline: facts.deadline.toISOString() } : {}),
    detectedAt: facts.detectedAt.toISOString(),
    source: facts.source,
    ...(facts.eventId ? { eventId: facts.eventId } : {}),
  };
}

/** Milliseconds left before the notice's deadline, or undefined when the cloud gave none. */
export function msUntilDeadline(notice: Notice, now: Date = new Date()): number | undefined {
  return notice.deadline ? Date.parse(notice.deadline) - now.getTime() : undefined;
}
