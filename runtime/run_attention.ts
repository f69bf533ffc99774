/**
 * Runs one attention call on host tensors: builds the attention graph, compiles it for the
 * device, fills the cache (K, and for SparQ Kᵀ and V_mean, the mean of the stored V over each
 * sequence's valid positions), runs it and reads back y — and for SparQ the selected indices
 * and alpha.
 *
 * @module
 */
import { ktIndex, ktTile, ktTiles } from "../kernels/kt_layout.ts";
import { ATTENTION_TENSORS as T, buildAttentionGraph } from "../compiler/build_attention_graph.ts";
import { compileGraph } from "../compiler/compile.ts";
import type { AttentionMethod } from "../compiler/ir.ts";
import type { Target } from "../compiler/target.ts";
import type { AttentionProblem } from "../kernels/reference.ts";
import type { Gpu } from "./device.ts";
import { Executor } from "./executor.ts";

/** What one attention call returns. */
export interface AttentionOutput {
  /** [B, H, d] */
  y: Float32Array;
  /** SparQ: [B, Hkv, min(k, S)] ascending positions, −1 where fewer exist. */
  indices?: Int32Array;
  /** SparQ: [B, H] */
  alpha?: Float32Array;
}

/**
 * SparQ's Kᵀ cache of a [B, Hkv, S, d] cache, in the tiled layout of kernels/kt_layout.ts
 * ([B, Hkv, tiles, d, tile], the padding zero).
 *
 * @example
 * ```ts
 * import { transposeCache } from "./run_attention.ts";
 * transposeCache([1, 2, 3, 4, 5, 6], 1, 3, 2).slice(0, 3); // Float64Array [1, 3, 5]
 * ```
 */
export function transposeCache(k: ArrayLike<number>, rows: number, seq: number, d: number) {
  const out = new Float64Array(rows * ktTiles(seq) * ktTile(seq) * d);
  for (let row = 0; row < rows; row++) {
    const base = row * seq * d;
    for (let pos = 0; pos < seq; pos++) {
      for (let j = 0; j < d; j++) out[ktIndex(row, j, pos, d, seq)] = k[base + pos * d + j];
    }
  }
  return out;
}

/**
 * The mean of V over each row's first `lengths[b]` positions: [B, Hkv, d].
 *
 * @example
 * ```ts
 * import { valueMean } from "./run_attention.ts";
 * valueMean([1, 3, 100], 1, 1, 3, 1, [2]); // Float64Array [2]
 * ```
 */
export function valueMean(
  v: ArrayLike<number>,
  batch: number,
  kvHeads: number,
  seq: number,
  d: number,
  lengths: ArrayLike<number>,
): Float64Array {
  const out = new Float64Array(batch * kvHeads * d);
  for (let b = 0; b < batch; b++) {
    for (let g = 0; g < kvHeads; g++) {
      const row = b * kvHeads + g;
      for (let pos = 0; pos < lengths[b]; pos++) {
        for (let j = 0; j < d; j++) out[row * d + j] += v[(row * seq + pos) * d + j] / lengths[b];
      }
    }
  }
  return out;
}

/**
 * Uploads a problem into an attention graph's program: q, positions (each sequence's last),
 * the K and V caches and, for SparQ, Kᵀ and the mean of V.
 *
 * @example
 * ```ts
 * import { writeAttentionInputs } from "./run_attention.ts";
 * // writeAttentionInputs(executor, problem, { kind: "dense" }); executor.run();
 * ```
 */
export function writeAttentionInputs(
  executor: Executor,
  p: AttentionProblem,
  method: AttentionMethod,
): void {
  const { batch, kvHeads, headDim: d, seqCapacity: S } = p;
  executor.write(T.q, p.q);
  executor.write(T.positions, Array.from(p.lengths, (length) => length - 1));
  executor.write(T.kCache, p.k);
  executor.write(T.vCache, p.v);
  if (method.kind === "sparq") {
    executor.write(T.ktCache, transposeCache(p.k, batch * kvHeads, S, d));
    executor.write(T.vMean, valueMean(p.v, batch, kvHeads, S, d, p.lengths));
  }
}

/**
 * Runs one dense or SparQ attention call on the device.
 *
 * @example
 * ```ts
 * import { runAttention } from "./run_attention.ts";
 * // const { y } = await runAttention(gpu, target, problem, { kind: "dense" }, "f16");
 * ```
 */
export async function runAttention(
  gpu: Gpu,
  target: Target,
  p: AttentionProblem,
  method: AttentionMethod,
  kvDtype: "f16" | "f32",
): Promise<AttentionOutput> {
  const { batch, heads, kvHeads, headDim: d, seqCapacity: S } = p;
  const graph = buildAttentionGraph({
    batch,
    heads,
    kvHeads,
    headDim: d,
    maxSeq: S,
    kvDtype,
    method,
    append: false,
  });
  const executor = await Executor.create(gpu, compileGraph(graph, target));
  try {
    writeAttentionInputs(executor, p, method);
    executor.run();
    const y = await executor.read(T.y) as Float32Array;
    if (method.kind !== "sparq") return { y };
    const indices = ascendingSets(
      new Int32Array((await executor.read(`${T.y}.indices`)).buffer),
      Math.min(method.k, S),
    );
    const alpha = await executor.read(`${T.y}.alpha`) as Float32Array;
    return { y, indices, alpha };
  } finally {
    executor.destroy();
  }
}

/**
 * Each (sequence, KV head) set of selected positions in ascending order, the −1 padding last:
 * the kernel gives slots in no particular order.
 *
 * @example
 * ```ts
 * import { ascendingSets } from "./run_attention.ts";
 * ascendingSets(Int32Array.of(7, 2, -1, 5, 1, 3), 3); // 2, 7, -1, 1, 3, 5
 * ```
 */
export function ascendingSets(indices: Int32Array, kept: number): Int32Array {
  const sorted = new Int32Array(indices.length);
  for (let at = 0; at < indices.length; at += kept) {
    const set = Array.from(indices.subarray(at, at + kept));
    const chosen = set.filter((i) => i >= 0).sort((a, b) => a - b);
    sorted.set([...chosen, ...set.filter((i) => i < 0)], at);
  }
  return sorted;
}
