/**
 * Helpers of the subgroup kernels that walk K/V rows a few at a time, one subgroup per row:
 * whether a row's vec4s fill whole subgroups, how many rows a subgroup loads before it reduces
 * any, and the WGSL that sums many (head, row) dot products over a subgroup at once. Shared by
 * dense attention's subgroup partial kernel and SparQ's stage 3.
 *
 * @module
 */
/**
 * Whether the subgroup partial kernel applies: a row of K is `headDim / 4` vec4 lanes, which a
 * whole number of subgroup-wide loads must cover.
 *
 * @example
 * ```ts
 * import { subgroupRowsFit } from "./subgroup_rows.ts";
 * subgroupRowsFit(128, 32); // true: one vec4 per invocation
 * subgroupRowsFit(64, 32); // false: 16 lanes cannot feed 32 invocations
 * ```
 */
export function subgroupRowsFit(headDim: number, subgroupSize: number | null): boolean {
  const lanes = headDim / 4;
  return subgroupSize !== null && lanes >= subgroupSize && lanes % subgroupSize === 0;
}

/** Rows each subgroup loads before reducing any of them (fewer where the heads would not fit). */
const SUBGROUP_ROWS = 4;

/**
 * Rows a subgroup loads before it reduces any of them, for `group` heads: {@link SUBGROUP_ROWS},
 * fewer where their (row, head) sums would outnumber the subgroup's lanes.
 *
 * @example
 * ```ts
 * import { subgroupRowCount } from "./subgroup_rows.ts";
 * subgroupRowCount(4, 8); // 2
 * ```
 */
export function subgroupRowCount(group: number, subgroupSize: number): number {
  return Math.max(1, Math.min(SUBGROUP_ROWS, Math.floor(subgroupSize / group)));
}

/**
 * WGSL summing each (head h, row u) dot product `dots(h, u)` over the subgroup: all of them by
 * one {@link transposeSums} where their count is a power of two that fits the subgroup, else a
 * `subgroupAdd` each. `lines` go first; `sum(h, u)` is then the sum, in every lane.
 *
 * @example
 * ```ts
 * import { subgroupDotSums } from "./subgroup_rows.ts";
 * subgroupDotSums(4, 1, 32, "lane", (h, u) => `d${h}_${u}`).sum(0, 3); // "sum3"
 * ```
 */
export function subgroupDotSums(
  rows: number,
  group: number,
  subgroupSize: number,
  lane: string,
  dots: (h: number, u: number) => string,
): { lines: string[]; sum: (h: number, u: number) => string } {
  const sums = rows * group;
  if (sums > subgroupSize || (sums & (sums - 1)) !== 0) {
    return { lines: [], sum: (h, u) => `subgroupAdd(${dots(h, u)})` };
  }
  const values = [...Array(rows).keys()].flatMap((u) =>
    [...Array(group).keys()].map((h) => `(${dots(h, u)})`)
  );
  return {
    lines: transposeSums(values, subgroupSize, "sum", lane),
    sum: (h, u) => `sum${u * group + h}`,
  };
}

/**
 * Straight-line WGSL that sums each of `values` (a power of two of them, at most `subgroupSize`)
 * over the subgroup with one shuffle per value instead of one `subgroupAdd` (log₂ size shuffles)
 * per value: at each step a lane keeps half of its values, hands the other half to the lane
 * `distance` away and adds what it gets back, so the values left halve with every step; then
 * the lanes that hold the same value finish by butterfly. Value i's sum ends in the `run` lanes
 * from i · run on, as `held`. `lane` is WGSL for the invocation's index in its subgroup.
 *
 * @example
 * ```ts
 * import { transposeReduce } from "./subgroup_rows.ts";
 * transposeReduce(["a", "b"], 32, "lane").run; // 16: value 1's sum is in lanes 16 to 31
 * ```
 */
export function transposeReduce(
  values: string[],
  subgroupSize: number,
  lane: string,
): { lines: string[]; held: string; run: number } {
  const lines: string[] = [];
  let held = values;
  let step = 0;
  for (let distance = subgroupSize / 2; held.length > 1; distance /= 2, step++) {
    const half = held.length / 2;
    lines.push(`let upper${step} = (${lane} & ${distance}u) != 0u;`);
    held = held.slice(0, half).map((low, i) => {
      const high = held[i + half];
      const name = `t${step}_${i}`;
      lines.push(
        `let ${name} = select(${low}, ${high}, upper${step}) + ` +
          `subgroupShuffleXor(select(${high}, ${low}, upper${step}), ${distance}u);`,
      );
      return name;
    });
  }
  // Lanes that hold the same value: runs of subgroupSize / values lanes.
  const run = subgroupSize / values.length;
  for (let distance = run / 2; distance >= 1; distance /= 2, step++) {
    lines.push(`let t${step}_0 = ${held[0]} + subgroupShuffleXor(${held[0]}, ${distance}u);`);
    held = [`t${step}_0`];
  }
  return { lines, held: held[0], run };
}

/**
 * {@link transposeReduce}, then `subgroupBroadcast` hands every sum to every lane, as
 * `${prefix}{i}`.
 *
 * @example
 * ```ts
 * import { transposeSums } from "./subgroup_rows.ts";
 * transposeSums(["a", "b"], 32, "s", "lane").at(-1); // "let s1 = subgroupBroadcast(t4_0, 16u);"
 * ```
 */
export function transposeSums(
  values: string[],
  subgroupSize: number,
  prefix: string,
  lane: string,
): string[] {
  const { lines, held, run } = transposeReduce(values, subgroupSize, lane);
  // Value i ended in the lanes whose index, read from the top bit down, spells i.
  return [
    ...lines,
    ...values.map((_, i) => `let ${prefix}${i} = subgroupBroadcast(${held}, ${i * run}u);`),
  ];
}
