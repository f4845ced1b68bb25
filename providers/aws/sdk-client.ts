import type { AwsSdkSettings } from '../../src/lookup/cloud-settings.js';
import type { CloudInstanceLookup, NodeInfo } from '../../src/lookup/instance-locator.js';

/**
 * EC2 through `@aws-sdk/client-ec2` (loaded on first use, so that agents never pay for it): DescribeInstances
 * for instance lookups. The endpoint override and static credentials let tests run the real client against a
 * local server answering in the EC2 Query API's XML.
 */

type Ec2Module = typeof import('@aws-sdk/client-ec2');
type Ec2Client = InstanceType<Ec2Module['EC2Client']>;

const NOT_FOUND = new Set(['InvalidInstanceID.NotFound', 'InvalidInstanceID.Malformed']);

export async function createEc2Client(settings: AwsSdkSettings): Promise<{ sdk: Ec2Module; client: Ec2Client }> {
  const sdk = await import('@aws-sdk/client-ec2');
  const client = new sdk.EC2Client({
    ...(settings.region ? { region: settings.region } : {}),
    ...(settings.endpoint ? { endpoint: settings.endpoint } : {}),
    ...(settings.credentials ? { credentials: settings.credentials } : {}),
    maxAttempts: 2,
  });
  return { sdk, client };
}

export function awsInstanceLookup(settings: AwsSdkSettings): CloudInstanceLookup {
  let ready: Promise<{ sdk: Ec2Module; client: Ec2Client }> | undefined;
  return {
    provider: 'aws',
    async lookup(instanceId: string): Promise<NodeInfo | undefined> {
      ready ??= createEc2Client(settings);
      const { sdk, client } = await ready;
      let out;
      try {
        out = await client.send(new sdk.DescribeInstancesCommand({ InstanceIds: [instanceId] }));
      } catch (err) {
        if (err instanceof Error && NOT_FOUND.has(err.name)) return undefined;
        throw err;
      }
      const instance = (out.Reservations ?? []).flatMap((r) => r.Instances ?? []).find((i) => i.InstanceId === instanceId);
      return instance ? toNodeInfo(instance as Ec2InstanceShape, instanceId, settings.region) : undefined;
    },
  };
}

interface Ec2InstanceShape {
  InstanceId?: string;
  InstanceType?: string;
  InstanceLifecycle?: string;
  PrivateDnsName?: string;
  PrivateIpAddress?: string;
  Placement?: { AvailabilityZone?: string };
  State?: { Name?: string };
  Tags?: { Key?: string; Value?: string }[];
}

function toNodeInfo(instance: Ec2InstanceShape, instanceId: string, region: string | undefined): NodeInfo {
  const labels = Object.fromEntries((instance.Tags ?? []).filter((t) => t.Key !== undefined).map((t) => [t.Key!, t.Value ?? '']));
  const zone = instance.Placement?.AvailabilityZone;
  return {
    provider: 'aws',
    instanceId,
    source: 'cloud',
    name: labels.Name,
    hostname: instance.PrivateDnsName || undefined,
    privateIp: instance.PrivateIpAddress,
    zone,
    region: region ?? zone?.replace(/[a-z]$/, ''),
    instanceType: instance.InstanceType,
    // DescribeInstances sets instanceLifecycle only for spot (and scheduled) instances.
    lifecycle: instance.InstanceLifecycle === 'spot' ? 'spot' : 'on-demand',
    state: instance.State?.Name,
    labels,
  };
}
