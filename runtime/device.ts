/**
 * Opening a WebGPU device the way sparqc needs it: the high-performance adapter, the adapter's
 * real limits (not WebGPU's small defaults), and the optional features it grants.
 *
 * @module
 */

/** Limits sparqc raises to the adapter's values. */
const RAISED_LIMITS = [
  "maxStorageBufferBindingSize",
  "maxBufferSize",
  "maxStorageBuffersPerShaderStage",
  "maxComputeInvocationsPerWorkgroup",
  "maxComputeWorkgroupSizeX",
  "maxComputeWorkgroupStorageSize",
  "maxComputeWorkgroupsPerDimension",
] as const;

/** Features requested whenever the adapter has them. */
const WANTED_FEATURES = ["shader-f16", "timestamp-query"] as const;

/** An open device and what it was granted. */
export interface Gpu {
  adapter: GPUAdapter;
  device: GPUDevice;
  features: ReadonlySet<string>;
  info: GPUAdapterInfo;
}

/**
 * Opens the high-performance adapter's device, or throws with what to install.
 *
 * @example
 * ```ts
 * import { openGpu } from "./device.ts";
 * const gpu = await openGpu();
 * console.log(gpu.info.description, gpu.features.has("shader-f16"));
 * gpu.device.destroy();
 * ```
 */
export async function openGpu(): Promise<Gpu> {
  const adapter = await navigator.gpu?.requestAdapter({ powerPreference: "high-performance" });
  if (!adapter) {
    throw new Error(
      "no WebGPU adapter: on Linux install mesa-vulkan-drivers and libvulkan1 (CPU) or a GPU's " +
        "Vulkan driver",
    );
  }
  const requiredLimits: Record<string, number> = {};
  for (const name of RAISED_LIMITS) requiredLimits[name] = adapter.limits[name];
  const requiredFeatures = WANTED_FEATURES.filter((f) => adapter.features.has(f));
  const device = await adapter.requestDevice({ requiredLimits, requiredFeatures });
  return { adapter, device, features: new Set(requiredFeatures), info: adapter.info };
}

/** What {@link checkKernel} needs of a kernel. */
export interface KernelSource {
  name: string;
  source: string;
  entryPoint: string;
  constants: Record<string, number>;
}

/**
 * Compiles a kernel's WGSL and builds its pipeline with its override constants; returns the
 * errors (with line and column) or an empty list. Await one check before starting the next:
 * error scopes are a stack, so concurrent checks would mix their errors.
 *
 * @example
 * ```ts
 * import { checkKernel, openGpu } from "./device.ts";
 * const { device } = await openGpu();
 * const errors = await checkKernel(device, {
 *   name: "noop",
 *   source: "@compute @workgroup_size(1) fn main() {}",
 *   entryPoint: "main",
 *   constants: {},
 * });
 * // errors.length === 0
 * ```
 */
export async function checkKernel(device: GPUDevice, kernel: KernelSource): Promise<string[]> {
  device.pushErrorScope("validation");
  const module = device.createShaderModule({ label: kernel.name, code: kernel.source });
  const info = await module.getCompilationInfo();
  const errors = info.messages
    .filter((m) => m.type === "error")
    .map((m) => `${kernel.name}.wgsl:${m.lineNum}:${m.linePos}: ${m.message}`);
  if (errors.length === 0) {
    device.createComputePipeline({
      label: kernel.name,
      layout: "auto",
      compute: { module, entryPoint: kernel.entryPoint, constants: kernel.constants },
    });
  }
  const scoped = await device.popErrorScope();
  if (scoped && errors.length === 0) errors.push(`${kernel.name}: ${scoped.message}`);
  return errors;
}
