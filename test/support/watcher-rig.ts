import { Metrics } from '../../src/metrics.js';
import type { Notice } from '../../src/notice.js';
import type { EmulatorHandle, NoticeWatcher } from '../../src/provider.js';

/** A provider's watcher started against its emulator, with fresh metrics and every notice it hands on. */
export interface WatcherRig<W extends NoticeWatcher> {
  emulator: EmulatorHandle;
  watcher: W;
  metrics: Metrics;
  notices: Notice[];
  /** Arrival time (performance.now(), ms) of each notice, same order. */
  arrivals: number[];
}

/** Starts the watcher `create` makes (given fresh Metrics) on `emulator`; `onNotice` runs after each notice is recorded. */
export function startWatcherRig<W extends NoticeWatcher>(emulator: EmulatorHandle, create: (metrics: Metrics) => W, onNotice?: (notice: Notice) => Promise<void>): WatcherRig<W> {
  const metrics = new Metrics();
  const watcher = create(metrics);
  const notices: Notice[] = [];
  const arrivals: number[] = [];
  watcher.start(async (notice) => {
    notices.push(notice);
    arrivals.push(performance.now());
    await onNotice?.(notice);
  });
  return { emulator, watcher, metrics, notices, arrivals };
}

/** Stops the rig's watcher, then closes its emulator. */
export async function stopWatcherRig(rig: WatcherRig<NoticeWatcher> | undefined): Promise<void> {
  await rig?.watcher.stop();
  await rig?.emulator.close();
}

/** The value of metric `name` with (at least) `labels`; 0 when it has none yet. */
export async function metric(metrics: Metrics, name: string, labels: Record<string, string>): Promise<number> {
  const all = await metrics.registry.getMetricsAsJSON();
  const v = all.find((x) => x.name === name)?.values.find((x) => Object.entries(labels).every(([k, val]) => x.labels[k] === val));
  return v?.value ?? 0;
}
