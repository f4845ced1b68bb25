/** CUDA support for the CRIU engine: the checkpoint hook, its backends, and GPU task detection. */
export { CudaCheckpointHook, CudaHookError, codeFor, hookFailure } from './cuda-hook.js';
export type { CudaHookOptions, CudaStep } from './cuda-hook.js';
export { BackendExit, HelperBackend, NvidiaToolBackend, HELPER_NAME, findRepoHelper, locateCudaBackend } from './cuda-backend.js';
export type { BackendLocation, CallOpts, CudaBackend, LocateOptions } from './cuda-backend.js';
export {
  GPU_QUERY_FIELDS,
  gpuMemoryByPid,
  gpuProcesses,
  gpuTargetFits,
  isNvidiaDevice,
  mapsCudaDriver,
  openNvidiaDevices,
  parseComputeApps,
  parseGpuQuery,
  queryGpus,
} from './gpu-detect.js';
export type { GpuInfo } from './gpu-detect.js';
export * from './helper-protocol.js';
