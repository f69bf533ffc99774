/**
 * Float64 CPU references of decode attention, dense and SparQ, written straight from
 * ../shared/SPARQ.md (grouped-query rules, ragged lengths, local window). Every GPU kernel is
 * checked against these; they favour clarity over speed.
 *
 * @module
 */

/** One attention call: q [B, H, d]; K and V [B, Hkv, S, d] with S the capacity. */
export interface AttentionProblem {
  batch: number;
  heads: number;
  kvHeads: number;
  seqCapacity: number;
  headDim: number;
  q: ArrayLike<number>;
  k: ArrayLike<number>;
  v: ArrayLike<number>;
  /** Valid positions per sequence, 1..seqCapacity; positions ≥ length are never read. */
  lengths: ArrayLike<number>;
}

/** SparQ's parameters. */
export interface SparqParams {
  r: number;
  k: number;
  localWindow: number;
}

/** SparQ's outputs besides y. */
export interface SparqResult {
  y: Float64Array;
  /** [B, Hkv, min(k, S)] selected positions, ascending, −1 where fewer than k exist. */
  indices: Int32Array;
  /** [B, H] score mass kept. */
  alpha: Float64Array;
  /** [B, Hkv, S] the ranking score Σ_group ŝ of each position (0 beyond the length). */
  ranking: Float64Array;
}

/** Views into one (sequence, KV head) of a problem. */
function rowOf(p: AttentionProblem, b: number, g: number) {
  const { seqCapacity: S, headDim: d } = p;
  const base = (b * p.kvHeads + g) * S * d;
  return {
    length: p.lengths[b],
    key: (pos: number, j: number) => p.k[base + pos * d + j],
    value: (pos: number, j: number) => p.v[base + pos * d + j],
  };
}

function queryOf(p: AttentionProblem, b: number, h: number): Float64Array {
  const d = p.headDim;
  return Float64Array.from({ length: d }, (_, j) => p.q[(b * p.heads + h) * d + j]);
}

/** softmax over `logits`, in place. */
function softmax(logits: Float64Array): Float64Array {
  let max = -Infinity;
  for (const x of logits) max = Math.max(max, x);
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += logits[i] = Math.exp(logits[i] - max);
  for (let i = 0; i < logits.length; i++) logits[i] /= sum;
  return logits;
}

/** Exact attention of one query over `positions`, its weights summing to 1. */
function attend(
  q: Float64Array,
  row: ReturnType<typeof rowOf>,
  positions: number[],
  d: number,
): Float64Array {
  const scale = 1 / Math.sqrt(d);
  const weights = softmax(Float64Array.from(positions, (pos) => {
    let dot = 0;
    for (let j = 0; j < d; j++) dot += q[j] * row.key(pos, j);
    return dot * scale;
  }));
  const out = new Float64Array(d);
  positions.forEach((pos, i) => {
    for (let j = 0; j < d; j++) out[j] += weights[i] * row.value(pos, j);
  });
  return out;
}

/**
 * Dense decode attention: y [B, H, d].
 *
 * @example
 * ```ts
 * import { denseReference } from "./reference.ts";
 * const y = denseReference({
 *   batch: 1, heads: 1, kvHeads: 1, seqCapacity: 2, headDim: 4,
 *   q: [1, 0, 0, 0], k: [1, 0, 0, 0, 0, 1, 0, 0], v: [1, 1, 1, 1, 3, 3, 3, 3], lengths: [2],
 * });
 * ```
 */
export function denseReference(p: AttentionProblem): Float64Array {
  const { batch, heads, kvHeads, headDim: d } = p;
  const group = heads / kvHeads;
  const y = new Float64Array(batch * heads * d);
  for (let b = 0; b < batch; b++) {
    for (let h = 0; h < heads; h++) {
      const row = rowOf(p, b, Math.floor(h / group));
      const all = Array.from({ length: row.length }, (_, i) => i);
      y.set(attend(queryOf(p, b, h), row, all, d), (b * heads + h) * d);
    }
  }
  return y;
}

/** Indices of the `count` largest values, ties to the lower index. */
export function topIndices(values: ArrayLike<number>, candidates: number[], count: number) {
  return [...candidates]
    .sort((a, b) => values[b] - values[a] || a - b)
    .slice(0, count);
}

/**
 * SparQ attention per SPARQ.md, with index sets shared by the query heads of a KV group.
 *
 * @example
 * ```ts
 * import { sparqReference } from "./reference.ts";
 * const problem = {
 *   batch: 1, heads: 1, kvHeads: 1, seqCapacity: 2, headDim: 4,
 *   q: [1, 0, 0, 0], k: [1, 0, 0, 0, 0, 1, 0, 0], v: [1, 1, 1, 1, 3, 3, 3, 3], lengths: [2],
 * };
 * sparqReference(problem, { r: 1, k: 1, localWindow: 0 }).indices; // Int32Array [0]
 * ```
 */
export function sparqReference(
  p: AttentionProblem,
  params: SparqParams,
  /** Use these positions for step 3 instead of the reference's own top-k (to compare y). */
  chosen?: (b: number, g: number) => number[] | undefined,
): SparqResult {
  const { batch, heads, kvHeads, headDim: d, seqCapacity: S } = p;
  const group = heads / kvHeads;
  const kept = Math.min(params.k, S);
  const y = new Float64Array(batch * heads * d);
  const indices = new Int32Array(batch * kvHeads * kept).fill(-1);
  const alpha = new Float64Array(batch * heads);
  const ranking = new Float64Array(batch * kvHeads * S);

  for (let b = 0; b < batch; b++) {
    for (let g = 0; g < kvHeads; g++) {
      const row = rowOf(p, b, g);
      const L = row.length;
      const qs = Array.from({ length: group }, (_, i) => queryOf(p, b, g * group + i));

      // 1. The r largest components of Σ_group |q|, shared by the group. The sum is taken in
      // f32 in head order, as the kernels do, so that near-ties break the same way.
      const absSum = new Float64Array(d);
      for (const q of qs) {
        for (let j = 0; j < d; j++) absSum[j] = Math.fround(absSum[j] + Math.abs(q[j]));
      }
      const i1 = topIndices(absSum, [...Array(d).keys()], params.r);

      // Approximate scores per head, with tau in place of sqrt(d).
      const approx = qs.map((q) => {
        let total = 0;
        let picked = 0;
        for (let j = 0; j < d; j++) total += Math.abs(q[j]);
        for (const j of i1) picked += Math.abs(q[j]);
        const tau = total > 0 ? Math.sqrt((d * picked) / total) : Math.sqrt(d);
        return softmax(Float64Array.from({ length: L }, (_, pos) => {
          let dot = 0;
          for (const j of i1) dot += q[j] * row.key(pos, j);
          return dot / tau;
        }));
      });
      const rank = new Float64Array(L);
      for (const s of approx) for (let pos = 0; pos < L; pos++) rank[pos] += s[pos];
      ranking.set(rank, (b * kvHeads + g) * S);

      // 2. The k best positions of Σ_group ŝ; the newest localWindow positions always.
      let i2: number[];
      const forced = chosen?.(b, g);
      if (forced) {
        i2 = forced;
      } else if (params.k >= L) {
        i2 = [...Array(L).keys()];
      } else {
        const window = Math.min(params.localWindow, L);
        const recent = Array.from({ length: window }, (_, i) => L - window + i);
        const rest = [...Array(L - window).keys()];
        i2 = [...topIndices(rank, rest, params.k - window), ...recent].sort((a, b) => a - b);
      }
      indices.set(i2, (b * kvHeads + g) * kept);

      // V_mean over the valid positions.
      const mean = new Float64Array(d);
      for (let pos = 0; pos < L; pos++) {
        for (let j = 0; j < d; j++) mean[j] += row.value(pos, j) / L;
      }

      // 3. Exact attention over i2, mixed with the mean by the kept mass alpha.
      qs.forEach((q, i) => {
        const h = g * group + i;
        const a = params.k >= L ? 1 : i2.reduce((sum, pos) => sum + approx[i][pos], 0);
        alpha[b * heads + h] = a;
        const exact = attend(q, row, i2, d);
        for (let j = 0; j < d; j++) {
          y[(b * heads + h) * d + j] = a * exact[j] + (1 - a) * mean[j];
        }
      });
    }
  }
  return { y, indices, alpha, ranking };
}
