import { describe, expect, it } from 'vitest';
import { SpotwatchError } from '../../src/errors.js';
import { loadCloudConfig } from '../../src/lookup/cloud-config.js';
import { loadWebhookConfig, logEffectiveWebhookConfig, WEBHOOK_OPTIONS } from '../../src/webhook/webhook-config.js';
import { captureLogger } from '../fixtures/webhook/harness.js';

const SECRET = 'secret-0123456789abcdef';

describe('webhook configuration', () => {
  it('takes a flag over the environment over the default, for every option', () => {
    const { config, origins } = loadWebhookConfig({ port: '9000', eventbridgeSecret: SECRET }, { SPOTWATCH_WEBHOOK_PORT: '9100', PORT: '9200', SPOTWATCH_SNS_TOPIC_ARNS: 'arn:aws:sns:us-east-1:123456789012:a, arn:aws:sns:eu-west-1:123456789012:b', REDIS_URL: 'redis://r:6379' });
    expect(config.port).toBe(9000);
    expect(origins.port).toBe('option');
    expect(config.snsTopicArns).toEqual(['arn:aws:sns:us-east-1:123456789012:a', 'arn:aws:sns:eu-west-1:123456789012:b']);
    expect(origins.snsTopicArns).toBe('env');
    expect(config.redisUrl).toBe('redis://r:6379');
    expect(config.eventbridgeHeader).toBe('x-spotwatch-secret');
    expect(config.pubsubJwksUrl).toBe('https://www.googleapis.com/oauth2/v3/certs');
    expect(config.eventgridAllowedOrigins).toEqual(['eventgrid.azure.net']);
    expect(loadWebhookConfig({ eventbridgeSecret: SECRET }, { PORT: '9200' }).config.port).toBe(9200);
    // Every option has a flag and at least one environment variable.
    for (const spec of Object.values(WEBHOOK_OPTIONS)) {
      expect(spec.flag).toMatch(/^--[a-z0-9-]+$/);
      expect(spec.env.length).toBeGreaterThan(0);
    }
  });

  it('reports every problem at once, pairs that belong together, and never echoes a secret', () => {
    let error: unknown;
    try {
      loadWebhookConfig({ eventgridTenantId: '11111111-2222-3333-4444-555555555555', rateLimit: '10', rateBurst: '5', tlsCert: '/nonexistent.pem' }, { SPOTWATCH_EVENTGRID_KEY: 'too-short', SPOTWATCH_PUBSUB_SERVICE_ACCOUNT: 'not-an-email' });
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(SpotwatchError);
    const message = (error as Error).message;
    for (const part of ['--eventgrid-key (from SPOTWATCH_EVENTGRID_KEY)', '--pubsub-service-account', '--rate-burst', '--tls-cert', 'must be at least 16 characters']) expect(message).toContain(part);
    expect(message).not.toContain('too-short');
  });

  it('logs the effective configuration with secrets as ***', () => {
    const lines: Record<string, unknown>[] = [];
    const { config, origins } = loadWebhookConfig({ eventbridgeSecret: SECRET, eventgridKey: `${SECRET}-eg`, redisUrl: 'redis://user:pw@r:6379' }, {});
    logEffectiveWebhookConfig(captureLogger(lines), config, origins);
    const text = JSON.stringify(lines);
    expect(text).not.toContain(SECRET);
    expect(text).not.toContain(':pw@');
    expect(lines[0]).toMatchObject({ config: { eventbridgeSecret: '***', eventgridKey: '***' } });
  });

  it('cloud API settings: optional, validated, from flags or the SDKs\' usual environment variables', () => {
    const { config } = loadCloudConfig({ gcpProject: 'spotwatch-demo' }, { AWS_REGION: 'eu-west-1', AZURE_SUBSCRIPTION_ID: '00000000-0000-0000-0000-000000000001' });
    expect(config).toMatchObject({ gcpProject: 'spotwatch-demo', awsRegion: 'eu-west-1', azureSubscription: '00000000-0000-0000-0000-000000000001' });
    expect(() => loadCloudConfig({ azureEndpoint: 'http://127.0.0.1:1', awsRegion: 'mars' }, {})).toThrow(/--azure-endpoint[\s\S]*--aws-region|--aws-region[\s\S]*--azure-endpoint/);
  });
});
