/**
 * A compilation target read off an open device: its granted limits, a memory budget that the
 * caller states (WebGPU does not report how much memory a GPU has), and the L2's size where the
 * GPU is one sparqc knows.
 *
 * @module
 */
import { knownL2Bytes, type Target, withL2 } from "../compiler/target.ts";
import type { Gpu } from "./device.ts";

/**
 * The target of an open device.
 *
 * @example
 * ```ts
 * import { deviceTarget } from "./device_target.ts";
 * import { openGpu } from "./device.ts";
 * const gpu = await openGpu();
 * deviceTarget(gpu, 4 * 1024 ** 3).limits.maxStorageBufferBindingSize;
 * ```
 */
export function deviceTarget(gpu: Gpu, memoryBudget: number): Target {
  const l = gpu.device.limits;
  const info = gpu.info as GPUAdapterInfo & { subgroupMinSize?: number; subgroupMaxSize?: number };
  const description = gpu.info.description || `${gpu.info.vendor} ${gpu.info.architecture}`.trim();
  return withL2({
    name: "device",
    description,
    limits: {
      maxStorageBufferBindingSize: l.maxStorageBufferBindingSize,
      maxBufferSize: l.maxBufferSize,
      maxStorageBuffersPerShaderStage: l.maxStorageBuffersPerShaderStage,
      maxComputeInvocationsPerWorkgroup: l.maxComputeInvocationsPerWorkgroup,
      maxComputeWorkgroupStorageSize: l.maxComputeWorkgroupStorageSize,
      maxComputeWorkgroupsPerDimension: l.maxComputeWorkgroupsPerDimension,
    },
    subgroupSize: gpu.features.has("subgroups") && info.subgroupMinSize === info.subgroupMaxSize &&
        info.subgroupMinSize > 0
      ? info.subgroupMinSize
      : null,
    memoryBudget: Math.floor(memoryBudget),
  }, knownL2Bytes(description) ?? 0);
}
