/**
 * Opening a WebGPU device the way sparqc needs it: the high-performance adapter, the adapter's
 * real limits (not WebGPU's small defaults), the optional features it grants (`shader-f16`,
 * `timestamp-query`, `subgroups`), every validation error caught and attributed, and device
 * loss reported with what was running.
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

/** An open device, what it was granted, and its error log. */
export interface Gpu {
  adapter: GPUAdapter;
  device: GPUDevice;
  features: ReadonlySet<string>;
  info: GPUAdapterInfo;
  /** Validation errors no error scope caught, each with what was running. */
  uncaptured: string[];
  /** Names what the device is doing, for error and loss messages. */
  doing(activity: string): void;
  /** Throws if an uncaptured error arrived since the last call. */
  throwIfErrors(): void;
}

/**
 * One line describing the adapter, for a command to print once.
 *
 * @example
 * ```ts
 * import { adapterLine, openGpu } from "./device.ts";
 * console.error(adapterLine(await openGpu()));
 * ```
 */
export function adapterLine(gpu: Pick<Gpu, "info" | "features">): string {
  const { vendor, architecture, description, isFallbackAdapter } = gpu.info;
  const name = description || [vendor, architecture].filter(Boolean).join(" ") || "unknown adapter";
  const where = isFallbackAdapter ? "software, on the CPU" : "GPU";
  return `adapter: ${name} (${where}; ${[...gpu.features].join(", ") || "no optional features"})`;
}

/** What to do when the device is lost; the default prints and exits with code 1. */
export type LostHandler = (message: string) => void;

const exitOnLoss: LostHandler = (message) => {
  console.error(`sparqc: error: ${message}`);
  Deno.exit(1);
};

/**
 * Opens the high-performance adapter's device, or throws with what to install.
 *
 * @example
 * ```ts
 * import { openGpu } from "./device.ts";
 * const gpu = await openGpu();
 * gpu.features.has("shader-f16");
 * gpu.device.destroy();
 * ```
 */
export async function openGpu(onLost: LostHandler = exitOnLoss): Promise<Gpu> {
  const adapter = await navigator.gpu?.requestAdapter({ powerPreference: "high-performance" });
  if (!adapter) {
    throw new Error(
      "no WebGPU adapter: on Linux install mesa-vulkan-drivers and libvulkan1 (CPU) or a GPU's " +
        "Vulkan driver",
    );
  }
  const requiredLimits: Record<string, number> = {};
  for (const name of RAISED_LIMITS) requiredLimits[name] = adapter.limits[name];
  const features: string[] = WANTED_FEATURES.filter((f) => adapter.features.has(f));
  // Deno does not list `subgroups` among the adapter's features, but grants it where the
  // driver supports it: ask, and go without when refused.
  let device: GPUDevice;
  try {
    device = await adapter.requestDevice({
      requiredLimits,
      requiredFeatures: [...features, "subgroups"] as GPUFeatureName[],
    });
    features.push("subgroups");
  } catch {
    device = await adapter.requestDevice({
      requiredLimits,
      requiredFeatures: features as GPUFeatureName[],
    });
  }

  let activity = "idle";
  let destroyed = false;
  const uncaptured: string[] = [];
  let reported = 0;
  device.addEventListener("uncapturederror", (event) => {
    uncaptured.push(`${activity}: ${(event as GPUUncapturedErrorEvent).error.message}`);
  });
  const destroy = device.destroy.bind(device);
  device.destroy = () => {
    destroyed = true;
    destroy();
  };
  device.lost.then((info) => {
    if (destroyed || info.reason === "destroyed") return;
    onLost(`the GPU device was lost while ${activity}: ${info.message || info.reason}`);
  });
  return {
    adapter,
    device,
    features: new Set(features),
    info: adapter.info,
    uncaptured,
    doing(what: string) {
      activity = what;
    },
    throwIfErrors() {
      if (uncaptured.length > reported) {
        const fresh = uncaptured.slice(reported);
        reported = uncaptured.length;
        throw new Error(`WebGPU validation failed: ${fresh.join("; ")}`);
      }
    },
  };
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
