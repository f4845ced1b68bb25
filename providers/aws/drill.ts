import { DrillError, type CloudDrill, type DrillRequest } from '../../src/drill/drill.js';

/**
 * AWS has no API that interrupts one Spot Instance directly. The supported route is AWS Fault Injection
 * Service: an experiment with the action `aws:ec2:send-spot-instance-interruptions`, which sends the real
 * two-minute warning (IMDS instance-action, the EventBridge event) and then interrupts the instance.
 * spotwatch prints the experiment template and the commands; locally it drives the AWS emulator instead.
 */
export const awsDrill: CloudDrill = {
  provider: 'aws',
  help: '  --instance i-…            the Spot Instance to interrupt\n  --aws-region R            its region (the FIS template targets its ARN)\n  --emulator URL            drive `spotwatch simulate aws` instead (POST <url>/_spotwatch/v1/interrupt)',
  emulator: () => ({ command: 'interrupt', body: { action: 'terminate', timeLeft: 120 }, description: 'spot interruption, action terminate, 120 s warning' }),
  cloud(request: DrillRequest): Promise<void> {
    const { instance, settings, out } = request;
    if (!/^i-[0-9a-f]{8,17}$/.test(instance)) throw new DrillError(`--instance "${instance}" is not an EC2 instance id (i-…)`);
    const region = settings.aws.region ?? '<region>';
    const template = {
      description: `spotwatch drill: spot interruption of ${instance}`,
      targets: {
        SpotInstances: {
          resourceType: 'aws:ec2:spot-instance',
          resourceArns: [`arn:aws:ec2:${region}:<account-id>:instance/${instance}`],
          selectionMode: 'ALL',
        },
      },
      actions: {
        interrupt: {
          actionId: 'aws:ec2:send-spot-instance-interruptions',
          parameters: { durationBeforeInterruption: 'PT2M' },
          targets: { SpotInstances: 'SpotInstances' },
        },
      },
      stopConditions: [{ source: 'none' }],
      roleArn: 'arn:aws:iam::<account-id>:role/<fis-role with ec2:SendSpotInstanceInterruptions>',
    };
    out('AWS has no direct "interrupt this Spot Instance" API; the supported drill is AWS Fault Injection Service (FIS),');
    out('action aws:ec2:send-spot-instance-interruptions: the instance gets the real 2-minute warning (IMDS');
    out('spot/instance-action and the EventBridge "EC2 Spot Instance Interruption Warning"), then is interrupted.');
    out('');
    out('1. experiment template (save as spotwatch-drill.json; fill in the account id and an IAM role FIS may assume):');
    out(JSON.stringify(template, null, 2));
    out('');
    out('2. create it and start the experiment:');
    out(`   aws fis create-experiment-template --region ${region} --cli-input-json file://spotwatch-drill.json`);
    out(`   aws fis start-experiment --region ${region} --experiment-template-id <id printed above>`);
    out('');
    out('Watch the job appear: the node\'s agent (IMDS) and the webhook (EventBridge) produce one notice id.');
    if (request.act) out('--yes: spotwatch does not start FIS experiments itself (they need the IAM role above); run the two commands. Nothing was called.');
    else out('(dry run: nothing was called. Locally: spotwatch drill aws --instance … --emulator http://127.0.0.1:8111 --yes)');
    return Promise.resolve();
  },
};
