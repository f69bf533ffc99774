/**
 * Lowering of the KV append and of attention: dense as the flash-decoding split-K pair (partial
 * max, sum and output per chunk of positions, then a reduction), SparQ as three stages (scores
 * from the r largest query components over the contiguous Kᵀ rows; top-k over positions on the
 * GPU; exact attention over the gathered K and V rows with the mean-value reallocation). Cache
 * operands may be split into shards; each shard gets its own dispatch.
 *
 * @module
 */
import type { NodeOf } from "../ir.ts";
import { placeholderKernel } from "../../kernels/placeholder.ts";
import {
  type Invocation,
  type LowerContext,
  placeholderGrid,
  shardRanges,
} from "./lower_context.ts";

/** Positions per split-K chunk of dense attention. */
export const DENSE_CHUNK = 256;

function cacheDims(ctx: LowerContext, kCache: string) {
  const [B, Hkv, S, d] = ctx.types.get(kCache)!.shape;
  return { B, Hkv, S, d };
}

/** kv_append: one dispatch per cache shard, one thread per (row, component). */
export function lowerKvAppend(ctx: LowerContext, node: NodeOf<"kv_append">): Invocation[] {
  const state = node.inputs.slice(3);
  const { sparq, headDim } = node.attrs;
  const names = sparq ? ["k_cache", "kt_cache", "v_cache", "v_mean"] : ["k_cache", "v_cache"];
  const kernel = placeholderKernel(`kv_append_${sparq ? "sparq" : "dense"}`, "kv_append", [
    { name: "k", access: "read" },
    { name: "v", access: "read" },
    { name: "positions", access: "read" },
    ...names.map((name) => ({ name, access: "read_write" as const })),
  ], { HEAD_DIM: headDim });
  const { B, Hkv } = cacheDims(ctx, state[0]);
  return shardRanges(ctx, state).map((range, shard) => {
    const rows = range.rows || B * Hkv;
    return {
      node: node.id,
      kernel,
      args: node.inputs,
      shard,
      params: [range.firstRow, rows, 0, 0],
      dispatch: placeholderGrid(ctx, rows * headDim),
    };
  });
}

/** attention: dense split-K pair, or the three SparQ stages. */
export function lowerAttention(ctx: LowerContext, node: NodeOf<"attention">): Invocation[] {
  const [q, positions, ...cache] = node.inputs;
  const y = node.outputs[0];
  const { heads: H, kvHeads, headDim: d, method } = node.attrs;
  const { B, S } = cacheDims(ctx, cache[0]);
  const group = H / kvHeads;
  const ranges = shardRanges(ctx, cache);
  const allRows = B * kvHeads;
  const scratch = (suffix: string, shape: number[], dtype: "f32" | "u32") => {
    const name = `${node.id}.${suffix}`;
    ctx.scratch.set(name, { shape, dtype, node: node.id });
    return name;
  };
  const dims = { HEAD_DIM: d, GROUP: group, MAX_SEQ: S };

  if (method.kind === "dense") {
    const [kCache, vCache] = cache;
    const chunks = Math.ceil(S / DENSE_CHUNK);
    const partials = scratch("partials", [B, H, chunks, d + 2], "f32");
    const partial = placeholderKernel("attention_dense_partial", "attention", [
      { name: "q", access: "read" },
      { name: "positions", access: "read" },
      { name: "k_cache", access: "read" },
      { name: "v_cache", access: "read" },
      { name: "partials", access: "read_write", zero: true },
    ], { ...dims, CHUNK: DENSE_CHUNK });
    const reduce = placeholderKernel("attention_dense_reduce", "attention", [
      { name: "partials", access: "read" },
      { name: "positions", access: "read" },
      { name: "y", access: "read_write", zero: true },
    ], { ...dims, CHUNK: DENSE_CHUNK });
    return [
      ...ranges.map((range, shard) => ({
        node: node.id,
        kernel: partial,
        args: [q, positions, kCache, vCache, partials],
        shard,
        params: [range.firstRow, range.rows || allRows, 0, 0],
        dispatch: placeholderGrid(ctx, chunks * (range.rows || allRows) * 256),
      })),
      {
        node: node.id,
        kernel: reduce,
        args: [partials, positions, y],
        shard: 0,
        params: [0, allRows, 0, 0],
        dispatch: placeholderGrid(ctx, B * H * d),
      },
    ];
  }

  const [kCache, ktCache, vCache, vMean] = cache;
  const kept = Math.min(method.k, S);
  const sparqDims = { ...dims, R: method.r, K: kept, LOCAL_WINDOW: method.localWindow };
  const scores = scratch("scores", [B, H, S], "f32");
  const indices = scratch("indices", [B, kvHeads, kept], "u32");
  const alpha = scratch("alpha", [B, H], "f32");
  const scoreKernel = placeholderKernel("sparq_scores", "attention", [
    { name: "q", access: "read" },
    { name: "positions", access: "read" },
    { name: "kt_cache", access: "read" },
    { name: "scores", access: "read_write", zero: true },
  ], sparqDims);
  const topkKernel = placeholderKernel("sparq_topk", "attention", [
    { name: "scores", access: "read" },
    { name: "positions", access: "read" },
    { name: "indices", access: "read_write", zero: true },
    { name: "alpha", access: "read_write", zero: true },
  ], sparqDims);
  const attendKernel = placeholderKernel("sparq_attend", "attention", [
    { name: "q", access: "read" },
    { name: "positions", access: "read" },
    { name: "k_cache", access: "read" },
    { name: "v_cache", access: "read" },
    { name: "v_mean", access: "read" },
    { name: "indices", access: "read" },
    { name: "alpha", access: "read" },
    { name: "y", access: "read_write", zero: true },
  ], sparqDims);
  const perShard = (
    kernel: typeof scoreKernel,
    args: string[],
    items: (rows: number) => number,
  ) =>
    ranges.map((range, shard) => {
      const rows = range.rows || allRows;
      return {
        node: node.id,
        kernel,
        args,
        shard,
        params: [range.firstRow, rows, 0, 0],
        dispatch: placeholderGrid(ctx, items(rows)),
      };
    });
  return [
    ...perShard(scoreKernel, [q, positions, ktCache, scores], (rows) => rows * group * S),
    {
      node: node.id,
      kernel: topkKernel,
      args: [scores, positions, indices, alpha],
      shard: 0,
      params: [0, allRows, 0, 0],
      dispatch: placeholderGrid(ctx, allRows * 256),
    },
    ...perShard(
      attendKernel,
      [q, positions, kCache, vCache, vMean, indices, alpha, y],
      (rows) => rows * group * d,
    ),
  ];
}
