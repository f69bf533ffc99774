/**
 * Argmax over the vocabulary, one workgroup per row: the largest logit's index, ties to the
 * lower index (as `torch.argmax` on CPU and the float64 reference).
 *
 * @module
 */
import { computeKernel, type KernelSpec } from "./kernel_spec.ts";
import { indentLines } from "./unrolled.ts";
import { FLAT_ID, MAIN_ARGS, PARAMS_DECL } from "./wgsl_common.ts";

/** Invocations per workgroup of the argmax kernel (a power of two). */
export const ARGMAX_WORKGROUP = 256;
/** vec4 loads each invocation has in flight. */
const ARGMAX_LOADS = 8;

/**
 * Bindings logits, y (u32 token ids), params (rows = B).
 *
 * @example
 * ```ts
 * import { argmaxKernel } from "./argmax.ts";
 * argmaxKernel(32000).name; // "argmax"
 * ```
 */
export function argmaxKernel(vocab: number): KernelSpec {
  // With whole vec4s, each invocation keeps LOADS loads in flight (straight-line): a loop of
  // one load per iteration took 51 µs for a 32000-word vocabulary on the H100.
  const vec = vocab % 4 === 0;
  const loads = [...Array(ARGMAX_LOADS).keys()];
  const scan = vec
    ? `  for (var base = tid; base < V4; base += WG * ${ARGMAX_LOADS}u) {
${
      indentLines(
        loads.flatMap((u) => [
          `let i${u} = base + ${u}u * WG;`,
          `let v${u} = logits[flat * V4 + min(i${u}, V4 - 1u)];`,
        ]),
        "    ",
      )
    }
${
      indentLines(
        loads.flatMap((u) => [
          `if (i${u} < V4) {`,
          ...[0, 1, 2, 3].map((c) =>
            `  if (v${u}[${c}] > value) { value = v${u}[${c}]; index = i${u} * 4u + ${c}u; }`
          ),
          "}",
        ]),
        "    ",
      )
    }
  }`
    : `  for (var j = tid; j < VOCAB; j += WG) {
    let v = logits[flat * VOCAB + j];
    if (v > value) {
      value = v;
      index = j;
    }
  }`;
  const source = `// sparqc argmax: one workgroup per row, ties to the lower index
${PARAMS_DECL}
const VOCAB = ${vocab}u;
const V4 = ${Math.floor(vocab / 4)}u;
const WG = ${ARGMAX_WORKGROUP}u;
@group(0) @binding(0) var<storage, read> logits: array<${vec ? "vec4<f32>" : "f32"}>;
@group(0) @binding(1) var<storage, read_write> y: array<u32>;
@group(0) @binding(2) var<uniform> params: Params;
var<workgroup> best_value: array<f32, WG>;
var<workgroup> best_index: array<u32, WG>;

@compute @workgroup_size(WG)
fn main(
  ${MAIN_ARGS},
) {
  ${FLAT_ID}
  if (flat >= params.rows) { return; }
  var value = -3.4e38;
  var index = 0xffffffffu;
${scan}
  best_value[tid] = value;
  best_index[tid] = index;
  workgroupBarrier();
  for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
    if (tid < stride) {
      let v = best_value[tid + stride];
      let j = best_index[tid + stride];
      if (v > best_value[tid] || (v == best_value[tid] && j < best_index[tid])) {
        best_value[tid] = v;
        best_index[tid] = j;
      }
    }
    workgroupBarrier();
  }
  if (tid == 0u) { y[flat] = min(best_index[0], VOCAB - 1u); }
}
`;
  return computeKernel("argmax", "argmax", source, [["logits", "read"], ["y", "read_write"]]);
}
