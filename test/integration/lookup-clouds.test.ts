import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { awsInstanceLookup } from '../../providers/aws/sdk-client.js';
import { azureInstanceLookup } from '../../providers/azure/sdk-client.js';
import { gcpInstanceLookup } from '../../providers/gcp/sdk-client.js';
import { ChainedInstanceLocator, LookupError, registryLookupFrom, type RegistryLookup } from '../../src/lookup/instance-locator.js';
import { startFakeEc2, type FakeApi } from '../fixtures/webhook/cloud-apis.js';
import type { TestPki } from '../fixtures/webhook/pki.js';
import { startFakeGpuClouds, type FakeGpuClouds } from '../support/fake-clouds.js';

const SUBSCRIPTION = '00000000-0000-0000-0000-0000000000aa';
const credentials = { accessKeyId: 'AKIDSPOTWATCHTEST', secretAccessKey: 'spotwatch-test-secret' };

describe('instance lookup through the real cloud SDKs against local API servers', () => {
  let clouds: FakeGpuClouds;
  let pki: TestPki;
  let ec2: FakeApi;
  let compute: FakeApi;
  let arm: FakeApi;
  beforeAll(async () => {
    clouds = await startFakeGpuClouds(SUBSCRIPTION);
    ({ pki, compute, arm } = clouds);
    ec2 = await startFakeEc2([
      { instanceId: 'i-0123456789abcdef0', instanceType: 'p5.48xlarge', zone: 'us-east-1a', lifecycle: 'spot', privateDnsName: 'ip-10-0-1-23.ec2.internal', privateIp: '10.0.1.23', state: 'running', tags: { Name: 'gpu-a', 'eks:nodegroup-name': 'spot-gpu' } },
      { instanceId: 'i-0fedcba9876543210', instanceType: 'm7i.large', zone: 'us-east-1b', privateDnsName: 'ip-10-0-2-5.ec2.internal', privateIp: '10.0.2.5', state: 'running', tags: {} },
    ]);
  });
  afterAll(async () => {
    await Promise.all([ec2.close(), clouds.close()]);
  });

  it('AWS: DescribeInstances (EC2 Query XML) gives the node; an unknown id is undefined', async () => {
    const lookup = awsInstanceLookup({ region: 'us-east-1', endpoint: ec2.url, credentials });
    expect(await lookup.lookup('i-0123456789abcdef0')).toMatchObject({
      provider: 'aws', instanceId: 'i-0123456789abcdef0', source: 'cloud', name: 'gpu-a', hostname: 'ip-10-0-1-23.ec2.internal', privateIp: '10.0.1.23',
      zone: 'us-east-1a', region: 'us-east-1', instanceType: 'p5.48xlarge', lifecycle: 'spot', state: 'running',
    });
    expect((await lookup.lookup('i-0fedcba9876543210'))?.lifecycle).toBe('on-demand');
    expect(await lookup.lookup('i-00000000000000000')).toBeUndefined();
    const request = ec2.requests[0]!;
    expect(new URLSearchParams(request.body).get('Action')).toBe('DescribeInstances');
    expect(request.authorization).toMatch(/^AWS4-HMAC-SHA256 Credential=AKIDSPOTWATCHTEST\/\d{8}\/us-east-1\/ec2\/aws4_request/);
  });

  it('GCP: InstancesClient aggregated list (REST, Compute JSON) finds the numeric id in its zone', async () => {
    const lookup = gcpInstanceLookup({ project: 'spotwatch-demo', endpoint: compute.url, accessToken: 'gcp-test-token' });
    expect(await lookup.lookup('4520031799277581759')).toMatchObject({
      provider: 'gcp', instanceId: '4520031799277581759', name: 'spotwatch-gpu-1', zone: 'us-central1-a', region: 'us-central1', instanceType: 'a3-highgpu-8g', lifecycle: 'spot', state: 'RUNNING', privateIp: '10.128.0.7', scope: 'spotwatch-demo',
    });
    expect(await lookup.lookup('1')).toBeUndefined();
    expect(compute.requests[0]!.url).toMatch(/^\/compute\/v1\/projects\/spotwatch-demo\/aggregated\/instances\?.*filter=id(%20|\+)%3D(%20|\+)4520031799277581759/);
    // Wrong credentials: the SDK's error surfaces (the locator turns it into a LookupError).
    const denied = gcpInstanceLookup({ project: 'spotwatch-demo', endpoint: compute.url, accessToken: 'wrong' });
    await expect(denied.lookup('4520031799277581759')).rejects.toThrow(/authentication|401|UNAUTHENTICATED/i);
  });

  it('Azure: VirtualMachines.get and VirtualMachineScaleSetVMs.get (ARM JSON over HTTPS), with and without a resource group', async () => {
    const settings = { subscriptionId: SUBSCRIPTION, endpoint: arm.url, accessToken: 'azure-test-token', ca: pki.caPem };
    const withGroup = azureInstanceLookup({ ...settings, resourceGroup: 'spotwatch-rg' });
    expect(await withGroup.lookup('gpu-vm-1')).toMatchObject({ provider: 'azure', instanceId: 'gpu-vm-1', name: 'gpu-vm-1', hostname: 'gpu-vm-1', instanceType: 'Standard_NC24ads_A100_v4', lifecycle: 'spot', region: 'eastus', zone: 'eastus-2', scope: 'spotwatch-rg' });
    expect(await withGroup.lookup('vmss_3')).toMatchObject({ instanceId: 'vmss_3', hostname: 'vmss000003', instanceType: 'Standard_NC24ads_A100_v4' });
    expect(await withGroup.lookup('vmss_9')).toBeUndefined();
    expect(await withGroup.lookup('nope')).toBeUndefined();
    // No resource group: found by listing the subscription.
    const anywhere = azureInstanceLookup(settings);
    expect(await anywhere.lookup('vmss_3')).toMatchObject({ scope: 'spotwatch-rg', lifecycle: 'spot' });
    expect(await anywhere.lookup('gpu-vm-1')).toMatchObject({ scope: 'spotwatch-rg' });
    expect(arm.requests.every((r) => r.authorization === 'Bearer azure-test-token' && /api-version=\d{4}-\d{2}-\d{2}/.test(r.url))).toBe(true);
  });

  it('the locator asks the registry first, then the cloud (cached), and reports cloud failures as LookupError', async () => {
    const asked: string[] = [];
    const registryLookup: RegistryLookup = (provider, instanceId) => {
      asked.push(`${provider}/${instanceId}`);
      return Promise.resolve(instanceId === 'i-0123456789abcdef0' ? { nodeId: 'node-a', zone: 'us-east-1a', lifecycle: 'spot' } : undefined);
    };
    const aws = awsInstanceLookup({ region: 'us-east-1', endpoint: ec2.url, credentials });
    const failing = { provider: 'gcp' as const, lookup: () => Promise.reject(new Error('compute.googleapis.com unreachable')) };
    const locator = new ChainedInstanceLocator({ registryLookup, clouds: { aws, gcp: failing } });
    const ec2Calls = ec2.requests.length;
    expect(await locator.locate('aws', 'i-0123456789abcdef0')).toMatchObject({ source: 'registry', nodeId: 'node-a', provider: 'aws' });
    expect(ec2.requests.length).toBe(ec2Calls);
    expect(await locator.locate('aws', 'i-0fedcba9876543210')).toMatchObject({ source: 'cloud', instanceType: 'm7i.large' });
    expect(await locator.locate('aws', 'i-0fedcba9876543210')).toMatchObject({ source: 'cloud' });
    expect(ec2.requests.length).toBe(ec2Calls + 1);
    await expect(locator.locate('gcp', '1')).rejects.toBeInstanceOf(LookupError);
    expect(await locator.locate('azure', 'x')).toBeUndefined();
    // A failing registry does not hide the cloud's answer.
    const flaky = new ChainedInstanceLocator({ registryLookup: () => Promise.reject(new Error('redis down')), clouds: { aws } });
    expect(await flaky.locate('aws', 'i-0123456789abcdef0')).toMatchObject({ source: 'cloud', name: 'gpu-a' });
    expect(asked).toEqual(['aws/i-0123456789abcdef0', 'aws/i-0fedcba9876543210', 'aws/i-0fedcba9876543210', 'gcp/1', 'azure/x']);
  });

  it('registryLookupFrom adapts a registry-shaped object (nodeByInstance + getNode)', async () => {
    const registry = {
      nodeByInstance: (provider: string, instanceId: string) => Promise.resolve(provider === 'gcp' && instanceId === '42' ? 'node-g' : undefined),
      getNode: (id: string) => Promise.resolve({ id, zone: 'us-central1-a', lifecycle: 'spot' as const, capacityPool: 'a3-highgpu-8g/us-central1-a', draining: false, healthy: true }),
    };
    const locator = new ChainedInstanceLocator({ registryLookup: registryLookupFrom(registry) });
    expect(await locator.locate('gcp', '42')).toMatchObject({ source: 'registry', nodeId: 'node-g', zone: 'us-central1-a', lifecycle: 'spot', labels: { capacityPool: 'a3-highgpu-8g/us-central1-a', healthy: 'true' } });
    expect(await locator.locate('gcp', '43')).toBeUndefined();
  });
});
