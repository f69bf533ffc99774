/**
 * Runs a compiled program on a WebGPU device: creates its buffers, pipelines (with explicit
 * bind-group layouts, so that a binding a kernel does not read still has its slot) and bind
 * groups once, then encodes the schedule — or some of its nodes — into one command buffer per
 * run. `profile` times stages with timestamp queries.
 *
 * @module
 */
import { deviceTarget } from "./device_target.ts";
import { Plan, type PlanDispatch, type PlanTensor, type Program } from "../compiler/plan.ts";
import { UserError, zodErrorLine } from "../compiler/user_error.ts";
import type { Gpu } from "./device.ts";
import type { L2Scrub } from "./l2_scrub.ts";
import { decodeValues, encodeValues, type HostValues } from "./tensor_bytes.ts";

const ACCESS_TYPE = {
  read: "read-only-storage",
  read_write: "storage",
  uniform: "uniform",
} as const;

/** The most timestamp queries one query set holds (WebGPU's limit). */
const MAX_QUERIES = 4096;

/** One compiled dispatch, ready to encode. */
interface Step {
  dispatch: PlanDispatch;
  pipeline: GPUComputePipeline;
  group: GPUBindGroup;
}

/** Options of {@link Executor.profile}. */
export interface ProfileOptions {
  /** Repetitions of the timed dispatches. */
  reps: number;
  /** Nanoseconds per timestamp tick (see tick_calibration.ts). */
  nsPerTick: number;
  /** Which stage a dispatch belongs to; consecutive dispatches of a stage share one pass. */
  stageOf?: (d: PlanDispatch) => string;
  /** Time only these nodes' dispatches (default: the whole schedule). */
  nodes?: ReadonlySet<string>;
  /**
   * Cold cache: encoded before each repetition, an untimed pass that reads other data through
   * the L2 (see l2_scrub.ts), so that no repetition finds the previous one's data there.
   */
  scrub?: L2Scrub;
}

/** GPU time of each stage, one sample per repetition, in nanoseconds. */
export interface Profile {
  stages: { stage: string; samplesNs: number[] }[];
  /** Σ over stages, per repetition. */
  totalNs: number[];
}

/** A program made ready on a device. */
export class Executor {
  private constructor(
    readonly gpu: Gpu,
    readonly program: Program,
    private readonly buffers: GPUBuffer[],
    private readonly steps: Step[],
  ) {}

  /**
   * Creates buffers, pipelines and bind groups; throws naming the kernel on a validation error.
   *
   * @example
   * ```ts
   * import { Executor } from "./executor.ts";
   * import { openGpu } from "./device.ts";
   * // const executor = await Executor.create(await openGpu(), program);
   * ```
   */
  static async create(gpu: Gpu, program: Program): Promise<Executor> {
    const { device } = gpu;
    gpu.doing("allocating the program's buffers");
    device.pushErrorScope("out-of-memory");
    const buffers = program.buffers.map((b) =>
      device.createBuffer({
        label: b.label,
        size: b.bytes,
        usage: b.role === "params"
          ? GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST
          : GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC,
      })
    );
    const oom = await device.popErrorScope();
    if (oom) {
      const total = program.buffers.reduce((s, b) => s + b.bytes, 0);
      throw new UserError(`the GPU cannot hold the program's ${total} bytes: ${oom.message}`);
    }

    const pipelines = new Map<string, GPUComputePipeline>();
    for (const kernel of program.kernels) {
      gpu.doing(`building kernel '${kernel.id}'`);
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

    gpu.doing("binding the schedule's buffers");
    device.pushErrorScope("validation");
    const params = new Uint32Array(Math.max(1, program.schedule.length) * 64);
    const steps = program.schedule.map((d, i) => {
      params.set(d.params, i * 64);
      const pipeline = pipelines.get(d.kernel)!;
      return { dispatch: d, pipeline, group: bindGroup(device, pipeline, d, buffers) };
    });
    const paramsBuffer = program.buffers.find((b) => b.role === "params");
    if (paramsBuffer) device.queue.writeBuffer(buffers[paramsBuffer.id], 0, params);
    const error = await device.popErrorScope();
    if (error) throw new Error(`binding the schedule: ${error.message}`);
    gpu.throwIfErrors();
    return new Executor(gpu, program, buffers, steps);
  }

  /**
   * Loads a plan from a `plan.json` file (as `deno task compile` writes it) and prepares it.
   *
   * @example
   * ```ts
   * import { Executor } from "./executor.ts";
   * import { openGpu } from "./device.ts";
   * // const executor = await Executor.load(await openGpu(), "out/plans/tiny-llama-sparq/plan.json");
   * ```
   */
  static async load(gpu: Gpu, path: string): Promise<Executor> {
    let raw: unknown;
    try {
      raw = JSON.parse(await Deno.readTextFile(path));
    } catch (error) {
      throw new UserError(
        `cannot read plan ${path}: ${error instanceof Error ? error.message : error}`,
      );
    }
    const plan = Plan.safeParse(raw);
    if (!plan.success) throw new UserError(zodErrorLine(path, plan.error));
    // Kernels built for a fixed subgroup size reduce wrongly under any other (no error shows).
    const planned = plan.data.target.subgroupSize;
    const here = deviceTarget(gpu, plan.data.target.memoryBudget).subgroupSize;
    if (planned !== null && planned !== here) {
      throw new UserError(
        `plan ${path} was compiled for target ${plan.data.target.name}, whose kernels use ` +
          `subgroups of ${planned} invocations; this adapter's are ${here ?? "not fixed"}: ` +
          `compile for it with --tune, or for --target webgpu-default`,
      );
    }
    return Executor.create(gpu, plan.data);
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
      this.gpu.device.queue.writeBuffer(this.buffers[shard.buffer], 0, encodeValues(part, t.dtype));
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
    const device = this.gpu.device;
    const total = t.shape.reduce((a, b) => a * b, 1);
    const rowValues = total / t.shards.reduce((sum, s) => sum + s.rows, 0);
    const parts: (Float32Array | Uint32Array | Int32Array)[] = [];
    this.gpu.doing(`reading tensor '${name}'`);
    for (const shard of t.shards) {
      const staging = device.createBuffer({
        size: shard.bytes,
        usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
      });
      const encoder = device.createCommandEncoder();
      encoder.copyBufferToBuffer(this.buffers[shard.buffer], 0, staging, 0, shard.bytes);
      device.queue.submit([encoder.finish()]);
      await staging.mapAsync(GPUMapMode.READ);
      parts.push(decodeValues(staging.getMappedRange().slice(0), t.dtype, shard.rows * rowValues));
      staging.destroy();
    }
    this.gpu.throwIfErrors();
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
   * Encodes the schedule (or only `nodes`' dispatches) `times` times into one command buffer
   * and submits it.
   *
   * @example
   * ```ts
   * // executor.run(); const y = await executor.read("y");
   * ```
   */
  run(times = 1, nodes?: ReadonlySet<string>): void {
    this.gpu.doing(`running the schedule ×${times}`);
    const encoder = this.gpu.device.createCommandEncoder();
    const pass = encoder.beginComputePass();
    for (let i = 0; i < times; i++) this.encode(pass, nodes);
    pass.end();
    this.gpu.device.queue.submit([encoder.finish()]);
  }

  /**
   * Encodes the schedule (or only `nodes`' dispatches) once into a caller's compute pass, so
   * that other work (a generation loop's token feed) can sit between steps.
   *
   * @example
   * ```ts
   * // const pass = encoder.beginComputePass(); executor.encode(pass); pass.end();
   * ```
   */
  encode(pass: GPUComputePassEncoder, nodes?: ReadonlySet<string>): void {
    for (const step of this.steps) {
      if (!nodes || nodes.has(step.dispatch.node)) encodeStep(pass, step);
    }
  }

  /**
   * Keeps the GPU busy with this program for at least `minNs` of GPU time (by `estimateNs` per
   * run, at most `maxRuns` runs) and waits for it: GPUs lower their clocks when idle, and a
   * timing taken right after CPU-side work would catch them ramping up.
   *
   * @example
   * ```ts
   * // await executor.warmUp(100e6, 250e3);
   * ```
   */
  async warmUp(minNs: number, estimateNs: number, maxRuns = 2000): Promise<void> {
    const runs = Math.max(2, Math.min(maxRuns, Math.ceil(minNs / Math.max(estimateNs, 1))));
    for (let done = 0; done < runs; done += 200) this.run(Math.min(200, runs - done));
    await this.gpu.device.queue.onSubmittedWorkDone();
  }

  /**
   * Times stages with timestamp queries: one compute pass per stage, `reps` repetitions
   * encoded back to back (several submits if the query set is full), one read-back at the end.
   *
   * @example
   * ```ts
   * // const { stages } = await executor.profile({ reps: 50, nsPerTick: 1 });
   * ```
   */
  async profile(options: ProfileOptions): Promise<Profile> {
    const device = this.gpu.device;
    const stageOf = options.stageOf ?? ((d: PlanDispatch) => `${d.node} ${d.kernel}`);
    const steps = this.steps.filter((s) => !options.nodes || options.nodes.has(s.dispatch.node));
    const groups: { stage: string; steps: Step[] }[] = [];
    for (const step of steps) {
      const stage = stageOf(step.dispatch);
      if (groups.at(-1)?.stage === stage) groups.at(-1)!.steps.push(step);
      else groups.push({ stage, steps: [step] });
    }
    const queriesPerRep = 2 * groups.length;
    const repsPerSubmit = Math.floor(MAX_QUERIES / queriesPerRep);
    if (repsPerSubmit < 1) throw new Error(`${groups.length} stages exceed one query set`);
    const querySet = device.createQuerySet({ type: "timestamp", count: MAX_QUERIES });
    const resolve = device.createBuffer({
      size: MAX_QUERIES * 8,
      usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC,
    });
    const readback = device.createBuffer({
      size: options.reps * queriesPerRep * 8,
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
    });
    this.gpu.doing(`timing ${groups.map((g) => g.stage).join(", ")}`);
    for (let first = 0; first < options.reps; first += repsPerSubmit) {
      const reps = Math.min(repsPerSubmit, options.reps - first);
      const encoder = device.createCommandEncoder();
      for (let r = 0; r < reps; r++) {
        options.scrub?.encode(encoder);
        groups.forEach((group, g) => {
          const at = (r * groups.length + g) * 2;
          const pass = encoder.beginComputePass({
            timestampWrites: {
              querySet,
              beginningOfPassWriteIndex: at,
              endOfPassWriteIndex: at + 1,
            },
          });
          for (const step of group.steps) encodeStep(pass, step);
          pass.end();
        });
      }
      encoder.resolveQuerySet(querySet, 0, reps * queriesPerRep, resolve, 0);
      encoder.copyBufferToBuffer(
        resolve,
        0,
        readback,
        first * queriesPerRep * 8,
        reps * queriesPerRep * 8,
      );
      device.queue.submit([encoder.finish()]);
    }
    await readback.mapAsync(GPUMapMode.READ);
    const ticks = new BigUint64Array(readback.getMappedRange().slice(0));
    readback.destroy();
    querySet.destroy();
    resolve.destroy();
    this.gpu.throwIfErrors();

    const stages = groups.map((group) => ({ stage: group.stage, samplesNs: [] as number[] }));
    const totalNs: number[] = [];
    for (let r = 0; r < options.reps; r++) {
      let total = 0;
      groups.forEach((_, g) => {
        const at = (r * groups.length + g) * 2;
        const ns = Number(ticks[at + 1] - ticks[at]) * options.nsPerTick;
        stages[g].samplesNs.push(ns);
        total += ns;
      });
      totalNs.push(total);
    }
    return { stages, totalNs };
  }

  /**
   * The GPU buffers holding a tensor, each with the index of its first value and its count.
   *
   * @example
   * ```ts
   * // for (const { buffer, first, count } of executor.buffersOf("k_cache")) ...
   * ```
   */
  buffersOf(name: string): { buffer: GPUBuffer; first: number; count: number }[] {
    const t = this.tensor(name);
    const total = t.shape.reduce((a, b) => a * b, 1);
    const rowValues = total / t.shards.reduce((sum, s) => sum + s.rows, 0);
    return t.shards.map((s) => ({
      buffer: this.buffers[s.buffer],
      first: s.firstRow * rowValues,
      count: s.rows * rowValues,
    }));
  }

  /** Frees the program's buffers. */
  destroy(): void {
    for (const buffer of this.buffers) buffer.destroy();
  }
}

function bindGroup(
  device: GPUDevice,
  pipeline: GPUComputePipeline,
  d: PlanDispatch,
  buffers: GPUBuffer[],
): GPUBindGroup {
  return device.createBindGroup({
    label: `${d.node}:${d.kernel}#${d.shard}`,
    layout: pipeline.getBindGroupLayout(0),
    entries: d.bindings.map((b) => ({
      binding: b.binding,
      resource: { buffer: buffers[b.buffer], offset: b.offset, size: b.size },
    })),
  });
}

function encodeStep(pass: GPUComputePassEncoder, step: Step): void {
  pass.setPipeline(step.pipeline);
  pass.setBindGroup(0, step.group);
  const [x, y, z] = step.dispatch.dispatch;
  pass.dispatchWorkgroups(x, y, z);
}
