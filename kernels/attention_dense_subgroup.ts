/**
 * Dense attention's subgroup partial kernel (`attention_dense_partial_sg`): the kernel of
 * `attention_dense.ts` where a row of K fills whole subgroups, with the reduction in it where it
 * fits (`attention_dense_partial_reduce`: the last chunk of a row to finish merges the row).
 *
 * @module
 */
import {
  DENSE_CHUNK_PREAMBLE,
  DENSE_PARTIAL_BINDINGS,
  DENSE_PARTIAL_DECLARATIONS,
  denseHeader,
  type DenseLayout,
  densePartialSpec,
} from "./attention_dense.ts";
import {
  DENSE_REDUCE_HEAD,
  denseReduceDeclarations,
  denseReduceSlices,
} from "./attention_dense_reduce.ts";
import { computeKernel, type KernelSpec } from "./kernel_spec.ts";
import { subgroupDotSums, subgroupRowCount, transposeReduce } from "./subgroup_rows.ts";
import {
  type AttentionKernelShape,
  LAST_ARRIVAL_DECL,
  lastArrivalGoesOn,
  MAIN_ARGS,
} from "./wgsl_common.ts";
import { indentLines } from "./unrolled.ts";

/**
 * The subgroup partial kernel: each subgroup walks the chunk a few K/V rows at a time — every
 * load instruction reads a contiguous stretch of a row — sums the dot products over the subgroup,
 * and keeps an online softmax (running max, Σexp, output) with no barrier in the row loop; the
 * subgroups of a workgroup merge once at the end. With several query heads per KV head each lane
 * keeps the softmax of one (row, head) sum ({@link laneOwnedSoftmax}: on the H100 llama3-8b's
 * dense attention 4–5% faster at every bench point, e.g. B=64 S=32k 3112 → 2990 µs).
 * Invocations are assumed to form subgroups in order of `local_invocation_index` (as on NVIDIA
 * and lavapipe; the tests check the results on both). Bindings and partials layout as
 * `densePartialKernel` (attention_dense.ts). With `reduceTail` the row's last chunk to finish also reduces it
 * (bindings y and arrivals added): by a tree over the workgroup with one query head per KV head,
 * with several all heads at once in registers (see `registerReduceTail`).
 *
 * @example
 * ```ts
 * import { denseLayout } from "./attention_dense.ts";
 * import { densePartialSubgroupKernel } from "./attention_dense_subgroup.ts";
 * const shape = { batch: 1, heads: 32, kvHeads: 8, headDim: 128, maxSeq: 4096,
 *   kvDtype: "f16" as const, workgroupStorage: 49152 };
 * densePartialSubgroupKernel(shape, denseLayout(shape), 32).name; // "attention_dense_partial_sg"
 * ```
 */
export function densePartialSubgroupKernel(
  s: AttentionKernelShape,
  layout: DenseLayout,
  subgroupSize: number,
  workgroup = 256,
  reduceTail = false,
): KernelSpec {
  const wg = teamWorkgroup(subgroupSize, workgroup);
  const group = s.heads / s.kvHeads;
  if (reduceTail && group > 1 && group * layout.lanes > wg) {
    throw new RangeError(
      `densePartialSubgroupKernel: ${group} heads of ${layout.lanes} lanes outnumber the ` +
        `${wg} invocations that merge them (see densePartialReduceFits)`,
    );
  }
  const per = s.headDim / 4 / subgroupSize;
  // Straight-line WGSL generated here: one `let`/`var` per row, head and lane part, no private
  // arrays (looped over private arrays, the kernel measured slower on the H100 — the driver
  // may place such arrays in local memory).
  const heads = [...Array(group).keys()];
  const parts = [...Array(per).keys()];
  const rowCount = subgroupRowCount(group, subgroupSize);
  const rows = [...Array(rowCount).keys()];
  const loads = rows.flatMap((u) => [
    `let at${u} = (base + min(t0 + ${u}u * TEAMS + team, n - 1u)) * LANES + lane;`,
    `let valid${u} = t0 + ${u}u * TEAMS + team < n;`,
    ...parts.flatMap((p) => [
      `let key${u}_${p} = vec4<f32>(k_cache[at${u} + ${p}u * SG]);`,
      `let value${u}_${p} = vec4<f32>(v_cache[at${u} + ${p}u * SG]);`,
    ]),
  ]);
  const dot = (h: number, u: number) =>
    parts.map((p) => `dot(q${h}_${p}, key${u}_${p})`).join(" + ");
  const shape = { rowCount, group, per, subgroupSize, dot };
  const softmax = laneOwnedFits(rowCount, group, subgroupSize)
    ? laneOwnedSoftmax(shape)
    : everyLaneSoftmax(shape);
  const merge = teamMerge(group, parts.length);
  const source = `// sparqc dense attention, split-K partial, one subgroup per row at a time${
    reduceTail ? "; the row's last chunk to finish reduces its heads" : ""
  }
${denseHeader(s, layout)}
const SG = ${subgroupSize}u;
const TEAM_WG = ${wg}u;
const TEAMS = TEAM_WG / SG;
${
    reduceTail && group === 1
      ? `${denseReduceDeclarations(s, wg, subgroupSize)}\n${LAST_ARRIVAL_DECL}`
      : `const NEG = -3.0e38;${reduceTail ? `\n${LAST_ARRIVAL_DECL}` : ""}`
  }
${DENSE_PARTIAL_DECLARATIONS}
${
    reduceTail
      ? `@group(0) @binding(5) var<storage, read_write> y: array<f32>;
@group(0) @binding(6) var<storage, read_write> arrivals: array<atomic<u32>>;
@group(0) @binding(7) var<uniform> params: Params;${
        group === 1 ? `\nfn reduce_head(flat: u32, tid: u32) {\n${DENSE_REDUCE_HEAD}}` : ""
      }`
      : "@group(0) @binding(5) var<uniform> params: Params;"
  }

var<workgroup> team_max: array<f32, GROUP * TEAMS>;
var<workgroup> team_sum: array<f32, GROUP * TEAMS>;
var<workgroup> merged: array<vec4<f32>, TEAMS * LANES>;
${MERGED_MAX}

@compute @workgroup_size(TEAM_WG)
fn main(
  ${MAIN_ARGS},
  @builtin(subgroup_invocation_id) lane: u32,
) {
  ${DENSE_CHUNK_PREAMBLE}
  let team = tid / SG;
${
    indentLines(
      [
        ...heads.flatMap((h) => [
          ...parts.map((p) => `let q${h}_${p} = q[(head0 + ${h}u) * LANES + ${p}u * SG + lane];`),
          ...parts.map((p) => `var acc${h}_${p} = vec4<f32>(0.0);`),
        ]),
        ...softmax.state,
      ],
      "  ",
    )
  }

  let base = local_row * MAX_SEQ + start;
  // The loop bound is uniform so that subgroupAdd runs in uniform control flow; teams past the
  // chunk's end reread its last row and drop the result. Each team loads ${rowCount} rows before
  // it reduces any, and folds them into the running softmax with one rescale.
  for (var t0 = 0u; t0 < n; t0 += TEAMS * ${rowCount}u) {
${indentLines(loads, "    ")}
${indentLines(softmax.update, "    ")}
  }

  // Merge the teams: every team holds the same statistics in all its invocations.
${indentLines(softmax.finish, "  ")}
${merge}${!reduceTail ? "" : group > 1 ? registerReduceTail() : REDUCE_TAIL}
}
`;
  return reduceTail
    ? computeKernel("attention_dense_partial_reduce", "attention", source, [
      ...DENSE_PARTIAL_BINDINGS,
      ["y", "read_write"],
      ["arrivals", "read_write"],
    ])
    : densePartialSpec("attention_dense_partial_sg", source);
}

/**
 * WGSL merging the teams' softmax states into each head's partial of the chunk: every team
 * publishes the statistics of all its heads at once (one barrier); then, head by head, each team
 * writes its outputs rescaled to the head's maximum over the teams, and the first LANES
 * invocations sum them (two barriers a head: `merged` holds one head). 1 + 2·group barriers where
 * publishing each head's statistics apart took 3·group (H100, llama3-8b: B=1 S=16k 48.3 → 46.6
 * µs, B=64 S=32k 2991 → 2979). All heads' outputs at once (one barrier for them, 16 KiB of
 * workgroup memory) measured slower: B=1 S=128k 200 → 226 µs.
 */
function teamMerge(group: number, parts: number): string {
  const stats = `  if (lane == 0u) {
${
    indentLines(
      [...Array(group).keys()].flatMap((h) => [
        `team_max[${h}u * TEAMS + team] = m${h};`,
        `team_sum[${h}u * TEAMS + team] = l${h};`,
      ]),
      "    ",
    )
  }
  }
  workgroupBarrier();`;
  const heads = [...Array(group).keys()].map((h) =>
    `  {
${
      indentLines(
        [
          `let mine = exp(m${h} - merged_max(${h}u));`,
          ...[...Array(parts).keys()].map((p) =>
            `merged[team * LANES + ${p}u * SG + lane] = acc${h}_${p} * mine;`
          ),
        ],
        "    ",
      )
    }
    workgroupBarrier();
    if (tid < LANES) {
      let top = merged_max(${h}u);
      var total = 0.0;
      var o = vec4<f32>(0.0);
      for (var w = 0u; w < TEAMS; w++) {
        total += team_sum[${h}u * TEAMS + w] * exp(team_max[${h}u * TEAMS + w] - top);
        o += merged[w * LANES + tid];
      }
      store_partial(head0 + ${h}u, chunk, tid, o, top, total);
    }
    workgroupBarrier();
  }`
  );
  return [stats, ...heads].join("\n");
}

/** WGSL: the largest of the teams' maxima of head `j` of the group. */
const MERGED_MAX = `fn merged_max(j: u32) -> f32 {
  var top = NEG;
  for (var w = 0u; w < TEAMS; w++) { top = max(top, team_max[j * TEAMS + w]); }
  return top;
}`;

/** The online softmax of the subgroup partial kernel: its state, its per-rows update, its end. */
interface SubgroupSoftmax {
  /** Declarations before the row loop. */
  state: string[];
  /** Folds the loaded rows (`key{u}_{p}`, `value{u}_{p}`, `valid{u}`) into the state. */
  update: string[];
  /** After the loop: `m{h}`, `l{h}` (each head's max and Σexp) in every lane. */
  finish: string[];
}

/** What both softmax forms take of the kernel: its rows per round, heads, lane parts, dots. */
interface SoftmaxShape {
  rowCount: number;
  group: number;
  /** vec4 parts of a row each lane holds. */
  per: number;
  subgroupSize: number;
  /** WGSL of this lane's share of head h's dot product with row u. */
  dot: (h: number, u: number) => string;
}

/** Head h's output parts rescaled and updated by its rows' exps (`rescale{h}`, `e{h}_{u}`). */
function valueUpdates({ rowCount, per }: SoftmaxShape, h: number): string[] {
  const rows = [...Array(rowCount).keys()];
  return [...Array(per).keys()].map((p) =>
    `acc${h}_${p} = acc${h}_${p} * rescale${h} + ${
      rows.map((u) => `e${h}_${u} * value${u}_${p}`).join(" + ")
    };`
  );
}

/**
 * Whether {@link laneOwnedSoftmax} applies: several heads, and their (row, head) sums a power of
 * two that fits the subgroup (as {@link transposeReduce} needs).
 *
 * @example
 * ```ts
 * import { laneOwnedFits } from "./attention_dense_subgroup.ts";
 * laneOwnedFits(4, 4, 32); // true: 16 sums, one per two lanes
 * laneOwnedFits(4, 1, 32); // false: one head per KV head keeps every lane's softmax
 * ```
 */
export function laneOwnedFits(rows: number, group: number, subgroupSize: number): boolean {
  const sums = rows * group;
  return group > 1 && sums <= subgroupSize && (sums & (sums - 1)) === 0;
}

/**
 * Every lane keeps every head's statistics: each (row, head) sum goes to every lane, and every
 * lane computes every exp of the rows (the same values in all lanes).
 */
function everyLaneSoftmax(shape: SoftmaxShape): SubgroupSoftmax {
  const { rowCount, group, subgroupSize, dot } = shape;
  const heads = [...Array(group).keys()];
  const rows = [...Array(rowCount).keys()];
  // One shuffle per (row, head) sum where they fit a subgroup in a power of two, else subgroupAdd.
  const { lines: reduced, sum } = subgroupDotSums(rowCount, group, subgroupSize, "lane", dot);
  return {
    state: heads.flatMap((h) => [`var m${h} = NEG;`, `var l${h} = 0.0;`]),
    update: [
      ...reduced,
      ...heads.flatMap((h) => [
        ...rows.map((u) => `let score${h}_${u} = select(NEG, ${sum(h, u)} * SCALE, valid${u});`),
        `let top${h} = max(m${h}, ${
          rows.map((u) => `score${h}_${u}`).reduce((a, b) => `max(${a}, ${b})`)
        });`,
        `let rescale${h} = exp(m${h} - top${h});`,
        ...rows.map((u) =>
          `let e${h}_${u} = select(0.0, exp(score${h}_${u} - top${h}), valid${u});`
        ),
        `l${h} = l${h} * rescale${h} + ${rows.map((u) => `e${h}_${u}`).join(" + ")};`,
        `m${h} = top${h};`,
        ...valueUpdates(shape, h),
      ]),
    ],
    finish: [],
  };
}

/**
 * Each lane keeps the statistics of the one (row, head) sum that {@link transposeReduce} leaves
 * in it: the row maxima of a head meet by log₂ rows shuffles, each lane computes one exp and one
 * rescale, and only the exps and each head's rescale go to every lane for the value rows — with
 * 4 heads and 4 rows, 2 exps per lane where every lane computed 20.
 */
function laneOwnedSoftmax(shape: SoftmaxShape): SubgroupSoftmax {
  const { rowCount, group, subgroupSize, dot } = shape;
  const heads = [...Array(group).keys()];
  const rows = [...Array(rowCount).keys()];
  const values = rows.flatMap((u) => heads.map((h) => `(${dot(h, u)})`));
  const { lines, held, run } = transposeReduce(values, subgroupSize, "lane");
  // Value u · group + h sits in lanes run · (u · group + h) on: the rows of one head are the lanes
  // whose index differs in the bits from run · group up.
  const rowBits = [...Array(Math.log2(rowCount)).keys()].map((i) => run * group * 2 ** i);
  // `value` combined over a head's rows by butterfly: the lines, and the name of the result.
  const overRows = (name: string, op: "max" | "+", value: string) => {
    let result = value;
    const lines = rowBits.map((distance, i) => {
      const other = `subgroupShuffleXor(${result}, ${distance}u)`;
      const line = `let ${name}${i} = ${
        op === "max" ? `max(${result}, ${other})` : `${result} + ${other}`
      };`;
      result = `${name}${i}`;
      return line;
    });
    return { lines, result };
  };
  const rowTop = overRows("row_top", "max", "score");
  const rowSum = overRows("l_rows", "+", "l");
  return {
    state: ["var m = NEG;", "var l = 0.0;", `let my_row = lane / ${run * group}u;`],
    update: [
      ...lines,
      "let my_valid = t0 + my_row * TEAMS + team < n;",
      `let score = select(NEG, ${held} * SCALE, my_valid);`,
      ...rowTop.lines,
      `let top = max(m, ${rowTop.result});`,
      "let rescale = exp(m - top);",
      "let e = select(0.0, exp(score - top), my_valid);",
      "l = l * rescale + e;",
      "m = top;",
      ...heads.map((h) => `let rescale${h} = subgroupBroadcast(rescale, ${h * run}u);`),
      ...rows.flatMap((u) =>
        heads.map((h) => `let e${h}_${u} = subgroupBroadcast(e, ${(u * group + h) * run}u);`)
      ),
      ...heads.flatMap((h) => valueUpdates(shape, h)),
    ],
    finish: [
      ...rowSum.lines,
      ...heads.flatMap((h) => [
        `let m${h} = subgroupBroadcast(m, ${h * run}u);`,
        `let l${h} = subgroupBroadcast(${rowSum.result}, ${h * run}u);`,
      ]),
    ],
  };
}

/** The subgroup partial kernel's workgroup: whole subgroups, about `workgroup` invocations. */
function teamWorkgroup(subgroupSize: number, workgroup: number): number {
  return Math.max(subgroupSize, Math.floor(workgroup / subgroupSize) * subgroupSize);
}

/**
 * The end of the partial kernel with the reduction in it: the last chunk of the row's ⌈len /
 * CHUNK⌉ to finish reduces the row's query heads, one after another, each by the whole workgroup
 * (`fn reduce_head`: one query head per KV head).
 */
const REDUCE_TAIL = `
${lastArrivalGoesOn("(len + CHUNK - 1u) / CHUNK")}
  for (var h = 0u; h < GROUP; h++) { reduce_head(head0 + h, tid); }`;

/** Chunks whose partials the register tail loads at once, before it merges any. */
const MERGE_CHUNKS = 8;

/**
 * The end of the partial kernel with the reduction in it for grouped-query heads: the last chunk
 * of the row to finish merges all the row's heads at once, one invocation per (head, 4 outputs)
 * (where the workgroup has that many: {@link densePartialReduceFits}),
 * {@link MERGE_CHUNKS} chunks' statistics and outputs loaded at a time and folded into a running
 * (max, Σexp, output) in registers — no workgroup memory, no barrier. Chunks past the row's end
 * (an earlier call's partials) get weight 0.
 */
function registerReduceTail(): string {
  const u = [...Array(MERGE_CHUNKS).keys()];
  const output = (i: number) =>
    `vec4<f32>(${[0, 1, 2, 3].map((e) => `partials[at${i} + 4u * quad + ${e}u]`).join(", ")})`;
  return `
${lastArrivalGoesOn("(len + CHUNK - 1u) / CHUNK")}
  // One pass of the workgroup (densePartialReduceFits): the same merge as a loop over
  // GROUP * LANES made the whole kernel 20–30% slower on the H100 (llama3-8b B=1 S=16k 44.7 →
  // 55.1 µs, S=128k 196.4 → 254.4).
  if (tid < GROUP * LANES) {
    let used = (len + CHUNK - 1u) / CHUNK;
    let head = head0 + tid / LANES;
    let quad = tid % LANES;
    let base = head * CHUNKS * (HEAD_DIM + 2u);
    var m = NEG;
    var sum = 0.0;
    var o = vec4<f32>(0.0);
    for (var c0 = 0u; c0 < used; c0 += ${MERGE_CHUNKS}u) {
${
    indentLines(
      [
        ...u.map((i) => `let at${i} = base + min(c0 + ${i}u, used - 1u) * (HEAD_DIM + 2u);`),
        ...u.map((i) => `let m${i} = select(NEG, partials[at${i} + HEAD_DIM], c0 + ${i}u < used);`),
        ...u.map((i) => `let l${i} = partials[at${i} + HEAD_DIM + 1u];`),
        ...u.map((i) => `let o${i} = ${output(i)};`),
        `let top = ${u.map((i) => `m${i}`).reduce((a, b) => `max(${a}, ${b})`, "m")};`,
        "let keep = exp(m - top);",
        ...u.map((i) => `let w${i} = exp(m${i} - top);`),
        `sum = sum * keep + ${u.map((i) => `l${i} * w${i}`).join(" + ")};`,
        `o = o * keep + ${u.map((i) => `o${i} * w${i}`).join(" + ")};`,
        "m = top;",
      ],
      "      ",
    )
  }
    }
    let y4 = o / sum;
${
    indentLines(
      [0, 1, 2, 3].map((e) => `y[head * HEAD_DIM + 4u * quad + ${e}u] = y4.${"xyzw"[e]};`),
      "    ",
    )
  }
  }`;
}

/**
 * Whether the subgroup partial kernel with the reduction in it fits the target's workgroup
 * memory (the reduction's chunk weights grow with the cache).
 *
 * @example
 * ```ts
 * import { denseLayout } from "./attention_dense.ts";
 * import { densePartialReduceFits } from "./attention_dense_subgroup.ts";
 * const shape = { batch: 1, heads: 32, kvHeads: 32, headDim: 128, maxSeq: 16384,
 *   kvDtype: "f16" as const, workgroupStorage: 49152 };
 * densePartialReduceFits(shape, denseLayout(shape), 32); // true
 * ```
 */
export function densePartialReduceFits(
  s: AttentionKernelShape,
  layout: DenseLayout,
  subgroupSize: number,
  workgroup = 256,
): boolean {
  const wg = teamWorkgroup(subgroupSize, workgroup);
  const teams = wg / subgroupSize;
  const group = s.heads / s.kvHeads;
  const partial = group * teams * 8 + teams * layout.lanes * 16;
  // Grouped heads merge in registers, an invocation per (head, 4 outputs) in one pass: only the
  // arrival flag joins the partial kernel's memory.
  if (group > 1) {
    return group * (s.headDim / 4) <= wg && partial + 4 <= s.workgroupStorage;
  }
  const reduce = layout.chunks * 4 + denseReduceSlices(s.headDim, wg) * s.headDim * 4 + 4;
  const reductions = 3 * wg * 4; // the tree reductions' arrays, the largest form
  return partial + reduce + reductions <= s.workgroupStorage;
}
