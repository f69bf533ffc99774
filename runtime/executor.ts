/**
 * Runs a compiled program on a WebGPU device: creates its buffers, pipelines (with explicit
 * bind-group layouts, so that a binding a kernel does not read still has its slot) and bind
 * groups once, then encodes the whole schedule into one command buffer per run.
 *
 * @module
 */
import type { PlanTensor, Program } from "../compiler/plan.ts";
import { decodeValues, encodeValues, type HostValues } from "./tensor_bytes.ts";

const ACCESS_TYPE = {
  read: "read-only-storage",
  read_write: "storage",
  uniform: "uniform",
} as const;

/** A program made ready on a device. */
export class Executor {
  private constructor(
    readonly device: GPUDevice,
    readonly program: Program,
    private readonly buffers: GPUBuffer[],
    private readonly steps: { pipeline: GPUComputePipeline; group: GPUBindGroup; grid: number[] }[],
  ) {}

  /**
   * Creates buffers, pipelines and bind groups; throws naming the kernel on a validation error.
   *
   * @example
   * ```ts
   * import { Executor } from "./executor.ts";
   * import { openGpu } from "./device.ts";
   * // const executor = await Executor.create((await openGpu()).device, program);
   * ```
   */
  static async create(device: GPUDevice, program: Program): Promise<Executor> {
    const buffers = program.buffers.map((b) =>
      device.createBuffer({
        label: b.label,
        size: b.bytes,
        usage: b.role === "params"
          ? GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST
          : GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC,
      })
    );

    const pipelines = new Map<string, GPUComputePipeline>();
    for (const kernel of program.kernels) {
      device.pushErrorScope("validation");
      const module = device.createShaderModule({ label: kernel.id, code: kernel.source });
      const layout = device.createBindGroupLayout({
        label: kernel.id,
        entries: kernel.bindings.map((b, binding) => ({
          binding,
          visibility: GPUShaderStage.COMPUTE,
          buffer: { type: ACCESS_TYPE[b.access] },
        })),
      });
      const pipeline = device.createComputePipeline({
        label: kernel.id,
        layout: device.createPipelineLayout({ bindGroupLayouts: [layout] }),
        compute: { module, entryPoint: kernel.entryPoint, constants: kernel.constants },
      });
      const error = await device.popErrorScope();
      if (error) throw new Error(`kernel '${kernel.id}': ${error.message}`);
      pipelines.set(kernel.id, pipeline);
    }

    const params = new Uint32Array(program.schedule.length * 64);
    const steps = program.schedule.map((d, i) => {
      params.set(d.params, i * 64);
      const pipeline = pipelines.get(d.kernel)!;
      const group = device.createBindGroup({
        label: `${d.node}:${d.kernel}#${d.shard}`,
        layout: pipeline.getBindGroupLayout(0),
        entries: d.bindings.map((b) => ({
          binding: b.binding,
          resource: { buffer: buffers[b.buffer], offset: b.offset, size: b.size },
        })),
      });
      return { pipeline, group, grid: d.dispatch };
    });
    const paramsBuffer = program.buffers.find((b) => b.role === "params");
    if (paramsBuffer && params.length) {
      device.queue.writeBuffer(
        buffers[paramsBuffer.id],
        0,
        params,
        0,
        program.schedule.length * 64,
      );
    }
    return new Executor(device, program, buffers, steps);
  }

  private tensor(name: string): PlanTensor {
    const t = this.program.tensors[name];
    if (!t) throw new Error(`the program has no tensor '${name}'`);
    return t;
  }

  /**
   * Uploads a whole tensor (row-major host values), shard by shard.
   *
   * @example
   * ```ts
   * // executor.write("positions", [4095]);
   * ```
   */
  write(name: string, values: HostValues): void {
    const t = this.tensor(name);
    const total = t.shape.reduce((a, b) => a * b, 1);
    if (values.length !== total) {
      throw new Error(`tensor '${name}' has ${total} values; got ${values.length}`);
    }
    const rowValues = total / t.shards.reduce((sum, s) => sum + s.rows, 0);
    for (const shard of t.shards) {
      const from = shard.firstRow * rowValues;
      const to = from + shard.rows * rowValues;
      const part = ArrayBuffer.isView(values)
        ? (values as unknown as Float64Array).subarray(from, to)
        : Array.prototype.slice.call(values, from, to);
      this.device.queue.writeBuffer(this.buffers[shard.buffer], 0, encodeValues(part, t.dtype));
    }
  }

  /**
   * Reads a whole tensor back (f16 and f32 as Float32Array, u32 as Uint32Array).
   *
   * @example
   * ```ts
   * // const y = await executor.read("y");
   * ```
   */
  async read(name: string): Promise<Float32Array | Uint32Array | Int32Array> {
    const t = this.tensor(name);
    const total = t.shape.reduce((a, b) => a * b, 1);
    const rowValues = total / t.shards.reduce((sum, s) => sum + s.rows, 0);
    const parts: (Float32Array | Uint32Array | Int32Array)[] = [];
    for (const shard of t.shards) {
      const staging = this.device.createBuffer({
        size: shard.bytes,
        usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
      });
      const encoder = this.device.createCommandEncoder();
      encoder.copyBufferToBuffer(this.buffers[shard.buffer], 0, staging, 0, shard.bytes);
      this.device.queue.submit([encoder.finish()]);
      await staging.mapAsync(GPUMapMode.READ);
      parts.push(decodeValues(staging.getMappedRange().slice(0), t.dtype, shard.rows * rowValues));
      staging.destroy();
    }
    if (parts.length === 1) return parts[0];
    const out = new (parts[0].constructor as Float32ArrayConstructor)(total);
    let at = 0;
    for (const part of parts) {
      out.set(part as Float32Array, at);
      at += part.length;
    }
    return out;
  }

  /**
   * Encodes the schedule `times` times into one command buffer and submits it.
   *
   * @example
   * ```ts
   * // executor.run(); await executor.device.queue.onSubmittedWorkDone();
   * ```
   */
  run(times = 1): void {
    const encoder = this.device.createCommandEncoder();
    const pass = encoder.beginComputePass();
    for (let i = 0; i < times; i++) {
      for (const step of this.steps) {
        pass.setPipeline(step.pipeline);
        pass.setBindGroup(0, step.group);
        pass.dispatchWorkgroups(step.grid[0], step.grid[1], step.grid[2]);
      }
    }
    pass.end();
    this.device.queue.submit([encoder.finish()]);
  }

  /** Frees the program's buffers. */
  destroy(): void {
    for (const buffer of this.buffers) buffer.destroy();
  }
}
