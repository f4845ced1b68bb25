import type { ProviderName } from '../notice.js';
import type { CloudSdkSettings, RecordedCall } from '../lookup/cloud-settings.js';

/**
 * `spotwatch drill <cloud>`: trigger a real interruption test. Every drill is a dry run unless `act` is set:
 * it prints exactly the requests it would make (the real SDK builds them; a recording transport keeps them
 * from leaving the process) and makes none.
 */
export interface DrillRequest {
  /** The instance as the cloud names it (see each cloud's help). */
  instance: string;
  settings: CloudSdkSettings;
  /** false: dry run (print, call nothing); true: call the cloud. */
  act: boolean;
  out: (line: string) => void;
}

/** What the emulator drill posts: `POST <emulator>/_spotwatch/v1/<command>` with `body`. */
export interface EmulatorDrill {
  command: string;
  body: Record<string, unknown>;
  description: string;
}

export interface CloudDrill {
  provider: ProviderName;
  /** One line per flag this cloud's drill reads, for --help. */
  help: string;
  /** The emulator control command that simulates this cloud's interruption of `instance`. */
  emulator(instance: string): EmulatorDrill;
  /** The real-cloud drill (dry run unless `act`). Throws DrillError for missing settings. */
  cloud(request: DrillRequest): Promise<void>;
}

export class DrillError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DrillError';
  }
}

export function formatCall(call: RecordedCall): string {
  return `${call.method} ${call.url}${call.body ? `\n    body: ${call.body}` : ''}`;
}
