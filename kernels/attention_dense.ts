/**
 * Dense decode attention as flash-decoding: `attention_dense_partial` splits each sequence into
 * chunks; one workgroup per (chunk, sequence, KV head) reads each K and V row of its chunk once
 * for every query head of the KV group and writes the chunk's output, max and Σexp;
 * `attention_dense_reduce` merges the chunks of each query head (`attention_dense_reduce_few`
 * where a row has at most `FEW_CHUNKS`) — or, at few rows with one query head per KV head,
 * `attention_dense_partial_reduce` does both: the last chunk of each row to finish merges it.
 * Positions at or beyond a sequence's length are never read.
 *
 * This file holds the launch (chunk, workgroup), the WGSL that both partial kernels share and
 * the plain partial kernel; the reductions are in `attention_dense_reduce.ts`, the subgroup
 * partial kernel (with the reduction in it) in `attention_dense_subgroup.ts`.
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
  MAIN_ARGS,
  PARAMS_DECL,
  reductions,
  rowLayout,
} from "./wgsl_common.ts";
import { rowDots, unroll, valueRows } from "./unrolled.ts";

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

/**
 * The WGSL every dense kernel starts with: the KV type aliases, the shape and layout as
 * constants (HEAD_DIM, LANES, SLICES, WG, GROUP, HEADS, KV_HEADS, MAX_SEQ, CHUNK, CHUNKS, SCALE)
 * and the params struct.
 *
 * @example
 * ```ts
 * import { denseHeader, denseLayout } from "./attention_dense.ts";
 * const shape = { batch: 1, heads: 32, kvHeads: 8, headDim: 128, maxSeq: 4096,
 *   kvDtype: "f16" as const, workgroupStorage: 49152 };
 * denseHeader(shape, denseLayout(shape)).includes("const GROUP = 4u;"); // true
 * ```
 */
export function denseHeader(s: AttentionKernelShape, layout: DenseLayout): string {
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
 *
 * @example
 * ```ts
 * import { DENSE_CHUNK_PREAMBLE } from "./attention_dense.ts";
 * DENSE_CHUNK_PREAMBLE.includes("let n = min(CHUNK, len - start);"); // true
 * ```
 */
export const DENSE_CHUNK_PREAMBLE = `${FLAT_ID}
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
 *
 * @example
 * ```ts
 * import { DENSE_STORE_PARTIAL } from "./attention_dense.ts";
 * DENSE_STORE_PARTIAL.startsWith("fn store_partial("); // true
 * ```
 */
export const DENSE_STORE_PARTIAL =
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

/**
 * WGSL of both partial kernels' bindings before params (q, positions, K, V, partials) and
 * their `store_partial`.
 *
 * @example
 * ```ts
 * import { DENSE_PARTIAL_DECLARATIONS } from "./attention_dense.ts";
 * DENSE_PARTIAL_DECLARATIONS.includes("var<storage, read_write> partials"); // true
 * ```
 */
export const DENSE_PARTIAL_DECLARATIONS =
  `@group(0) @binding(0) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> positions: array<u32>;
@group(0) @binding(2) var<storage, read> k_cache: array<KV4>;
@group(0) @binding(3) var<storage, read> v_cache: array<KV4>;
@group(0) @binding(4) var<storage, read_write> partials: array<f32>;
${DENSE_STORE_PARTIAL}`;

/**
 * What both partial kernels bind before params.
 *
 * @example
 * ```ts
 * import { DENSE_PARTIAL_BINDINGS } from "./attention_dense.ts";
 * DENSE_PARTIAL_BINDINGS.map(([name]) => name); // ["q", "positions", "k_cache", "v_cache", "partials"]
 * ```
 */
export const DENSE_PARTIAL_BINDINGS: [string, "read" | "read_write"][] = [
  ["q", "read"],
  ["positions", "read"],
  ["k_cache", "read"],
  ["v_cache", "read"],
  ["partials", "read_write"],
];

/**
 * The spec of a partial kernel: both variants bind q, positions, K, V, partials, params.
 *
 * @example
 * ```ts
 * import { densePartialSpec } from "./attention_dense.ts";
 * densePartialSpec("attention_dense_partial", "// wgsl").bindings.length; // 6
 * ```
 */
export function densePartialSpec(name: string, source: string): KernelSpec {
  return computeKernel(name, "attention", source, DENSE_PARTIAL_BINDINGS);
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
${denseHeader(s, layout)}
${DENSE_PARTIAL_DECLARATIONS}
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
  ${DENSE_CHUNK_PREAMBLE}
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
  return densePartialSpec("attention_dense_partial", source);
}
