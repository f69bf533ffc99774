/**
 * Lowering of matmul-like ops (`matmul`, `logits`): one dispatch per shard of a split weight;
 * consecutive matmuls of the same x grouped into one dispatch; a residual add folded into the
 * matmul that feeds it. At batch 1 every dispatch of a decode step costs a few µs of launch and
 * barrier whatever its size (about 4.4 µs each on the H100, docs/performance.md), so the step
 * has as few as its kernels allow.
 *
 * @module
 */
import {
  matmulKernel,
  matmulRowsFor,
  matmulVectorFits,
  matmulWorkgroups,
} from "../../kernels/matmul.ts";
import type { Node, NodeOf } from "../ir.ts";
import {
  grid,
  type Invocation,
  type LowerContext,
  shardRanges,
  weightDtype,
} from "./lower_context.ts";

/** Output rows per matmul workgroup on the target. */
const rowsPerWorkgroup = (ctx: LowerContext) =>
  matmulRowsFor(ctx.target.limits.maxComputeInvocationsPerWorkgroup);

/** An RMSNorm folded into the matmuls it feeds: its input x and gain replace their x. */
export type FoldedNorm = NodeOf<"rms_norm">;

/** The kernel's norm option and what it binds before the weights: x, or the norm's x and gain. */
function normParts(norm: FoldedNorm | undefined, x: string) {
  if (!norm) return { option: {}, inputs: [x] };
  return {
    option: { norm: { eps: norm.attrs.eps, weightOffset: norm.attrs.weightOffset } },
    inputs: [norm.inputs[0], norm.inputs[1]],
  };
}

/**
 * A matmul-like node, its weight (operand 1) possibly split by rows into shards; with
 * `residual`, the add that consumes its output is folded in: y = x·Wᵀ (+ bias) + residual,
 * written to the add's output; with `norm`, the RMSNorm that feeds it (x is then the norm's input).
 *
 * @example
 * ```ts
 * // rowSplit(ctx); rowSplit(ctx, { tensor: "embed", output: "layers.0.attn_residual" });
 * ```
 */
export function rowSplit(
  ctx: LowerContext,
  residual?: { tensor: string; output: string },
  norm?: FoldedNorm,
): Invocation[] {
  const { node } = ctx;
  const folded = normParts(norm, node.inputs[0]);
  const weight = node.inputs[1];
  const output = node.outputs[0];
  const [batch, outer] = ctx.types.get(output)!.shape;
  const kernel = matmulKernel({
    batch,
    inner: ctx.types.get(node.inputs[0])!.shape[1],
    outer,
    weightDtype: weightDtype(ctx, weight),
    bias: node.inputs.length === 3,
    op: node.op === "logits" ? "logits" : "matmul",
    subgroupSize: ctx.target.subgroupSize,
    residual: residual !== undefined,
    rowsPerWorkgroup: rowsPerWorkgroup(ctx),
    ...folded.option,
  });
  const ranges = shardRanges(ctx, [weight]);
  const inputs = [...folded.inputs, ...node.inputs.slice(1)];
  return ranges.map((range, shard) => {
    const rows = range.rows || ctx.types.get(weight)!.shape[0];
    return {
      node: node.id,
      kernel,
      args: residual ? [...inputs, residual.tensor, residual.output] : [...inputs, output],
      shard,
      params: [range.firstRow, rows, 0, 0],
      dispatch: grid(ctx, Math.ceil(rows / rowsPerWorkgroup(ctx))),
    };
  });
}

/**
 * Whether a matmul or logits node can take the vector kernel (and so be grouped, take a residual
 * or fold a norm in).
 */
export function vectorMatmul(ctx: LowerContext, n: Node): boolean {
  if (n.op !== "matmul" && n.op !== "logits") return false;
  const weight = ctx.types.get(n.inputs[1])!;
  return matmulVectorFits({
    inner: weight.shape[1],
    weightDtype: weightDtype({ ...ctx, node: n }, n.inputs[1]),
  });
}

/**
 * The run of matmuls starting at node `at` that one dispatch can serve: consecutive matmuls of
 * the same x (q, k, v; gate, up) with whole, vector-friendly weights of one type and the same
 * bias-ness, within the target's storage-binding limit (less `extraBindings`).
 */
export function matmulGroup(
  nodes: readonly Node[],
  at: number,
  ctx: LowerContext,
  extraBindings = 0,
): Node[] {
  const first = nodes[at];
  const fits = (n: Node) =>
    n.op === "matmul" && vectorMatmul(ctx, n) && n.inputs[0] === first.inputs[0] &&
    n.inputs.length === first.inputs.length &&
    (ctx.shardings.get(n.inputs[1])?.shards.length ?? 1) === 1 &&
    ctx.types.get(n.inputs[1])!.dtype === ctx.types.get(first.inputs[1])!.dtype;
  if (!fits(first)) return [first];
  const group: Node[] = [first];
  const perPart = first.inputs.length; // weight, [bias,] y
  while (
    at + group.length < nodes.length && fits(nodes[at + group.length]) &&
    1 + extraBindings + (group.length + 1) * perPart <=
      ctx.target.limits.maxStorageBuffersPerShaderStage
  ) group.push(nodes[at + group.length]);
  return group;
}

/**
 * One dispatch for a group of matmuls of the same x; it belongs to the first node. With `norm`,
 * the RMSNorm that feeds them.
 */
export function groupedMatmul(ctx: LowerContext, group: Node[], norm?: FoldedNorm): Invocation[] {
  const [batch] = ctx.types.get(group[0].outputs[0])!.shape;
  const rows = group.map((n) => ctx.types.get(n.outputs[0])!.shape[1]);
  const bias = group[0].inputs.length === 3;
  const folded = normParts(norm, group[0].inputs[0]);
  const kernel = matmulKernel({
    batch,
    inner: ctx.types.get(group[0].inputs[0])!.shape[1],
    outer: rows[0],
    weightDtype: weightDtype(ctx, group[0].inputs[1]),
    bias,
    op: "matmul",
    subgroupSize: ctx.target.subgroupSize,
    group: rows,
    rowsPerWorkgroup: rowsPerWorkgroup(ctx),
    ...folded.option,
  });
  return [{
    node: group[0].id,
    kernel,
    args: [
      ...folded.inputs,
      ...group.map((n) => n.inputs[1]),
      ...(bias ? group.map((n) => n.inputs[2]) : []),
      ...group.map((n) => n.outputs[0]),
    ],
    shard: 0,
    params: [0, rows.reduce((a, b) => a + b, 0), 0, 0],
    dispatch: grid(ctx, matmulWorkgroups(rows, rowsPerWorkgroup(ctx))),
  }];
}
