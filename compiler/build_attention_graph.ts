/**
 * The graph of one attention call on its own — q and the positions in, a KV cache already
 * filled (or, with `append`, the new token's k and v appended first), y out. The `attention`
 * task, the kernel tests and the bench run attention through this, so that it goes through the
 * same passes, sharding and kernels as a whole decode step.
 *
 * @module
 */
import { ktShape } from "../kernels/kt_layout.ts";
import type { AttentionShape } from "../kernels/wgsl_common.ts";
import type { AttentionMethod, DType, Graph, TensorDecl } from "./ir.ts";

/** One attention call's shape and method. */
export interface AttentionGraphOptions extends AttentionShape {
  method: AttentionMethod;
  /** Append `k_new`, `v_new` at `positions` before attending (tests kv_append too). */
  append: boolean;
}

/** Names of the tensors of an attention graph. */
export const ATTENTION_TENSORS = {
  q: "q",
  positions: "positions",
  kNew: "k_new",
  vNew: "v_new",
  kCache: "k_cache",
  ktCache: "kt_cache",
  vCache: "v_cache",
  vMean: "v_mean",
  y: "y",
} as const;

/**
 * Builds the graph of one attention call. `positions[b]` is the position of the newest token:
 * sequence b attends over positions 0..positions[b].
 *
 * @example
 * ```ts
 * import { buildAttentionGraph } from "./build_attention_graph.ts";
 * const graph = buildAttentionGraph({
 *   batch: 2, heads: 32, kvHeads: 8, headDim: 128, maxSeq: 4096, kvDtype: "f16",
 *   method: { kind: "sparq", r: 32, k: 128, localWindow: 0 }, append: false,
 * });
 * graph.outputs; // ["y"]
 * ```
 */
export function buildAttentionGraph(o: AttentionGraphOptions): Graph {
  const T = ATTENTION_TENSORS;
  const sparq = o.method.kind === "sparq";
  const tensors: Record<string, TensorDecl> = {};
  const declare = (name: string, role: TensorDecl["role"], shape: number[], dtype: DType) => {
    tensors[name] = { shape, dtype, role };
    return name;
  };
  declare(T.q, "input", [o.batch, o.heads * o.headDim], "f32");
  declare(T.positions, "input", [o.batch], "u32");
  const cacheShape = [o.batch, o.kvHeads, o.maxSeq, o.headDim];
  const cache = [declare(T.kCache, "state", cacheShape, o.kvDtype)];
  if (sparq) {
    cache.push(
      declare(T.ktCache, "state", ktShape(o.batch, o.kvHeads, o.headDim, o.maxSeq), o.kvDtype),
    );
  }
  cache.push(declare(T.vCache, "state", cacheShape, o.kvDtype));
  if (sparq) cache.push(declare(T.vMean, "state", [o.batch, o.kvHeads, o.headDim], "f32"));

  const nodes: Graph["nodes"] = [];
  if (o.append) {
    declare(T.kNew, "input", [o.batch, o.kvHeads * o.headDim], "f32");
    declare(T.vNew, "input", [o.batch, o.kvHeads * o.headDim], "f32");
    nodes.push({
      op: "kv_append",
      id: "kv_append",
      inputs: [T.kNew, T.vNew, T.positions, ...cache],
      outputs: cache,
      attrs: { kvHeads: o.kvHeads, headDim: o.headDim, sparq },
    });
  }
  nodes.push({
    op: "attention",
    id: T.y,
    inputs: [T.q, T.positions, ...cache],
    outputs: [T.y],
    attrs: {
      heads: o.heads,
      kvHeads: o.kvHeads,
      headDim: o.headDim,
      scale: 1 / Math.sqrt(o.headDim),
      method: o.method,
    },
  });
  return {
    version: 1,
    model: "attention",
    batch: o.batch,
    maxSeq: o.maxSeq,
    tensors,
    nodes,
    outputs: [T.y],
  };
}
