/**
 * Pass 4: lowering. Turns every node into kernel invocations: which kernel, which tensor on
 * each binding, the params uniform and the dispatch grid. Operands split into shards (see
 * {@link planShards}) give one invocation per shard. Attention and KV append are lowered in
 * `lower_attention.ts`; intermediate buffers a lowering needs are returned as scratch tensors.
 *
 * @module
 */
import { argmaxKernel } from "../../kernels/argmax.ts";
import {
  activationKernel,
  binaryKernel,
  ELEMENTWISE_WORKGROUP,
  embeddingKernel,
  ropeKernel,
} from "../../kernels/elementwise.ts";
import { workgroupsFor } from "../../kernels/grid.ts";
import type { KernelSpec } from "../../kernels/kernel_spec.ts";
import { layerNormKernel, rmsNormKernel } from "../../kernels/norm.ts";
import type { Graph, TensorType } from "../ir.ts";
import type { Target } from "../target.ts";
import type { TuningChoices } from "../tuning.ts";
import { NodeError } from "./graph_error.ts";
import type { TensorTypes } from "./infer_shapes.ts";
import { lowerAttention, lowerKvAppend } from "./lower_attention.ts";
import {
  grid,
  type Invocation,
  type LowerContext,
  type Lowered,
  type ScratchTensor,
  shardRanges,
  weightDtype,
} from "./lower_context.ts";
import { fuseAt, useCounts } from "./lower_fuse.ts";
import { prefetchAfter } from "./lower_prefetch.ts";
import { rowSplit } from "./lower_matmul.ts";
import type { Shardings } from "./plan_shards.ts";

export type { Invocation, Lowered, ScratchTensor };

const elements = (t: TensorType) => t.shape.reduce((a, b) => a * b, 1);

/**
 * One unsharded dispatch of `workgroups` workgroups; params rows = the output's first dimension.
 */
function unsharded(ctx: LowerContext, kernel: KernelSpec, workgroups: number): Invocation[] {
  const { node } = ctx;
  shardRanges(ctx, []);
  return [{
    node: node.id,
    kernel,
    args: [...node.inputs, node.outputs[0]],
    shard: 0,
    params: [0, ctx.types.get(node.outputs[0])!.shape[0], 0, 0],
    dispatch: grid(ctx, workgroups),
  }];
}

/** One invocation per element of the output. */
const perElement = (ctx: LowerContext, kernel: KernelSpec) =>
  unsharded(
    ctx,
    kernel,
    workgroupsFor(elements(ctx.types.get(ctx.node.outputs[0])!), ELEMENTWISE_WORKGROUP),
  );

/** One workgroup per row of the output. */
const perRow = (ctx: LowerContext, kernel: KernelSpec) =>
  unsharded(ctx, kernel, ctx.types.get(ctx.node.outputs[0])!.shape[0]);

function lowerNode(ctx: LowerContext): Invocation[] {
  const { node } = ctx;
  const out = () => ctx.types.get(node.outputs[0])!;
  switch (node.op) {
    case "embedding": {
      // The table is split by vocabulary rows; each shard looks up the tokens that fall in it.
      const table = node.inputs[1];
      const [batch, hidden] = out().shape;
      const kernel = embeddingKernel({
        batch,
        hidden,
        scale: node.attrs.scale,
        weightDtype: weightDtype(ctx, table),
      });
      return shardRanges(ctx, [table]).map((range, shard) => ({
        node: node.id,
        kernel,
        args: [...node.inputs, node.outputs[0]],
        shard,
        params: [range.firstRow, range.rows || ctx.types.get(table)!.shape[0], 0, 0],
        dispatch: grid(ctx, workgroupsFor(batch * hidden, ELEMENTWISE_WORKGROUP)),
      }));
    }
    case "rms_norm":
    case "layer_norm": {
      const [batch, hidden] = out().shape;
      const shape = {
        batch,
        hidden,
        eps: node.attrs.eps,
        weightDtype: weightDtype(ctx, node.inputs[1]),
        subgroupSize: ctx.target.subgroupSize,
      };
      return perRow(
        ctx,
        node.op === "rms_norm"
          ? rmsNormKernel(shape, node.attrs.weightOffset)
          : layerNormKernel(shape),
      );
    }
    case "matmul":
    case "logits":
      return rowSplit(ctx);
    case "rope":
      return perElement(ctx, ropeKernel({ batch: out().shape[0], ...node.attrs }));
    case "add":
    case "mul":
      return perElement(ctx, binaryKernel(node.op, elements(out())));
    case "silu":
    case "gelu":
    case "gelu_tanh":
      return perElement(ctx, activationKernel(node.op, elements(out())));
    case "argmax":
      return perRow(ctx, argmaxKernel(ctx.types.get(node.inputs[0])!.shape[1]));
    case "kv_append":
      return lowerKvAppend(ctx, node);
    case "attention":
      return lowerAttention(ctx, node);
  }
}

/**
 * Lowers every node of a typed, sharded graph.
 *
 * @example
 * ```ts
 * import { lower } from "./lower.ts";
 * import { inferShapes } from "./infer_shapes.ts";
 * import { planShards } from "./plan_shards.ts";
 * import { validate } from "./validate.ts";
 * import { buildDecodeGraph } from "../build_graph.ts";
 * import { defaultOptions } from "../build_options.ts";
 * import { PRESETS } from "../presets.ts";
 * import { TARGETS } from "../target.ts";
 * const model = PRESETS.get("tiny-llama")!;
 * const target = TARGETS.get("h100")!;
 * const graph = validate(buildDecodeGraph(model, defaultOptions(model, "sparq")));
 * const { invocations } = lower(graph, inferShapes(graph), planShards(graph, target), target);
 * ```
 */
export function lower(
  graph: Graph,
  types: TensorTypes,
  shardings: Shardings,
  target: Target,
  tuning?: TuningChoices,
): Lowered {
  const scratch = new Map<string, ScratchTensor>();
  const invocations: Invocation[] = [];
  const uses = useCounts(graph);
  for (let i = 0; i < graph.nodes.length; i++) {
    const prefetch = prefetchAfter(graph, i, types, shardings, target);
    const ctx = { node: graph.nodes[i], types, shardings, target, scratch, tuning, prefetch };
    const fused = fuseAt(
      graph.nodes,
      i,
      ctx,
      uses,
      (at) => prefetchAfter(graph, at, types, shardings, target),
    );
    if (fused) i += fused.nodes - 1;
    const node = ctx.node;
    for (const invocation of fused?.invocations ?? lowerNode(ctx)) {
      const storageBindings = invocation.kernel.bindings.filter((b) => b.access !== "uniform");
      // A lowering rule's bug, not the user's: each storage binding takes one tensor, in order.
      if (invocation.args.length !== storageBindings.length) {
        throw new Error(
          `${node.id}: kernel '${invocation.kernel.name}' has ${storageBindings.length} storage ` +
            `bindings; the lowering bound ${invocation.args.length} tensors`,
        );
      }
      if (storageBindings.length > target.limits.maxStorageBuffersPerShaderStage) {
        throw new NodeError(
          node,
          `kernel '${invocation.kernel.name}' needs ${storageBindings.length} storage buffers; ` +
            `target ${target.name} allows ${target.limits.maxStorageBuffersPerShaderStage}`,
        );
      }
      invocations.push(invocation);
    }
  }
  return { invocations, scratch };
}
