/**
 * Fusions into a matmul's input, at small batch: the RMSNorm that feeds a group of matmuls (q,
 * k, v; gate, up; the logits), and the gated MLP's act(gate) · up that feeds down_proj. The
 * matmul computes its x from the tensors x is made of, so the norm's and the activation's
 * dispatches go: at batch 1 each costs a few µs of launch and barrier whatever its size, and
 * llama2-7b has 97 of them per step.
 *
 * @module
 */
import { matmulFusesInput, matmulVectorFits } from "../../kernels/matmul.ts";
import type { Node } from "../ir.ts";
import type { LowerContext } from "./lower_context.ts";
import { weightDtype } from "./lower_context.ts";
import type { Fused } from "./lower_fuse.ts";
import {
  type FusedInput,
  groupedMatmul,
  matmulGroup,
  rowSplit,
  vectorMatmul,
} from "./lower_matmul.ts";

const ACTIVATIONS = new Set(["silu", "gelu", "gelu_tanh"]);

/** The add that is the only consumer of `node`'s output, as a residual epilogue. */
function residualAfter(
  node: Node,
  add: Node | undefined,
  uses: ReadonlyMap<string, number>,
): { tensor: string; output: string } | undefined {
  const out = node.outputs[0];
  if (add?.op !== "add" || uses.get(out) !== 1 || !add.inputs.includes(out)) return undefined;
  return { tensor: add.inputs.find((name) => name !== out) ?? out, output: add.outputs[0] };
}

/**
 * The RMSNorm at `at` folded into the matmuls that read its output, where they are all of its
 * consumers and follow it: a group of vector matmuls (with its residual add, if one matmul),
 * or the logits.
 *
 * @example
 * ```ts
 * // const fused = normIntoMatmuls(graph.nodes, i, ctx, useCounts(graph));
 * ```
 */
export function normIntoMatmuls(
  nodes: readonly Node[],
  at: number,
  ctx: LowerContext,
  uses: ReadonlyMap<string, number>,
): Fused | undefined {
  const norm = nodes[at];
  const first = nodes[at + 1];
  const out = norm.outputs[0];
  if (norm.op !== "rms_norm" || first?.inputs[0] !== out) return undefined;
  if (!matmulFusesInput(ctx.types.get(out)!.shape[0])) return undefined;
  const consumer = { ...ctx, node: first };
  const dtype = weightDtype(consumer, first.inputs[1]);
  if (weightDtype(ctx, norm.inputs[1]) !== dtype) return undefined;
  const fused: FusedInput = {
    input: { kind: "rms_norm", eps: norm.attrs.eps, weightOffset: norm.attrs.weightOffset },
    tensors: [norm.inputs[0], norm.inputs[1]],
  };
  if (first.op === "logits") {
    const inner = ctx.types.get(out)!.shape[1];
    if (uses.get(out) !== 1 || !matmulVectorFits({ inner, weightDtype: dtype })) return undefined;
    return { nodes: 2, invocations: rowSplit(consumer, undefined, fused) };
  }
  if (!vectorMatmul(ctx, first)) return undefined;
  const group = matmulGroup(nodes, at + 1, consumer, fused.tensors.length);
  if (group.length !== uses.get(out)) return undefined;
  if (group.length > 1) {
    return { nodes: 1 + group.length, invocations: groupedMatmul(consumer, group, fused) };
  }
  const residual = residualAfter(first, nodes[at + 2], uses);
  return { nodes: residual ? 3 : 2, invocations: rowSplit(consumer, residual, fused) };
}

/**
 * The activation at `at`, the mul by up that follows it, and the vector matmul that reads the
 * product (with its residual add) in one dispatch.
 *
 * @example
 * ```ts
 * // const fused = gatedIntoMatmul(graph.nodes, i, ctx, useCounts(graph));
 * ```
 */
export function gatedIntoMatmul(
  nodes: readonly Node[],
  at: number,
  ctx: LowerContext,
  uses: ReadonlyMap<string, number>,
): Fused | undefined {
  const [act, mul, matmul] = nodes.slice(at, at + 3);
  if (!ACTIVATIONS.has(act.op) || mul?.op !== "mul" || matmul?.op !== "matmul") return undefined;
  const gated = act.outputs[0];
  const product = mul.outputs[0];
  if (uses.get(gated) !== 1 || !mul.inputs.includes(gated)) return undefined;
  if (uses.get(product) !== 1 || matmul.inputs[0] !== product) return undefined;
  if (!matmulFusesInput(ctx.types.get(product)!.shape[0]) || !vectorMatmul(ctx, matmul)) {
    return undefined;
  }
  const up = mul.inputs.find((name) => name !== gated) ?? gated;
  const fused: FusedInput = {
    input: { kind: "gated", activation: act.op as "silu" | "gelu" | "gelu_tanh" },
    tensors: [act.inputs[0], up],
  };
  const residual = residualAfter(matmul, nodes[at + 3], uses);
  return {
    nodes: residual ? 4 : 3,
    invocations: rowSplit({ ...ctx, node: matmul }, residual, fused),
  };
}
