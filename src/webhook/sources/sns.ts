import type { Notice } from '../../notice.js';
import { singleHeader } from '../http.js';
import { readSnsMessage, SnsVerifier, type SnsHttpsOptions } from '../sns.js';
import { isObject, parseWith, short, type Delivery, type EventSource, type SourceResult } from '../source.js';

export interface SnsSourceOptions {
  /** Allowed topic ARNs; undefined disables the route. */
  topicArns: readonly string[] | undefined;
  maxAgeMs: number;
  https?: SnsHttpsOptions | undefined;
  onCertificateFetch?: ((result: 'ok' | 'error') => void) | undefined;
  now?: (() => number) | undefined;
}

/**
 * `POST /v1/events/sns`: an SNS HTTPS subscription of a topic that an EventBridge rule publishes to. Every
 * message's signature is verified (the authentication is in the body); a SubscriptionConfirmation of an
 * allowed topic is confirmed; a Notification's `Message` is the EventBridge event, normalized by the
 * `eventbridge` parser (same notice id as a direct delivery), with source `sns`.
 * Raw message delivery must be off: a raw message carries no signature.
 */
export function snsSource(options: SnsSourceOptions): EventSource {
  const verifier = new SnsVerifier({ topicArns: options.topicArns ?? [], maxAgeMs: options.maxAgeMs, https: options.https, onFetch: options.onCertificateFetch, now: options.now });
  return {
    name: 'sns',
    enabled: options.topicArns !== undefined && options.topicArns.length > 0,
    methods: ['POST'],
    async handle(delivery: Delivery): Promise<SourceResult> {
      const headerType = singleHeader(delivery.headers, 'x-amz-sns-message-type');
      const { value } = await delivery.readJson();
      const msg = readSnsMessage(value, headerType);
      await verifier.verify(msg);
      const detail = { messageId: short(msg.MessageId, 100), topicArn: short(msg.TopicArn, 300) };
      if (msg.Type === 'SubscriptionConfirmation') {
        await verifier.confirm(msg);
        return { type: 'reply', status: 200, body: { status: 'subscription confirmed', topicArn: msg.TopicArn }, handshake: 'sns_subscription_confirmed' };
      }
      if (msg.Type === 'UnsubscribeConfirmation') {
        return { type: 'reply', status: 200, body: { status: 'unsubscribe noted', topicArn: msg.TopicArn }, handshake: 'sns_unsubscribe' };
      }
      let event: unknown;
      try {
        event = JSON.parse(msg.Message);
      } catch {
        return { type: 'notices', notices: [], ignored: 'SNS message is not JSON (not an EventBridge event)', detail };
      }
      if (!isObject(event) || event['detail-type'] === undefined) {
        return { type: 'notices', notices: [], ignored: 'SNS message is not an EventBridge event (no detail-type)', detail };
      }
      const notices: Notice[] = parseWith('eventbridge', msg.Message, delivery.now).map((n) => ({ ...n, source: 'sns' }));
      const typed = { ...detail, eventId: short(event.id, 80), detailType: short(event['detail-type'], 120) };
      return notices.length > 0 ? { type: 'notices', notices, detail: typed } : { type: 'notices', notices, ignored: `EventBridge "${typed.detailType}" announces nothing`, detail: typed };
    },
  };
}
