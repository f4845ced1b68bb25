import type { Logger } from './logger.js';
import type { Metrics } from './metrics.js';
import type { Notice, ProviderName } from './notice.js';

/**
 * The one interface through which `src/` uses a cloud provider. Each provider under `providers/<cloud>/`
 * implements it; `providers/index.ts` lists them. A provider never imports another provider.
 */

export interface ParseContext {
  /** The time to stamp as `detectedAt` (and to compute relative deadlines from). */
  now: Date;
  /** This node's instance id, for payloads that do not carry one (IMDS documents). */
  instanceId?: string | undefined;
}

/**
 * Turns one raw payload (the exact bytes a metadata endpoint or an event bridge delivered) into zero or
 * more notices. Payloads that carry no notice (a 404 body, `InService`, an unrelated event) return `[]`.
 * A malformed payload throws `PayloadError` naming what is wrong.
 */
export type PayloadParser = (payload: string, ctx: ParseContext) => Notice[];

export type Lifecycle = 'spot' | 'on-demand' | 'unknown';

export interface InstanceIdentity {
  provider: ProviderName;
  instanceId: string;
  instanceType?: string | undefined;
  zone?: string | undefined;
  lifecycle: Lifecycle;
  hostname?: string | undefined;
}

export interface WatcherHealth {
  /** The watch loop is running and its last request finished recently (success or handled error). */
  alive: boolean;
  /** Time of the last request that returned a usable answer. */
  lastSuccessAt?: Date | undefined;
  consecutiveErrors: number;
}

/** Receives each notice a watcher detects; the promise settles once the notice is durably stored. */
export type NoticeHandler = (notice: Notice) => Promise<void>;

export interface NoticeWatcher {
  /** Reads the node's identity from the metadata service (retrying transient errors until `signal` aborts). */
  identity(signal?: AbortSignal): Promise<InstanceIdentity>;
  /** Starts watching; every new or changed notice goes to `onNotice`. Errors never surface as "no notice". */
  start(onNotice: NoticeHandler): void;
  /** Stops the watch loop and waits for in-flight requests to end. */
  stop(): Promise<void>;
  health(): WatcherHealth;
}

export interface WatcherOptions {
  /** Base URL of the metadata service (an emulator or the real link-local address). */
  endpoint: string;
  pollIntervalMs: number;
  requestTimeoutMs: number;
  /** Overrides the instance id the metadata gives. */
  instanceId?: string | undefined;
  /** Allow falling back to IMDSv1 (AWS only; off by default). */
  imdsV1?: boolean | undefined;
  logger: Logger;
  metrics: Metrics;
}

/** A running metadata emulator. `controlUrl` serves the emulator's control API. */
export interface EmulatorHandle {
  url: string;
  controlUrl: string;
  close(): Promise<void>;
}

export interface EmulatorOptions {
  host: string;
  port: number;
  instanceId?: string | undefined;
  logger?: Logger | undefined;
}

export interface CloudProvider {
  name: ProviderName;
  /** Where the metadata service lives on a real node of this cloud. */
  defaultMetadataEndpoint: string;
  /** `spotwatch parse --source <name>` parsers this provider contributes. */
  parsers: Record<string, PayloadParser>;
  /** A short probe: does `endpoint` look like this cloud's metadata service? Never throws. */
  detect(endpoint: string, timeoutMs: number): Promise<boolean>;
  createWatcher(options: WatcherOptions): NoticeWatcher;
  startEmulator(options: EmulatorOptions): Promise<EmulatorHandle>;
  /**
   * Called on the noticed node once every task it had is safe (migrated, or its fallback applied): the cloud may
   * go ahead. Azure approves the scheduled event here (StartRequests); clouds without such an API leave it out.
   */
  afterDrain?(endpoint: string, notice: Notice): Promise<void>;
  /**
   * Control commands of this provider's emulator, name → one-line help (`spotwatch simulate <cloud> <command>`).
   * The CLI sends each as `POST <controlUrl>/<command>` with the command's flags as a JSON body
   * (`--time-left 30` → `{"timeLeft": 30}`); `fault`, `clear-faults` and `state` are common to every emulator.
   */
  simulateCommands: Record<string, string>;
}
