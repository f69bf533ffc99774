/**
 * What lowering rules share: the invocation they produce, the context they see, and the
 * helper every rule needs (the shard ranges of a node).
 *
 * @module
 */
import { type Grid, grid1d } from "../../kernels/grid.ts";
import type { KernelSpec } from "../../kernels/kernel_spec.ts";
import type { Node, TensorType } from "../ir.ts";
import type { Target } from "../target.ts";
import type { TuningChoices } from "../tuning.ts";
import { NodeError } from "./graph_error.ts";
import type { TensorTypes } from "./infer_shapes.ts";
import type { Prefetch } from "./lower_prefetch.ts";
import type { Shardings } from "./plan_shards.ts";

/** One dispatch of one kernel. */
export interface Invocation {
  node: string;
  kernel: KernelSpec;
  /** The tensor bound to each storage binding, in binding order. */
  args: string[];
  /** The shard of the node's split operands this dispatch covers (0 when none is split). */
  shard: number;
  /** Values of the params uniform: [first row, rows, extra0, extra1]. */
  params: number[];
  dispatch: Grid;
}

/** A tensor that exists only inside one node's lowering. */
export interface ScratchTensor extends TensorType {
  node: string;
  /**
   * Kept in a buffer of its own, never shared with another tensor: zero when first used (WebGPU
   * zeroes new buffers), and holding what its kernels leave in it from one call to the next
   * (counters that the last user of each call resets).
   */
  persistent?: boolean;
}

/** The output of lowering. */
export interface Lowered {
  invocations: Invocation[];
  scratch: Map<string, ScratchTensor>;
}

/** What a lowering rule sees. */
export interface LowerContext {
  node: Node;
  types: TensorTypes;
  shardings: Shardings;
  target: Target;
  scratch: Map<string, ScratchTensor>;
  /** Tuned launch configurations by shape bucket; absent entries use kernel defaults. */
  tuning?: TuningChoices;
  /** Weights the node's kernels may read ahead into the L2 for the next node (lower_prefetch.ts). */
  prefetch?: Prefetch;
}

/**
 * The shards of the node's split operands: the row ranges it is dispatched over. Operands the
 * op cannot take in pieces must be whole.
 */
export function shardRanges(
  ctx: LowerContext,
  splittable: readonly string[],
): { firstRow: number; rows: number }[] {
  let ranges: { firstRow: number; rows: number }[] | undefined;
  for (const name of ctx.node.inputs) {
    const sharding = ctx.shardings.get(name);
    if (!sharding || sharding.shards.length === 1) continue;
    if (!splittable.includes(name)) {
      throw new NodeError(
        ctx.node,
        `operand '${name}' needs ${sharding.shards.length} buffers on target ` +
          `${ctx.target.name}, and this op cannot take it in pieces`,
      );
    }
    ranges ??= sharding.shards.map(({ firstRow, rows }) => ({ firstRow, rows }));
  }
  return ranges ?? [{ firstRow: 0, rows: 0 }];
}

/**
 * The dtype of a weight operand, which must be f16 or f32.
 *
 * @example
 * ```ts
 * // weightDtype(ctx, "layers.0.q_proj.weight"); // "f16"
 * ```
 */
export function weightDtype(ctx: LowerContext, name: string): "f16" | "f32" {
  const dtype = ctx.types.get(name)!.dtype;
  if (dtype !== "f16" && dtype !== "f32") {
    throw new NodeError(ctx.node, `weight '${name}' is ${dtype}; weights must be f16 or f32`);
  }
  return dtype;
}

/**
 * A dispatch grid of `workgroups` within the target's per-dimension limit.
 *
 * @example
 * ```ts
 * // grid(ctx, 100_000); // [65535, 2, 1] on most targets
 * ```
 */
export function grid(ctx: LowerContext, workgroups: number): Grid {
  return grid1d(workgroups, ctx.target.limits.maxComputeWorkgroupsPerDimension);
}
