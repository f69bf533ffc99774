/**
 * SparQ attention in four kernels (../shared/SPARQ.md):
 *
 * 1. `sparq_scores` — per (block of positions, sequence, KV head): i1, the r largest components
 *    of Σ_group |q|, and each head's q[i1] / tau (every workgroup selects them itself), then the
 *    approximate logits q[i1]·Kᵀ[i1, pos] / tau from the contiguous Kᵀ rows; writes the logits
 *    and each block's softmax statistics (max, Σexp).
 * 2. `sparq_candidates` — per (block of 4096 positions, sequence, KV head): ranks the block's
 *    positions by a value monotone in Σ_group ŝ (the logit itself with one query head per KV
 *    head, log Σ_group ŝ otherwise; the newest `localWindow` positions get the largest key) and
 *    keeps its local top k: one counting round over value bins, the boundary bin ranked in
 *    workgroup memory, a radix select as the exact fallback.
 * 3. `sparq_topk` — per (sequence, KV head): the top k among the candidates the same way (ties
 *    go to the lower position), written as indices, and each head's kept mass alpha (1 exactly
 *    when k ≥ length).
 * 4. `sparq_attend` — per (sequence, KV head): exact softmax attention over the gathered K and
 *    V rows for every head of the group, y = alpha · attention + (1 − alpha) · V_mean.
 *
 * @module
 */
import { ktIndexWgsl } from "./kt_layout.ts";
import { computeKernel, type KernelSpec, type StorageBinding } from "./kernel_spec.ts";
import {
  type AttentionKernelShape,
  bindingDeclarations,
  fitTile,
  FLAT_ID,
  floatLiteral,
  kvPrelude,
  MAIN_ARGS,
  nextPowerOfTwo,
  PARAMS_DECL,
  reductions,
  rowLayout,
} from "./wgsl_common.ts";
import { indentLines, rowDots, unroll, valueRows } from "./unrolled.ts";

/** SparQ's parameters as the kernels take them. */
export interface SparqKernelParams {
  r: number;
  k: number;
  localWindow: number;
}

/** SparQ's launch parameters. */
export interface SparqConfig {
  /** Positions per workgroup of stage 1 (up to 256 invocations, several positions each). */
  block: number;
  /** Invocations per workgroup of stage 3, about (rounded to whole rows of lanes). */
  attendWorkgroup: number;
}

/**
 * The kernels a SparQ attention call can lower to, by how far its stages are fused: 2a–3
 * chained, 2b and 3 paired, all four apart (see compiler/passes/lower_attention.ts).
 */
export const SPARQ_ARRANGEMENTS: readonly (readonly string[])[] = [
  ["sparq_scores", "sparq_select_attend"],
  ["sparq_scores", "sparq_candidates", "sparq_topk_attend"],
  ["sparq_scores", "sparq_candidates", "sparq_topk", "sparq_attend"],
];

/** The default launch. */
export const SPARQ_DEFAULT: SparqConfig = { block: 1024, attendWorkgroup: 256 };
/** The candidates the tuner measures. */
export const SPARQ_SPACE: SparqConfig[] = [256, 512, 1024, 2048].flatMap((block) =>
  [64, 128, 256].map((attendWorkgroup) => ({ block, attendWorkgroup }))
);

/** Invocations of the top-k workgroups: one per radix bin. */
export const SPARQ_TOPK_WORKGROUP = 256;
/** Positions each `sparq_candidates` workgroup ranks in workgroup memory. */
export const CANDIDATE_BLOCK = 4096;

/** Sizes of the SparQ scratch tensors for a shape. */
export function sparqScratch(
  s: AttentionKernelShape,
  p: SparqKernelParams,
  config: SparqConfig = SPARQ_DEFAULT,
) {
  const blocks = Math.ceil(s.maxSeq / config.block);
  const kept = Math.min(p.k, s.maxSeq);
  const candidateBlock = Math.min(CANDIDATE_BLOCK, s.maxSeq);
  const candidateBlocks = Math.ceil(s.maxSeq / candidateBlock);
  const perBlock = Math.min(p.k, candidateBlock);
  return {
    blocks,
    kept,
    scores: [s.batch, s.heads, s.maxSeq],
    blockStats: [s.batch, s.heads, blocks, 2],
    candidates: [s.batch, s.kvHeads, candidateBlocks * perBlock, 2],
    indices: [s.batch, s.kvHeads, kept],
    alpha: [s.batch, s.heads],
  };
}

function constants(s: AttentionKernelShape, p: SparqKernelParams, c: SparqConfig): string {
  return `const HEAD_DIM = ${s.headDim}u;
const GROUP = ${s.heads / s.kvHeads}u;
const HEADS = ${s.heads}u;
const KV_HEADS = ${s.kvHeads}u;
const MAX_SEQ = ${s.maxSeq}u;
const R = ${p.r}u;
const K_SEL = ${p.k}u;
const KEPT = ${Math.min(p.k, s.maxSeq)}u;
const LOCAL_WINDOW = ${p.localWindow}u;
const BLOCK = ${c.block}u;
const BLOCKS = ${Math.ceil(s.maxSeq / c.block)}u;
const CBLOCK = ${Math.min(CANDIDATE_BLOCK, s.maxSeq)}u;
const CBLOCKS = ${Math.ceil(s.maxSeq / Math.min(CANDIDATE_BLOCK, s.maxSeq))}u;
const CK = ${Math.min(p.k, Math.min(CANDIDATE_BLOCK, s.maxSeq))}u;
${PARAMS_DECL}`;
}

function spec(name: string, source: string, storage: StorageBinding[]): KernelSpec {
  return computeKernel(name, "attention", source, storage);
}

/** Parts in which stage 1 sums each head's Σ|q| and Σ_i1 |q| at once (for tau). */
const TAU_PARTS = 4;

/**
 * Workgroup memory of the query selection that opens every stage-1 workgroup (bytes): q of the
 * group's heads, Σ_group |q|, i1, the mask of i1, the parts of tau's sums and q[i1] / tau.
 */
function querySelectionBytes(s: AttentionKernelShape, r: number): number {
  const group = s.heads / s.kvHeads;
  return (group * s.headDim + s.headDim + r + s.headDim + group * TAU_PARTS * 2 + group * r) * 4;
}

/**
 * What both stage-1 kernels share: their bindings (Kᵀ and scores typed per kernel) and the start
 * of `main`, which selects the query components itself: i1, the r largest components of
 * Σ_group |q| (ties to the lower component), and each head's q[i1] / tau, into workgroup memory.
 * Every workgroup of a (sequence, KV head) repeats this small computation (one load per
 * component, a rank by comparisons of vec4s in workgroup memory), which costs less than
 * the dependent dispatch a separate stage took (13 µs at batch 1 on the H100).
 */
function scoresPreamble(
  ktType: string,
  scoresType: string,
  workgroup: number,
  subgroupSize: number | null | undefined,
  arrivals: boolean,
): string {
  return `@group(0) @binding(0) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> positions: array<u32>;
@group(0) @binding(2) var<storage, read> kt_cache: array<${ktType}>;
@group(0) @binding(3) var<storage, read_write> scores: array<${scoresType}>;
@group(0) @binding(4) var<storage, read_write> block_stats: array<f32>;
${
    arrivals
      ? `@group(0) @binding(5) var<storage, read_write> arrivals: array<u32>;
@group(0) @binding(6) var<uniform> params: Params;`
      : "@group(0) @binding(5) var<uniform> params: Params;"
  }

const QUADS = HEAD_DIM / 4u;
const TAU_PARTS = ${TAU_PARTS}u;
const TAU_QUADS = (QUADS + TAU_PARTS - 1u) / TAU_PARTS;
var<workgroup> q_group: array<vec4<f32>, GROUP * QUADS>;
var<workgroup> abs_q: array<vec4<f32>, QUADS>;
var<workgroup> i1: array<u32, R>;
var<workgroup> picked_mask: array<f32, HEAD_DIM>;
var<workgroup> abs_sums: array<vec2<f32>, GROUP * TAU_PARTS>;
var<workgroup> q_sel: array<f32, GROUP * R>;
${reductions(workgroup, subgroupSize ?? null)}
@compute @workgroup_size(WG)
fn main(
  ${MAIN_ARGS},
) {
  ${FLAT_ID}
  let block = flat % BLOCKS;
  let local_row = flat / BLOCKS;
  if (local_row >= params.rows) { return; }
  let row = params.first_row + local_row;
${
    arrivals
      ? "  // The next dispatch counts its blocks' arrivals per row here (see sparqSelectAttendKernel).\n" +
        "  if (block == 0u && tid == 0u) { arrivals[row] = 0u; }\n"
      : ""
  }  let b = row / KV_HEADS;
  let len = min(positions[b] + 1u, MAX_SEQ);
  let start = block * BLOCK;
  if (start >= len) { return; }
  let head0 = row * GROUP;
  // Loops over vec4s of workgroup memory, not unrolled scalar lines: fully unrolled, the
  // compiler hoisted every load into registers and the scores loop lost occupancy.
  for (var c = tid; c < QUADS; c += WG) {
    var a = vec4<f32>(0.0);
    for (var h = 0u; h < GROUP; h++) {
      let x = q[(head0 + h) * QUADS + c];
      q_group[h * QUADS + c] = x;
      a += abs(x);
    }
    abs_q[c] = a;
  }
  workgroupBarrier();
  for (var j = tid; j < HEAD_DIM; j += WG) {
    let aj = vec4<f32>(abs_q[j / 4u][j % 4u]);
    var ranks = vec4<u32>(0u);
    for (var c = 0u; c < QUADS; c++) {
      let a = abs_q[c];
      let i = vec4<u32>(c * 4u) + vec4<u32>(0u, 1u, 2u, 3u);
      ranks += select(vec4<u32>(0u), vec4<u32>(1u), a > aj | (a == aj & i < vec4<u32>(j)));
    }
    let rank = ranks.x + ranks.y + ranks.z + ranks.w;
    if (rank < R) { i1[rank] = j; }
    picked_mask[j] = select(0.0, 1.0, rank < R);
  }
  workgroupBarrier();
  // tau = sqrt(d · Σ_i1 |q| / Σ |q|) per head (SPARQ.md): the softmax temperature of the
  // approximate scores. Both sums in TAU_PARTS parts per head at once, without a load that waits
  // on another: one invocation walking i1, then q[i1], cost 4 µs per stage-1 workgroup at B=1.
  for (var i = tid; i < GROUP * TAU_PARTS; i += WG) {
    let h = i / TAU_PARTS;
    let first = (i % TAU_PARTS) * TAU_QUADS;
    var all = vec4<f32>(0.0);
    var picked = vec4<f32>(0.0);
    for (var c = first; c < min(first + TAU_QUADS, QUADS); c++) {
      let a = abs(q_group[h * QUADS + c]);
      let m = vec4<f32>(picked_mask[4u * c], picked_mask[4u * c + 1u], picked_mask[4u * c + 2u],
        picked_mask[4u * c + 3u]);
      all += a;
      picked += a * m;
    }
    abs_sums[i] = vec2<f32>(all.x + all.y + all.z + all.w, picked.x + picked.y + picked.z + picked.w);
  }
  workgroupBarrier();
  for (var i = tid; i < GROUP * R; i += WG) {
    let h = i / R;
    var sums = vec2<f32>(0.0);
    for (var part = 0u; part < TAU_PARTS; part++) { sums += abs_sums[h * TAU_PARTS + part]; }
    let tau = select(sqrt(f32(HEAD_DIM)), sqrt(f32(HEAD_DIM) * sums.y / sums.x), sums.x > 0.0);
    q_sel[i] = q_group[h * QUADS + i1[i % R] / 4u][i1[i % R] % 4u] / tau;
  }
  workgroupBarrier();`;
}

/** The bindings of both stage-1 kernels (with `arrivals`: the counters they zero). */
function scoresBindings(arrivals: boolean): StorageBinding[] {
  return [
    ["q", "read"],
    ["positions", "read"],
    ["kt_cache", "read"],
    ["scores", "read_write"],
    ["block_stats", "read_write"],
    ...(arrivals ? [["arrivals", "read_write"] as const] : []),
  ];
}

/** Stage 1's workgroup: up to 256 invocations, each scoring `block / workgroup` positions. */
export function scoresLayout(c: SparqConfig): { workgroup: number; perThread: number } {
  const workgroup = Math.min(256, c.block);
  return { workgroup, perThread: c.block / workgroup };
}

/**
 * Stage 1: bindings q, positions, kt_cache, scores, block_stats, params.
 * Each invocation scores several positions, one workgroup-wide coalesced read of a Kᵀ row per
 * component and position slot.
 *
 * @example
 * ```ts
 * import { sparqScoresKernel } from "./sparq.ts";
 * sparqScoresKernel({ batch: 1, heads: 32, kvHeads: 8, headDim: 128, maxSeq: 4096,
 *   kvDtype: "f16", workgroupStorage: 49152 }, { r: 32, k: 128, localWindow: 0 }).name;
 * ```
 */
export function sparqScoresKernel(
  s: AttentionKernelShape,
  p: SparqKernelParams,
  c: SparqConfig = SPARQ_DEFAULT,
  arrivals = false,
): KernelSpec {
  const { workgroup, perThread } = scoresLayout(c);
  const bytes = querySelectionBytes(s, p.r) + workgroup * 12;
  fitTile("sparq_scores", s.workgroupStorage, () => bytes, [c.block]);
  const source = `// sparqc SparQ stage 1: approximate scores from the Kᵀ runs of i1
${kvPrelude(s.kvDtype)}
${constants(s, p, c)}
${ktIndexWgsl(s.headDim, s.maxSeq)}
const WG = ${workgroup}u;
const PER = ${perThread}u;
${scoresPreamble("KV", "f32", workgroup, s.subgroupSize, arrivals)}

  var z = array<f32, GROUP * PER>();
  for (var i = 0u; i < R; i++) {
    for (var slot = 0u; slot < PER; slot++) {
      let pos = start + tid + slot * WG;
      if (pos < len) {
        let key = f32(kt_cache[kt_index(local_row, i1[i], pos)]);
        for (var h = 0u; h < GROUP; h++) { z[slot * GROUP + h] += q_sel[h * R + i] * key; }
      }
    }
  }
  for (var h = 0u; h < GROUP; h++) {
    var m = NEG;
    var sum = 0.0;
    for (var slot = 0u; slot < PER; slot++) {
      let pos = start + tid + slot * WG;
      if (pos < len) {
        let v = z[slot * GROUP + h];
        scores[(head0 + h) * MAX_SEQ + pos] = v;
        let top = max(m, v);
        sum = sum * exp(m - top) + exp(v - top);
        m = top;
      }
    }
    let stats = reduce_softmax(m, sum, tid);
    if (tid == 0u) {
      block_stats[((head0 + h) * BLOCKS + block) * 2u] = stats.x;
      block_stats[((head0 + h) * BLOCKS + block) * 2u + 1u] = stats.y;
    }
  }
}
`;
  return spec("sparq_scores", source, scoresBindings(arrivals));
}

/**
 * How stage 1 loads Kᵀ: 4 positions per 8-byte load, or — f16 Kᵀ with S a multiple of 8 — 8
 * positions per 16-byte load; null where S or the block is not a multiple of 4.
 *
 * @example
 * ```ts
 * import { scoresWidth } from "./sparq.ts";
 * scoresWidth({ batch: 1, heads: 32, kvHeads: 8, headDim: 128, maxSeq: 4096, kvDtype: "f16",
 *   workgroupStorage: 49152 }, { block: 1024, attendWorkgroup: 256 }); // 8
 * ```
 */
export function scoresWidth(s: AttentionKernelShape, c: SparqConfig): 4 | 8 | null {
  if (s.kvDtype === "f16" && s.maxSeq % 8 === 0 && c.block % 8 === 0) return 8;
  if (s.maxSeq % 4 === 0 && c.block % 4 === 0) return 4;
  return null;
}

/** Kᵀ rows whose loads stage 1 issues before it uses any of them. */
const ROWS_IN_FLIGHT = 8;

/**
 * Stage 1 where S is a multiple of 4: each invocation scores 4 or 8 consecutive positions (see
 * {@link scoresWidth}) with one load per Kᵀ row. The generator unrolls the loop over the r rows
 * into straight-line WGSL with one `let` per load and one `var` per accumulator: the loads of
 * {@link ROWS_IN_FLIGHT} rows are issued before any is used, and no private array exists that
 * the driver could place in local memory (the looped form measured 2–3× slower on the H100,
 * docs/performance.md). Same bindings as {@link sparqScoresKernel}.
 *
 * @example
 * ```ts
 * import { sparqScoresVec4Kernel } from "./sparq.ts";
 * sparqScoresVec4Kernel({ batch: 1, heads: 32, kvHeads: 8, headDim: 128, maxSeq: 4096,
 *   kvDtype: "f16", workgroupStorage: 49152 }, { r: 32, k: 128, localWindow: 0 }).name;
 * ```
 */
export function sparqScoresVec4Kernel(
  s: AttentionKernelShape,
  p: SparqKernelParams,
  c: SparqConfig = SPARQ_DEFAULT,
  arrivals = false,
): KernelSpec {
  const group = s.heads / s.kvHeads;
  const width = scoresWidth(s, c);
  if (width === null) throw new RangeError("sparq_scores: S and the block must be multiples of 4");
  const workgroup = Math.min(256, c.block / width);
  const bytes = querySelectionBytes(s, p.r) + workgroup * 12;
  fitTile("sparq_scores", s.workgroupStorage, () => bytes, [c.block]);
  const vecs = width / 4;
  const heads = [...Array(group).keys()];
  const parts = [...Array(vecs).keys()];
  const acc = (h: number, v: number) => `z${h}_${v}`;
  const lines: string[] = [];
  for (let i0 = 0; i0 < p.r; i0 += ROWS_IN_FLIGHT) {
    const rows = [...Array(Math.min(ROWS_IN_FLIGHT, p.r - i0)).keys()].map((j) => i0 + j);
    for (const i of rows) {
      lines.push(`let k${i} = kt_cache[(kt_tile + i1[${i}u]) * TILE_LOADS + column];`);
    }
    for (const i of rows) {
      const unpacked = width === 8
        ? [
          `vec4<f32>(unpack2x16float(k${i}.x), unpack2x16float(k${i}.y))`,
          `vec4<f32>(unpack2x16float(k${i}.z), unpack2x16float(k${i}.w))`,
        ]
        : [`vec4<f32>(k${i})`];
      if (width === 8) lines.push(`let lo${i} = ${unpacked[0]};`, `let hi${i} = ${unpacked[1]};`);
      const names = width === 8 ? [`lo${i}`, `hi${i}`] : [unpacked[0]];
      for (const h of heads) {
        for (const v of parts) lines.push(`${acc(h, v)} += q_sel[${h * p.r + i}u] * ${names[v]};`);
      }
    }
  }
  const components = ["x", "y", "z", "w"];
  const statistics = heads.flatMap((h) => [
    ...parts.map((v) => `scores[((head0 + ${h}u) * MAX_SEQ + pos0) / 4u + ${v}u] = ${acc(h, v)};`),
    ...parts.flatMap((v) =>
      components.map((x, e) =>
        `if (pos0 + ${v * 4 + e}u < len) { let m${h}_${v}${x} = online_update(run_max[${h}u], ` +
        `run_sum[${h}u], ${acc(h, v)}.${x}); run_max[${h}u] = m${h}_${v}${x}.x; ` +
        `run_sum[${h}u] = m${h}_${v}${x}.y; }`
      )
    ),
  ]);
  const source =
    `// sparqc SparQ stage 1 (${width} positions per invocation, unrolled over r): approximate scores
${kvPrelude(s.kvDtype)}
${constants(s, p, c)}
${ktIndexWgsl(s.headDim, s.maxSeq)}
const WG = ${workgroup}u;
const WIDTH = ${width}u;
const PER = BLOCK / (WG * WIDTH);
const TILE_LOADS = KT_TILE / WIDTH;
// Folds one score into a head's running softmax statistics (max, Σexp).
fn online_update(m: f32, sum: f32, v: f32) -> vec2<f32> {
  let top = max(m, v);
  return vec2<f32>(top, sum * exp(m - top) + exp(v - top));
}
${
      scoresPreamble(
        width === 8 ? "vec4<u32>" : "KV4",
        "vec4<f32>",
        workgroup,
        s.subgroupSize,
        arrivals,
      )
    }

  var run_max = array<f32, GROUP>();
  var run_sum = array<f32, GROUP>();
  for (var h = 0u; h < GROUP; h++) { run_max[h] = NEG; }
  for (var slot = 0u; slot < PER; slot++) {
    let pos0 = start + (slot * WG + tid) * WIDTH;
    if (pos0 >= len) { break; }
    // The tile of pos0 (a whole WIDTH of positions never straddles two) and the load within it.
    let kt_tile = (local_row * KT_TILES + pos0 / KT_TILE) * HEAD_DIM;
    let column = (pos0 % KT_TILE) / WIDTH;
${indentLines(heads.flatMap((h) => parts.map((v) => `var ${acc(h, v)} = vec4<f32>(0.0);`)), "    ")}
${indentLines(lines, "    ")}
${indentLines(statistics, "    ")}
  }
  for (var h = 0u; h < GROUP; h++) {
    let stats = reduce_softmax(run_max[h], run_sum[h], tid);
    if (tid == 0u) {
      block_stats[((head0 + h) * BLOCKS + block) * 2u] = stats.x;
      block_stats[((head0 + h) * BLOCKS + block) * 2u + 1u] = stats.y;
    }
  }
}
`;
  return spec("sparq_scores", source, scoresBindings(arrivals));
}

/** Boundary-bin items the binned selection ranks in workgroup memory (one per invocation). */
const BOUNDARY_CAPACITY = 256;

/**
 * WGSL `log_sum_shat(head0, pos)`: log Σ_group ŝ by log-sum-exp (so that no term underflows to
 * a -inf key), generated straight-line over the heads — each head's score loaded once, all
 * loads before any use.
 */
function logSumShat(group: number): string {
  const heads = [...Array(group).keys()];
  const maxOf = heads.map((h) => `t${h}`).reduce((a, b) => `max(${a}, ${b})`);
  return `fn log_sum_shat(head0: u32, pos: u32) -> f32 {
${
    heads.map((h) =>
      `  let t${h} = scores[(head0 + ${h}u) * MAX_SEQ + pos] - head_max[${h}u] + head_log_inv[${h}u];`
    ).join("\n")
  }
  let m = ${maxOf};
  return m + log(${heads.map((h) => `exp(t${h} - m)`).join(" + ")});
}`;
}

/**
 * WGSL shared by the two selection stages: head statistics, ranking keys, the radix round and
 * the binned selection's workgroup memory. `group` decides the ranking key: with one query head
 * per KV head, Σ_group ŝ is monotone in the logit, so the logit itself ranks (no softmax needed).
 */
function selectionCommon(group: number): string {
  if (group > SPARQ_TOPK_WORKGROUP) {
    throw new RangeError("SparQ: more query heads per KV head than 256");
  }
  const rankingValue = group === 1 ? "scores[head0 * MAX_SEQ + pos]" : `log_sum_shat(head0, pos)`;
  return `const STAT_LANES = ${SPARQ_TOPK_WORKGROUP / nextPowerOfTwo(group)}u;
var<workgroup> head_max: array<f32, GROUP>;
var<workgroup> head_inv: array<f32, GROUP>;
var<workgroup> head_log_inv: array<f32, GROUP>;
var<workgroup> hist: array<atomic<u32>, 256>;
var<workgroup> chosen_bin: u32;
var<workgroup> chosen_left: u32;
var<workgroup> chosen_here: u32;
var<workgroup> boundary_key: array<u32, ${BOUNDARY_CAPACITY}>;
var<workgroup> boundary_position: array<u32, ${BOUNDARY_CAPACITY}>;
var<workgroup> boundary_count: atomic<u32>;
var<workgroup> taken_count: atomic<u32>;
const WINDOW_KEY = 0xffffffffu;

fn shat(head: u32, pos: u32, h: u32) -> f32 {
  return exp(scores[head * MAX_SEQ + pos] - head_max[h]) * head_inv[h];
}

${logSumShat(group)}

// Each head's softmax over all valid positions, from stage 1's per-block statistics.
fn head_statistics(head0: u32, len: u32, tid: u32) {
  // All heads at once: head h merges in its own segment of STAT_LANES invocations, so a group
  // of heads costs one tree of barriers, not one per head.
  let used = (len + BLOCK - 1u) / BLOCK;
  let h = tid / STAT_LANES;
  let lane = tid % STAT_LANES;
  var m = NEG;
  var sum = 0.0;
  if (h < GROUP) {
    for (var blk = lane; blk < used; blk += STAT_LANES) {
      let at = ((head0 + h) * BLOCKS + blk) * 2u;
      let bm = block_stats[at];
      let top = max(m, bm);
      sum = sum * exp(m - top) + block_stats[at + 1u] * exp(bm - top);
      m = top;
    }
  }
  let stats = reduce_softmax_in(m, sum, tid, STAT_LANES);
  if (h < GROUP && lane == 0u) {
    head_max[h] = stats.x;
    head_inv[h] = 1.0 / stats.y;
    head_log_inv[h] = -log(stats.y);
  }
  workgroupBarrier();
}

// The bits of a float, reordered so that unsigned order is the float order.
fn ordered_key(x: f32) -> u32 {
  let bits = bitcast<u32>(x);
  return select(bits | 0x80000000u, ~bits, (bits & 0x80000000u) != 0u);
}

fn key_value(key: u32) -> f32 {
  return bitcast<f32>(select(~key, key & 0x7fffffffu, (key & 0x80000000u) != 0u));
}

// The ranking key of a position: a value monotone in Σ_group ŝ; the local window gets the largest.
fn ranking_key(head0: u32, pos: u32, len: u32) -> u32 {
  if (pos + LOCAL_WINDOW >= len) { return WINDOW_KEY; }
  return ordered_key(${rankingValue});
}

// An empty range of ranking values, to widen.
const NO_RANGE = vec2<f32>(3.0e38, NEG);

// The range (min, max) widened by the ranking value of a key; the local window's keys stay out.
fn widen_range(range: vec2<f32>, key: u32) -> vec2<f32> {
  if (key == WINDOW_KEY) { return range; }
  let v = key_value(key);
  return vec2<f32>(min(range.x, v), max(range.y, v));
}

// The range (min, max) of every invocation's range, over the workgroup.
fn reduce_range(range: vec2<f32>, tid: u32) -> vec2<f32> {
  let m = reduce_max_pair(-range.x, range.y, tid);
  return vec2<f32>(-m.x, m.y);
}

// The value bin of a key: 255 linear bins between the range's ends, 255 for the window.
// Monotone in the key, so the want-th largest key lies in the bin a radix round picks.
fn value_bin(key: u32, lo: f32, scale: f32) -> u32 {
  if (key == WINDOW_KEY) { return 255u; }
  return min(u32(max(key_value(key) - lo, 0.0) * scale), 254u);
}

// One radix round: picks the bin holding the want-th largest key among the counted keys.
// hist must hold this round's counts; returns (bin, how many to take from it, keys in it).
fn radix_round(want: u32, tid: u32) -> vec3<u32> {
  // Keys in bins above this one: the total less the inclusive prefix, by one parallel scan.
  let here = atomicLoad(&hist[tid]);
  let scan = scan_exclusive(here, tid);
  let above = scan.y - scan.x - here;
  if (above < want && want <= above + here) {
    chosen_bin = tid;
    chosen_left = want - above;
    chosen_here = here;
  }
  let bin = workgroupUniformLoad(&chosen_bin);
  let left = workgroupUniformLoad(&chosen_left);
  let count = workgroupUniformLoad(&chosen_here);
  atomicStore(&hist[tid], 0u);
  workgroupBarrier();
  return vec3<u32>(bin, left, count);
}
`;
}

/**
 * WGSL selecting, among `count` items in order, the `want` with the largest keys (ties to the
 * earlier item): a radix select of the threshold key, 8 bits a round from the top, then each
 * invocation takes a contiguous range and exclusive scans give every taken item its output slot,
 * so items come out in their order. `item` is WGSL defining `key` (u32), `valid` (bool) and
 * `position` from `i`; `take` is WGSL run for each taken item with its `slot`.
 */
function topSelection(p: { count: string; want: string; item: string; take: string }): string {
  return `  var prefix = 0u;
  var left = ${p.want};
  for (var round = 0u; round < 4u; round++) {
    let shift = 24u - 8u * round;
    let mask = select(0u, 0xffffffffu << (shift + 8u), round > 0u);
    for (var i = tid; i < ${p.count}; i += WG) {
      ${p.item}
      if (valid && (key & mask) == prefix) { atomicAdd(&hist[(key >> shift) & 255u], 1u); }
    }
    workgroupBarrier();
    let picked = radix_round(left, tid);
    prefix = prefix | (picked.x << shift);
    left = picked.y;
  }
  let threshold = prefix;
  let span = (${p.count} + WG - 1u) / WG;
  let lo = min(tid * span, ${p.count});
  let hi = min(lo + span, ${p.count});
  var above_count = 0u;
  var equal_count = 0u;
  for (var i = lo; i < hi; i++) {
    ${p.item}
    if (valid && key > threshold) { above_count++; }
    if (valid && key == threshold) { equal_count++; }
  }
  let equal_before = scan_exclusive(equal_count, tid).x;
  let take_equal = min(equal_count, left - min(left, equal_before));
  var slot = scan_exclusive(above_count + take_equal, tid).x;
  var taken_equal = 0u;
  for (var i = lo; i < hi; i++) {
    ${p.item}
    if (!valid) { continue; }
    var take = key > threshold;
    if (key == threshold && taken_equal < take_equal) {
      take = true;
      taken_equal++;
    }
    if (take) {
      ${p.take}
      slot++;
    }
  }`;
}

/**
 * WGSL selecting the `want` largest keys among `count` items, in one counting round where keys
 * spread: 255 linear bins over the range of the ranking values (`range`, a uniform vec2 of min
 * and max) give the bin holding the want-th key; items above it are taken at once, the items in
 * it (usually a few dozen) go to workgroup memory and are ranked there, ties to the lower
 * position. The radix select of {@link topSelection} (four rounds of 8 bits, each a counting
 * pass) is the fallback where the boundary bin overflows workgroup memory or the two passes
 * disagree; `reset` is WGSL that undoes what `take` accumulated before such a fallback. Taken
 * items get slots in no particular order.
 */
function binnedSelection(
  p: { count: string; want: string; item: string; take: string; range: string; reset: string },
): string {
  return `  {
    let lo = ${p.range}.x;
    let spread = ${p.range}.y - lo;
    let scale = select(0.0, 255.0 / spread, spread > 1e-30);
    if (tid == 0u) {
      atomicStore(&boundary_count, 0u);
      atomicStore(&taken_count, 0u);
    }
    for (var i = tid; i < ${p.count}; i += WG) {
      ${p.item}
      if (valid) { atomicAdd(&hist[value_bin(key, lo, scale)], 1u); }
    }
    workgroupBarrier();
    let edge = radix_round(${p.want}, tid);
    for (var i = tid; i < ${p.count}; i += WG) {
      ${p.item}
      if (!valid) { continue; }
      let bin = value_bin(key, lo, scale);
      if (bin > edge.x) {
        let slot = atomicAdd(&taken_count, 1u);
        if (slot < ${p.want}) { ${p.take} }
      } else if (bin == edge.x) {
        let at = atomicAdd(&boundary_count, 1u);
        if (at < ${BOUNDARY_CAPACITY}u) {
          boundary_key[at] = key;
          boundary_position[at] = position;
        }
      }
    }
    let boundary = workgroupUniformLoad(&boundary_count);
    let above = workgroupUniformLoad(&taken_count);
    if (boundary == edge.z && above + edge.y == ${p.want} && boundary <= ${BOUNDARY_CAPACITY}u) {
      for (var j = tid; j < boundary; j += WG) {
        let key = boundary_key[j];
        let position = boundary_position[j];
        var rank = 0u;
        for (var i = 0u; i < boundary; i++) {
          let other = boundary_key[i];
          if (other > key || (other == key && boundary_position[i] < position)) { rank++; }
        }
        if (rank < edge.y) {
          let slot = above + rank;
          ${p.take}
        }
      }
    } else {
      ${p.reset}
${topSelection(p)}
    }
  }`;
}

/**
 * The opening every selection kernel (stages 2a and 2b, and the kernels they are fused into)
 * shares: constants, the 256-invocation workgroup, the bindings, the reductions and
 * {@link selectionCommon}; with `kv`, the KV element type first.
 */
function selectionPrelude(
  s: AttentionKernelShape,
  p: SparqKernelParams,
  c: SparqConfig,
  storage: Binding[],
  kv = false,
): string {
  return `${kv ? kvPrelude(s.kvDtype) : ""}${constants(s, p, c)}
const WG = ${SPARQ_TOPK_WORKGROUP}u;
${bindingDeclarations(storage)}
${reductions(SPARQ_TOPK_WORKGROUP, s.subgroupSize ?? null)}
${selectionCommon(s.heads / s.kvHeads)}`;
}

/** Workgroup memory of stage 2a's keys (bytes). */
function keysBytes(s: AttentionKernelShape): number {
  const block = Math.min(CANDIDATE_BLOCK, s.maxSeq);
  return (block + block / 16 + 1) * 4;
}

/**
 * Stage 2a's WGSL without an entry point: its bindings, and `fn local_candidates(row, cblock,
 * tid)`, which writes one block's candidates (the kernel declares WG, the reductions and
 * {@link selectionCommon}).
 */
function candidatesParts(s: AttentionKernelShape): { storage: Binding[]; wgsl: string } {
  const block = Math.min(CANDIDATE_BLOCK, s.maxSeq);
  const group = s.heads / s.kvHeads;
  const perInvocation = Math.ceil(block / SPARQ_TOPK_WORKGROUP);
  const keyLoads = [
    ...unroll(
      perInvocation,
      (j) => `let key${j} = ranking_key(head0, start + min(tid + ${j}u * WG, n - 1u), len);`,
      "",
    )
      .split("\n"),
    ...unroll(
      perInvocation,
      (j) =>
        `if (tid + ${j}u * WG < n) { keys[padded(tid + ${j}u * WG)] = key${j}; ` +
        `range = widen_range(range, key${j}); }`,
      "",
    )
      .split("\n"),
  ];
  const storage: Binding[] = [
    ["scores", "read", "f32"],
    ["block_stats", "read", "f32"],
    ["positions", "read", "u32"],
    ["candidates", "read_write", "vec2<u32>"],
  ];
  const wgsl =
    `// One pad word after every 16 keys: the final passes of the selection give each invocation a
// contiguous run of 16 keys, and unpadded, invocations 16 words apart would share two banks.
var<workgroup> keys: array<u32, CBLOCK + CBLOCK / 16u + 1u>;
fn padded(i: u32) -> u32 { return i + i / 16u; }

fn local_candidates(row: u32, cblock: u32, tid: u32) {
  let b = row / KV_HEADS;
  let len = min(positions[b] + 1u, MAX_SEQ);
  let start = cblock * CBLOCK;
  // k ≥ length: stage 2b takes every position; nothing to rank.
  if (start >= len || K_SEL >= len) { return; }
  let n = min(CBLOCK, len - start);
  let head0 = row * GROUP;
  let out = (row * CBLOCKS + cblock) * CK;
${group > 1 ? "  head_statistics(head0, len, tid);\n" : ""}  var range = NO_RANGE;
  // Straight-line, so that every key's loads issue before any is used (a loop here waited one
  // memory latency per trip).
${indentLines(keyLoads, "  ")}
  atomicStore(&hist[tid], 0u);
  range = reduce_range(range, tid);
  if (n <= CK) {
    for (var t = tid; t < n; t += WG) { candidates[out + t] = vec2<u32>(keys[padded(t)], start + t); }
    return;
  }

${
      binnedSelection({
        count: "n",
        want: "CK",
        item: "let key = keys[padded(i)]; let valid = true; let position = start + i;",
        take: "candidates[out + slot] = vec2<u32>(key, position);",
        range: "range",
        reset: "",
      })
    }
}`;
  return { storage, wgsl };
}

/**
 * Stage 2a: each workgroup ranks `CANDIDATE_BLOCK` positions of one (sequence, KV head) in
 * workgroup memory and keeps its local top k, in position order, as (key, position)
 * candidates. The global top k is always among the local ones (same tie rule). Bindings
 * scores, block_stats, positions, candidates, params (rows = B·Hkv).
 *
 * @example
 * ```ts
 * import { sparqCandidatesKernel } from "./sparq.ts";
 * sparqCandidatesKernel({ batch: 1, heads: 32, kvHeads: 8, headDim: 128, maxSeq: 4096,
 *   kvDtype: "f16", workgroupStorage: 49152 }, { r: 32, k: 128, localWindow: 0 }).name;
 * ```
 */
export function sparqCandidatesKernel(
  s: AttentionKernelShape,
  p: SparqKernelParams,
  c: SparqConfig = SPARQ_DEFAULT,
): KernelSpec {
  const block = Math.min(CANDIDATE_BLOCK, s.maxSeq);
  fitTile(
    "sparq_candidates",
    s.workgroupStorage,
    () => keysBytes(s) + 256 * 4 + SPARQ_TOPK_WORKGROUP * 12 + BOUNDARY_CAPACITY * 8,
    [block],
  );
  const { storage, wgsl } = candidatesParts(s);
  const source = `// sparqc SparQ stage 2a: local top-k candidates of each block of positions
${selectionPrelude(s, p, c, storage)}
${wgsl}

@compute @workgroup_size(WG)
fn main(
  ${MAIN_ARGS},
) {
  ${FLAT_ID}
  if (flat >= params.rows * CBLOCKS) { return; }
  local_candidates(flat / CBLOCKS, flat % CBLOCKS, tid);
}
`;
  return spec("sparq_candidates", source, storage);
}

/** Pages of {@link WARM_PAGE_BYTES} each warm-up workgroup of stage 2b reads into. */
export const WARM_PAGES_PER_WORKGROUP = 32;
/** The stride of the warm-up's reads: one per 64 KiB of the K and V caches. */
export const WARM_PAGE_BYTES = 65536;

/**
 * Workgroups that warm the address translations of a K (and V) cache of `cacheBytes` bytes.
 *
 * @example
 * ```ts
 * import { warmWorkgroups } from "./sparq.ts";
 * warmWorkgroups(268435456); // 128: a llama2-7b layer's K cache at S = 32k, 4096 pages
 * ```
 */
export function warmWorkgroups(cacheBytes: number): number {
  return Math.ceil(cacheBytes / WARM_PAGE_BYTES / WARM_PAGES_PER_WORKGROUP);
}

/**
 * The warm-up workgroups of stage 2b: one 4-byte read in each 64 KiB of the K and V caches,
 * spread over many workgroups. At batch 1 stage 3 is a few workgroups, each gathering k rows
 * scattered over its head's cache, and on the H100 it took 31 µs inside a decode step against
 * 15 µs alone (llama2-7b, S = 32k): its first touch of each page was the cost. Reads of the same
 * pages made earlier by many SMs, while stage 2b's few workgroups select, took it back to 15 µs;
 * made by stage 2b's own 16 workgroups they cost 33 µs (misses queue per SM).
 */
const WARM_UP = `const WARM_PAGE_WORDS = ${WARM_PAGE_BYTES / 4}u;
const WARM_PAGES = ${WARM_PAGES_PER_WORKGROUP}u;
fn warm_translations(w: u32, tid: u32) {
  let page = w * WARM_PAGES + tid % WARM_PAGES;
  // Another 256-byte line of each page, so that the reads spread over memory channels.
  let at = page * WARM_PAGE_WORDS + ((page * 2654435761u) % (WARM_PAGE_WORDS / 64u)) * 64u;
  var word = 0u;
  if (tid < WARM_PAGES) {
    if (at < arrayLength(&k_words)) { word = k_words[at]; }
  } else if (tid < 2u * WARM_PAGES) {
    if (at < arrayLength(&v_words)) { word = v_words[at]; }
  }
  // params.extra0 is 0 in every dispatch: the store never happens, yet the reads must stay.
  if (word == params.extra1 && params.extra0 == 1u) { alpha[0] = 0.0; }
}`;

type Binding = [name: string, access: "read" | "read_write", type: string];

/** The bindings of kernels fused into one: each name once, read_write where any part writes. */
function mergeBindings(...parts: Binding[][]): Binding[] {
  const merged = new Map<string, Binding>();
  for (const [name, access, type] of parts.flat()) {
    const before = merged.get(name);
    merged.set(name, [name, before?.[1] === "read_write" ? "read_write" : access, type]);
  }
  return [...merged.values()];
}

/**
 * Stage 2b's WGSL without an entry point: its bindings, and `fn select_top_k(row, tid)`, which
 * writes the row's indices and alpha (and, with `warm`, `warm_translations`).
 */
function topkParts(s: AttentionKernelShape, warm: boolean): { storage: Binding[]; wgsl: string } {
  const group = s.heads / s.kvHeads;
  const storage: Binding[] = [
    ["scores", "read", "f32"],
    ["block_stats", "read", "f32"],
    ["positions", "read", "u32"],
    ["candidates", "read", "vec2<u32>"],
    ["indices", "read_write", "u32"],
    ["alpha", "read_write", "f32"],
    ...(warm ? [["k_words", "read", "u32"], ["v_words", "read", "u32"]] as Binding[] : []),
  ];
  const wgsl = `${warm ? WARM_UP : ""}
// Candidate i of the row (i < count), in position order, and whether it exists.
fn candidate_valid(len: u32, i: u32) -> bool {
  let n = min(CBLOCK, len - min(len, (i / CK) * CBLOCK));
  return i % CK < min(CK, n);
}
fn candidate_at(row: u32, len: u32, i: u32) -> vec3<u32> {
  let c = candidates[row * CBLOCKS * CK + i];
  return vec3<u32>(c.x, c.y, select(0u, 1u, candidate_valid(len, i)));
}

fn select_top_k(row: u32, tid: u32) {
  let b = row / KV_HEADS;
  let len = min(positions[b] + 1u, MAX_SEQ);
  let head0 = row * GROUP;
  let out = row * KEPT;

  if (K_SEL >= len) {
    for (var i = tid; i < KEPT; i += WG) { indices[out + i] = select(0xffffffffu, i, i < len); }
    if (tid < GROUP) { alpha[head0 + tid] = 1.0; }
    return;
  }
  let count = ((len + CBLOCK - 1u) / CBLOCK) * CK;
  var range = NO_RANGE;
  for (var i = tid; i < count; i += WG) {
    let c = candidate_at(row, len, i);
    if (c.z == 1u) { range = widen_range(range, c.x); }
  }
  head_statistics(head0, len, tid);
  atomicStore(&hist[tid], 0u);
  range = reduce_range(range, tid);

  // Each head's kept mass in a var of its own (a private array indexed in a loop is slow here).
${unroll(group, (h) => `var kept${h} = 0.0;`, "  ")}
${
    binnedSelection({
      count: "count",
      want: "K_SEL",
      item:
        "let c = candidate_at(row, len, i); let key = c.x; let valid = c.z == 1u; let position = c.y;",
      take: `indices[out + slot] = position; ${
        unroll(group, (h) => `kept${h} += shat(head0 + ${h}u, position, ${h}u);`, "")
          .split("\n").join(" ")
      }`,
      range: "range",
      reset: unroll(group, (h) => `kept${h} = 0.0;`, "").split("\n").join(" "),
    })
  }
${
    unroll(group, (h) =>
      `  {
    let total = reduce_sum(kept${h}, tid);
    if (tid == 0u) { alpha[head0 + ${h}u] = total; }
  }`)
  }
}`;
  return { storage, wgsl };
}

/** The entry point's opening: workgroups past the rows warm translations (if any) and leave. */
function rowsOrWarm(warm: boolean): string {
  return `${FLAT_ID}
  if (flat >= params.rows) {${
    warm ? " warm_translations(flat - params.rows, tid);" : ""
  } return; }`;
}

/**
 * Stage 2b, per (sequence, KV head): the top k among the candidates, selected as in stage 2a
 * (ties to the lower position: candidates are in position order), written as indices in no
 * particular order, and each head's kept mass alpha (1 exactly when k ≥ length). Bindings
 * scores, block_stats, positions, candidates, indices, alpha, [k_words, v_words,] params (rows
 * = B·Hkv). With `warm`, workgroups past the rows warm the K and V caches' translations for
 * stage 3 (see {@link warmWorkgroups}; dispatch rows + warmWorkgroups(K cache bytes)).
 *
 * @example
 * ```ts
 * import { sparqTopkKernel } from "./sparq.ts";
 * sparqTopkKernel({ batch: 1, heads: 32, kvHeads: 8, headDim: 128, maxSeq: 4096,
 *   kvDtype: "f16", workgroupStorage: 49152 }, { r: 32, k: 128, localWindow: 0 }).name;
 * ```
 */
export function sparqTopkKernel(
  s: AttentionKernelShape,
  p: SparqKernelParams,
  c: SparqConfig = SPARQ_DEFAULT,
  warm = false,
): KernelSpec {
  const { storage, wgsl } = topkParts(s, warm);
  const source = `// sparqc SparQ stage 2b: the top k of the candidates, and alpha${
    warm ? "; workgroups past the rows warm the K and V caches' translations" : ""
  }
${selectionPrelude(s, p, c, storage)}
${wgsl}

@compute @workgroup_size(WG)
fn main(
  ${MAIN_ARGS},
) {
  ${rowsOrWarm(warm)}
  select_top_k(flat, tid);
}
`;
  // One name for both: reports compare stages across points, and a plan holds one of them.
  return spec("sparq_topk", source, storage);
}

/**
 * Gathered V rows each stage-3 invocation loads before using any: at batch 1 the stage is a
 * few workgroups' latency, and 16 rows in flight took it from 37.6 to 32.4 µs per call on the
 * H100 (llama2-7b, S = 32k) against 4.
 */
const ATTEND_VALUE_ROWS = 16;

/** Workgroup memory of stage 2b's selection (bytes), beside its reductions' scratch. */
function selectionBytes(group: number): number {
  return group * 12 + 256 * 4 + 12 + BOUNDARY_CAPACITY * 8 + 8;
}

/**
 * Workgroup shape and tile of stage 3; `extraBytes` of workgroup memory are taken by what runs
 * before it in the same kernel.
 */
export function attendLayout(
  s: AttentionKernelShape,
  c: SparqConfig = SPARQ_DEFAULT,
  extraBytes = 0,
) {
  const group = s.heads / s.kvHeads;
  const { lanes, slices, workgroup } = rowLayout(s.headDim, c.attendWorkgroup);
  const fixed = extraBytes + group * s.headDim * 4 + workgroup * 16 + workgroup * 12 +
    group * 12;
  const tile = fitTile("sparq_attend", s.workgroupStorage, (t) => fixed + group * t * 4 + t * 4);
  return { lanes, slices, workgroup, tile };
}

/**
 * Stage 3's WGSL without an entry point: its workgroup memory and `fn attend_row(local_row,
 * tid)` (the kernel declares LANES, SLICES, TILE, SCALE and WG).
 */
function attendParts(s: AttentionKernelShape, layout: ReturnType<typeof attendLayout>): string {
  const group = s.heads / s.kvHeads;
  return `const LANES = ${layout.lanes}u;
const SLICES = ${layout.slices}u;
const TILE = ${layout.tile}u;
const SCALE = ${floatLiteral(1 / Math.sqrt(s.headDim))};
var<workgroup> q_sh: array<vec4<f32>, GROUP * LANES>;
var<workgroup> p_sh: array<f32, GROUP * TILE>;
var<workgroup> idx_sh: array<u32, TILE>;
var<workgroup> acc_sh: array<vec4<f32>, WG>;
var<workgroup> run_max: array<f32, GROUP>;
var<workgroup> run_sum: array<f32, GROUP>;
var<workgroup> rescale: array<f32, GROUP>;

fn attend_row(local_row: u32, tid: u32) {
  let row = params.first_row + local_row;
  let b = row / KV_HEADS;
  let len = min(positions[b] + 1u, MAX_SEQ);
  let n = min(K_SEL, len);
  let head0 = row * GROUP;
  for (var i = tid; i < GROUP * LANES; i += WG) { q_sh[i] = q[head0 * LANES + i]; }
  if (tid < GROUP) {
    run_max[tid] = NEG;
    run_sum[tid] = 0.0;
  }
  let lane = tid % LANES;
  let slice = tid / LANES;
  let base = local_row * MAX_SEQ;
${unroll(group, (h) => `var acc${h} = vec4<f32>(0.0);`, "  ")}

  for (var t0 = 0u; t0 < n; t0 += TILE) {
    let count = min(TILE, n - t0);
    workgroupBarrier();
    for (var t = tid; t < count; t += WG) {
      let pos = indices[row * KEPT + t0 + t];
      idx_sh[t] = pos;
${
    rowDots({
      group,
      lanes: layout.lanes,
      row: "k_cache[(base + pos) * LANES + {lane}]",
      store: (h, v) => `p_sh[${h}u * TILE + t] = ${v} * SCALE;`,
    })
  }
    }
    workgroupBarrier();
    // Online softmax across tiles: rescale what came before to the new running max.
    for (var h = 0u; h < GROUP; h++) {
      var m = NEG;
      for (var t = tid; t < count; t += WG) { m = max(m, p_sh[h * TILE + t]); }
      m = reduce_max(m, tid);
      let old = run_max[h];
      let top = max(old, m);
      var sum = 0.0;
      for (var t = tid; t < count; t += WG) {
        let e = exp(p_sh[h * TILE + t] - top);
        p_sh[h * TILE + t] = e;
        sum += e;
      }
      sum = reduce_sum(sum, tid);
      if (tid == 0u) {
        let factor = exp(old - top);
        rescale[h] = factor;
        run_sum[h] = run_sum[h] * factor + sum;
        run_max[h] = top;
      }
    }
    workgroupBarrier();
${unroll(group, (h) => `acc${h} *= rescale[${h}u];`, "    ")}
${valueRows(group, "TILE", "(base + idx_sh[ROW]) * LANES + lane", "count", ATTEND_VALUE_ROWS)}
  }

${
    unroll(group, (h) =>
      `  {
    workgroupBarrier();
    acc_sh[tid] = acc${h};
    workgroupBarrier();
    if (slice == 0u) {
      var o = acc_sh[lane];
      for (var s = 1u; s < SLICES; s++) { o += acc_sh[s * LANES + lane]; }
      let a = alpha[head0 + ${h}u];
      y[(head0 + ${h}u) * LANES + lane] = a * (o / run_sum[${h}u]) +
        (1.0 - a) * v_mean[local_row * LANES + lane];
    }
  }`)
  }
}
`;
}

/** Stage 3's bindings (KV4: the cache's vec4 type). */
const ATTEND_BINDINGS: Binding[] = [
  ["q", "read", "vec4<f32>"],
  ["positions", "read", "u32"],
  ["k_cache", "read", "KV4"],
  ["v_cache", "read", "KV4"],
  ["v_mean", "read", "vec4<f32>"],
  ["indices", "read", "u32"],
  ["alpha", "read", "f32"],
  ["y", "read_write", "vec4<f32>"],
];

/**
 * Stage 3: bindings q, positions, k_cache, v_cache, v_mean, indices, alpha, y, params.
 *
 * @example
 * ```ts
 * import { sparqAttendKernel } from "./sparq.ts";
 * sparqAttendKernel({ batch: 1, heads: 32, kvHeads: 8, headDim: 128, maxSeq: 4096,
 *   kvDtype: "f16", workgroupStorage: 49152 }, { r: 32, k: 128, localWindow: 0 }).name;
 * ```
 */
export function sparqAttendKernel(
  s: AttentionKernelShape,
  p: SparqKernelParams,
  c: SparqConfig = SPARQ_DEFAULT,
): KernelSpec {
  const layout = attendLayout(s, c);
  const source =
    `// sparqc SparQ stage 3: exact attention over the top-k rows, mean-value reallocation
${kvPrelude(s.kvDtype)}
${constants(s, p, c)}
const WG = ${layout.workgroup}u;
${bindingDeclarations(ATTEND_BINDINGS)}
${reductions(layout.workgroup, s.subgroupSize ?? null)}
${attendParts(s, layout)}
@compute @workgroup_size(WG)
fn main(
  ${MAIN_ARGS},
) {
  ${FLAT_ID}
  if (flat >= params.rows) { return; }
  attend_row(flat, tid);
}
`;
  return spec("sparq_attend", source, ATTEND_BINDINGS);
}

/**
 * Whether stages 2b and 3 fit one kernel on a target: stage 3's workgroup is stage 2b's 256
 * invocations, the bindings of both fit the target's storage-buffer limit, and one dispatch
 * covers every row (the caches in one binding each).
 *
 * @example
 * ```ts
 * import { topkAttendFits } from "./sparq.ts";
 * topkAttendFits({ batch: 1, heads: 32, kvHeads: 32, headDim: 128, maxSeq: 4096,
 *   kvDtype: "f16", workgroupStorage: 49152 }, { block: 1024, attendWorkgroup: 256 }, 16, true); // true
 * ```
 */
export function topkAttendFits(
  s: AttentionKernelShape,
  c: SparqConfig,
  maxStorageBuffers: number,
  warm: boolean,
): boolean {
  return rowLayout(s.headDim, c.attendWorkgroup).workgroup === SPARQ_TOPK_WORKGROUP &&
    mergeBindings(topkParts(s, warm).storage, ATTEND_BINDINGS).length <= maxStorageBuffers;
}

/**
 * Stages 2b and 3 in one kernel, per (sequence, KV head): the top k and alpha as in
 * {@link sparqTopkKernel} (still written out: they are the plan's outputs for checking), then,
 * after a storage barrier, the attention of {@link sparqAttendKernel} over them — one dependent
 * dispatch fewer per layer. Bindings: stage 2b's, then q, k_cache, v_cache, v_mean, y, params.
 * Only where {@link topkAttendFits}.
 *
 * @example
 * ```ts
 * import { sparqTopkAttendKernel } from "./sparq.ts";
 * sparqTopkAttendKernel({ batch: 1, heads: 32, kvHeads: 8, headDim: 128, maxSeq: 4096,
 *   kvDtype: "f16", workgroupStorage: 49152 }, { r: 32, k: 128, localWindow: 0 }).name;
 * ```
 */
export function sparqTopkAttendKernel(
  s: AttentionKernelShape,
  p: SparqKernelParams,
  c: SparqConfig = SPARQ_DEFAULT,
  warm = false,
): KernelSpec {
  const topk = topkParts(s, warm);
  const group = s.heads / s.kvHeads;
  const layout = attendLayout(s, c, selectionBytes(group));
  if (layout.workgroup !== SPARQ_TOPK_WORKGROUP) {
    throw new RangeError("sparq_topk_attend: stage 3's workgroup must be stage 2b's 256");
  }
  const storage = mergeBindings(topk.storage, ATTEND_BINDINGS);
  const source = `// sparqc SparQ stages 2b and 3: the top k and alpha, then attention over them${
    warm ? "; workgroups past the rows warm the K and V caches' translations" : ""
  }
${selectionPrelude(s, p, c, storage, true)}
${topk.wgsl}
${attendParts(s, layout)}
@compute @workgroup_size(WG)
fn main(
  ${MAIN_ARGS},
) {
  ${rowsOrWarm(warm)}
  select_top_k(flat, tid);
  // Stage 3 reads the indices and alpha that this workgroup's invocations just wrote.
  storageBarrier();
  attend_row(flat, tid);
}
`;
  return spec("sparq_topk_attend", source, storage);
}

/** Stage 2a–3 in one kernel: its bindings, and the workgroup memory stage 3 may not take. */
function selectAttendParts(s: AttentionKernelShape, warm: boolean) {
  const storage = mergeBindings(
    candidatesParts(s).storage,
    topkParts(s, warm).storage,
    ATTEND_BINDINGS,
    [["arrivals", "read_write", "atomic<u32>"]],
  );
  return { storage, before: keysBytes(s) + selectionBytes(s.heads / s.kvHeads) };
}

/**
 * Whether stages 2a, 2b and 3 fit one kernel on a target: as {@link topkAttendFits}, and stage
 * 2a's keys, the selection and stage 3's tile together within the workgroup memory.
 *
 * @example
 * ```ts
 * import { selectAttendFits } from "./sparq.ts";
 * selectAttendFits({ batch: 1, heads: 32, kvHeads: 32, headDim: 128, maxSeq: 32768,
 *   kvDtype: "f16", workgroupStorage: 49152 }, { block: 1024, attendWorkgroup: 256 }, 16, true); // true
 * ```
 */
export function selectAttendFits(
  s: AttentionKernelShape,
  c: SparqConfig,
  maxStorageBuffers: number,
  warm: boolean,
): boolean {
  const { storage, before } = selectAttendParts(s, warm);
  if (rowLayout(s.headDim, c.attendWorkgroup).workgroup !== SPARQ_TOPK_WORKGROUP) return false;
  if (storage.length > maxStorageBuffers) return false;
  try {
    attendLayout(s, c, before);
    return true;
  } catch (error) {
    if (error instanceof RangeError) return false;
    throw error;
  }
}

/**
 * Stages 2a, 2b and 3 in one kernel: each workgroup ranks one block's candidates as
 * {@link sparqCandidatesKernel} does, then counts itself in its row's `arrivals` (zeroed by
 * stage 1); the row's last block to arrive — after a storage barrier, so that every block's
 * candidates are visible to it — selects the top k and attends as {@link sparqTopkAttendKernel}.
 * Nothing waits on another workgroup, so no forward-progress guarantee is needed; two
 * dependent dispatches fewer per layer than the four stages. Dispatch rows · CBLOCKS
 * workgroups (then the warm-up's). Only where {@link selectAttendFits}.
 *
 * @example
 * ```ts
 * import { sparqSelectAttendKernel } from "./sparq.ts";
 * sparqSelectAttendKernel({ batch: 1, heads: 32, kvHeads: 8, headDim: 128, maxSeq: 16384,
 *   kvDtype: "f16", workgroupStorage: 49152 }, { r: 32, k: 128, localWindow: 0 }).name;
 * ```
 */
export function sparqSelectAttendKernel(
  s: AttentionKernelShape,
  p: SparqKernelParams,
  c: SparqConfig = SPARQ_DEFAULT,
  warm = false,
): KernelSpec {
  const { storage, before } = selectAttendParts(s, warm);
  const layout = attendLayout(s, c, before);
  if (layout.workgroup !== SPARQ_TOPK_WORKGROUP) {
    throw new RangeError("sparq_select_attend: stage 3's workgroup must be stage 2b's 256");
  }
  const source =
    `// sparqc SparQ stages 2a, 2b and 3: each block's candidates; the row's last block to finish
// selects the top k and attends${
      warm ? "; workgroups past the blocks warm the K and V caches' translations" : ""
    }
${selectionPrelude(s, p, c, storage, true)}
${candidatesParts(s).wgsl}
${topkParts(s, warm).wgsl}
${attendParts(s, layout)}
var<workgroup> last_block: u32;

@compute @workgroup_size(WG)
fn main(
  ${MAIN_ARGS},
) {
  ${FLAT_ID}
  if (flat >= params.rows * CBLOCKS) {${
      warm ? " warm_translations(flat - params.rows * CBLOCKS, tid);" : ""
    } return; }
  let row = flat / CBLOCKS;
  local_candidates(row, flat % CBLOCKS, tid);
  // Release this block's candidates at device scope before counting it.
  storageBarrier();
  if (tid == 0u) { last_block = select(0u, 1u, atomicAdd(&arrivals[row], 1u) == CBLOCKS - 1u); }
  if (workgroupUniformLoad(&last_block) == 0u) { return; }
  // Acquire the other blocks' candidates.
  storageBarrier();
  select_top_k(row, tid);
  // Stage 3 reads the indices and alpha that this workgroup's invocations just wrote.
  storageBarrier();
  attend_row(row, tid);
}
`;
  return spec("sparq_select_attend", source, storage);
}
