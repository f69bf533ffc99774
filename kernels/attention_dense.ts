/**
 * Dense decode attention as flash-decoding: `attention_dense_partial` splits each sequence into
 * chunks; one workgroup per (chunk, sequence, KV head) reads each K and V row of its chunk once
 * for every query head of the KV group and writes the chunk's output, max and Σexp;
 * `attention_dense_reduce` merges the chunks of each query head (`attention_dense_reduce_few`
 * where a row has at most {@link FEW_CHUNKS}) — or, at few rows with one query head per KV head,
 * `attention_dense_partial_reduce` does both: the last chunk of each row to finish merges it.
 * Positions at or beyond a sequence's length are never read.
 *
 * Partials layout: [B, H, chunks, d + 2] f32 — d outputs (unnormalized), then max, then Σexp.
 *
 * @module
 */
import { computeKernel, type KernelSpec } from "./kernel_spec.ts";
import {
  type AttentionKernelShape,
  fitTile,
  FLAT_ID,
  floatLiteral,
  kvPrelude,
  LAST_ARRIVAL_DECL,
  lastArrivalGoesOn,
  MAIN_ARGS,
  PARAMS_DECL,
  reductions,
  rowLayout,
} from "./wgsl_common.ts";
import { indentLines, rowDots, unroll, valueRows } from "./unrolled.ts";

/** Dense attention's launch parameters. */
export interface DenseConfig {
  /** Positions per workgroup of the partial kernel (the split-K chunk). */
  chunk: number;
  /** Invocations per workgroup of the partial kernel, about (rounded to whole rows of lanes). */
  workgroup: number;
}

/** Workgroups of 2048-position chunks between which grouped-query heads take them. */
const LONG_CHUNK_WORKGROUPS = [512, 4096] as const;

/**
 * The launch of an untuned plan: chunks of 1024 positions where B·H·⌈S/1024⌉ (query heads, so
 * grouped-query workgroups, which compute for several heads, count for more) reaches 2048, of
 * 512 where that leaves 512 workgroups, else 256. On the H100, chunks of 1024 took llama3-8b
 * B=64 S=32k from 3588 to 3103 µs (attention bench) but B=1 S=4k from 32.8 to 65.8 µs (8 rows
 * × 4 chunks leave the GPU idle), and inside llama2-7b's decode step at S=32k (1024 workgroups)
 * they cost 3 µs per layer against 256. With several query heads per KV head, chunks of 2048
 * where they leave 512 to 4096 workgroups: llama3-8b B=1 S=128k 207.7 → 200.2 µs, B=16 S=16k 392
 * → 380, B=64 S=4k 400 → 388, B=16 S=32k 757 → 737, B=64 S=16k 1503 → 1465; with 256 workgroups
 * (B=1 S=64k 113 → 126) or 8192 (B=64 S=32k 2988 → 3027) they lost, and for one head per KV
 * head (llama2-7b B=16 S=32k 2867 → 2942).
 *
 * @example
 * ```ts
 * import { defaultDenseConfig } from "./attention_dense.ts";
 * defaultDenseConfig({ batch: 1, heads: 32, kvHeads: 8, maxSeq: 32768 }).chunk; // 512
 * defaultDenseConfig({ batch: 1, heads: 32, kvHeads: 8, maxSeq: 131072 }).chunk; // 2048
 * ```
 */
export function defaultDenseConfig(
  s: Pick<AttentionKernelShape, "batch" | "heads" | "kvHeads" | "maxSeq">,
): DenseConfig {
  const chunks = (chunk: number) => Math.ceil(s.maxSeq / chunk);
  const [fewest, most] = LONG_CHUNK_WORKGROUPS;
  const longWorkgroups = s.batch * s.kvHeads * chunks(2048);
  const chunk = s.heads > s.kvHeads && longWorkgroups >= fewest && longWorkgroups <= most
    ? 2048
    : s.batch * s.heads * chunks(1024) >= 2048
    ? 1024
    : s.batch * s.kvHeads * chunks(512) >= 512
    ? 512
    : 256;
  return { chunk, workgroup: 256 };
}
/** The candidates the tuner measures (those whose workgroup memory does not fit are skipped). */
export const DENSE_SPACE: DenseConfig[] = [128, 256, 512, 1024, 2048].flatMap((chunk) =>
  [128, 256, 512].map((workgroup) => ({ chunk, workgroup }))
);

/** The chunking of dense attention for a shape. */
export interface DenseLayout {
  chunk: number;
  chunks: number;
  lanes: number;
  slices: number;
  workgroup: number;
}

/**
 * Chunk size and workgroup shape: the configured chunk, or the largest smaller one whose
 * workgroup memory fits the target.
 *
 * @example
 * ```ts
 * import { denseLayout } from "./attention_dense.ts";
 * denseLayout({ batch: 1, heads: 32, kvHeads: 8, headDim: 128, maxSeq: 4096, kvDtype: "f16",
 *   workgroupStorage: 49152 }).chunks; // 16
 * ```
 */
export function denseLayout(
  s: AttentionKernelShape,
  config: DenseConfig = defaultDenseConfig(s),
): DenseLayout {
  const group = s.heads / s.kvHeads;
  const { lanes, slices, workgroup } = rowLayout(s.headDim, config.workgroup);
  const fixed = group * s.headDim * 4 + workgroup * 16 + workgroup * 12 + group * 8;
  const candidates = [config.chunk, 1024, 512, 256, 128, 64, 32, 16].filter((c) =>
    c <= config.chunk
  );
  const chunk = fitTile(
    "attention_dense_partial",
    s.workgroupStorage,
    (t) => fixed + group * t * 4,
    candidates,
  );
  return { chunk, chunks: Math.ceil(s.maxSeq / chunk), lanes, slices, workgroup };
}

function header(s: AttentionKernelShape, layout: DenseLayout): string {
  return `${kvPrelude(s.kvDtype)}
const HEAD_DIM = ${s.headDim}u;
const LANES = ${layout.lanes}u;
const SLICES = ${layout.slices}u;
const WG = ${layout.workgroup}u;
const GROUP = ${s.heads / s.kvHeads}u;
const HEADS = ${s.heads}u;
const KV_HEADS = ${s.kvHeads}u;
const MAX_SEQ = ${s.maxSeq}u;
const CHUNK = ${layout.chunk}u;
const CHUNKS = ${layout.chunks}u;
const SCALE = ${floatLiteral(1 / Math.sqrt(s.headDim))};
${PARAMS_DECL}`;
}

/**
 * The start of both partial kernels' `main`: which chunk and (sequence, KV head) row this
 * workgroup takes, and the positions n of the chunk that lie within the sequence (none: return).
 */
const CHUNK_PREAMBLE = `${FLAT_ID}
  let chunk = flat % CHUNKS;
  let local_row = flat / CHUNKS;
  if (local_row >= params.rows) { return; }
  let row = params.first_row + local_row;
  let b = row / KV_HEADS;
  let len = min(positions[b] + 1u, MAX_SEQ);
  let start = chunk * CHUNK;
  if (start >= len) { return; }
  let n = min(CHUNK, len - start);
  let head0 = row * GROUP;`;

/**
 * WGSL storing one head's partial of a chunk, [output (d), max, Σexp]: each lane its four
 * output values, lane 0 the statistics. Both partial kernels write through it.
 */
const STORE_PARTIAL =
  `fn store_partial(head: u32, chunk: u32, lane: u32, o: vec4<f32>, m: f32, sum: f32) {
  let out = (head * CHUNKS + chunk) * (HEAD_DIM + 2u);
  partials[out + 4u * lane] = o.x;
  partials[out + 4u * lane + 1u] = o.y;
  partials[out + 4u * lane + 2u] = o.z;
  partials[out + 4u * lane + 3u] = o.w;
  if (lane == 0u) {
    partials[out + HEAD_DIM] = m;
    partials[out + HEAD_DIM + 1u] = sum;
  }
}`;

/** What both partial kernels bind before params. */
const PARTIAL_BINDINGS: [string, "read" | "read_write"][] = [
  ["q", "read"],
  ["positions", "read"],
  ["k_cache", "read"],
  ["v_cache", "read"],
  ["partials", "read_write"],
];

/** The spec of a partial kernel: both variants bind q, positions, K, V, partials, params. */
function partialSpec(name: string, source: string): KernelSpec {
  return computeKernel(name, "attention", source, PARTIAL_BINDINGS);
}

/**
 * The partial kernel: bindings q, positions, k_cache, v_cache, partials, params.
 *
 * @example
 * ```ts
 * import { denseLayout, densePartialKernel } from "./attention_dense.ts";
 * const shape = { batch: 1, heads: 32, kvHeads: 32, headDim: 128, maxSeq: 4096,
 *   kvDtype: "f16" as const, workgroupStorage: 49152 };
 * densePartialKernel(shape, denseLayout(shape)).name; // "attention_dense_partial"
 * ```
 */
export function densePartialKernel(s: AttentionKernelShape, layout: DenseLayout): KernelSpec {
  const group = s.heads / s.kvHeads;
  const source =
    `// sparqc dense attention, split-K partial: one workgroup per (chunk, sequence, KV head)
${header(s, layout)}
@group(0) @binding(0) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> positions: array<u32>;
@group(0) @binding(2) var<storage, read> k_cache: array<KV4>;
@group(0) @binding(3) var<storage, read> v_cache: array<KV4>;
@group(0) @binding(4) var<storage, read_write> partials: array<f32>;
${STORE_PARTIAL}
@group(0) @binding(5) var<uniform> params: Params;

var<workgroup> q_sh: array<vec4<f32>, GROUP * LANES>;
var<workgroup> p_sh: array<f32, GROUP * CHUNK>;
var<workgroup> acc_sh: array<vec4<f32>, WG>;
var<workgroup> stat_sh: array<f32, GROUP * 2u>;
${reductions(layout.workgroup, s.subgroupSize ?? null)}
@compute @workgroup_size(WG)
fn main(
  ${MAIN_ARGS},
) {
  ${CHUNK_PREAMBLE}
  for (var i = tid; i < GROUP * LANES; i += WG) { q_sh[i] = q[head0 * LANES + i]; }
  workgroupBarrier();

  // Scores: each invocation reads whole K rows, once for all query heads of the group.
  let base = local_row * MAX_SEQ + start;
  for (var t = tid; t < n; t += WG) {
${
      rowDots({
        group,
        lanes: layout.lanes,
        row: "k_cache[(base + t) * LANES + {lane}]",
        store: (h, v) => `p_sh[${h}u * CHUNK + t] = ${v} * SCALE;`,
      })
    }
  }
  workgroupBarrier();

  for (var h = 0u; h < GROUP; h++) {
    var m = NEG;
    for (var t = tid; t < n; t += WG) { m = max(m, p_sh[h * CHUNK + t]); }
    m = reduce_max(m, tid);
    var sum = 0.0;
    for (var t = tid; t < n; t += WG) {
      let e = exp(p_sh[h * CHUNK + t] - m);
      p_sh[h * CHUNK + t] = e;
      sum += e;
    }
    sum = reduce_sum(sum, tid);
    if (tid == 0u) {
      stat_sh[2u * h] = m;
      stat_sh[2u * h + 1u] = sum;
    }
  }
  workgroupBarrier();

  // Outputs: lane = which 4 components, slice = which positions.
  let lane = tid % LANES;
  let slice = tid / LANES;
${unroll(group, (h) => `var acc${h} = vec4<f32>(0.0);`, "  ")}
${valueRows(group, "CHUNK", "(base + ROW) * LANES + lane", "n")}
${
      unroll(group, (h) =>
        `  {
    acc_sh[tid] = acc${h};
    workgroupBarrier();
    if (slice == 0u) {
      var o = acc_sh[lane];
      for (var s = 1u; s < SLICES; s++) { o += acc_sh[s * LANES + lane]; }
      store_partial(head0 + ${h}u, chunk, lane, o, stat_sh[${2 * h}u], stat_sh[${2 * h + 1}u]);
    }
    workgroupBarrier();
  }`)
    }
}
`;
  return partialSpec("attention_dense_partial", source);
}

/** Invocations per workgroup of the reduction. */
export const DENSE_REDUCE_WORKGROUP = 256;
/**
 * The reduction's workgroup where the target allows it: at batch 1 there is one workgroup per
 * query head, so each should take as many chunks at once as it can.
 */
export const DENSE_REDUCE_WIDE_WORKGROUP = 1024;
/** Chunks each reduction invocation loads before using any. */
const REDUCE_LOADS = 16;

/** Slices of chunks the reduction's `workgroup` invocations sum at once (one component each). */
function reduceSlices(headDim: number, workgroup: number): number {
  return Math.max(1, Math.floor(workgroup / headDim));
}

/** The reduction's constants and workgroup memory (see {@link REDUCE_HEAD}). */
function reduceDeclarations(
  s: AttentionKernelShape,
  workgroup: number,
  subgroupSize: number | null,
): string {
  return `const RWG = ${workgroup}u;
const RSLICES = ${reduceSlices(s.headDim, workgroup)}u;
var<workgroup> weight: array<f32, CHUNKS>;
var<workgroup> sliced: array<f32, RSLICES * HEAD_DIM>;
${reductions(workgroup, subgroupSize)}`;
}

/**
 * WGSL of a reduction's start for (sequence, query head) row `head`: `used`, the chunks that hold
 * positions of its sequence, and `base`, where the row's partials begin. Both reductions start so.
 */
function headChunks(head: string): string {
  return `  let b = ${head} / HEADS;
  let len = min(positions[b] + 1u, MAX_SEQ);
  let used = (len + CHUNK - 1u) / CHUNK;
  let base = ${head} * CHUNKS * (HEAD_DIM + 2u);`;
}

/**
 * The body of the reduction of query head `flat` (a (sequence, query head) index) by RWG
 * invocations, RSLICES slices of chunks at a time, through workgroup arrays `weight` and `sliced`.
 */
const REDUCE_HEAD = `${headChunks("flat")}
  var m = NEG;
  var sum = 0.0;
  for (var c = tid; c < used; c += RWG) {
    let at = base + c * (HEAD_DIM + 2u) + HEAD_DIM;
    let mc = partials[at];
    let top = max(m, mc);
    sum = sum * exp(m - top) + partials[at + 1u] * exp(mc - top);
    m = top;
  }
  let stats = reduce_softmax(m, sum, tid);
  for (var c = tid; c < used; c += RWG) {
    weight[c] = exp(partials[base + c * (HEAD_DIM + 2u) + HEAD_DIM] - stats.x) / stats.y;
  }
  workgroupBarrier();
  // ${REDUCE_LOADS} chunks' loads in flight per invocation (straight-line): at batch 1 and
  // S = 32k one load per iteration made this kernel 34 µs on the H100.
  for (var i = tid; i < RSLICES * HEAD_DIM; i += RWG) {
    let j = i % HEAD_DIM;
    var o = 0.0;
    for (var c0 = i / HEAD_DIM; c0 < used; c0 += RSLICES * ${REDUCE_LOADS}u) {
${
  indentLines(
    unroll(REDUCE_LOADS, (u) => `let c${u} = min(c0 + ${u}u * RSLICES, used - 1u);`).split("\n")
      .concat(
        unroll(
          REDUCE_LOADS,
          (u) => `let p${u} = partials[base + c${u} * (HEAD_DIM + 2u) + j];`,
        ).split("\n"),
        unroll(
          REDUCE_LOADS,
          (u) => `o += select(0.0, p${u} * weight[c${u}], c0 + ${u}u * RSLICES < used);`,
        ).split("\n"),
      ),
    "      ",
  )
}
    }
    sliced[i] = o;
  }
  workgroupBarrier();
  for (var j = tid; j < HEAD_DIM; j += RWG) {
    var o = 0.0;
    for (var r = 0u; r < RSLICES; r++) { o += sliced[r * HEAD_DIM + j]; }
    y[flat * HEAD_DIM + j] = o;
  }
`;

/**
 * The reduction: one workgroup per (sequence, query head); bindings partials, positions, y,
 * params (rows = B·H). The chunks' statistics merge in a tree, each chunk's weight
 * exp(m_c − M) / L goes to workgroup memory, then (component, slice of chunks) pairs sum the
 * outputs in parallel — no invocation walks a long chain of dependent loads.
 *
 * @example
 * ```ts
 * import { denseLayout, denseReduceKernel } from "./attention_dense.ts";
 * const shape = { batch: 1, heads: 32, kvHeads: 32, headDim: 128, maxSeq: 4096,
 *   kvDtype: "f16" as const, workgroupStorage: 49152 };
 * denseReduceKernel(shape, denseLayout(shape)).name; // "attention_dense_reduce"
 * ```
 */
export function denseReduceKernel(
  s: AttentionKernelShape,
  layout: DenseLayout,
  workgroup = DENSE_REDUCE_WORKGROUP,
): KernelSpec {
  const source =
    `// sparqc dense attention, split-K reduction: one workgroup per (sequence, query head)
${header(s, layout)}
@group(0) @binding(0) var<storage, read> partials: array<f32>;
@group(0) @binding(1) var<storage, read> positions: array<u32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

${reduceDeclarations(s, workgroup, s.subgroupSize ?? null)}
@compute @workgroup_size(RWG)
fn main(
  ${MAIN_ARGS},
) {
  ${FLAT_ID}
  if (flat >= params.rows) { return; }
${REDUCE_HEAD}}
`;
  return computeKernel("attention_dense_reduce", "attention", source, [
    ["partials", "read"],
    ["positions", "read"],
    ["y", "read_write"],
  ]);
}

/** The most chunks per row that {@link denseReduceFewKernel} merges (each invocation loads all). */
export const FEW_CHUNKS = 8;
/** Invocations per workgroup of {@link denseReduceFewKernel}. */
const FEW_REDUCE_WORKGROUP = 256;

/**
 * The workgroups of {@link denseReduceFewKernel} for `rows` (sequence, query head) rows.
 *
 * @example
 * ```ts
 * import { denseReduceFewWorkgroups } from "./attention_dense.ts";
 * denseReduceFewWorkgroups(2048, 128); // 256: 8 heads of 32 vec4s per workgroup
 * ```
 */
export function denseReduceFewWorkgroups(rows: number, headDim: number): number {
  return Math.ceil((rows * headDim) / 4 / FEW_REDUCE_WORKGROUP);
}

/**
 * The reduction where each row has at most {@link FEW_CHUNKS} chunks: one invocation per
 * (sequence, query head, 4 components) loads every chunk's statistics and its 4 outputs at once
 * and merges them in registers — no workgroup memory, no barrier, one round trip to the L2.
 * The invocations of a head load the same statistics, which the cache serves once. Where the
 * tree reduction's workgroup per head spent its time on barriers around a few loads, this
 * measured 10 µs faster on the H100 (llama3-8b B=64 S=4k: 2048 query heads of 2 chunks, 388.4
 * → 378.2 µs). Bindings as {@link denseReduceKernel}; dispatch
 * {@link denseReduceFewWorkgroups} workgroups.
 *
 * @example
 * ```ts
 * import { denseLayout, denseReduceFewKernel } from "./attention_dense.ts";
 * const shape = { batch: 64, heads: 32, kvHeads: 8, headDim: 128, maxSeq: 4096,
 *   kvDtype: "f16" as const, workgroupStorage: 49152 };
 * denseReduceFewKernel(shape, denseLayout(shape)).name; // "attention_dense_reduce_few"
 * ```
 */
export function denseReduceFewKernel(s: AttentionKernelShape, layout: DenseLayout): KernelSpec {
  if (layout.chunks > FEW_CHUNKS) {
    throw new Error(`denseReduceFewKernel: ${layout.chunks} chunks, at most ${FEW_CHUNKS}`);
  }
  const chunks = [...Array(layout.chunks).keys()];
  const source =
    `// sparqc dense attention, split-K reduction of few chunks: one invocation per 4 outputs
${header(s, layout)}
const NEG = -3.0e38;
const QUADS = HEAD_DIM / 4u;
@group(0) @binding(0) var<storage, read> partials: array<f32>;
@group(0) @binding(1) var<storage, read> positions: array<u32>;
@group(0) @binding(2) var<storage, read_write> y: array<vec4<f32>>;
@group(0) @binding(3) var<uniform> params: Params;

@compute @workgroup_size(${FEW_REDUCE_WORKGROUP})
fn main(
  ${MAIN_ARGS},
) {
  ${FLAT_ID}
  let id = flat * ${FEW_REDUCE_WORKGROUP}u + tid;
  let head = id / QUADS;
  if (head >= params.rows) { return; }
  let quad = id % QUADS;
${headChunks("head")}
${
      indentLines(
        [
          // Chunks past the row's end hold nothing of this call (or an earlier call's partials):
          // weight 0, and nothing of theirs reaches the sums.
          ...chunks.flatMap((c) => [
            `let at${c} = base + ${c}u * (HEAD_DIM + 2u);`,
            `let m${c} = select(NEG, partials[at${c} + HEAD_DIM], ${c}u < used);`,
            `let l${c} = select(0.0, partials[at${c} + HEAD_DIM + 1u], ${c}u < used);`,
            `let o${c} = select(vec4<f32>(0.0), vec4<f32>(partials[at${c} + 4u * quad], ` +
            `partials[at${c} + 4u * quad + 1u], partials[at${c} + 4u * quad + 2u], ` +
            `partials[at${c} + 4u * quad + 3u]), ${c}u < used);`,
          ]),
          `let top = ${chunks.map((c) => `m${c}`).reduce((a, b) => `max(${a}, ${b})`)};`,
          ...chunks.map((c) => `let w${c} = exp(m${c} - top);`),
          `let total = ${chunks.map((c) => `l${c} * w${c}`).join(" + ")};`,
          `y[head * QUADS + quad] = (${chunks.map((c) => `o${c} * w${c}`).join(" + ")}) / total;`,
        ],
        "  ",
      )
    }
}
`;
  return computeKernel("attention_dense_reduce_few", "attention", source, [
    ["partials", "read"],
    ["positions", "read"],
    ["y", "read_write"],
  ]);
}

/**
 * Whether the subgroup partial kernel applies: a row of K is `headDim / 4` vec4 lanes, which a
 * whole number of subgroup-wide loads must cover.
 *
 * @example
 * ```ts
 * import { subgroupRowsFit } from "./attention_dense.ts";
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
 * import { subgroupRowCount } from "./attention_dense.ts";
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
 * import { subgroupDotSums } from "./attention_dense.ts";
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
 * import { transposeReduce } from "./attention_dense.ts";
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
 * import { transposeSums } from "./attention_dense.ts";
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

/**
 * The subgroup partial kernel: each subgroup walks the chunk a few K/V rows at a time — every
 * load instruction reads a contiguous stretch of a row — sums the dot products over the subgroup,
 * and keeps an online softmax (running max, Σexp, output) with no barrier in the row loop; the
 * subgroups of a workgroup merge once at the end. With several query heads per KV head each lane
 * keeps the softmax of one (row, head) sum ({@link laneOwnedSoftmax}: on the H100 llama3-8b's
 * dense attention 4–5% faster at every bench point, e.g. B=64 S=32k 3112 → 2990 µs).
 * Invocations are assumed to form subgroups in order of `local_invocation_index` (as on NVIDIA
 * and lavapipe; the tests check the results on both). Bindings and partials layout as
 * {@link densePartialKernel}. With `reduceTail` the row's last chunk to finish also reduces it
 * (bindings y and arrivals added): by a tree over the workgroup with one query head per KV head,
 * with several all heads at once in registers (see `registerReduceTail`).
 *
 * @example
 * ```ts
 * import { denseLayout, densePartialSubgroupKernel } from "./attention_dense.ts";
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
${header(s, layout)}
const SG = ${subgroupSize}u;
const TEAM_WG = ${wg}u;
const TEAMS = TEAM_WG / SG;
${
    reduceTail && group === 1
      ? `${reduceDeclarations(s, wg, subgroupSize)}\n${LAST_ARRIVAL_DECL}`
      : `const NEG = -3.0e38;${reduceTail ? `\n${LAST_ARRIVAL_DECL}` : ""}`
  }
@group(0) @binding(0) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> positions: array<u32>;
@group(0) @binding(2) var<storage, read> k_cache: array<KV4>;
@group(0) @binding(3) var<storage, read> v_cache: array<KV4>;
@group(0) @binding(4) var<storage, read_write> partials: array<f32>;
${STORE_PARTIAL}
${
    reduceTail
      ? `@group(0) @binding(5) var<storage, read_write> y: array<f32>;
@group(0) @binding(6) var<storage, read_write> arrivals: array<atomic<u32>>;
@group(0) @binding(7) var<uniform> params: Params;${
        group === 1 ? `\nfn reduce_head(flat: u32, tid: u32) {\n${REDUCE_HEAD}}` : ""
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
  ${CHUNK_PREAMBLE}
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
      ...PARTIAL_BINDINGS,
      ["y", "read_write"],
      ["arrivals", "read_write"],
    ])
    : partialSpec("attention_dense_partial_sg", source);
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
 * import { laneOwnedFits } from "./attention_dense.ts";
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
 * import { denseLayout, densePartialReduceFits } from "./attention_dense.ts";
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
  const reduce = layout.chunks * 4 + reduceSlices(s.headDim, wg) * s.headDim * 4 + 4;
  const reductions = 3 * wg * 4; // the tree reductions' arrays, the largest form
  return partial + reduce + reductions <= s.workgroupStorage;
}
