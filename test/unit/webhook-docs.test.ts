import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { CLOUD_OPTIONS } from '../../src/lookup/cloud-config.js';
import { Metrics } from '../../src/metrics.js';
import { WEBHOOK_OPTIONS } from '../../src/webhook/webhook-config.js';
import { WebhookMetrics } from '../../src/webhook/webhook-metrics.js';
import { SOURCE_NAMES } from '../../src/webhook/source.js';

const doc = readFileSync(new URL('../../docs/webhook.md', import.meta.url), 'utf8');

describe('docs/webhook.md stays in sync', () => {
  it('lists every webhook and cloud-API flag and environment variable, with its default', () => {
    for (const spec of [...Object.values(WEBHOOK_OPTIONS), ...Object.values(CLOUD_OPTIONS)]) {
      expect(doc, spec.flag).toContain(`\`${spec.flag}\``);
      for (const env of spec.env) expect(doc, env).toContain(`\`${env}\``);
      if ('default' in spec && spec.default !== undefined) expect(doc, `${spec.flag} default`).toContain(`\`${spec.default}\``);
    }
  });

  it('lists every route and every webhook metric', () => {
    for (const source of SOURCE_NAMES) expect(doc).toContain(`/v1/events/${source}`);
    const base = new Set(new Metrics().registry.getMetricsAsArray().map((m) => m.name));
    const own = new WebhookMetrics().registry.getMetricsAsArray().map((m) => m.name).filter((name) => !base.has(name));
    expect(own.length).toBeGreaterThan(0);
    for (const name of own) expect(doc, name).toContain(`\`${name}\``);
  });
});
