/**
 * The read ceiling of the device, measured in the same run as the bench: a plain WGSL kernel
 * that reads a large buffer with vec4<u32> loads (256 invocations, 8 loads each, coalesced),
 * timed with timestamp queries. Achieved bandwidth is reported against this figure.
 *
 * @module
 */
import type { Gpu } from "../runtime/device.ts";
import { type Stats, summarize } from "../runtime/stats.ts";
import { timePasses } from "./timed_passes.ts";

/** The read kernel (bindings data, sink): each invocation XORs 8 coalesced 16-byte loads. */
export const READ_KERNEL = `
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
  const module = device.createShaderModule({ label: "roofline", code: READ_KERNEL });
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
  gpu.doing("measuring the read roofline");
  const x = Math.min(groups, 32768);
  const ticks = await timePasses(device, reps, (encoder, timestampWrites) => {
    const pass = encoder.beginComputePass({ timestampWrites });
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, group);
    pass.dispatchWorkgroups(x, Math.ceil(groups / x));
    pass.end();
  });
  const samples = ticks.map((t) => t * nsPerTick);
  for (const b of [data, sink]) b.destroy();
  gpu.throwIfErrors();
  const time = summarize(samples);
  return { bytes, time, gbps: bytes / time.median };
}
