import type { GcpSdkSettings, RecordedCall } from '../../src/lookup/cloud-settings.js';
import type { CloudInstanceLookup, NodeInfo } from '../../src/lookup/instance-locator.js';

/**
 * Compute Engine through `@google-cloud/compute`'s InstancesClient on the REST transport (`fallback: true`,
 * HTTP/1.1 + JSON), loaded on first use. `endpoint` points it at another server (tests: a local HTTP server
 * answering in the Compute API's JSON); `accessToken` replaces Application Default Credentials.
 */

type ComputeModule = typeof import('@google-cloud/compute');
export type InstancesClient = InstanceType<ComputeModule['InstancesClient']>;

export const COMPUTE_ENDPOINT = 'https://compute.googleapis.com';

/** A minimal auth client whose fetch records each request instead of sending it (drill dry runs). */
export function recordingAuthClient(calls: RecordedCall[], answer: unknown = {}): Record<string, unknown> {
  return {
    universeDomain: 'googleapis.com',
    getRequestHeaders: () => Promise.resolve(new Headers()),
    fetch: (url: string | URL, init: { method?: string; body?: unknown } = {}) => {
      calls.push({ method: init.method ?? 'GET', url: String(url), body: typeof init.body === 'string' && init.body !== '' ? init.body : undefined });
      return Promise.resolve(new Response(JSON.stringify(answer), { status: 200, headers: { 'content-type': 'application/json' } }));
    },
  };
}

/**
 * The InstancesClient for these settings. `authClient` overrides the credentials (a recording client for
 * dry runs); else a static `accessToken`, else ADC.
 */
export async function createInstancesClient(settings: GcpSdkSettings, authClient?: unknown): Promise<InstancesClient> {
  const { InstancesClient } = await import('@google-cloud/compute');
  const options: Record<string, unknown> = { fallback: true };
  if (settings.endpoint) {
    const url = new URL(settings.endpoint);
    options.apiEndpoint = url.hostname;
    options.port = url.port ? Number(url.port) : url.protocol === 'http:' ? 80 : 443;
    options.protocol = url.protocol.replace(':', '');
  }
  if (authClient) {
    options.authClient = authClient;
  } else if (settings.accessToken) {
    const { OAuth2Client } = await import('google-auth-library');
    const client = new OAuth2Client();
    client.setCredentials({ access_token: settings.accessToken, expiry_date: Date.now() + 3600_000 });
    options.authClient = client;
  }
  if (settings.project) options.projectId = settings.project;
  return new InstancesClient(options as ConstructorParameters<typeof InstancesClient>[0]);
}

export function gcpInstanceLookup(settings: GcpSdkSettings): CloudInstanceLookup {
  let ready: Promise<InstancesClient> | undefined;
  return {
    provider: 'gcp',
    async lookup(instanceId: string): Promise<NodeInfo | undefined> {
      if (!settings.project) throw new Error('GCP instance lookup needs a project (--gcp-project or GOOGLE_CLOUD_PROJECT)');
      ready ??= createInstancesClient(settings);
      const client = await ready;
      // Notices carry the numeric instance id; the aggregated list finds it in whichever zone it is.
      const filter = /^\d+$/.test(instanceId) ? `id = ${instanceId}` : `name = "${instanceId.replace(/["\\]/g, '')}"`;
      for await (const [scope, list] of client.aggregatedListAsync({ project: settings.project, filter, returnPartialSuccess: true })) {
        for (const instance of list.instances ?? []) {
          if (String(instance.id) === instanceId || instance.name === instanceId) return toNodeInfo(instance as GceInstance, settings.project, scope);
        }
      }
      return undefined;
    },
  };
}

interface GceInstance {
  id?: string | number | null;
  name?: string | null;
  zone?: string | null;
  machineType?: string | null;
  status?: string | null;
  hostname?: string | null;
  selfLink?: string | null;
  labels?: Record<string, string> | null;
  scheduling?: { provisioningModel?: string | null; preemptible?: boolean | null } | null;
  networkInterfaces?: { networkIP?: string | null }[] | null;
}

const lastSegment = (url: string | null | undefined) => (url ? url.split('/').pop() : undefined);

function toNodeInfo(instance: GceInstance, project: string, scope: string): NodeInfo {
  const zone = lastSegment(instance.zone) ?? scope.replace(/^zones\//, '');
  const spot = instance.scheduling?.provisioningModel === 'SPOT' || instance.scheduling?.preemptible === true;
  return {
    provider: 'gcp',
    instanceId: String(instance.id),
    source: 'cloud',
    name: instance.name ?? undefined,
    hostname: instance.hostname ?? instance.name ?? undefined,
    privateIp: instance.networkInterfaces?.[0]?.networkIP ?? undefined,
    zone,
    region: zone?.replace(/-[a-z]$/, ''),
    instanceType: lastSegment(instance.machineType),
    lifecycle: instance.scheduling ? (spot ? 'spot' : 'on-demand') : 'unknown',
    state: instance.status ?? undefined,
    resourceId: instance.selfLink ?? undefined,
    scope: project,
    labels: instance.labels ?? undefined,
  };
}
