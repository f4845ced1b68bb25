import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { loadOptionTable, readableFile, urlString, type ConfigOrigin, type OptionSpec } from '../config.js';
import type { CloudSdkSettings } from './cloud-settings.js';

/**
 * How spotwatch reaches the clouds' APIs (instance lookups in `spotwatch webhook --lookup`, `spotwatch drill`):
 * the same table shape and precedence as the other option tables. Everything is optional; each SDK's own
 * defaults (environment, credential chains, public endpoints) apply.
 */
export const CLOUD_OPTIONS = {
  awsRegion: { flag: '--aws-region', env: ['SPOTWATCH_AWS_REGION', 'AWS_REGION', 'AWS_DEFAULT_REGION'], description: 'AWS region of the EC2 API.' },
  awsEndpoint: { flag: '--aws-endpoint', env: ['SPOTWATCH_AWS_ENDPOINT', 'AWS_ENDPOINT_URL_EC2'], description: 'EC2 API endpoint override (a local server or a VPC endpoint).' },
  gcpProject: { flag: '--gcp-project', env: ['SPOTWATCH_GCP_PROJECT', 'GOOGLE_CLOUD_PROJECT', 'CLOUDSDK_CORE_PROJECT'], description: 'GCP project of the instances.' },
  gcpZone: { flag: '--gcp-zone', env: ['SPOTWATCH_GCP_ZONE'], description: 'GCP zone of the instance (drills).' },
  gcpEndpoint: { flag: '--gcp-endpoint', env: ['SPOTWATCH_GCP_ENDPOINT'], description: 'Compute API base URL override (REST), e.g. http://127.0.0.1:8085.' },
  gcpAccessToken: { flag: '--gcp-access-token', env: ['SPOTWATCH_GCP_ACCESS_TOKEN'], secret: true, description: 'Static OAuth2 access token (gcloud auth print-access-token); default: Application Default Credentials.' },
  azureSubscription: { flag: '--azure-subscription', env: ['SPOTWATCH_AZURE_SUBSCRIPTION_ID', 'AZURE_SUBSCRIPTION_ID'], description: 'Azure subscription id of the VMs.' },
  azureResourceGroup: { flag: '--azure-resource-group', env: ['SPOTWATCH_AZURE_RESOURCE_GROUP'], description: 'Resource group of the VMs (lookups search the subscription when unset).' },
  azureEndpoint: { flag: '--azure-endpoint', env: ['SPOTWATCH_AZURE_ENDPOINT'], description: 'Azure Resource Manager base URL override (https), e.g. a sovereign cloud or a local server.' },
  azureAccessToken: { flag: '--azure-access-token', env: ['SPOTWATCH_AZURE_ACCESS_TOKEN'], secret: true, description: 'Static ARM access token (az account get-access-token); default: DefaultAzureCredential.' },
  azureCaFile: { flag: '--azure-ca-file', env: ['SPOTWATCH_AZURE_CA_FILE'], description: 'Extra PEM CA trusted for the ARM endpoint.' },
} as const satisfies Record<string, OptionSpec>;

export type CloudConfigKey = keyof typeof CLOUD_OPTIONS;

const optional = z.string().min(1).optional();

export const cloudConfigSchema = z.object({
  awsRegion: z.string().regex(/^[a-z]{2}(?:-[a-z]+)+-\d$/, 'must be an AWS region such as us-east-1').optional(),
  awsEndpoint: urlString(['http:', 'https:']).optional(),
  gcpProject: z.string().regex(/^[a-z][a-z0-9-:.]{4,62}$/, 'must be a GCP project id').optional(),
  gcpZone: z.string().regex(/^[a-z]+-[a-z]+\d+-[a-z]$/, 'must be a GCP zone such as us-central1-a').optional(),
  gcpEndpoint: urlString(['http:', 'https:']).optional(),
  gcpAccessToken: optional,
  azureSubscription: z.string().regex(/^[0-9a-fA-F-]{36}$/, 'must be a subscription id (GUID)').optional(),
  azureResourceGroup: z.string().regex(/^[-\w._()]{1,90}$/, 'must be a resource group name').optional(),
  azureEndpoint: urlString(['https:']).optional(),
  azureAccessToken: optional,
  azureCaFile: readableFile.optional(),
});

export type CloudConfig = z.infer<typeof cloudConfigSchema>;

export function loadCloudConfig(options: Partial<Record<CloudConfigKey, string | undefined>>, env: NodeJS.ProcessEnv = process.env): { config: CloudConfig; origins: Record<CloudConfigKey, ConfigOrigin> } {
  return loadOptionTable(CLOUD_OPTIONS, cloudConfigSchema, options, env);
}

export function cloudSettings(config: CloudConfig): CloudSdkSettings {
  return {
    aws: { region: config.awsRegion, endpoint: config.awsEndpoint },
    gcp: { project: config.gcpProject, zone: config.gcpZone, endpoint: config.gcpEndpoint, accessToken: config.gcpAccessToken },
    azure: {
      subscriptionId: config.azureSubscription,
      resourceGroup: config.azureResourceGroup,
      endpoint: config.azureEndpoint,
      accessToken: config.azureAccessToken,
      ca: config.azureCaFile ? readFileSync(config.azureCaFile, 'utf8') : undefined,
    },
  };
}
