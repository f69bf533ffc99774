/**
 * The GPU device that test files share.
 *
 * @module
 */
import { type Gpu, openGpu } from "./device.ts";

let shared: Promise<Gpu> | undefined;

/**
 * The test process's one GPU device: opened on first use, destroyed when the process unloads, so
 * that its exit finds no device still open. While six test files each kept a device of their own
 * until exit, two full runs on lavapipe aborted after their summary ("corrupted size vs.
 * prev_size in fastbins", exit code 134).
 *
 * @example
 * ```ts
 * import { testGpu } from "./test_gpu.ts";
 * const gpu = await testGpu();
 * gpu.device.limits.maxComputeInvocationsPerWorkgroup >= 256; // true
 * ```
 */
export function testGpu(): Promise<Gpu> {
  if (!shared) {
    shared = openGpu().then((gpu) => {
      globalThis.addEventListener("unload", () => gpu.device.destroy());
      return gpu;
    });
  }
  return shared;
}
