import { describeError } from '../errors.js';
import type { Logger } from '../logger.js';
import type { ProviderName } from '../notice.js';
import type { Lifecycle } from '../provider.js';

/**
 * "Which node is that?" An event names a cloud instance; the planner needs the node. The answer comes from
 * the registry first (agents heartbeat their instance id), then from the cloud's API.
 */
export interface NodeInfo {
  provider: ProviderName;
  /** The instance id as notices carry it (EC2 `i-…`, the numeric GCE id, the Azure VM resource name). */
  instanceId: string;
  /** Where the answer came from. */
  source: 'registry' | 'cloud';
  /** The registry's node id (an agent's --node-id), when the registry answered. */
  nodeId?: string | undefined;
  /** The cloud's resource name (GCE instance name, Azure VM name; EC2: the Name tag). */
  name?: string | undefined;
  /** The host name the node has inside the network (EC2 private DNS name, GCE name, Azure computer name) — usually the Kubernetes node name. */
  hostname?: string | undefined;
  privateIp?: string | undefined;
  zone?: string | undefined;
  region?: string | undefined;
  instanceType?: string | undefined;
  lifecycle: Lifecycle;
  /** The cloud's state of the instance (running, stopping, …) when known. */
  state?: string | undefined;
  /** The cloud's full resource id (EC2 ARN-less id, GCE selfLink, ARM resource id). */
  resourceId?: string | undefined;
  /** Resource group (Azure) or project (GCP) the instance lives in. */
  scope?: string | undefined;
  labels?: Record<string, string> | undefined;
}

/** What the registry knows about a node; the locator fills in provider, instance id and `source`. */
export type RegistryNode = Partial<Omit<NodeInfo, 'provider' | 'instanceId' | 'source'>> & { nodeId: string };

/** The registry lookup (provided by the node registry); undefined when no agent heartbeats that instance. */
export type RegistryLookup = (provider: ProviderName, instanceId: string) => Promise<RegistryNode | undefined>;

/** One cloud's instance lookup through its SDK (providers/<cloud>/sdk-client.ts). */
export interface CloudInstanceLookup {
  provider: ProviderName;
  /** undefined when the cloud has no such instance; throws when the cloud cannot be asked. */
  lookup(instanceId: string): Promise<NodeInfo | undefined>;
}

export interface InstanceLocator {
  locate(provider: ProviderName, instanceId: string): Promise<NodeInfo | undefined>;
}

export class LookupError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'LookupError';
  }
}

export interface ChainedLocatorOptions {
  registryLookup?: RegistryLookup | undefined;
  clouds?: Partial<Record<ProviderName, CloudInstanceLookup>> | undefined;
  /** How long a cloud answer is reused (default 60 s). The registry is always asked fresh. */
  cacheMs?: number | undefined;
  logger?: Logger | undefined;
  now?: (() => number) | undefined;
}

/**
 * Registry first, then the cloud. A registry error is logged and the cloud is asked; a cloud error is thrown
 * (`LookupError`) unless the registry answered. Cloud answers are cached briefly: one interruption often
 * arrives through several sources within seconds.
 */
export class ChainedInstanceLocator implements InstanceLocator {
  private readonly cache = new Map<string, { at: number; info: NodeInfo | undefined }>();
  private readonly now: () => number;

  constructor(private readonly options: ChainedLocatorOptions) {
    this.now = options.now ?? Date.now;
  }

  async locate(provider: ProviderName, instanceId: string): Promise<NodeInfo | undefined> {
    if (this.options.registryLookup) {
      try {
        const node = await this.options.registryLookup(provider, instanceId);
        if (node) return { lifecycle: 'unknown', ...node, provider, instanceId, source: 'registry' };
      } catch (err) {
        this.options.logger?.warn({ provider, instanceId, err: describeError(err) }, 'registry lookup failed; asking the cloud');
      }
    }
    const cloud = this.options.clouds?.[provider];
    if (!cloud) return undefined;
    const key = `${provider}|${instanceId}`;
    const cached = this.cache.get(key);
    if (cached && this.now() - cached.at < (this.options.cacheMs ?? 60_000)) return cached.info;
    let info: NodeInfo | undefined;
    try {
      info = await cloud.lookup(instanceId);
    } catch (err) {
      throw new LookupError(`${provider} instance ${instanceId}: ${describeError(err)}`, { cause: err });
    }
    if (this.cache.size > 1000) this.cache.clear();
    this.cache.set(key, { at: this.now(), info });
    return info;
  }
}

/**
 * A `RegistryLookup` over anything shaped like the node registry (`nodeByInstance` + `getNode`), typed
 * structurally so this module does not depend on the registry's. Not wired anywhere yet: the registry's owner
 * passes `registryLookupFrom(registry)` to `createInstanceLocator` / `ChainedInstanceLocator`.
 */
export function registryLookupFrom(registry: {
  nodeByInstance(provider: string, instanceId: string): Promise<string | undefined>;
  getNode(id: string): Promise<{ id: string; instanceId?: string; zone?: string; lifecycle?: Lifecycle; capacityPool?: string; draining?: boolean; healthy?: boolean } | undefined>;
}): RegistryLookup {
  return async (provider, instanceId) => {
    const nodeId = await registry.nodeByInstance(provider, instanceId);
    if (!nodeId) return undefined;
    const node = await registry.getNode(nodeId);
    if (!node) return { nodeId };
    // The lookup entry outlives its instance: a node id since reused by another machine is not this instance's.
    if (node.instanceId && node.instanceId !== instanceId) return undefined;
    return {
      nodeId: node.id,
      zone: node.zone || undefined,
      lifecycle: node.lifecycle ?? 'unknown',
      labels: { ...(node.capacityPool ? { capacityPool: node.capacityPool } : {}), ...(node.draining !== undefined ? { draining: String(node.draining) } : {}), ...(node.healthy !== undefined ? { healthy: String(node.healthy) } : {}) },
    };
  };
}
