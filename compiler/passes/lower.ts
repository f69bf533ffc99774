/**
 * Pass 4: lowering. Turns every node into kernel invocations: which kernel, which tensor on
 * each binding, the params uniform and the dispatch grid. Operands split into shards (see
 * {@link planShards}) give one invocation per shard. Attention and KV append are lowered in
 * `lower_attention.ts`; intermediate buffers a lowering needs are returned as scratch tensors.
 *
 * @module
 */
import { placeholderKernel } from "../../kernels/placeholder.ts";
import type { Graph, TensorType } from "../ir.ts";
import type { Target } from "../target.ts";
import type { TuningChoices } from "../tuning.ts";
import { NodeError } from "./graph_error.ts";
import type { TensorTypes } from "./infer_shapes.ts";
import { lowerAttention, lowerKvAppend } from "./lower_attention.ts";
import {
  type Invocation,
  type LowerContext,
  type Lowered,
  placeholderGrid,
  type ScratchTensor,
  shardRanges,
} from "./lower_context.ts";
import type { Shardings } from "./plan_shards.ts";

export type { Invocation, Lowered, ScratchTensor };

const elements = (t: TensorType) => t.shape.reduce((a, b) => a * b, 1);

function simple(ctx: LowerContext, names: string[], constants: Record<string, number> = {}) {
  const { node } = ctx;
  const output = node.outputs[0];
  const bindings = [
    ...node.inputs.map((_, i) => ({ name: names[i], access: "read" as const })),
    { name: "y", access: "read_write" as const, zero: true },
  ];
  const kernel = placeholderKernel(node.op, node.op, bindings, constants);
  const out = ctx.types.get(output)!;
  return [{
    node: node.id,
    kernel,
    args: [...node.inputs, output],
    shard: 0,
    params: [0, out.shape[0], 0, 0],
    dispatch: placeholderGrid(ctx, elements(out)),
  }];
}

/** Matmul-like ops whose weight (operand 1) may be split by rows into shards. */
function rowSplit(ctx: LowerContext, names: string[]): Invocation[] {
  const { node } = ctx;
  const weight = node.inputs[1];
  const output = node.outputs[0];
  const out = ctx.types.get(output)!;
  const batch = out.shape[0];
  const name = node.inputs.length === 3 ? `${node.op}_bias` : node.op;
  const kernel = placeholderKernel(name, node.op, [
    ...node.inputs.map((_, i) => ({ name: names[i], access: "read" as const })),
    { name: "y", access: "read_write" as const, zero: true },
  ]);
  const ranges = shardRanges(ctx, [weight]);
  return ranges.map((range, shard) => {
    const rows = range.rows || ctx.types.get(weight)!.shape[0];
    return {
      node: node.id,
      kernel,
      args: [...node.inputs, output],
      shard,
      params: [range.firstRow, rows, 0, 0],
      dispatch: placeholderGrid(ctx, batch * rows),
    };
  });
}

function lowerNode(ctx: LowerContext): Invocation[] {
  const { node } = ctx;
  switch (node.op) {
    case "embedding": {
      // The table is split by vocabulary rows; each shard looks up the tokens that fall in it.
      const table = node.inputs[1];
      const out = ctx.types.get(node.outputs[0])!;
      const kernel = placeholderKernel("embedding", "embedding", [
        { name: "tokens", access: "read" },
        { name: "table", access: "read" },
        { name: "y", access: "read_write", zero: true },
      ]);
      return shardRanges(ctx, [table]).map((range, shard) => ({
        node: node.id,
        kernel,
        args: [...node.inputs, node.outputs[0]],
        shard,
        params: [range.firstRow, range.rows || ctx.types.get(table)!.shape[0], 0, 0],
        dispatch: placeholderGrid(ctx, elements(out)),
      }));
    }
    case "rms_norm":
      shardRanges(ctx, []);
      return simple(ctx, ["x", "weight"]);
    case "layer_norm":
      shardRanges(ctx, []);
      return simple(ctx, ["x", "weight", "bias"]);
    case "matmul":
      return rowSplit(ctx, node.inputs.length === 3 ? ["x", "weight", "bias"] : ["x", "weight"]);
    case "logits":
      return rowSplit(ctx, ["x", "table"]);
    case "rope":
      return simple(ctx, ["x", "positions"], {
        HEAD_DIM: node.attrs.headDim,
        ROTARY_DIMS: node.attrs.rotaryDims,
      });
    case "add":
    case "mul":
      return simple(ctx, ["a", "b"]);
    case "silu":
    case "gelu":
    case "gelu_tanh":
      return simple(ctx, ["x"]);
    case "argmax":
      return simple(ctx, ["logits"]);
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
  for (const node of graph.nodes) {
    for (const invocation of lowerNode({ node, types, shardings, target, scratch, tuning })) {
      const storageBindings = invocation.kernel.bindings.filter((b) => b.access !== "uniform");
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
