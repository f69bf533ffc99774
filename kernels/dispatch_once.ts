/**
 * One dispatch of a WGSL kernel with bindings `(0: read storage input, 1: read_write storage
 * output)` and its output read back: what the tests of small kernels (the read kernel, the
 * reductions) run on the local adapter.
 *
 * @module
 */

/**
 * Runs `code`'s `main` once over `grid` workgroups on `input` and returns the `outputBytes` of its
 * output buffer (zeroed before the dispatch).
 *
 * @example
 * ```ts
 * import { dispatchOnce } from "./dispatch_once.ts";
 * // const out = new Uint32Array(await dispatchOnce(device, code, data, 16, [3, 1]));
 * ```
 */
export async function dispatchOnce(
  device: GPUDevice,
  code: string,
  input: Float32Array<ArrayBuffer> | Uint32Array<ArrayBuffer>,
  outputBytes: number,
  grid: [number, number] = [1, 1],
): Promise<ArrayBuffer> {
  // A kernel that fails to compile must fail the test, not leave its output zero.
  device.pushErrorScope("validation");
  const pipeline = device.createComputePipeline({
    layout: "auto",
    compute: { module: device.createShaderModule({ code }), entryPoint: "main" },
  });
  const error = await device.popErrorScope();
  if (error) throw new Error(`the kernel does not compile: ${error.message}`);
  const buffer = (size: number, usage: number) => device.createBuffer({ size, usage });
  const data = buffer(input.byteLength, GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST);
  device.queue.writeBuffer(data, 0, input);
  const out = buffer(outputBytes, GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC);
  const read = buffer(outputBytes, GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST);
  const encoder = device.createCommandEncoder();
  const pass = encoder.beginComputePass();
  pass.setPipeline(pipeline);
  pass.setBindGroup(
    0,
    device.createBindGroup({
      layout: pipeline.getBindGroupLayout(0),
      entries: [{ binding: 0, resource: { buffer: data } }, {
        binding: 1,
        resource: { buffer: out },
      }],
    }),
  );
  pass.dispatchWorkgroups(...grid);
  pass.end();
  encoder.copyBufferToBuffer(out, 0, read, 0, outputBytes);
  device.queue.submit([encoder.finish()]);
  await read.mapAsync(GPUMapMode.READ);
  const result = read.getMappedRange().slice(0);
  read.unmap();
  for (const b of [data, out, read]) b.destroy();
  return result;
}
