/**
 * The data-transfer model of ../shared/SPARQ.md: what one decode step must read and write.
 * Decode attention is bandwidth-bound, so these byte counts are the floor of its time and the
 * ratio dense / SparQ is the speedup SparQ can at best deliver.
 *
 * @module
 */

/**
 * Elements moved per query head by the paper's model, without the O(d) terms:
 * dense 2·S·d, SparQ S·r + 2·k·d (k capped at S: one cannot gather more rows than exist).
 *
 * @example
 * ```ts
 * import { headTransferElements } from "./transfer.ts";
 * const t = headTransferElements({ seqLen: 4096, headDim: 128, r: 32, k: 128 });
 * t.dense / t.sparq; // 6.4
 * ```
 */
export function headTransferElements(
  p: { seqLen: number; headDim: number; r: number; k: number },
): { dense: number; sparq: number } {
  const k = Math.min(p.k, p.seqLen);
  return { dense: 2 * p.seqLen * p.headDim, sparq: p.seqLen * p.r + 2 * k * p.headDim };
}

/** The shape of one attention call, for {@link attentionTransferBytes}. */
export interface AttentionShape {
  batch: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  seqLen: number;
  /** Bytes per K/V element: 2 for f16, 4 for f32. */
  kvBytes: number;
}

/**
 * Bytes one attention call moves, per KV head with its query heads sharing the index sets:
 * dense reads K and V (2·S·d) and each query head's q and writes its y (f32);
 * SparQ reads r components of every key from Kᵀ (S·r), k rows of K and of V (2·k·d), and
 * V_mean (d, f32), plus the same q and y.
 *
 * @example
 * ```ts
 * import { attentionTransferBytes } from "./transfer.ts";
 * const b = attentionTransferBytes(
 *   { batch: 64, heads: 32, kvHeads: 32, headDim: 128, seqLen: 4096, kvBytes: 2 },
 *   { r: 32, k: 128 },
 * );
 * (b.dense / b.sparq).toFixed(2); // "6.37"
 * ```
 */
export function attentionTransferBytes(
  s: AttentionShape,
  sparq?: { r: number; k: number },
): { dense: number; sparq: number } {
  const { batch, heads, kvHeads, headDim: d, seqLen, kvBytes } = s;
  const qAndY = heads * 2 * d * 4;
  const dense = batch * (kvHeads * 2 * seqLen * d * kvBytes + qAndY);
  if (!sparq) return { dense, sparq: dense };
  const k = Math.min(sparq.k, seqLen);
  const perKvHead = (seqLen * sparq.r + 2 * k * d) * kvBytes + d * 4;
  return { dense, sparq: batch * (kvHeads * perKvHead + qAndY) };
}
