import { deepStrictEqual, strictEqual } from "node:assert/strict";
import { openGpu } from "../runtime/device.ts";
import { dispatchOnce } from "./dispatch_once.ts";
import {
  PREFETCH_SLICE_BYTES,
  prefetchBytes,
  prefetchOnArrival,
  prefetchWgsl,
  prefetchWorkgroups,
} from "./l2_prefetch.ts";

Deno.test("prefetchBytes takes a weight whole where it fits three quarters of the L2, else its start", () => {
  strictEqual(prefetchBytes(32 << 20, 50 << 20), 32 << 20);
  strictEqual(prefetchBytes(45 << 20, 50 << 20), Math.floor((50 << 20) * 0.75 / 16) * 16);
  strictEqual(prefetchBytes(100, 1 << 20), 96);
});

Deno.test("prefetchWorkgroups gives each at most PREFETCH_SLICE_BYTES", () => {
  strictEqual(prefetchWorkgroups(PREFETCH_SLICE_BYTES / 16), 1);
  strictEqual(prefetchWorkgroups(PREFETCH_SLICE_BYTES / 16 + 1), 2);
});

Deno.test("prefetchOnArrival numbers the early workgroups of all rows apart", () => {
  strictEqual(
    prefetchOnArrival("order", "(row_parts - 1u)"),
    "prefetch_slice(local_row * (row_parts - 1u) + order, params.rows * (row_parts - 1u), tid);",
  );
});

/** A kernel in which each of `slices` workgroups writes what its invocations' prefetch summed. */
function sliceSums(words: number): string {
  return `struct Params { extra0: u32, extra1: u32 }
const params = Params(0u, 0u);
const WG = 64u;
@group(0) @binding(0) var<storage, read> prefetch: array<vec4<u32>>;
@group(0) @binding(1) var<storage, read_write> out: array<u32>;
${prefetchWgsl(words, "out[0] = 0u;")}
@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) n: vec3u,
        @builtin(local_invocation_index) tid: u32) {
  let s = prefetch_sum(wid.x, n.x, tid);
  out[wid.x * WG + tid] = s.x + s.y + s.z + s.w;
}`;
}

Deno.test("the prefetch's slices read each of the first `words` vec4s once (a slice's most each), and nothing after them", async () => {
  const gpu = await openGpu();
  try {
    const data = new Uint32Array(4 * 25000);
    for (let i = 0; i < data.length; i++) {
      data[i] = (Math.imul(i + 1, 2654435761) >>> 0) ^ 0x5bd1e995;
    }
    const wrappingSum = (count: number) => {
      let sum = 0;
      for (let i = 0; i < 4 * count; i++) sum = (sum + data[i]) >>> 0;
      return sum;
    };
    const results: [number, number, number, number][] = [];
    // The last case: one slice takes at most PREFETCH_SLICE_BYTES, the start of the words.
    const cases = [[5000, 1, 5000], [5000, 3, 5000], [4999, 7, 4999], [1, 5, 1], [700, 64, 700]];
    cases.push([25000, 1, PREFETCH_SLICE_BYTES / 16]);
    for (const [words, slices, read] of cases) {
      const out = new Uint32Array(
        await dispatchOnce(gpu.device, sliceSums(words), data, slices * 64 * 4, [slices, 1]),
      );
      const sum = out.reduce((a, b) => (a + b) >>> 0, 0);
      results.push([words, slices, sum, wrappingSum(read)]);
    }
    deepStrictEqual(
      results.map(([words, slices, sum, expected]) => [words, slices, sum === expected]),
      results.map(([words, slices]) => [words, slices, true]),
    );
  } finally {
    gpu.device.destroy();
  }
});
