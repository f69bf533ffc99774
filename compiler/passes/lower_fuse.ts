/**
 * Fusions made while lowering: a few consecutive nodes served by one dispatch. Each removes
 * dispatches from the decode step (a few µs each at batch 1, whatever their size) and the
 * round trip of an intermediate tensor through memory; the graph keeps its plain ops, so the
 * float64 reference and the tests see the same graph.
 *
 * - matmuls of the same x (q, k, v; gate, up): one grouped matmul;
 * - a matmul whose only consumer is an add: the add as the matmul's epilogue (residuals);
 * - an activation whose only consumer is a mul: act(gate) · up in one elementwise kernel;
 * - rope of q and of k at the same positions, and the kv_append of that k: one dispatch (or the
 *   two ropes alone where the cache is split over several buffers, or where the fused kernel's
 *   bindings exceed the target's limit).
 *
 * @module
 */
import {
  ELEMENTWISE_WORKGROUP,
  gatedActivationKernel,
  ropeKernel,
} from "../../kernels/elementwise.ts";
import { workgroupsFor } from "../../kernels/grid.ts";
import { KV_APPEND_DEFAULT, ropeAppendKernel } from "../../kernels/kv_append.ts";
import type { Graph, Node, NodeOf } from "../ir.ts";
import { grid, type Invocation, type LowerContext } from "./lower_context.ts";
import { groupedMatmul, matmulGroup, rowSplit, vectorMatmul } from "./lower_matmul.ts";

/** How many node inputs (and graph outputs) read each tensor. */
export function useCounts(graph: Graph): Map<string, number> {
  const uses = new Map<string, number>();
  const use = (name: string) => uses.set(name, (uses.get(name) ?? 0) + 1);
  for (const node of graph.nodes) node.inputs.forEach(use);
  graph.outputs.forEach(use);
  return uses;
}

/** A fusion found at a node: how many nodes it consumes and its dispatches. */
export interface Fused {
  nodes: number;
  invocations: Invocation[];
}

/**
 * The fusion that starts at node `at`, if any.
 *
 * @example
 * ```ts
 * // const fused = fuseAt(graph.nodes, i, ctx, useCounts(graph));
 * ```
 */
export function fuseAt(
  nodes: readonly Node[],
  at: number,
  ctx: LowerContext,
  uses: ReadonlyMap<string, number>,
): Fused | undefined {
  const node = nodes[at];
  const next = nodes[at + 1];
  const onlyInto = (consumer: Node | undefined, op: string) =>
    consumer?.op === op && uses.get(node.outputs[0]) === 1 &&
    consumer.inputs.includes(node.outputs[0]);
  if (node.op === "matmul") {
    const group = matmulGroup(nodes, at, ctx);
    if (group.length > 1) return { nodes: group.length, invocations: groupedMatmul(ctx, group) };
    if (vectorMatmul(ctx, node) && onlyInto(next, "add")) {
      const residual = next.inputs.find((name) => name !== node.outputs[0]) ?? node.outputs[0];
      return {
        nodes: 2,
        invocations: rowSplit(ctx, { tensor: residual, output: next.outputs[0] }),
      };
    }
  }
  // q's and k's rope: the same positions and rotation, one dispatch.
  const ropePair = node.op === "rope" && next?.op === "rope" &&
    next.inputs[1] === node.inputs[1] && next.attrs.headDim === node.attrs.headDim &&
    next.attrs.theta === node.attrs.theta && next.attrs.rotaryDims === node.attrs.rotaryDims;
  const third = nodes[at + 2];
  if (
    ropePair && node.op === "rope" && third?.op === "kv_append" &&
    third.inputs[2] === node.inputs[1] && third.inputs[0] === next.outputs[0] &&
    uses.get(next.outputs[0]) === 1 &&
    third.inputs.slice(3).every((t) => (ctx.shardings.get(t)?.shards.length ?? 1) === 1)
  ) {
    const fused = ropesWithAppend(ctx, node, next, third);
    if (fused) return fused;
  }
  if (ropePair && node.op === "rope" && next.op === "rope") {
    const [batch] = ctx.types.get(node.outputs[0])!.shape;
    const count = batch * (node.attrs.heads + next.attrs.heads) * node.attrs.headDim;
    return {
      nodes: 2,
      invocations: [{
        node: node.id,
        kernel: ropeKernel({ batch, ...node.attrs }, next.attrs.heads),
        args: [node.inputs[0], next.inputs[0], node.inputs[1], node.outputs[0], next.outputs[0]],
        shard: 0,
        params: [0, batch, 0, 0],
        dispatch: grid(ctx, workgroupsFor(count, ELEMENTWISE_WORKGROUP)),
      }],
    };
  }
  if (
    (node.op === "silu" || node.op === "gelu" || node.op === "gelu_tanh") && onlyInto(next, "mul")
  ) {
    const up = next.inputs.find((name) => name !== node.outputs[0]) ?? node.outputs[0];
    const [batch, width] = ctx.types.get(next.outputs[0])!.shape;
    return {
      nodes: 2,
      invocations: [{
        node: node.id,
        kernel: gatedActivationKernel(node.op, batch * width),
        args: [node.inputs[0], up, next.outputs[0]],
        shard: 0,
        params: [0, batch, 0, 0],
        dispatch: grid(ctx, workgroupsFor(batch * width, ELEMENTWISE_WORKGROUP)),
      }],
    };
  }
  return undefined;
}

/** Rope of q and k and the kv_append of that k in one dispatch, where its bindings fit. */
function ropesWithAppend(
  ctx: LowerContext,
  node: NodeOf<"rope">,
  next: NodeOf<"rope">,
  third: NodeOf<"kv_append">,
): Fused | undefined {
  const kCache = ctx.types.get(third.inputs[3])!;
  const [batch, kvHeads, maxSeq, headDim] = kCache.shape;
  const kernel = ropeAppendKernel(
    {
      batch,
      kvHeads,
      headDim,
      maxSeq,
      kvDtype: kCache.dtype as "f16" | "f32",
      sparq: third.attrs.sparq,
    },
    node.attrs,
  );
  const count = batch * (node.attrs.heads + kvHeads) * headDim;
  // SparQ's (K, Kᵀ, V, V_mean and four inputs) is 9 storage buffers: over WebGPU's default 8.
  const storage = kernel.bindings.filter((b) => b.access !== "uniform").length;
  if (storage > ctx.target.limits.maxStorageBuffersPerShaderStage) return undefined;
  return {
    nodes: 3,
    invocations: [{
      node: third.id,
      kernel,
      args: [
        node.inputs[0],
        next.inputs[0],
        third.inputs[1],
        node.inputs[1],
        ...third.inputs.slice(3),
        node.outputs[0],
      ],
      shard: 0,
      params: [0, batch * kvHeads, 0, 0],
      dispatch: grid(ctx, workgroupsFor(count, KV_APPEND_DEFAULT.workgroup)),
    }],
  };
}
