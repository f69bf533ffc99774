/**
 * GEMV / skinny GEMM for the decode step: y[b, n] = Σ_k x[b, k] · W[n, k] (+ bias[n]), f32
 * activations and accumulation, weights in the weight dtype. Used for `matmul` (bindings x,
 * weight, [bias,] y) and `logits` (x, table, y). A weight split into shards is dispatched once
 * per shard: params = [first output row of the shard, its rows].
 *
 * Each workgroup takes {@link MATMUL_ROWS} output rows, one group of 32 invocations per row;
 * the invocations of a row read consecutive 4-element pieces of it (contiguous loads), issue
 * {@link K_LOADS} pieces' loads before using any (generated straight-line, see unrolled.ts), and
 * sum by a tree in workgroup memory.
 *
 * @module
 */
import { computeKernel, type KernelSpec } from "./kernel_spec.ts";
import { unroll } from "./unrolled.ts";
import {
  bindingDeclarations,
  FLAT_ID,
  MAIN_ARGS,
  PARAMS_DECL,
  weightPrelude,
} from "./wgsl_common.ts";

/** Output rows per workgroup. */
export const MATMUL_ROWS = 8;
/** Invocations per output row. */
const ROW_LANES = 32;
/** Weight pieces each invocation loads before using any. */
const K_LOADS = 4;

/** What a matmul needs of a node. */
export interface MatmulShape {
  batch: number;
  /** The reduced dimension. */
  inner: number;
  /** Output features of the whole (unsharded) weight. */
  outer: number;
  weightDtype: "f16" | "f32";
  bias: boolean;
  /** `matmul` or `logits` (binding names differ). */
  op: "matmul" | "logits";
}

/**
 * The kernel; dispatch ⌈rows / MATMUL_ROWS⌉ workgroups per shard.
 *
 * @example
 * ```ts
 * import { matmulKernel } from "./matmul.ts";
 * matmulKernel({ batch: 1, inner: 4096, outer: 4096, weightDtype: "f16", bias: false,
 *   op: "matmul" }).name; // "matmul"
 * ```
 */
export function matmulKernel(s: MatmulShape): KernelSpec {
  const width = s.inner % 4 === 0 ? 4 : 1;
  const vec = (t: string) => (width === 4 ? `vec4<${t}>` : t);
  const product = (w: string, x: string) =>
    width === 4 ? `dot(vec4<f32>(${w}), ${x})` : `f32(${w}) * ${x}`;
  const weightName = s.op === "logits" ? "table" : "weight";
  const storage: [string, "read" | "read_write", string][] = [
    ["x", "read", vec("f32")],
    [weightName, "read", vec("W")],
    ...(s.bias ? [["bias", "read", "W"] as [string, "read", string]] : []),
    ["y", "read_write", "f32"],
  ];
  const pieces = s.inner / width;
  const name = s.op === "logits" ? "logits" : s.bias ? "matmul_bias" : "matmul";
  const source =
    `// sparqc ${s.op}: ${MATMUL_ROWS} output rows per workgroup, ${ROW_LANES} invocations per row
${weightPrelude(s.weightDtype)}${PARAMS_DECL}
const BATCH = ${s.batch}u;
const PIECES = ${pieces}u;
const OUTER = ${s.outer}u;
const LANES = ${ROW_LANES}u;
const STEP = LANES * ${K_LOADS}u;
${bindingDeclarations(storage)}
var<workgroup> partial: array<f32, ${MATMUL_ROWS * ROW_LANES}>;

@compute @workgroup_size(${MATMUL_ROWS * ROW_LANES})
fn main(
  ${MAIN_ARGS},
) {
  ${FLAT_ID}
  let lane = tid % LANES;
  let local_row = flat * ${MATMUL_ROWS}u + tid / LANES;
  // Rows past the shard still take part in the barriers; they read row 0 and write nothing.
  let valid = local_row < params.rows;
  let w_row = select(0u, local_row, valid) * PIECES;
  for (var b = 0u; b < BATCH; b++) {
    var sum = 0.0;
    for (var k = lane; k < PIECES; k += STEP) {
${
      unroll(K_LOADS, (u) =>
        `let w${u} = ${weightName}[w_row + min(k + ${u * ROW_LANES}u, PIECES - 1u)];`, "      ")
    }
${
      unroll(K_LOADS, (u) =>
        `if (k + ${u * ROW_LANES}u < PIECES) { sum += ${
          product(`w${u}`, `x[b * PIECES + k + ${u * ROW_LANES}u]`)
        }; }`, "      ")
    }
    }
    partial[tid] = sum;
    workgroupBarrier();
    for (var stride = LANES / 2u; stride > 0u; stride /= 2u) {
      if (lane < stride) { partial[tid] += partial[tid + stride]; }
      workgroupBarrier();
    }
    if (valid && lane == 0u) {
      let n = params.first_row + local_row;
      y[b * OUTER + n] = partial[tid]${s.bias ? " + f32(bias[n])" : ""};
    }
    workgroupBarrier();
  }
}
`;
  return computeKernel(name, s.op, source, storage);
}
