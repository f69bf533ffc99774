/**
 * Deno reports timestamp queries in raw GPU ticks, not nanoseconds. This calibrates ticks
 * against the wall clock: two batches of GPU work, one four times as long as the other, each
 * timed on the GPU (ticks from the first pass's start to the last pass's end) and on the wall
 * clock (submit to read-back). Their difference cancels the fixed ~11 ms that Deno's map and
 * submit round trip adds; ticks per nanosecond is Δticks / Δwall. Ratios within 5% of 1 are
 * taken as 1 (ticks are nanoseconds, as on the H100), so noise does not scale every figure.
 *
 * @module
 */

/** One timed batch: GPU ticks and wall-clock nanoseconds. */
export interface BatchTiming {
  ticks: number;
  wallNs: number;
}

/** Runs a batch of `reps` repetitions of some GPU work and times it both ways. */
export type CalibrationProbe = (reps: number) => Promise<BatchTiming>;

/** The calibration's result. */
export interface TickCalibration {
  /** Multiply ticks by this to get nanoseconds. */
  nsPerTick: number;
  /** The ratio measured, before snapping to 1. */
  measuredNsPerTick: number;
  /** Wall-clock duration of the long batch, in ns. */
  longBatchNs: number;
}

/**
 * Calibrates ticks: grows the batch until the short one lasts `minShortNs` of wall clock,
 * then measures short and 4× long batches `trials` times and takes the median ratio.
 *
 * @example
 * ```ts
 * import { calibrateTicks } from "./tick_calibration.ts";
 * // A fake GPU: 2 ticks per ns, 11 ms of fixed latency per batch, 1 ms per repetition.
 * const probe = (reps: number) =>
 *   Promise.resolve({ ticks: reps * 1e6 * 2, wallNs: 11e6 + reps * 1e6 });
 * (await calibrateTicks(probe)).nsPerTick; // 0.5
 * ```
 */
export async function calibrateTicks(
  probe: CalibrationProbe,
  { minShortNs = 50e6, trials = 3, maxReps = 1 << 16 } = {},
): Promise<TickCalibration> {
  let reps = 1;
  let short = await probe(reps);
  while (short.wallNs < minShortNs && reps < maxReps) {
    reps *= 2;
    short = await probe(reps);
  }
  const ratios: number[] = [];
  let longBatchNs = 0;
  for (let i = 0; i < trials; i++) {
    const a = await probe(reps);
    const b = await probe(reps * 4);
    longBatchNs = b.wallNs;
    const dWall = b.wallNs - a.wallNs;
    const dTicks = b.ticks - a.ticks;
    if (dWall > 0 && dTicks > 0) ratios.push(dWall / dTicks);
  }
  if (ratios.length === 0) {
    throw new Error("tick calibration failed: the GPU clock did not advance");
  }
  ratios.sort((x, y) => x - y);
  const measured = ratios[Math.floor(ratios.length / 2)];
  return {
    nsPerTick: Math.abs(measured - 1) < 0.05 ? 1 : measured,
    measuredNsPerTick: measured,
    longBatchNs,
  };
}

/**
 * A probe on a real device: a memory-bound kernel over a buffer (16 MiB on a software
 * adapter, 256 MiB on a GPU), one timed pass per batch.
 *
 * @example
 * ```ts
 * import { calibrateTicks, gpuProbe } from "./tick_calibration.ts";
 * import { openGpu } from "./device.ts";
 * const gpu = await openGpu();
 * const calibration = await calibrateTicks(gpuProbe(gpu.device, gpu.info.isFallbackAdapter));
 * ```
 */
export function gpuProbe(device: GPUDevice, small: boolean): CalibrationProbe {
  const words = (small ? 16 : 256) * (1 << 20) / 4;
  const buffer = device.createBuffer({ size: words * 4, usage: GPUBufferUsage.STORAGE });
  const module = device.createShaderModule({
    label: "tick-calibration",
    code: `@group(0) @binding(0) var<storage, read_write> data: array<u32>;
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) n: vec3u,
        @builtin(local_invocation_index) tid: u32) {
  let i = (wid.y * n.x + wid.x) * 256u + tid;
  if (i < arrayLength(&data)) { data[i] = data[i] * 1664525u + 1013904223u; }
}`,
  });
  const pipeline = device.createComputePipeline({
    layout: "auto",
    compute: { module, entryPoint: "main" },
  });
  const group = device.createBindGroup({
    layout: pipeline.getBindGroupLayout(0),
    entries: [{ binding: 0, resource: { buffer } }],
  });
  const querySet = device.createQuerySet({ type: "timestamp", count: 2 });
  const resolve = device.createBuffer({
    size: 16,
    usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC,
  });
  const workgroups = words / 256;
  const x = Math.min(workgroups, 32768);
  return async (reps) => {
    const readback = device.createBuffer({
      size: 16,
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
    });
    const encoder = device.createCommandEncoder();
    const pass = encoder.beginComputePass({
      timestampWrites: { querySet, beginningOfPassWriteIndex: 0, endOfPassWriteIndex: 1 },
    });
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, group);
    for (let i = 0; i < reps; i++) pass.dispatchWorkgroups(x, Math.ceil(workgroups / x));
    pass.end();
    encoder.resolveQuerySet(querySet, 0, 2, resolve, 0);
    encoder.copyBufferToBuffer(resolve, 0, readback, 0, 16);
    const started = performance.now();
    device.queue.submit([encoder.finish()]);
    await readback.mapAsync(GPUMapMode.READ);
    const wallNs = (performance.now() - started) * 1e6;
    const [begin, end] = new BigUint64Array(readback.getMappedRange());
    readback.destroy();
    return { ticks: Number(end - begin), wallNs };
  };
}
