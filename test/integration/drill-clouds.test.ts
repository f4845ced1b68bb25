import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { awsProvider } from '../../providers/aws/index.js';
import { azureProvider } from '../../providers/azure/index.js';
import { gcpProvider } from '../../providers/gcp/index.js';
import { main } from '../../src/cli/main.js';
import type { EmulatorHandle } from '../../src/provider.js';
import { runCli } from '../support/spawn-cli.js';
import type { FakeApi } from '../fixtures/webhook/cloud-apis.js';
import { startFakeGpuClouds, type FakeGpuClouds } from '../support/fake-clouds.js';
import { runInProcess } from '../support/in-process-cli.js';

const SUBSCRIPTION = '00000000-0000-0000-0000-0000000000bb';

/** Runs `spotwatch <args>` in this process (the CLI's own entry point, with captured streams and an empty environment). */
const spotwatch = (args: string[], env: NodeJS.ProcessEnv = {}) => runInProcess(main, args, { env });

describe('spotwatch drill', () => {
  let clouds: FakeGpuClouds;
  let compute: FakeApi;
  let arm: FakeApi;
  let armCa: string;
  beforeAll(async () => {
    clouds = await startFakeGpuClouds(SUBSCRIPTION);
    ({ compute, arm } = clouds);
    armCa = clouds.pki.caFile;
  });
  afterAll(() => clouds.close());

  it('gcp: dry run prints the exact simulateMaintenanceEvent request and sends nothing; --yes sends it through the SDK', async () => {
    const args = ['drill', 'gcp', '--instance', 'spotwatch-gpu-1', '--gcp-project', 'spotwatch-demo', '--gcp-zone', 'us-central1-a', '--gcp-endpoint', compute.url];
    const dry = await spotwatch(args, { SPOTWATCH_GCP_ACCESS_TOKEN: 'gcp-test-token' });
    expect(dry.code).toBe(0);
    expect(dry.stdout).toContain(`POST ${compute.url}/compute/v1/projects/spotwatch-demo/zones/us-central1-a/instances/spotwatch-gpu-1/simulateMaintenanceEvent`);
    expect(compute.requests).toHaveLength(0);
    const real = await spotwatch([...args, '--yes'], { SPOTWATCH_GCP_ACCESS_TOKEN: 'gcp-test-token' });
    expect(real.stderr).toBe('');
    expect(real.code).toBe(0);
    expect(real.stdout).toMatch(/operation operation-1700000000000-simulate \(RUNNING\)/);
    expect(compute.requests.map((r) => `${r.method} ${r.url.split('?')[0]}`)).toEqual(['POST /compute/v1/projects/spotwatch-demo/zones/us-central1-a/instances/spotwatch-gpu-1/simulateMaintenanceEvent']);
    expect(compute.requests[0]!.authorization).toBe('Bearer gcp-test-token');
    // The path form carries project and zone; an unknown instance is the cloud's error (exit 1).
    const missing = await spotwatch(['drill', 'gcp', '--instance', 'projects/spotwatch-demo/zones/us-central1-a/instances/nope', '--gcp-endpoint', compute.url, '--gcp-access-token', 'gcp-test-token', '--yes']);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/not found/);
    expect((await spotwatch(['drill', 'gcp', '--instance', 'x'])).code).toBe(2);
  });

  it('azure: simulateEviction of a VM and of a scale-set VM (ARM over HTTPS), dry run sends nothing', async () => {
    const common = ['--azure-subscription', SUBSCRIPTION, '--azure-resource-group', 'spotwatch-rg', '--azure-endpoint', arm.url, '--azure-ca-file', armCa];
    const env = { SPOTWATCH_AZURE_ACCESS_TOKEN: 'azure-test-token' };
    const dry = await spotwatch(['drill', 'azure', '--instance', 'vmss_3', ...common], env);
    expect(dry.code).toBe(0);
    expect(dry.stdout).toMatch(new RegExp(`POST ${arm.url}/subscriptions/${SUBSCRIPTION}/resourceGroups/spotwatch-rg/providers/Microsoft.Compute/virtualMachineScaleSets/vmss/virtualMachines/3/simulateEviction\\?api-version=\\d{4}-\\d{2}-\\d{2}`));
    expect(arm.requests).toHaveLength(0);
    expect((await spotwatch(['drill', 'azure', '--instance', 'vmss_3', ...common, '--yes'], env)).code).toBe(0);
    const byId = `/subscriptions/${SUBSCRIPTION}/resourceGroups/spotwatch-rg/providers/Microsoft.Compute/virtualMachines/gpu-vm-1`;
    const vm = await spotwatch(['drill', 'azure', '--instance', byId, '--azure-subscription', SUBSCRIPTION, '--azure-endpoint', arm.url, '--azure-ca-file', armCa, '--yes'], env);
    expect(vm.stdout).toMatch(/simulateEviction accepted for VM gpu-vm-1/);
    expect(arm.requests.map((r) => `${r.method} ${r.url.split('?')[0]}`)).toEqual([
      `POST /subscriptions/${SUBSCRIPTION}/resourceGroups/spotwatch-rg/providers/Microsoft.Compute/virtualMachineScaleSets/vmss/virtualMachines/3/simulateEviction`,
      `POST ${byId}/simulateEviction`,
    ]);
    expect(arm.requests.every((r) => r.authorization === 'Bearer azure-test-token')).toBe(true);
    const gone = await spotwatch(['drill', 'azure', '--instance', 'vmss_9', ...common, '--yes'], env);
    expect(gone.code).toBe(1);
    const noGroup = await spotwatch(['drill', 'azure', '--instance', 'vmss_3', '--azure-subscription', SUBSCRIPTION], env);
    expect(noGroup.code).toBe(2);
    expect(noGroup.stderr).toMatch(/resource group/);
  });

  it('aws: explains the Fault Injection Service route; drives the AWS emulator only with --yes', async () => {
    const fis = await spotwatch(['drill', 'aws', '--instance', 'i-0123456789abcdef0', '--aws-region', 'us-east-1']);
    expect(fis.code).toBe(0);
    expect(fis.stdout).toContain('aws:ec2:send-spot-instance-interruptions');
    expect(fis.stdout).toContain('"durationBeforeInterruption": "PT2M"');
    expect(fis.stdout).toContain('arn:aws:ec2:us-east-1:<account-id>:instance/i-0123456789abcdef0');
    expect(fis.stdout).toContain('aws fis start-experiment');
    expect((await spotwatch(['drill', 'aws', '--instance', 'vm-1'])).code).toBe(2);

    const emulator = await awsProvider.startEmulator({ host: '127.0.0.1', port: 0, instanceId: 'i-0123456789abcdef0' });
    try {
      const state = async () => (await (await fetch(`${emulator.controlUrl}/state`)).json()) as { interruption?: unknown };
      const dry = await spotwatch(['drill', 'aws', '--instance', 'i-0123456789abcdef0', '--emulator', emulator.url]);
      expect(dry.stdout).toContain(`POST ${emulator.url}/_spotwatch/v1/interrupt`);
      expect((await state()).interruption).toBeUndefined();
      // The real CLI process, end to end.
      const real = await runCli(['drill', 'aws', '--instance', 'i-0123456789abcdef0', '--emulator', emulator.url, '--yes']);
      expect(real.code).toBe(0);
      expect((await state()).interruption).toMatchObject({ action: 'terminate' });
    } finally {
      await emulator.close();
    }
  });

  it('gcp and azure emulators: a preemption and a Preempt scheduled event', async () => {
    const handles: EmulatorHandle[] = [];
    try {
      const gcp = await gcpProvider.startEmulator({ host: '127.0.0.1', port: 0 });
      handles.push(gcp);
      expect((await spotwatch(['drill', 'gcp', '--instance', 'spotwatch-gpu-1', '--emulator', gcp.url, '--yes'])).code).toBe(0);
      const preempted = await fetch(`${gcp.url}/computeMetadata/v1/instance/preempted`, { headers: { 'Metadata-Flavor': 'Google' } });
      expect((await preempted.text()).trim()).toBe('TRUE');

      const azure = await azureProvider.startEmulator({ host: '127.0.0.1', port: 0 });
      handles.push(azure);
      const result = await spotwatch(['drill', 'azure', '--instance', 'vmss_3', '--emulator', azure.url, '--yes']);
      expect(result.code).toBe(0);
      const events = (await (await fetch(`${azure.url}/metadata/scheduledevents?api-version=2020-07-01`, { headers: { Metadata: 'true' } })).json()) as { Events: { EventType: string; Resources: string[] }[] };
      expect(events.Events).toMatchObject([{ EventType: 'Preempt', Resources: ['vmss_3'] }]);
    } finally {
      for (const h of handles) await h.close();
    }
  });
});
