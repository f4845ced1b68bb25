import type { PayloadParser } from '../../src/provider.js';
import { parseEventBridge } from './parse-eventbridge.js';
import { parseInstanceAction, parseRebalance, parseScheduledEvents, parseTargetLifecycle } from './parse-imds.js';

/** `spotwatch parse` sources for AWS: the IMDS documents a node polls, and one EventBridge event. */
export const awsParsers: Record<string, PayloadParser> = {
  'aws-instance-action': parseInstanceAction,
  'aws-rebalance': parseRebalance,
  'aws-scheduled-events': parseScheduledEvents,
  'aws-target-lifecycle': parseTargetLifecycle,
  eventbridge: parseEventBridge,
};
