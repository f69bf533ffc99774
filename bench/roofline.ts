/**
 * The read ceiling of the device, measured in the same run as the bench: a plain WGSL kernel
 * that reads a large buffer with vec4<u32> loads (256 invocations, 8 loads each, coalesced),
 * timed with timestamp queries. Achieved bandwidth is reported against this figure.
 *
 * @module
 */
import type { Gpu } from "../runtime/device.ts";
import { type Stats, summarize } from "../runtime/stats.ts";

const SOURCE = `
@group(0) @binding(0) var<storage, read> data: array<vec4<u32>>;
@group(0) @binding(1) var<storage, read_write> sink: array<u32>;
const WG = 256u;
const LOADS = 8u;
@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) n: vec3u,
        @builtin(local_invocation_index) tid: u32) {
  let group = wid.y * n.x + wid.x;
  let base = group * WG * LOADS + tid;
  var acc = vec4<u32>(0u);
  for (var i = 0u; i < LOADS; i++) {
    let at = base + i * WG;
    if (at < arrayLength(&data)) { acc ^= data[at]; }
  }
  // Written only if the data happen to XOR to this value: keeps the loads alive.
  if (all(acc == vec4<u32>(0x9e3779b9u))) { sink[group] = acc.x; }
}
`;

/** The measured ceiling. */
export interface Roofline {
  bytes: number;
  time: Stats;
  /** Bytes per second at the median time, in GB/s (10⁹). */
  gbps: number;
}

/**
 * Measures the read bandwidth over `bytes` (1 GiB on a GPU, 64 MiB on a software adapter).
 *
 * @example
 * ```ts
 * import { measureRoofline } from "./roofline.ts";
 * // const { gbps } = await measureRoofline(gpu, 1);
 * ```
 */
export async function measureRoofline(gpu: Gpu, nsPerTick: number, reps = 20): Promise<Roofline> {
  const device = gpu.device;
  const bytes = gpu.info.isFallbackAdapter ? 64 << 20 : 1 << 30;
  const data = device.createBuffer({ size: bytes, usage: GPUBufferUsage.STORAGE });
  const groups = bytes / 16 / 256 / 8;
  const sink = device.createBuffer({ size: groups * 4, usage: GPUBufferUsage.STORAGE });
  const module = device.createShaderModule({ label: "roofline", code: SOURCE });
  const pipeline = device.createComputePipeline({
    layout: "auto",
    compute: { module, entryPoint: "main" },
  });
  const group = device.createBindGroup({
    layout: pipeline.getBindGroupLayout(0),
    entries: [{ binding: 0, resource: { buffer: data } }, {
      binding: 1,
      resource: { buffer: sink },
    }],
  });
  const querySet = device.createQuerySet({ type: "timestamp", count: 2 * reps });
  const resolve = device.createBuffer({
    size: 16 * reps,
    usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC,
  });
  const readback = device.createBuffer({
    size: 16 * reps,
    usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
  });
  gpu.doing("measuring the read roofline");
  const encoder = device.createCommandEncoder();
  const x = Math.min(groups, 32768);
  for (let r = 0; r < reps; r++) {
    const pass = encoder.beginComputePass({
      timestampWrites: {
        querySet,
        beginningOfPassWriteIndex: 2 * r,
        endOfPassWriteIndex: 2 * r + 1,
      },
    });
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, group);
    pass.dispatchWorkgroups(x, Math.ceil(groups / x));
    pass.end();
  }
  encoder.resolveQuerySet(querySet, 0, 2 * reps, resolve, 0);
  encoder.copyBufferToBuffer(resolve, 0, readback, 0, 16 * reps);
  device.queue.submit([encoder.finish()]);
  await readback.mapAsync(GPUMapMode.READ);
  const ticks = new BigUint64Array(readback.getMappedRange().slice(0));
  const samples = Array.from(
    { length: reps },
    (_, r) => Number(ticks[2 * r + 1] - ticks[2 * r]) * nsPerTick,
  );
  for (const b of [data, sink, resolve, readback]) b.destroy();
  querySet.destroy();
  gpu.throwIfErrors();
  const time = summarize(samples);
  return { bytes, time, gbps: bytes / time.median };
}
