/**
 * Dense decode attention as flash-decoding: `attention_dense_partial` splits each sequence into
 * chunks; one workgroup per (chunk, sequence, KV head) reads each K and V row of its chunk once
 * for every query head of the KV group and writes the chunk's output, max and Σexp;
 * `attention_dense_reduce` merges the chunks of each query head. Positions at or beyond a
 * sequence's length are never read.
 *
 * Partials layout: [B, H, chunks, d + 2] f32 — d outputs (unnormalized), then max, then Σexp.
 *
 * @module
 */
import type { KernelSpec } from "./kernel_spec.ts";
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

/** Dense attention's launch parameters. */
export interface DenseConfig {
  /** Positions per workgroup of the partial kernel (the split-K chunk). */
  chunk: number;
  /** Invocations per workgroup of the partial kernel, about (rounded to whole rows of lanes). */
  workgroup: number;
}

/** The default launch. */
export const DENSE_DEFAULT: DenseConfig = { chunk: 256, workgroup: 256 };
/** The candidates the tuner measures (those whose workgroup memory does not fit are skipped). */
export const DENSE_SPACE: DenseConfig[] = [128, 256, 512, 1024].flatMap((chunk) =>
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
  config: DenseConfig = DENSE_DEFAULT,
): DenseLayout {
  const group = s.heads / s.kvHeads;
  const { lanes, slices, workgroup } = rowLayout(s.headDim, config.workgroup);
  const fixed = group * s.headDim * 4 + workgroup * 16 + workgroup * 12 + group * 8;
  const candidates = [config.chunk, 256, 128, 64, 32, 16].filter((c) => c <= config.chunk);
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
  const source =
    `// sparqc dense attention, split-K partial: one workgroup per (chunk, sequence, KV head)
${header(s, layout)}
@group(0) @binding(0) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> positions: array<u32>;
@group(0) @binding(2) var<storage, read> k_cache: array<KV4>;
@group(0) @binding(3) var<storage, read> v_cache: array<KV4>;
@group(0) @binding(4) var<storage, read_write> partials: array<f32>;
@group(0) @binding(5) var<uniform> params: Params;

var<workgroup> q_sh: array<vec4<f32>, GROUP * LANES>;
var<workgroup> p_sh: array<f32, GROUP * CHUNK>;
var<workgroup> acc_sh: array<vec4<f32>, WG>;
var<workgroup> stat_sh: array<f32, GROUP * 2u>;
${reductions(layout.workgroup)}
@compute @workgroup_size(WG)
fn main(
  ${MAIN_ARGS},
) {
  ${FLAT_ID}
  let chunk = flat % CHUNKS;
  let local_row = flat / CHUNKS;
  if (local_row >= params.rows) { return; }
  let row = params.first_row + local_row;
  let b = row / KV_HEADS;
  let len = min(positions[b] + 1u, MAX_SEQ);
  let start = chunk * CHUNK;
  if (start >= len) { return; }
  let n = min(CHUNK, len - start);
  let head0 = row * GROUP;
  for (var i = tid; i < GROUP * LANES; i += WG) { q_sh[i] = q[head0 * LANES + i]; }
  workgroupBarrier();

  // Scores: each invocation reads whole K rows, once for all query heads of the group.
  let base = local_row * MAX_SEQ + start;
  for (var t = tid; t < n; t += WG) {
    var dots = array<f32, GROUP>();
    for (var lane = 0u; lane < LANES; lane++) {
      let key = vec4<f32>(k_cache[(base + t) * LANES + lane]);
      for (var h = 0u; h < GROUP; h++) { dots[h] += dot(q_sh[h * LANES + lane], key); }
    }
    for (var h = 0u; h < GROUP; h++) { p_sh[h * CHUNK + t] = dots[h] * SCALE; }
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
  var acc = array<vec4<f32>, GROUP>();
  for (var t = slice; t < n; t += SLICES) {
    let value = vec4<f32>(v_cache[(base + t) * LANES + lane]);
    for (var h = 0u; h < GROUP; h++) { acc[h] += p_sh[h * CHUNK + t] * value; }
  }
  for (var h = 0u; h < GROUP; h++) {
    acc_sh[tid] = acc[h];
    workgroupBarrier();
    if (slice == 0u) {
      var o = acc_sh[lane];
      for (var s = 1u; s < SLICES; s++) { o += acc_sh[s * LANES + lane]; }
      let out = ((head0 + h) * CHUNKS + chunk) * (HEAD_DIM + 2u);
      partials[out + 4u * lane] = o.x;
      partials[out + 4u * lane + 1u] = o.y;
      partials[out + 4u * lane + 2u] = o.z;
      partials[out + 4u * lane + 3u] = o.w;
      if (lane == 0u) {
        partials[out + HEAD_DIM] = stat_sh[2u * h];
        partials[out + HEAD_DIM + 1u] = stat_sh[2u * h + 1u];
      }
    }
    workgroupBarrier();
  }
}
`;
  return {
    name: "attention_dense_partial",
    op: "attention",
    source,
    entryPoint: "main",
    constants: {},
    bindings: [
      { name: "q", access: "read" },
      { name: "positions", access: "read" },
      { name: "k_cache", access: "read" },
      { name: "v_cache", access: "read" },
      { name: "partials", access: "read_write" },
      { name: "params", access: "uniform" },
    ],
    placeholder: false,
  };
}

/** Invocations per workgroup of the reduction. */
export const DENSE_REDUCE_WORKGROUP = 64;

/**
 * The reduction: one workgroup per (sequence, query head); bindings partials, positions, y,
 * params (rows = B·H).
 *
 * @example
 * ```ts
 * import { denseLayout, denseReduceKernel } from "./attention_dense.ts";
 * const shape = { batch: 1, heads: 32, kvHeads: 32, headDim: 128, maxSeq: 4096,
 *   kvDtype: "f16" as const, workgroupStorage: 49152 };
 * denseReduceKernel(shape, denseLayout(shape)).name; // "attention_dense_reduce"
 * ```
 */
export function denseReduceKernel(s: AttentionKernelShape, layout: DenseLayout): KernelSpec {
  const source =
    `// sparqc dense attention, split-K reduction: one workgroup per (sequence, query head)
${header(s, layout)}
const RWG = ${DENSE_REDUCE_WORKGROUP}u;
const NEG = -3.0e38;
@group(0) @binding(0) var<storage, read> partials: array<f32>;
@group(0) @binding(1) var<storage, read> positions: array<u32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

@compute @workgroup_size(RWG)
fn main(
  ${MAIN_ARGS},
) {
  ${FLAT_ID}
  if (flat >= params.rows) { return; }
  let b = flat / HEADS;
  let len = min(positions[b] + 1u, MAX_SEQ);
  let used = (len + CHUNK - 1u) / CHUNK;
  let base = flat * CHUNKS * (HEAD_DIM + 2u);
  var top = NEG;
  for (var c = 0u; c < used; c++) { top = max(top, partials[base + c * (HEAD_DIM + 2u) + HEAD_DIM]); }
  var total = 0.0;
  for (var c = 0u; c < used; c++) {
    let at = base + c * (HEAD_DIM + 2u) + HEAD_DIM;
    total += partials[at + 1u] * exp(partials[at] - top);
  }
  for (var j = tid; j < HEAD_DIM; j += RWG) {
    var o = 0.0;
    for (var c = 0u; c < used; c++) {
      let at = base + c * (HEAD_DIM + 2u);
      o += partials[at + j] * exp(partials[at + HEAD_DIM] - top);
    }
    y[flat * HEAD_DIM + j] = o / total;
  }
}
`;
  return {
    name: "attention_dense_reduce",
    op: "attention",
    source,
    entryPoint: "main",
    constants: {},
    bindings: [
      { name: "partials", access: "read" },
      { name: "positions", access: "read" },
      { name: "y", access: "read_write" },
      { name: "params", access: "uniform" },
    ],
    placeholder: false,
  };
}
