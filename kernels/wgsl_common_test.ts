/**
 * The workgroup reductions on the local adapter against float64 sums, maxima, softmax merges and
 * prefix sums: by subgroups (where the adapter's size is fixed) and by trees, over workgroup
 * sizes that give one part, a few and many.
 */
import { ok } from "node:assert/strict";
import { testGpu } from "../runtime/test_gpu.ts";
import { deviceTarget } from "../runtime/device_target.ts";
import { dispatchOnce } from "./dispatch_once.ts";
import { reductions } from "./wgsl_common.ts";

const gpu = await testGpu();
const device = gpu.device;
const subgroupSize = deviceTarget(gpu, 1 << 30).subgroupSize;
const maxWorkgroup = device.limits.maxComputeInvocationsPerWorkgroup;

/** Outputs per invocation: max, sum, the max pair, softmax over `lanes` and all, scan. */
const OUTPUTS = 8;

function kernel(wg: number, sg: number | null, lanes: number): string {
  return `${reductions(wg, sg)}
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@compute @workgroup_size(${wg})
fn main(@builtin(local_invocation_index) tid: u32) {
  let v = x[tid];
  let w = x[tid + ${wg}u];
  let m = reduce_max(v, tid);
  let s = reduce_sum(v, tid);
  let pair = reduce_max_pair(v, w, tid);
  let segment = reduce_softmax_in(v, w, tid, ${lanes}u);
  let whole = reduce_softmax(v, w, tid);
  let scan = scan_exclusive(u32(w * 64.0), tid);
  let at = tid * ${OUTPUTS}u;
  out[at] = m;
  out[at + 1u] = s;
  out[at + 2u] = pair.y;
  out[at + 3u] = segment.x;
  out[at + 4u] = segment.y;
  out[at + 5u] = whole.y;
  out[at + 6u] = f32(scan.x);
  out[at + 7u] = f32(scan.y);
}`;
}

async function run(wg: number, sg: number | null, lanes: number, x: Float32Array<ArrayBuffer>) {
  return new Float32Array(await dispatchOnce(device, kernel(wg, sg, lanes), x, wg * OUTPUTS * 4));
}

/** The softmax statistics (max, Σ exp(v − max)) of pairs (m, s), merged in float64. */
function merge(pairs: [number, number][]): [number, number] {
  const top = Math.max(...pairs.map(([m]) => m));
  return [top, pairs.reduce((acc, [m, s]) => acc + s * Math.exp(m - top), 0)];
}

// Scaled by a power of two so that f32 and float64 truncate the same integer (×100 rounded
// f32 products up to the next integer about once in 200,000 values).
const scanInput = (a: number) => Math.trunc(Math.fround(a) * 64);

const close = (a: number, b: number) => Math.abs(a - b) <= 1e-5 * Math.max(1, Math.abs(b));

Deno.test("workgroup reductions by subgroups and by trees match float64", async () => {
  const sizes = [64, 256, 1024].filter((wg) => wg <= maxWorkgroup);
  for (const sg of [subgroupSize, null]) {
    for (const wg of sizes) {
      for (const lanes of [...new Set([Math.min(16, wg), 64, wg])].filter((l) => l <= wg)) {
        const x = Float32Array.from({ length: 2 * wg }, () => Math.random() * 4 - 2);
        const v = Array.from(x.subarray(0, wg));
        const w = Array.from(x.subarray(wg)).map((a) => Math.abs(a));
        x.set(w, wg);
        const out = await run(wg, sg, lanes, x);
        const label = `wg=${wg} subgroups=${sg} lanes=${lanes}`;
        const whole = merge(v.map((m, i) => [m, w[i]]));
        const sum = v.reduce((a, b) => a + b, 0);
        // f32 rounding in any order of the additions stays far below 1e-6 of Σ|v|; a value
        // lost or counted twice (|v| ≫ 1e-6 · Σ|v| almost surely) does not.
        const magnitude = v.reduce((a, b) => a + Math.abs(b), 0);
        let before = 0;
        const total = w.reduce((acc, a) => acc + scanInput(a), 0);
        for (let t = 0; t < wg; t++) {
          const o = out.subarray(t * OUTPUTS, (t + 1) * OUTPUTS);
          const first = t - (t % lanes);
          const segment = merge(v.slice(first, first + lanes).map((m, i) => [m, w[first + i]]));
          ok(o[0] === Math.max(...v.map(Math.fround)), `${label}: max at ${t}`);
          ok(Math.abs(o[1] - sum) <= 1e-6 * magnitude, `${label}: sum at ${t}: ${o[1]} vs ${sum}`);
          ok(o[2] === Math.max(...w.map(Math.fround)), `${label}: pair at ${t}`);
          ok(close(o[3], segment[0]) && close(o[4], segment[1]), `${label}: segment at ${t}`);
          ok(close(o[5], whole[1]), `${label}: softmax at ${t}: ${o[5]} vs ${whole[1]}`);
          ok(o[6] === before && o[7] === total, `${label}: scan at ${t}: ${o[6]}, ${o[7]}`);
          before += scanInput(w[t]);
        }
      }
    }
  }
});
