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
import { BufferReader } from "./buffer_reader.ts";
import type { Gpu } from "./device.ts";

/** A scrub pass ready to encode between timed passes. */
export class L2Scrub {
  private constructor(private readonly reader: BufferReader) {}

  /** Bytes each pass reads. */
  get bytes(): number {
    return this.reader.bytes;
  }

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
    return new L2Scrub(BufferReader.create(device, bytes, "l2 scrub"));
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
    this.reader.dispatch(pass);
    pass.end();
  }

  /** Frees the scrub's buffers. */
  destroy(): void {
    this.reader.destroy();
  }
}
