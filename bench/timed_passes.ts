/**
 * GPU time of compute passes by timestamp queries, for the bench's own probes (the read
 * ceiling, the translation probe): every repetition is encoded into one command buffer, each
 * timed pass writes its start and end, and one read-back returns them all — so the device never
 * idles between repetitions and its clocks stay up.
 *
 * @module
 */

/** Where a timed pass writes its start and end: pass it to `beginComputePass`. */
export type PassTimestamps = GPUComputePassTimestampWrites;

/**
 * Encodes `reps` repetitions with `record` (which begins the timed pass with the given
 * timestamp writes, and may encode untimed passes around it), submits them at once, and returns
 * each repetition's timed pass in ticks.
 *
 * @example
 * ```ts
 * import { timePasses } from "./timed_passes.ts";
 * // const ticks = await timePasses(device, 20, (encoder, timestampWrites) => {
 * //   const pass = encoder.beginComputePass({ timestampWrites });
 * //   pass.setPipeline(pipeline); pass.setBindGroup(0, group); pass.dispatchWorkgroups(n);
 * //   pass.end();
 * // });
 * ```
 */
export async function timePasses(
  device: GPUDevice,
  reps: number,
  record: (encoder: GPUCommandEncoder, timestampWrites: PassTimestamps, rep: number) => void,
): Promise<number[]> {
  const querySet = device.createQuerySet({ type: "timestamp", count: 2 * reps });
  const resolve = device.createBuffer({
    size: 16 * reps,
    usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC,
  });
  const readback = device.createBuffer({
    size: 16 * reps,
    usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
  });
  const encoder = device.createCommandEncoder();
  for (let r = 0; r < reps; r++) {
    record(encoder, {
      querySet,
      beginningOfPassWriteIndex: 2 * r,
      endOfPassWriteIndex: 2 * r + 1,
    }, r);
  }
  encoder.resolveQuerySet(querySet, 0, 2 * reps, resolve, 0);
  encoder.copyBufferToBuffer(resolve, 0, readback, 0, 16 * reps);
  device.queue.submit([encoder.finish()]);
  await readback.mapAsync(GPUMapMode.READ);
  const ticks = new BigUint64Array(readback.getMappedRange().slice(0));
  readback.unmap();
  for (const b of [resolve, readback]) b.destroy();
  querySet.destroy();
  return Array.from({ length: reps }, (_, r) => Number(ticks[2 * r + 1] - ticks[2 * r]));
}
