/**
 * Summary statistics of timing samples.
 *
 * @module
 */
import { z } from "zod";

/** Median, 10th and 90th percentile and count of a sample, in the samples' unit. */
export const Stats = z.strictObject({
  median: z.number(),
  p10: z.number(),
  p90: z.number(),
  n: z.int().nonnegative(),
});
/** Median, p10, p90 and n of a sample. */
export type Stats = z.infer<typeof Stats>;

/**
 * The q-quantile of sorted values, linearly interpolated.
 *
 * @example
 * ```ts
 * import { quantile } from "./stats.ts";
 * quantile([1, 2, 3, 4], 0.5); // 2.5
 * ```
 */
export function quantile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return NaN;
  const at = (sorted.length - 1) * q;
  const lo = Math.floor(at);
  const hi = Math.ceil(at);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (at - lo);
}

/**
 * Summarizes samples.
 *
 * @example
 * ```ts
 * import { summarize } from "./stats.ts";
 * summarize([5, 1, 3]); // { median: 3, p10: 1.4, p90: 4.6, n: 3 }
 * ```
 */
export function summarize(samples: readonly number[]): Stats {
  const sorted = [...samples].sort((a, b) => a - b);
  return {
    median: quantile(sorted, 0.5),
    p10: quantile(sorted, 0.1),
    p90: quantile(sorted, 0.9),
    n: sorted.length,
  };
}
