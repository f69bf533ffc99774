/**
 * RMSNorm and LayerNorm over the hidden dimension, one workgroup per row: f32 activations,
 * weights (and bias) in the weight dtype, statistics by workgroup reductions.
 *
 * @module
 */
import { computeKernel, type KernelSpec } from "./kernel_spec.ts";
import {
  bindingDeclarations,
  FLAT_ID,
  floatLiteral,
  MAIN_ARGS,
  PARAMS_DECL,
  reductions,
  weightPrelude,
} from "./wgsl_common.ts";

/** Invocations per workgroup of the norm kernels. */
export const NORM_WORKGROUP = 256;

/** What a norm needs of a node. */
export interface NormShape {
  batch: number;
  hidden: number;
  eps: number;
  weightDtype: "f16" | "f32";
}

function normKernel(
  op: "rms_norm" | "layer_norm",
  s: NormShape,
  body: string,
  extra: string[],
): KernelSpec {
  const storage: [string, "read" | "read_write", string][] = [
    ["x", "read", "f32"],
    ["weight", "read", "W"],
    ...extra.map((n): [string, "read", string] => [n, "read", "W"]),
    ["y", "read_write", "f32"],
  ];
  const source = `// sparqc ${op}: one workgroup per row
${weightPrelude(s.weightDtype)}${PARAMS_DECL}
const HIDDEN = ${s.hidden}u;
const EPS = ${floatLiteral(s.eps)};
const WG = ${NORM_WORKGROUP}u;
${bindingDeclarations(storage)}
${reductions(NORM_WORKGROUP)}
@compute @workgroup_size(WG)
fn main(
  ${MAIN_ARGS},
) {
  ${FLAT_ID}
  if (flat >= params.rows) { return; }
  let at = flat * HIDDEN;
${body}
}
`;
  return computeKernel(op, op, source, storage);
}

/**
 * RMSNorm: y = x / sqrt(mean(x²) + eps) · (weight + weightOffset). Bindings x, weight, y,
 * params (rows = B).
 *
 * @example
 * ```ts
 * import { rmsNormKernel } from "./norm.ts";
 * rmsNormKernel({ batch: 1, hidden: 64, eps: 1e-5, weightDtype: "f32" }, 0).name; // "rms_norm"
 * ```
 */
export function rmsNormKernel(s: NormShape, weightOffset: number): KernelSpec {
  return normKernel(
    "rms_norm",
    s,
    `  var squares = 0.0;
  for (var j = tid; j < HIDDEN; j += WG) { squares += x[at + j] * x[at + j]; }
  let inv = inverseSqrt(reduce_sum(squares, tid) / f32(HIDDEN) + EPS);
  for (var j = tid; j < HIDDEN; j += WG) {
    y[at + j] = x[at + j] * inv * (f32(weight[j]) + ${floatLiteral(weightOffset)});
  }`,
    [],
  );
}

/**
 * LayerNorm: y = (x − mean) / sqrt(var + eps) · weight + bias, the variance from a second pass
 * over the centred values. Bindings x, weight, bias, y, params (rows = B).
 *
 * @example
 * ```ts
 * import { layerNormKernel } from "./norm.ts";
 * layerNormKernel({ batch: 1, hidden: 64, eps: 1e-5, weightDtype: "f32" }).name; // "layer_norm"
 * ```
 */
export function layerNormKernel(s: NormShape): KernelSpec {
  return normKernel(
    "layer_norm",
    s,
    `  var total = 0.0;
  for (var j = tid; j < HIDDEN; j += WG) { total += x[at + j]; }
  let mean = reduce_sum(total, tid) / f32(HIDDEN);
  var squares = 0.0;
  for (var j = tid; j < HIDDEN; j += WG) {
    let c = x[at + j] - mean;
    squares += c * c;
  }
  let inv = inverseSqrt(reduce_sum(squares, tid) / f32(HIDDEN) + EPS);
  for (var j = tid; j < HIDDEN; j += WG) {
    y[at + j] = (x[at + j] - mean) * inv * f32(weight[j]) + f32(bias[j]);
  }`,
    ["bias"],
  );
}
