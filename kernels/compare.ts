/**
 * Comparing kernel outputs with the float64 reference: error norms, and SparQ's index sets,
 * which may differ from the reference's only where ranking scores tie.
 *
 * @module
 */
import { type AttentionProblem, type SparqParams, sparqReference } from "./reference.ts";

/** Ranking scores closer than this to the selection threshold count as ties. */
export const TIE_TOLERANCE = 1e-6;

/**
 * ||a − b||₂ / ||b||₂.
 *
 * @example
 * ```ts
 * import { relativeL2 } from "./compare.ts";
 * relativeL2([1, 2], [1, 2]); // 0
 * ```
 */
export function relativeL2(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < b.length; i++) {
    num += (a[i] - b[i]) ** 2;
    den += b[i] ** 2;
  }
  return Math.sqrt(num / Math.max(den, 1e-300));
}

/**
 * max |a − b|.
 *
 * @example
 * ```ts
 * import { maxAbsError } from "./compare.ts";
 * maxAbsError([1, 2], [1, 2.5]); // 0.5
 * ```
 */
export function maxAbsError(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let max = 0;
  for (let i = 0; i < b.length; i++) max = Math.max(max, Math.abs(a[i] - b[i]));
  return max;
}

/** How a kernel's selected index sets compare with the reference's. */
export interface IndexComparison {
  /** (sequence, KV head) sets in all. */
  sets: number;
  /** Sets equal to the reference's. */
  equal: number;
  /** Sets that differ only in positions tied with the threshold. */
  tied: number;
  /** Descriptions of differences that are not ties (empty when the kernel agrees). */
  faults: string[];
  /** The kernel's set of each (sequence, KV head), for computing y on the same positions. */
  chosen: (b: number, g: number) => number[];
}

/**
 * Compares the kernel's `indices` [B, Hkv, min(k, S)] (−1 padded) with the reference's.
 *
 * @example
 * ```ts
 * import { compareIndices } from "./compare.ts";
 * // const { faults, chosen } = compareIndices(problem, params, gpuIndices);
 * ```
 */
export function compareIndices(
  p: AttentionProblem,
  params: SparqParams,
  indices: Int32Array,
): IndexComparison {
  const ref = sparqReference(p, params);
  const kept = Math.min(params.k, p.seqCapacity);
  const sets = new Map<string, number[]>();
  const result = { sets: 0, equal: 0, tied: 0, faults: [] as string[] };
  for (let b = 0; b < p.batch; b++) {
    for (let g = 0; g < p.kvHeads; g++) {
      result.sets++;
      const at = (b * p.kvHeads + g) * kept;
      const mine = Array.from(indices.subarray(at, at + kept)).filter((i) => i >= 0);
      const theirs = Array.from(ref.indices.subarray(at, at + kept)).filter((i) => i >= 0);
      sets.set(`${b},${g}`, mine);
      const where = `sequence ${b}, KV head ${g}`;
      if (mine.some((x, i) => i > 0 && mine[i - 1] >= x)) {
        result.faults.push(`${where}: indices are not strictly ascending`);
        continue;
      }
      if (mine.length !== theirs.length) {
        result.faults.push(`${where}: ${mine.length} indices, expected ${theirs.length}`);
        continue;
      }
      const mineSet = new Set(mine);
      const theirSet = new Set(theirs);
      const differ = [
        ...mine.filter((x) => !theirSet.has(x)),
        ...theirs.filter((x) => !mineSet.has(x)),
      ];
      if (differ.length === 0) {
        result.equal++;
        continue;
      }
      const rank = ref.ranking.subarray((b * p.kvHeads + g) * p.seqCapacity);
      const window = Math.min(params.localWindow, p.lengths[b]);
      const threshold = Math.min(
        ...theirs.filter((i) => i < p.lengths[b] - window).map((i) => rank[i]),
      );
      const untied = differ.filter((x) => Math.abs(rank[x] - threshold) > TIE_TOLERANCE);
      if (untied.length) {
        result.faults.push(
          `${where}: position ${untied[0]} (score ${rank[untied[0]]}) differs from the ` +
            `reference's selection (threshold ${threshold})`,
        );
      } else {
        result.tied++;
      }
    }
  }
  return { ...result, chosen: (b, g) => sets.get(`${b},${g}`)! };
}
