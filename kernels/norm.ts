/**
 * RMSNorm and LayerNorm over the hidden dimension, one workgroup per row: f32 activations,
 * weights (and bias) in the weight dtype, statistics by workgroup reductions. At batch 1 a norm
 * is one workgroup's latency, so each invocation issues all its loads — its x values and its
 * weights — before using any (straight-line WGSL, see unrolled.ts): written as a loop, a norm
 * took 16 µs on the H100, one memory round trip per iteration.
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
import { indentLines } from "./unrolled.ts";

/** Invocations per workgroup of the norm kernels. */
export const NORM_WORKGROUP = 256;

/** What a norm needs of a node. */
export interface NormShape {
  batch: number;
  hidden: number;
  eps: number;
  weightDtype: "f16" | "f32";
  /** The target's fixed subgroup size: sums go through `subgroupAdd` (2 barriers, not 8). */
  subgroupSize?: number | null;
}

/** `row_sum(x, tid)`: the workgroup's sum (by subgroups where their size is fixed). */
function rowSum(subgroupSize: number | null | undefined): string {
  return `${reductions(NORM_WORKGROUP, subgroupSize ?? null)}
fn row_sum(x: f32, tid: u32) -> f32 { return reduce_sum(x, tid); }`;
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
${rowSum(s.subgroupSize)}
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

/** Values each invocation holds: ⌈hidden / workgroup⌉. */
const perInvocation = (s: NormShape) => Math.ceil(s.hidden / NORM_WORKGROUP);

/**
 * Loads of a row: `x{u}` (0 past the row) and `w{u}` (and `b{u}`) for each value u an
 * invocation holds, plus `in{u}`, whether it lies in the row.
 */
function rowLoads(s: NormShape, extra: string[]): string[] {
  return [...Array(perInvocation(s)).keys()].flatMap((u) => [
    `let j${u} = tid + ${u * NORM_WORKGROUP}u;`,
    `let in${u} = j${u} < HIDDEN;`,
    `let x${u} = select(0.0, x[at + min(j${u}, HIDDEN - 1u)], in${u});`,
    `let w${u} = f32(weight[min(j${u}, HIDDEN - 1u)]);`,
    ...extra.map((e) => `let ${e[0]}${u} = f32(${e}[min(j${u}, HIDDEN - 1u)]);`),
  ]);
}

/** Σ over the values an invocation holds of `term(u)`. */
const sumOf = (s: NormShape, term: (u: number) => string) =>
  [...Array(perInvocation(s)).keys()].map(term).join(" + ");

/** The stores of a row: y[j{u}] = value(u) where j{u} lies in the row. */
const rowStores = (s: NormShape, value: (u: number) => string) =>
  [...Array(perInvocation(s)).keys()].map((u) => `if (in${u}) { y[at + j${u}] = ${value(u)}; }`);

/**
 * The RMSNorm kernel: y = x / sqrt(mean(x²) + eps) · (weight + weightOffset).
 *
 * @example
 * ```ts
 * import { rmsNormKernel } from "./norm.ts";
 * rmsNormKernel({ batch: 1, hidden: 4096, eps: 1e-5, weightDtype: "f16" }, 0).name; // "rms_norm"
 * ```
 */
export function rmsNormKernel(s: NormShape, weightOffset: number): KernelSpec {
  return normKernel(
    "rms_norm",
    s,
    indentLines([
      ...rowLoads(s, []),
      `let squares = ${sumOf(s, (u) => `x${u} * x${u}`)};`,
      "let inv = inverseSqrt(row_sum(squares, tid) / f32(HIDDEN) + EPS);",
      ...rowStores(s, (u) => `x${u} * inv * (w${u} + ${floatLiteral(weightOffset)})`),
    ], "  "),
    [],
  );
}

/**
 * The LayerNorm kernel: y = (x − mean) / sqrt(var + eps) · weight + bias, the variance taken
 * about the mean (two passes over the values held in registers).
 *
 * @example
 * ```ts
 * import { layerNormKernel } from "./norm.ts";
 * layerNormKernel({ batch: 1, hidden: 2048, eps: 1e-5, weightDtype: "f16" }).name; // "layer_norm"
 * ```
 */
export function layerNormKernel(s: NormShape): KernelSpec {
  return normKernel(
    "layer_norm",
    s,
    indentLines([
      ...rowLoads(s, ["bias"]),
      `let mean = row_sum(${sumOf(s, (u) => `x${u}`)}, tid) / f32(HIDDEN);`,
      `let squares = ${sumOf(s, (u) => `select(0.0, (x${u} - mean) * (x${u} - mean), in${u})`)};`,
      "let inv = inverseSqrt(row_sum(squares, tid) / f32(HIDDEN) + EPS);",
      ...rowStores(s, (u) => `(x${u} - mean) * inv * w${u} + b${u}`),
    ], "  "),
    ["bias"],
  );
}
