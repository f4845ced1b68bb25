import { malformed, secretsEqual, singleHeader, unauthenticated } from '../http.js';
import { isObject, parseWith, short, type Delivery, type EventSource, type SourceResult } from '../source.js';

export interface EventBridgeSourceOptions {
  /** The API destination connection's API key value; undefined disables the route. */
  secret: string | undefined;
  /** The API key name: the header that carries it (lower case). */
  header: string;
}

/**
 * `POST /v1/events/eventbridge`: an EventBridge API destination delivers one event per request, with the
 * connection's API key in a header. The key is compared in constant time before the body is read.
 */
export function eventBridgeSource(options: EventBridgeSourceOptions): EventSource {
  return {
    name: 'eventbridge',
    enabled: options.secret !== undefined,
    methods: ['POST'],
    async handle(delivery: Delivery): Promise<SourceResult> {
      const presented = singleHeader(delivery.headers, options.header);
      if (!secretsEqual(presented, options.secret!)) {
        throw unauthenticated(presented === undefined ? `missing ${options.header} header` : `wrong ${options.header}`);
      }
      const { text, value } = await delivery.readJson();
      if (!isObject(value)) throw malformed('an EventBridge delivery is one event (a JSON object)');
      const notices = parseWith('eventbridge', text, delivery.now);
      const detail = { eventId: short(value.id, 80), detailType: short(value['detail-type'], 120), eventSource: short(value.source, 80) };
      return notices.length > 0 ? { type: 'notices', notices, detail } : { type: 'notices', notices, ignored: `EventBridge ${detail.eventSource} "${detail.detailType}" announces nothing`, detail };
    },
  };
}
