/**
 * Straight-line WGSL for the loops the attention kernels run over query heads and row lanes.
 *
 * On the H100 (naga → SPIR-V → NVIDIA driver), a private array indexed inside a WGSL loop —
 * `var acc = array<vec4<f32>, GROUP>()` updated for each head — measured 2–3× slower than the
 * same code unrolled into one `var` per element (docs/performance.md, issue 6 version 8): the
 * driver may keep such arrays in local memory, and a looped load is not issued before the
 * previous one is used. The generators here write the unrolled form.
 *
 * @module
 */

/**
 * `count` lines from `line(i)`, each indented by `pad`.
 *
 * @example
 * ```ts
 * import { unroll } from "./unrolled.ts";
 * unroll(2, (i) => `var acc${i} = 0.0;`, "  "); // "  var acc0 = 0.0;\n  var acc1 = 0.0;"
 * ```
 */
export function unroll(count: number, line: (i: number) => string, pad = ""): string {
  return indentLines(Array.from({ length: count }, (_, i) => line(i)), pad);
}

/**
 * The lines joined, each indented by `pad`.
 *
 * @example
 * ```ts
 * import { indentLines } from "./unrolled.ts";
 * indentLines(["a;", "b;"], "  "); // "  a;\n  b;"
 * ```
 */
export function indentLines(lines: readonly string[], pad = ""): string {
  return lines.map((l) => pad + l).join("\n");
}

/** Row lanes loaded per batch of {@link rowDots}: enough bytes in flight, bounded registers. */
const LANES_PER_BATCH = 16;

/**
 * WGSL computing every query head's dot product with one K row: the row's lanes are loaded in
 * batches (all loads of a batch before any use), multiplied with `q_sh[h · lanes + lane]`, and
 * head h's sum is handed to `store(h, value)`.
 *
 * @example
 * ```ts
 * import { rowDots } from "./unrolled.ts";
 * const wgsl = rowDots({ group: 4, lanes: 32, row: "k_cache[(base + t) * LANES + {lane}]",
 *   store: (h, v) => `p_sh[${h}u * CHUNK + t] = ${v} * SCALE;` });
 * ```
 */
export function rowDots(
  o: { group: number; lanes: number; row: string; store: (h: number, value: string) => string },
  pad = "      ",
): string {
  const out = [unroll(o.group, (h) => `var d${h} = 0.0;`, pad)];
  for (let l0 = 0; l0 < o.lanes; l0 += LANES_PER_BATCH) {
    const n = Math.min(LANES_PER_BATCH, o.lanes - l0);
    out.push(
      unroll(
        n,
        (j) => `let k${l0 + j} = vec4<f32>(${o.row.replace("{lane}", `${l0 + j}u`)});`,
        pad,
      ),
    );
    for (let j = 0; j < n; j++) {
      const l = l0 + j;
      out.push(
        unroll(o.group, (h) => `d${h} += dot(q_sh[${h * o.lanes + l}u], k${l});`, pad),
      );
    }
  }
  out.push(unroll(o.group, (h) => o.store(h, `d${h}`), pad));
  return out.join("\n");
}

/** V rows each invocation of {@link valueRows} loads before it uses any. */
const VALUE_ROWS = 4;

/**
 * WGSL adding the probability-weighted V rows of a tile to `acc0…acc{group−1}` (declared by
 * the caller): invocation (lane, slice) takes rows slice, slice + SLICES, …, loading
 * `rows` rows (default {@link VALUE_ROWS}) before using any. `weights` names the workgroup array of
 * probabilities (`p_sh[h · tile + t]`), `at` the V element index with `ROW` for the row, `count`
 * the rows in the tile.
 *
 * @example
 * ```ts
 * import { valueRows } from "./unrolled.ts";
 * const wgsl = valueRows(4, "CHUNK", "(base + ROW) * LANES + lane", "n");
 * ```
 */
export function valueRows(
  group: number,
  tile: string,
  at: string,
  count: string,
  rows = VALUE_ROWS,
): string {
  const pad = "      ";
  return `  for (var t = slice; t < ${count}; t += SLICES * ${rows}u) {
${
    unroll(rows, (u) =>
      `let value${u} = vec4<f32>(v_cache[${
        at.replace("ROW", `min(t + ${u}u * SLICES, ${count} - 1u)`)
      }]);`, "    ")
  }
${
    unroll(rows, (u) =>
      `if (t + ${u}u * SLICES < ${count}) {\n${
        unroll(group, (h) =>
          `acc${h} += p_sh[${h}u * ${tile} + t + ${u}u * SLICES] * value${u};`, pad)
      }\n    }`, "    ")
  }
  }`;
}
