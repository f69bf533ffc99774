/**
 * The reductions of dense attention's split-K partials (`attention_dense.ts`): each (sequence,
 * query head) row's chunks merged into its output — by a tree over a workgroup
 * (`attention_dense_reduce`), or in registers where a row has at most {@link FEW_CHUNKS} chunks
 * (`attention_dense_reduce_few`). The subgroup partial kernel reuses the tree for the reduction
 * inside it (`attention_dense_subgroup.ts`).
 *
 * @module
 */
import { denseHeader, type DenseLayout } from "./attention_dense.ts";
import { computeKernel, type KernelSpec } from "./kernel_spec.ts";
import { indentLines, unroll } from "./unrolled.ts";
import { type AttentionKernelShape, FLAT_ID, MAIN_ARGS, reductions } from "./wgsl_common.ts";

/** Invocations per workgroup of the reduction. */
export const DENSE_REDUCE_WORKGROUP = 256;
/**
 * The reduction's workgroup where the target allows it: at batch 1 there is one workgroup per
 * query head, so each should take as many chunks at once as it can.
 */
export const DENSE_REDUCE_WIDE_WORKGROUP = 1024;
/** Chunks each reduction invocation loads before using any. */
const REDUCE_LOADS = 16;

/**
 * Slices of chunks the reduction's `workgroup` invocations sum at once (one component each).
 *
 * @example
 * ```ts
 * import { denseReduceSlices } from "./attention_dense_reduce.ts";
 * denseReduceSlices(128, 1024); // 8
 * ```
 */
export function denseReduceSlices(headDim: number, workgroup: number): number {
  return Math.max(1, Math.floor(workgroup / headDim));
}

/**
 * The reduction's constants and workgroup memory (see {@link DENSE_REDUCE_HEAD}).
 *
 * @example
 * ```ts
 * import { denseReduceDeclarations } from "./attention_dense_reduce.ts";
 * const shape = { batch: 1, heads: 32, kvHeads: 32, headDim: 128, maxSeq: 4096,
 *   kvDtype: "f16" as const, workgroupStorage: 49152 };
 * denseReduceDeclarations(shape, 256, 32).startsWith("const RWG = 256u;"); // true
 * ```
 */
export function denseReduceDeclarations(
  s: AttentionKernelShape,
  workgroup: number,
  subgroupSize: number | null,
): string {
  return `const RWG = ${workgroup}u;
const RSLICES = ${denseReduceSlices(s.headDim, workgroup)}u;
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
 *
 * @example
 * ```ts
 * import { DENSE_REDUCE_HEAD } from "./attention_dense_reduce.ts";
 * DENSE_REDUCE_HEAD.includes("let used = (len + CHUNK - 1u) / CHUNK;"); // true
 * ```
 */
export const DENSE_REDUCE_HEAD = `${headChunks("flat")}
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
 * import { denseLayout } from "./attention_dense.ts";
 * import { denseReduceKernel } from "./attention_dense_reduce.ts";
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
${denseHeader(s, layout)}
@group(0) @binding(0) var<storage, read> partials: array<f32>;
@group(0) @binding(1) var<storage, read> positions: array<u32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

${denseReduceDeclarations(s, workgroup, s.subgroupSize ?? null)}
@compute @workgroup_size(RWG)
fn main(
  ${MAIN_ARGS},
) {
  ${FLAT_ID}
  if (flat >= params.rows) { return; }
${DENSE_REDUCE_HEAD}}
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
 * import { denseReduceFewWorkgroups } from "./attention_dense_reduce.ts";
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
 * import { denseLayout } from "./attention_dense.ts";
 * import { denseReduceFewKernel } from "./attention_dense_reduce.ts";
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
${denseHeader(s, layout)}
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
