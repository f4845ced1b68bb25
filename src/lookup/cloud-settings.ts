/**
 * How spotwatch reaches each cloud's API (instance lookups, drills). Every field is optional: the SDKs'
 * own defaults (region / project from the environment, default credential chains, public endpoints) apply.
 * Endpoint overrides point the real SDK clients at another server (an emulator, a proxy, a test server).
 */
export interface AwsSdkSettings {
  region?: string | undefined;
  /** EC2 endpoint, e.g. http://127.0.0.1:4566. */
  endpoint?: string | undefined;
  /** Static credentials; default: the SDK's default chain (env, profile, IMDS, IRSA, …). */
  credentials?: { accessKeyId: string; secretAccessKey: string; sessionToken?: string | undefined } | undefined;
}

export interface GcpSdkSettings {
  project?: string | undefined;
  zone?: string | undefined;
  /** Compute API base URL, e.g. http://127.0.0.1:8085 (REST transport). */
  endpoint?: string | undefined;
  /** A static OAuth2 access token (`gcloud auth print-access-token`); default: Application Default Credentials. */
  accessToken?: string | undefined;
}

export interface AzureSdkSettings {
  subscriptionId?: string | undefined;
  resourceGroup?: string | undefined;
  /** ARM base URL, e.g. https://127.0.0.1:8443 (ARM requires HTTPS for bearer tokens). */
  endpoint?: string | undefined;
  /** A static ARM access token (`az account get-access-token`); default: DefaultAzureCredential. */
  accessToken?: string | undefined;
  /** Extra PEM CA trusted for the ARM endpoint. */
  ca?: string | undefined;
}

export interface CloudSdkSettings {
  aws: AwsSdkSettings;
  gcp: GcpSdkSettings;
  azure: AzureSdkSettings;
}

/** One request an SDK call makes, as a drill's dry run prints it. */
export interface RecordedCall {
  method: string;
  url: string;
  body?: string | undefined;
}
