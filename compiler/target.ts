/**
 * The GPU a plan is compiled for: the WebGPU limits that shape buffers and dispatches, and the
 * memory the plan may use. WebGPU does not report a device's memory, so each target states it.
 *
 * @module
 */
import { z } from "zod";

const positiveInt = z.int().positive();

/** WebGPU limits that the compiler respects. */
export const TargetLimits = z.strictObject({
  maxStorageBufferBindingSize: positiveInt,
  maxBufferSize: positiveInt,
  maxStorageBuffersPerShaderStage: positiveInt,
  maxComputeInvocationsPerWorkgroup: positiveInt,
  maxComputeWorkgroupStorageSize: positiveInt,
  maxComputeWorkgroupsPerDimension: positiveInt,
});
/** WebGPU limits that the compiler respects. */
export type TargetLimits = z.infer<typeof TargetLimits>;

/** A compilation target. */
export const Target = z.strictObject({
  name: z.string(),
  description: z.string(),
  limits: TargetLimits,
  /**
   * The subgroup size when the target grants `subgroups` and its size is fixed (NVIDIA: 32;
   * lavapipe: 8); null where kernels must not use subgroup operations.
   */
  subgroupSize: z.int().positive().nullable(),
  /** Bytes the plan may allocate in all. */
  memoryBudget: positiveInt,
  /**
   * The L2 cache's bytes where known (WebGPU does not report it): kernels that end in few
   * workgroups then read the next matmul's weights into it (kernels/l2_prefetch.ts).
   */
  l2Bytes: positiveInt.optional(),
});
/** A compilation target. */
export type Target = z.infer<typeof Target>;

const GiB = 1024 ** 3;

/** The H100's L2: 50 MB (NVIDIA's H100 whitepaper), SXM5 and PCIe alike. */
const H100_L2_BYTES = 50 * 1024 ** 2;

/**
 * The L2 bytes of a GPU known by its adapter's description, for targets read off a device
 * (WebGPU reports no cache sizes); undefined for any other GPU.
 *
 * @example
 * ```ts
 * import { knownL2Bytes } from "./target.ts";
 * knownL2Bytes("NVIDIA H100 80GB HBM3"); // 52428800
 * knownL2Bytes("llvmpipe (LLVM 17.0.6, 256 bits)"); // undefined
 * ```
 */
export function knownL2Bytes(description: string): number | undefined {
  return /\bH100\b/.test(description) ? H100_L2_BYTES : undefined;
}

/** The targets known by name; `h100` is the default. */
export const TARGETS: ReadonlyMap<string, Target> = new Map([
  ["h100", {
    name: "h100",
    description: "NVIDIA H100 80GB HBM3 (Vulkan), limits as measured in ../shared/WEBGPU.md",
    limits: {
      maxStorageBufferBindingSize: 2147483644,
      maxBufferSize: 4292870144,
      maxStorageBuffersPerShaderStage: 16,
      maxComputeInvocationsPerWorkgroup: 1024,
      maxComputeWorkgroupStorageSize: 49152,
      maxComputeWorkgroupsPerDimension: 65535,
    },
    subgroupSize: 32,
    // 81559 MiB reported by the driver, less 1 GiB for the runtime and other processes.
    memoryBudget: 81559 * 1024 ** 2 - GiB,
    l2Bytes: H100_L2_BYTES,
  }],
  ["webgpu-default", {
    name: "webgpu-default",
    description: "WebGPU's default limits (what any adapter grants), with an 8 GiB budget",
    limits: {
      maxStorageBufferBindingSize: 134217728,
      maxBufferSize: 268435456,
      maxStorageBuffersPerShaderStage: 8,
      maxComputeInvocationsPerWorkgroup: 256,
      maxComputeWorkgroupStorageSize: 16384,
      maxComputeWorkgroupsPerDimension: 65535,
    },
    subgroupSize: null,
    memoryBudget: 8 * GiB,
  }],
].map(([name, target]) => [name as string, Target.parse(target)]));

/**
 * The target with a different memory budget.
 *
 * @example
 * ```ts
 * import { TARGETS, withBudget } from "./target.ts";
 * withBudget(TARGETS.get("h100")!, 40 * 1024 ** 3).memoryBudget; // 42949672960
 * ```
 */
export function withBudget(target: Target, bytes: number): Target {
  return { ...target, memoryBudget: Math.floor(bytes) };
}

/**
 * The target with an L2 of `bytes` (0: none known, so no kernel reads ahead into it).
 *
 * @example
 * ```ts
 * import { TARGETS, withL2 } from "./target.ts";
 * withL2(TARGETS.get("h100")!, 0).l2Bytes; // undefined
 * withL2(TARGETS.get("webgpu-default")!, 40 * 1024 ** 2).l2Bytes; // 41943040
 * ```
 */
export function withL2(target: Target, bytes: number): Target {
  const { l2Bytes: _, ...rest } = target;
  const whole = Math.floor(bytes);
  return whole > 0 ? { ...rest, l2Bytes: whole } : rest;
}
