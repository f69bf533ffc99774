import { deepStrictEqual } from "node:assert/strict";
import { openGpu } from "../runtime/device.ts";
import { dispatchOnce } from "./dispatch_once.ts";
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
    // A trigger at each group's last vec4 but two halves of one in group 0, which XOR to it.
    const data = new Uint32Array(words);
    const lastVec4 = (g: number) => ((g + 1) * BYTES_PER_READ_GROUP) / 4 - 4;
    data.fill(READ_SINK_TRIGGER, lastVec4(2), lastVec4(2) + 4);
    data.fill(0xffff0000, 0, 4);
    data.fill(READ_SINK_TRIGGER ^ 0xffff0000, 256 * 4, 256 * 4 + 4);
    // Group 1: the trigger and a stray vec4 in one invocation's loads cancel it out.
    data.fill(READ_SINK_TRIGGER, lastVec4(1), lastVec4(1) + 4);
    data.fill(1, lastVec4(1) - 256 * 4, lastVec4(1) - 256 * 4 + 1);
    const sink = await dispatchOnce(
      device,
      BUFFER_READ_KERNEL,
      data,
      16,
      bufferReadGrid(data.byteLength).grid,
    );
    deepStrictEqual([...new Uint32Array(sink)], [READ_SINK_TRIGGER, 0, READ_SINK_TRIGGER, 0]);
  } finally {
    device.destroy();
  }
});
