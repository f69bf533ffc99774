/**
 * An untimed pass that leaves none of a program's data in the GPU's L2 cache: it reads a
 * buffer of its own, larger than the cache. Timed repetitions of a call that reads less than
 * the L2 holds (SparQ at batch 1: 36 MB at 16k positions, against the H100's 50 MB) would
 * otherwise find the previous repetition's data there, and time the cache, not the memory.
 * Reading, not writing: lines a write left dirty would be written back inside the next timed
 * pass, at its expense.
 *
 * @module
 */
import { BUFFER_READ_KERNEL, bufferReadGrid } from "../kernels/buffer_read.ts";
import type { Gpu } from "./device.ts";

/** A scrub pass ready to encode between timed passes. */
export class L2Scrub {
  private constructor(
    /** Bytes each pass reads. */
    readonly bytes: number,
    private readonly pipeline: GPUComputePipeline,
    private readonly parts: { group: GPUBindGroup; grid: [number, number] }[],
    private readonly buffers: GPUBuffer[],
  ) {}

  /**
   * The scrub a timing run on `gpu` uses, made once before its first warm-up (an allocation
   * between warm-up and timing idles the GPU): 256 MiB, five times the H100's L2 (50 MB) and more
   * than any current GPU's; none on a software adapter (a CPU's caches are not what its timings
   * are for).
   *
   * @example
   * ```ts
   * import { L2Scrub } from "./l2_scrub.ts";
   * // const scrub = L2Scrub.forTiming(gpu);
   * // await executor.profile({ reps: 20, nsPerTick: 1, scrub });
   * ```
   */
  static forTiming(gpu: Gpu): L2Scrub | undefined {
    return gpu.info.isFallbackAdapter ? undefined : L2Scrub.create(gpu.device, 256 << 20);
  }

  /**
   * Allocates `bytes` of scrub data, in buffers no larger than one storage binding.
   *
   * @example
   * ```ts
   * import { L2Scrub } from "./l2_scrub.ts";
   * // const scrub = L2Scrub.create(device, 256 << 20);
   * ```
   */
  static create(device: GPUDevice, bytes: number): L2Scrub {
    const module = device.createShaderModule({ label: "l2 scrub", code: BUFFER_READ_KERNEL });
    const pipeline = device.createComputePipeline({
      label: "l2 scrub",
      layout: "auto",
      compute: { module, entryPoint: "main" },
    });
    const most = Math.min(device.limits.maxStorageBufferBindingSize, device.limits.maxBufferSize);
    const chunk = Math.floor(most / 16) * 16;
    const buffers: GPUBuffer[] = [];
    const parts: { group: GPUBindGroup; grid: [number, number] }[] = [];
    for (let left = Math.ceil(bytes / 16) * 16; left > 0; left -= chunk) {
      const size = Math.min(left, chunk);
      const { groups, grid } = bufferReadGrid(size);
      const data = device.createBuffer({ label: "l2 scrub", size, usage: GPUBufferUsage.STORAGE });
      const sink = device.createBuffer({ size: groups * 4, usage: GPUBufferUsage.STORAGE });
      buffers.push(data, sink);
      const group = device.createBindGroup({
        layout: pipeline.getBindGroupLayout(0),
        entries: [{ binding: 0, resource: { buffer: data } }, {
          binding: 1,
          resource: { buffer: sink },
        }],
      });
      parts.push({ group, grid });
    }
    return new L2Scrub(bytes, pipeline, parts, buffers);
  }

  /**
   * Encodes the scrub as a compute pass of its own, without timestamps.
   *
   * @example
   * ```ts
   * // scrub.encode(encoder); // then the timed pass
   * ```
   */
  encode(encoder: GPUCommandEncoder): void {
    const pass = encoder.beginComputePass({ label: "l2 scrub" });
    pass.setPipeline(this.pipeline);
    for (const { group, grid } of this.parts) {
      pass.setBindGroup(0, group);
      pass.dispatchWorkgroups(...grid);
    }
    pass.end();
  }

  /** Frees the scrub's buffers. */
  destroy(): void {
    for (const b of this.buffers) b.destroy();
  }
}
