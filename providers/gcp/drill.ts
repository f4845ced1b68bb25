import { DrillError, formatCall, type CloudDrill, type DrillRequest } from '../../src/drill/drill.js';
import type { RecordedCall } from '../../src/lookup/cloud-settings.js';
import { createInstancesClient, recordingAuthClient } from './sdk-client.js';

/**
 * GCP: `instances.simulateMaintenanceEvent` through the Compute SDK (REST). On a Spot or preemptible VM with
 * `onHostMaintenance: TERMINATE` the simulated event preempts it (instance/preempted, the audit-log
 * `compute.instances.preempted` entry); on other VMs it is a live migration or a terminate-on-maintenance.
 */
export const gcpDrill: CloudDrill = {
  provider: 'gcp',
  help: '  --instance NAME           the VM (name, or projects/P/zones/Z/instances/NAME)\n  --gcp-project P  --gcp-zone Z   where it is\n  --gcp-endpoint URL        Compute API override   --gcp-access-token T   instead of ADC\n  --emulator URL            drive `spotwatch simulate gcp` instead (POST <url>/_spotwatch/v1/preempt)',
  emulator: () => ({ command: 'preempt', body: {}, description: 'preemption (instance/preempted=TRUE)' }),
  async cloud(request: DrillRequest): Promise<void> {
    const path = /^(?:projects\/([^/]+)\/)?zones\/([^/]+)\/instances\/([^/]+)$/.exec(request.instance);
    const project = path?.[1] ?? request.settings.gcp.project;
    const zone = path?.[2] ?? request.settings.gcp.zone;
    const instance = path?.[3] ?? request.instance;
    if (!project) throw new DrillError('GCP drill needs the project: --gcp-project (or GOOGLE_CLOUD_PROJECT), or --instance projects/P/zones/Z/instances/NAME');
    if (!zone) throw new DrillError('GCP drill needs the zone: --gcp-zone, or --instance zones/Z/instances/NAME');
    if (!/^[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?$|^\d+$/.test(instance)) throw new DrillError(`--instance "${instance}" is not a GCE instance name`);
    const settings = { ...request.settings.gcp, project, zone };
    const calls: RecordedCall[] = [];
    const client = await createInstancesClient(settings, request.act ? undefined : recordingAuthClient(calls, { kind: 'compute#operation', name: 'dry-run', status: 'DONE' }));
    try {
      const [operation] = await client.simulateMaintenanceEvent({ project, zone, instance });
      if (!request.act) {
        request.out(`dry run: would call (Compute API, ${instance} in ${project}/${zone}):`);
        for (const call of calls) request.out(`  ${formatCall(call)}`);
        request.out('On a Spot / preemptible VM this preempts it. Add --yes to call it.');
        return;
      }
      const op = (operation as { latestResponse?: { name?: string; status?: string } }).latestResponse ?? (operation as { name?: string; status?: string });
      request.out(`simulateMaintenanceEvent accepted for ${instance} in ${project}/${zone}: operation ${op.name ?? '?'} (${op.status ?? 'unknown status'})`);
    } finally {
      await client.close().catch(() => {});
    }
  },
};
