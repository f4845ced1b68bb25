/**
 * Which tasks are GPU tasks and how much GPU memory they hold.
 *
 * - A process is a GPU process when it has an NVIDIA device node open (`/dev/nvidia0`, `/dev/nvidiactl`,
 *   `/dev/nvidia-uvm`, …) among its file descriptors in /proc/PID/fd; a task is a GPU task when any process of
 *   its tree is. (A process whose CUDA state is checkpointed has released them: it no longer counts.)
 * - GPU memory per process comes from `nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader,nounits`
 *   (MiB per process and GPU), when nvidia-smi is there; the node's GPUs from `--query-gpu`.
 */
import { execFile } from 'node:child_process';
import { readFile, readdir, readlink } from 'node:fs/promises';

const MIB = 1024 * 1024;

/** NVIDIA device nodes `pid` holds open (absolute paths, deduplicated); empty when none or unreadable. */
export async function openNvidiaDevices(pid: number, procRoot = '/proc'): Promise<string[]> {
  let fds: string[];
  try {
    fds = await readdir(`${procRoot}/${pid}/fd`);
  } catch {
    return [];
  }
  const found = new Set<string>();
  await Promise.all(
    fds.map(async (fd) => {
      try {
        const target = await readlink(`${procRoot}/${pid}/fd/${fd}`);
        if (isNvidiaDevice(target)) found.add(target);
      } catch {
        // closed meanwhile
      }
    }),
  );
  return [...found].sort();
}

/** `/dev/nvidia0`, `/dev/nvidiactl`, `/dev/nvidia-uvm`, `/dev/nvidia-caps/…`: yes; `/dev/nvme0n1`: no. */
export function isNvidiaDevice(path: string): boolean {
  return /^\/dev\/nvidia(?:\d+|ctl|-uvm(?:-tools)?|-modeset|-nvswitch\d*|-caps\/.*|-caps-imex-channels\/.*)?$/.test(path);
}

/** The processes among `pids` that hold an NVIDIA device open, in the given order. */
export async function gpuProcesses(pids: readonly number[], procRoot = '/proc'): Promise<number[]> {
  const flags = await Promise.all(pids.map(async (p) => (await openNvidiaDevices(p, procRoot)).length > 0));
  return pids.filter((_, i) => flags[i]);
}

/**
 * Parses `nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader,nounits`: bytes per pid, summed
 * over GPUs (a process on two GPUs has two lines). Lines whose memory is not a number (`[N/A]`,
 * `[Not Supported]`) count the pid with 0 bytes.
 */
export function parseComputeApps(text: string): Map<number, number> {
  const out = new Map<number, number>();
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || /no running/i.test(line)) continue;
    const [pidText, memText] = line.split(',').map((s) => s.trim());
    const pid = Number(pidText);
    if (!Number.isInteger(pid) || pid <= 0) continue;
    const mib = Number(memText);
    out.set(pid, (out.get(pid) ?? 0) + (Number.isFinite(mib) ? Math.round(mib * MIB) : 0));
  }
  return out;
}

export interface GpuInfo {
  index: number;
  name: string;
  uuid: string;
  memoryTotalBytes: number;
  memoryFreeBytes: number;
  driverVersion: string;
}

export const GPU_QUERY_FIELDS = 'index,name,uuid,memory.total,memory.free,driver_version';

/** Parses `nvidia-smi --query-gpu=index,name,uuid,memory.total,memory.free,driver_version --format=csv,noheader,nounits`. */
export function parseGpuQuery(text: string): GpuInfo[] {
  const out: GpuInfo[] = [];
  for (const raw of text.split('\n')) {
    const f = raw.split(',').map((s) => s.trim());
    if (f.length < 6) continue;
    const index = Number(f[0]);
    if (!Number.isInteger(index)) continue;
    out.push({
      index,
      name: f[1] ?? '',
      uuid: f[2] ?? '',
      memoryTotalBytes: Math.round((Number(f[3]) || 0) * MIB),
      memoryFreeBytes: Math.round((Number(f[4]) || 0) * MIB),
      driverVersion: f[5] ?? '',
    });
  }
  return out;
}

/** Runs nvidia-smi; undefined when it is missing or fails. */
export function runNvidiaSmi(args: string[], nvidiaSmi = process.env.SPOTWATCH_NVIDIA_SMI || 'nvidia-smi', timeoutMs = 10_000): Promise<string | undefined> {
  return new Promise((res) => {
    execFile(nvidiaSmi, args, { timeout: timeoutMs, maxBuffer: 4 << 20 }, (err, stdout) => res(err ? undefined : stdout));
  });
}

/** GPU memory per pid on this node, or undefined without a working nvidia-smi. */
export async function gpuMemoryByPid(nvidiaSmi?: string): Promise<Map<number, number> | undefined> {
  const out = await runNvidiaSmi(['--query-compute-apps=pid,used_memory', '--format=csv,noheader,nounits'], nvidiaSmi);
  return out === undefined ? undefined : parseComputeApps(out);
}

/** This node's GPUs (model, memory, driver), or undefined without a working nvidia-smi. */
export async function queryGpus(nvidiaSmi?: string): Promise<GpuInfo[] | undefined> {
  const out = await runNvidiaSmi([`--query-gpu=${GPU_QUERY_FIELDS}`, '--format=csv,noheader,nounits'], nvidiaSmi);
  return out === undefined ? undefined : parseGpuQuery(out);
}

/**
 * Whether a target node can host a GPU task: same GPU model as the source and enough free GPU memory on one of
 * its GPUs (the CUDA checkpoint restores onto the same device index unless GPUs are remapped).
 */
export function gpuTargetFits(sourceModel: string, gpuBytes: number, target: readonly GpuInfo[]): boolean {
  return target.some((g) => g.name === sourceModel && g.memoryFreeBytes >= gpuBytes);
}

/**
 * Whether `pid` has the CUDA driver library (libcuda.so) mapped. Unlike an open /dev/nvidia* this survives a
 * CUDA checkpoint and a CRIU restore, so it finds, on the target, the processes whose CUDA state must be restored.
 */
export async function mapsCudaDriver(pid: number, procRoot = '/proc'): Promise<boolean> {
  try {
    return /\/libcuda\.so[.\d]*$/m.test(await readFile(`${procRoot}/${pid}/maps`, 'utf8'));
  } catch {
    return false;
  }
}
