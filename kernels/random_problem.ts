/**
 * Seeded random attention problems. Values are standard Gaussians from a mulberry32 stream
 * through Box–Muller, so a seed gives the same problem on every machine; q is rounded to f32
 * and K, V to the KV dtype, exactly as the GPU will hold them, so the float64 reference sees
 * the GPU's inputs.
 *
 * @module
 */
import type { AttentionProblem } from "./reference.ts";

/**
 * A mulberry32 generator of uniforms in [0, 1).
 *
 * @example
 * ```ts
 * import { uniformStream } from "./random_problem.ts";
 * const next = uniformStream(42);
 * next(); // the same first value on every machine
 * ```
 */
export function uniformStream(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * A stream of standard Gaussians.
 *
 * @example
 * ```ts
 * import { gaussianStream } from "./random_problem.ts";
 * const next = gaussianStream(1);
 * next();
 * ```
 */
export function gaussianStream(seed: number): () => number {
  const uniform = uniformStream(seed);
  let spare: number | undefined;
  return () => {
    if (spare !== undefined) {
      const value = spare;
      spare = undefined;
      return value;
    }
    const u = 1 - uniform();
    const v = uniform();
    const radius = Math.sqrt(-2 * Math.log(u));
    spare = radius * Math.sin(2 * Math.PI * v);
    return radius * Math.cos(2 * Math.PI * v);
  };
}

/** The shape and seed of a random problem. */
export interface ProblemSpec {
  batch: number;
  heads: number;
  kvHeads: number;
  seqCapacity: number;
  headDim: number;
  /** Random lengths in 1..seqCapacity per sequence, else every sequence full. */
  ragged: boolean;
  seed: number;
  kvDtype?: "f16" | "f32";
}

/** A random problem: its arrays are Float64Arrays holding the rounded values. */
export type RandomProblem = AttentionProblem & {
  q: Float64Array;
  k: Float64Array;
  v: Float64Array;
  lengths: number[];
  kvDtype: "f16" | "f32";
};

/**
 * A random problem; K and V are rounded to `kvDtype` (default f32) and q to f32.
 *
 * @example
 * ```ts
 * import { randomProblem } from "./random_problem.ts";
 * const p = randomProblem({
 *   batch: 2, heads: 8, kvHeads: 2, seqCapacity: 64, headDim: 32, ragged: true, seed: 1,
 * });
 * p.lengths.length; // 2
 * ```
 */
export function randomProblem(spec: ProblemSpec): RandomProblem {
  const next = gaussianStream(spec.seed);
  const uniform = uniformStream(spec.seed ^ 0x9e3779b9);
  const round = spec.kvDtype === "f16" ? Math.f16round : Math.fround;
  const kvSize = spec.batch * spec.kvHeads * spec.seqCapacity * spec.headDim;
  const q = Float64Array.from(
    { length: spec.batch * spec.heads * spec.headDim },
    () => Math.fround(next()),
  );
  const k = Float64Array.from({ length: kvSize }, () => round(next()));
  const v = Float64Array.from({ length: kvSize }, () => round(next()));
  const lengths = Array.from(
    { length: spec.batch },
    () => spec.ragged ? 1 + Math.floor(uniform() * spec.seqCapacity) : spec.seqCapacity,
  );
  return {
    batch: spec.batch,
    heads: spec.heads,
    kvHeads: spec.kvHeads,
    seqCapacity: spec.seqCapacity,
    headDim: spec.headDim,
    q,
    k,
    v,
    lengths,
    kvDtype: spec.kvDtype ?? "f32",
  };
}
