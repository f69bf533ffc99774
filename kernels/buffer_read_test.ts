import { deepStrictEqual } from "node:assert/strict";
import { openGpu } from "../runtime/device.ts";
import {
  BUFFER_READ_KERNEL,
  bufferReadGrid,
  BYTES_PER_READ_GROUP,
  READ_SINK_TRIGGER,
} from "./buffer_read.ts";

Deno.test("bufferReadGrid covers the bytes with workgroups in rows of at most 32768", () => {
  deepStrictEqual(bufferReadGrid(256 << 20), { groups: 8192, grid: [8192, 1] });
  deepStrictEqual(bufferReadGrid(2 ** 31), { groups: 65536, grid: [32768, 2] });
  deepStrictEqual(bufferReadGrid(BYTES_PER_READ_GROUP + 16), { groups: 2, grid: [2, 1] });
});

Deno.test("the read kernel reads each workgroup's own bytes: the trigger placed in one group shows in its sink only", async () => {
  const gpu = await openGpu();
  const { device } = gpu;
  try {
    const words = 3 * BYTES_PER_READ_GROUP / 4;
    const pipeline = device.createComputePipeline({
      layout: "auto",
      compute: {
        module: device.createShaderModule({ code: BUFFER_READ_KERNEL }),
        entryPoint: "main",
      },
    });
    // A trigger at each group's last vec4 but two halves of one in group 0, which XOR to it.
    const data = new Uint32Array(words);
    const lastVec4 = (g: number) => ((g + 1) * BYTES_PER_READ_GROUP) / 4 - 4;
    data.fill(READ_SINK_TRIGGER, lastVec4(2), lastVec4(2) + 4);
    data.fill(0xffff0000, 0, 4);
    data.fill(READ_SINK_TRIGGER ^ 0xffff0000, 256 * 4, 256 * 4 + 4);
    // Group 1: the trigger and a stray vec4 in one invocation's loads cancel it out.
    data.fill(READ_SINK_TRIGGER, lastVec4(1), lastVec4(1) + 4);
    data.fill(1, lastVec4(1) - 256 * 4, lastVec4(1) - 256 * 4 + 1);
    const input = device.createBuffer({
      size: data.byteLength,
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST,
    });
    device.queue.writeBuffer(input, 0, data);
    const sink = device.createBuffer({
      size: 16,
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC,
    });
    const readback = device.createBuffer({
      size: 16,
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
    });
    const encoder = device.createCommandEncoder();
    const pass = encoder.beginComputePass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(
      0,
      device.createBindGroup({
        layout: pipeline.getBindGroupLayout(0),
        entries: [{ binding: 0, resource: { buffer: input } }, {
          binding: 1,
          resource: { buffer: sink },
        }],
      }),
    );
    pass.dispatchWorkgroups(...bufferReadGrid(data.byteLength).grid);
    pass.end();
    encoder.copyBufferToBuffer(sink, 0, readback, 0, 16);
    device.queue.submit([encoder.finish()]);
    await readback.mapAsync(GPUMapMode.READ);
    deepStrictEqual(
      [...new Uint32Array(readback.getMappedRange())],
      [READ_SINK_TRIGGER, 0, READ_SINK_TRIGGER, 0],
    );
  } finally {
    device.destroy();
  }
});
