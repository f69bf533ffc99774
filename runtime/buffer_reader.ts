/**
 * The read kernel (kernels/buffer_read.ts) over a buffer of its own: what the bench's read
 * ceiling times and what the L2 scrub (l2_scrub.ts) runs between timed passes. Larger than one
 * storage binding, the data is split into buffers that each are one.
 *
 * @module
 */
import { BUFFER_READ_KERNEL, bufferReadGrid } from "../kernels/buffer_read.ts";

/** A read of `bytes` of the reader's own data, ready to dispatch into a compute pass. */
export class BufferReader {
  private constructor(
    /** Bytes each dispatch reads. */
    readonly bytes: number,
    private readonly pipeline: GPUComputePipeline,
    private readonly parts: { group: GPUBindGroup; grid: [number, number] }[],
    private readonly buffers: GPUBuffer[],
  ) {}

  /**
   * Allocates `bytes` of data (rounded up to 16), in buffers no larger than one storage binding.
   *
   * @example
   * ```ts
   * import { BufferReader } from "./buffer_reader.ts";
   * // const reader = BufferReader.create(device, 1 << 30, "roofline");
   * ```
   */
  static create(device: GPUDevice, bytes: number, label: string): BufferReader {
    const module = device.createShaderModule({ label, code: BUFFER_READ_KERNEL });
    const pipeline = device.createComputePipeline({
      label,
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
      const data = device.createBuffer({ label, size, usage: GPUBufferUsage.STORAGE });
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
    return new BufferReader(bytes, pipeline, parts, buffers);
  }

  /**
   * Dispatches the read of all the data into `pass`.
   *
   * @example
   * ```ts
   * // const pass = encoder.beginComputePass(); reader.dispatch(pass); pass.end();
   * ```
   */
  dispatch(pass: GPUComputePassEncoder): void {
    pass.setPipeline(this.pipeline);
    for (const { group, grid } of this.parts) {
      pass.setBindGroup(0, group);
      pass.dispatchWorkgroups(...grid);
    }
  }

  /** Frees the data. */
  destroy(): void {
    for (const b of this.buffers) b.destroy();
  }
}
