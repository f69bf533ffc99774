/**
 * The read ceiling of the device, measured in the same run as the bench: a plain WGSL kernel
 * that reads a large buffer with vec4<u32> loads (256 invocations, 8 loads each, coalesced),
 * timed with timestamp queries. Achieved bandwidth is reported against this figure.
 *
 * @module
 */
import { BufferReader } from "../runtime/buffer_reader.ts";
import type { Gpu } from "../runtime/device.ts";
import { type Stats, summarize } from "../runtime/stats.ts";
import { timePasses } from "./timed_passes.ts";

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
  const bytes = gpu.info.isFallbackAdapter ? 64 << 20 : 1 << 30;
  const reader = BufferReader.create(gpu.device, bytes, "roofline");
  gpu.doing("measuring the read roofline");
  const ticks = await timePasses(gpu.device, reps, (encoder, timestampWrites) => {
    const pass = encoder.beginComputePass({ timestampWrites });
    reader.dispatch(pass);
    pass.end();
  });
  const samples = ticks.map((t) => t * nsPerTick);
  reader.destroy();
  gpu.throwIfErrors();
  const time = summarize(samples);
  return { bytes, time, gbps: bytes / time.median };
}
