/**
 * Fusions made while lowering: a few consecutive nodes served by one dispatch. Each removes
 * dispatches from the decode step (a few µs each at batch 1, whatever their size) and the
 * round trip of an intermediate tensor through memory; the graph keeps its plain ops, so the
 * float64 reference and the tests see the same graph.
 *
 * - an RMSNorm whose only consumers are the matmuls (or the logits) after it: folded into them
 *   (each team of the matmul reads all of x anyway, so the norm costs a sum of squares);
 * - matmuls of the same x (q, k, v; gate, up): one grouped matmul;
 * - a matmul whose only consumer is an add: the add as the matmul's epilogue (residuals);
 * - an activation whose only consumer is a mul: act(gate) · up in one elementwise kernel (in the
 *   gate and up matmul's epilogue it measured slower: docs/performance.md);
 * - rope of q and of k at the same positions, the kv_append of that k, and the attention of that
 *   q: inside the attention kernel that first reads the cache, where it takes them (SparQ's:
 *   `lowerAttentionWithAppend`);
 * - else the ropes and the kv_append: one dispatch (or the two ropes alone where the cache is
 *   split over several buffers, or where the fused kernel's bindings exceed the target's limit).
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
import { lowerAttentionWithAppend } from "./lower_attention.ts";
import { grid, type Invocation, type LowerContext, weightDtype } from "./lower_context.ts";
import {
  type FoldedNorm,
  groupedMatmul,
  matmulGroup,
  rowSplit,
  vectorMatmul,
} from "./lower_matmul.ts";
import type { Prefetch } from "./lower_prefetch.ts";

/** How many node inputs (and graph outputs) read each tensor. */
export function useCounts(graph: Graph): Map<string, number> {
  const uses = new Map<string, number>();
  const use = (name: string) => uses.set(name, (uses.get(name) ?? 0) + 1);
  for (const node of graph.nodes) node.inputs.forEach(use);
  graph.outputs.forEach(use);
  return uses;
}

/** Whether `consumer` is an `op` node and the only reader of `producer`'s output. */
function onlyInto(
  uses: ReadonlyMap<string, number>,
  producer: Node,
  consumer: Node | undefined,
  op: string,
): consumer is Node {
  return consumer?.op === op && uses.get(producer.outputs[0]) === 1 &&
    consumer.inputs.includes(producer.outputs[0]);
}

/** The operand of a two-input `consumer` that is not `producer`'s output (itself, if both are). */
function otherOperand(consumer: Node, producer: Node): string {
  return consumer.inputs.find((name) => name !== producer.outputs[0]) ?? producer.outputs[0];
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
  prefetchAt: (at: number) => Prefetch | undefined = () => undefined,
): Fused | undefined {
  const node = nodes[at];
  const next = nodes[at + 1];
  if (node.op === "rms_norm") {
    const fused = matmulsAt(nodes, at + 1, { ...ctx, node: next }, uses, node);
    if (fused) return { nodes: fused.nodes + 1, invocations: fused.invocations };
  }
  if (node.op === "matmul") {
    const fused = matmulsAt(nodes, at, ctx, uses);
    if (fused) return fused;
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
    const attention = nodes[at + 3];
    const folded = attention?.op === "attention" &&
      foldedIntoAttention(ctx, uses, node, next, third, attention, prefetchAt(at + 3));
    if (folded) return folded;
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
    (node.op === "silu" || node.op === "gelu" || node.op === "gelu_tanh") &&
    onlyInto(uses, node, next, "mul")
  ) {
    const up = otherOperand(next, node);
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

/**
 * The fusion of the matmul (or logits) at node `at`, with the RMSNorm `norm` before it folded in
 * where given: a group of matmuls of one x, a residual epilogue, or, with a norm, the matmul
 * alone. With a norm, its output must feed these matmuls only, and its gain have the weights'
 * dtype; else no fusion.
 */
function matmulsAt(
  nodes: readonly Node[],
  at: number,
  ctx: LowerContext,
  uses: ReadonlyMap<string, number>,
  norm?: FoldedNorm,
): Fused | undefined {
  const first = nodes[at];
  if (first?.op !== "matmul" && first?.op !== "logits") return undefined;
  if (
    norm && (first.inputs[0] !== norm.outputs[0] || !vectorMatmul(ctx, first) ||
      weightDtype(ctx, norm.inputs[1]) !== weightDtype(ctx, first.inputs[1]))
  ) return undefined;
  if (first.op === "logits") {
    return norm && uses.get(norm.outputs[0]) === 1
      ? { nodes: 1, invocations: rowSplit(ctx, undefined, norm) }
      : undefined;
  }
  const group = matmulGroup(nodes, at, ctx, norm ? 1 : 0);
  if (norm && uses.get(norm.outputs[0]) !== group.length) return undefined;
  if (group.length > 1) {
    return { nodes: group.length, invocations: groupedMatmul(ctx, group, norm) };
  }
  if (!vectorMatmul(ctx, first)) return undefined;
  const add = nodes[at + 1];
  if (onlyInto(uses, first, add, "add")) {
    return {
      nodes: 2,
      invocations: rowSplit(
        ctx,
        { tensor: otherOperand(add, first), output: add.outputs[0] },
        norm,
      ),
    };
  }
  return norm ? { nodes: 1, invocations: rowSplit(ctx, undefined, norm) } : undefined;
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

/**
 * Rope of q and k, the kv_append of that k, and the attention of that q, in the attention's
 * kernel where it takes them: the rotated q and k must have no other reader, and the attention
 * read the cache that the kv_append writes, at the same positions.
 */
function foldedIntoAttention(
  ctx: LowerContext,
  uses: ReadonlyMap<string, number>,
  qRope: NodeOf<"rope">,
  kRope: NodeOf<"rope">,
  append: NodeOf<"kv_append">,
  attention: NodeOf<"attention">,
  prefetch: Prefetch | undefined,
): Fused | undefined {
  const [q, positions, ...cache] = attention.inputs;
  if (
    q !== qRope.outputs[0] || uses.get(q) !== 1 || positions !== qRope.inputs[1] ||
    cache.join() !== append.outputs.join()
  ) return undefined;
  const invocations = lowerAttentionWithAppend(
    { ...ctx, node: attention, prefetch },
    attention,
    { q: qRope.inputs[0], k: kRope.inputs[0], v: append.inputs[1], rope: qRope.attrs },
  );
  return invocations && { nodes: 4, invocations };
}
