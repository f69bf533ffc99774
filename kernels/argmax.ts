/**
 * Argmax over the vocabulary, one workgroup per row: the largest logit's index, ties to the
 * lower index (as `torch.argmax` on CPU and the float64 reference).
 *
 * @module
 */
import { computeKernel, type KernelSpec } from "./kernel_spec.ts";
import { FLAT_ID, MAIN_ARGS, PARAMS_DECL } from "./wgsl_common.ts";

/** Invocations per workgroup of the argmax kernel (a power of two). */
export const ARGMAX_WORKGROUP = 256;

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
  const source = `// sparqc argmax: one workgroup per row, ties to the lower index
${PARAMS_DECL}
const VOCAB = ${vocab}u;
const WG = ${ARGMAX_WORKGROUP}u;
@group(0) @binding(0) var<storage, read> logits: array<f32>;
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
  for (var j = tid; j < VOCAB; j += WG) {
    let v = logits[flat * VOCAB + j];
    if (v > value) {
      value = v;
      index = j;
    }
  }
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
