/**
 * Dispatch grids. A dimension holds at most 65,535 workgroups on every adapter we target, so a
 * long 1-D launch folds into x·y; kernels recover the linear id as `wid.y * groups.x + wid.x`.
 *
 * @module
 */

/** A dispatch size: workgroups in x, y, z. */
export type Grid = [number, number, number];

/**
 * A grid of at least `workgroups` workgroups, folded into two dimensions when needed.
 *
 * @example
 * ```ts
 * import { grid1d } from "./grid.ts";
 * grid1d(100_000); // [50000, 2, 1]
 * ```
 */
export function grid1d(workgroups: number, maxPerDimension = 65535): Grid {
  const count = Math.max(1, Math.ceil(workgroups));
  if (count <= maxPerDimension) return [count, 1, 1];
  const y = Math.ceil(count / maxPerDimension);
  if (y > maxPerDimension) throw new RangeError(`${count} workgroups do not fit one dispatch`);
  return [Math.ceil(count / y), y, 1];
}

/**
 * Workgroups of `size` invocations that cover `items`.
 *
 * @example
 * ```ts
 * import { workgroupsFor } from "./grid.ts";
 * workgroupsFor(1000, 256); // 4
 * ```
 */
export function workgroupsFor(items: number, size: number): number {
  return Math.max(1, Math.ceil(items / size));
}
