/**
 * SparQ stage 3 (`sparq_attend`: exact attention over the gathered rows, mean-value
 * reallocation) and the kernels that fuse it with the selection: stages 2b+3
 * (`sparq_topk_attend`), 2a–3 (`sparq_select_attend`) and, with one query head per KV head, all
 * four (`sparq_scores_attend`).
 *
 * @module
 */
import { type KernelSpec } from "./kernel_spec.ts";
import { appendBindings, appendInKernelWgsl, type RopeFold } from "./kv_append.ts";
import { type ExtraPrefetch, PREFETCH_BINDING, prefetchWgsl } from "./l2_prefetch.ts";
import {
  type AttentionKernelShape,
  bindingDeclarations,
  fitTile,
  FLAT_ID,
  floatLiteral,
  kvPrelude,
  MAIN_ARGS,
  reductions,
  rowLayout,
} from "./wgsl_common.ts";
import { indentLines, rowDots, unroll, valueRows } from "./unrolled.ts";
import { subgroupDotSums, subgroupRowCount, subgroupRowsFit } from "./subgroup_rows.ts";
import {
  type Binding,
  mergeBindings,
  SPARQ_DEFAULT,
  SPARQ_TOPK_WORKGROUP,
  type SparqConfig,
  sparqConstants as constants,
  type SparqKernelParams,
  sparqSpec as spec,
} from "./sparq_common.ts";
import {
  afterSelection,
  candidatesParts,
  heldCandidatesOf,
  keysBytes,
  ROW_LENGTH_WGSL,
  rowsOrWarm,
  selectionBytes,
  selectionCommon,
  selectionPrelude,
  topkParts,
} from "./sparq_select.ts";
import {
  scoresAttendBindings,
  scoresAttendKernel,
  scoresCandidatesBytes,
  scoresCandidatesFits,
  scoresKtType,
} from "./sparq_scores.ts";

/**
 * Gathered V rows each stage-3 invocation loads before using any, for `group` query heads per KV
 * head. With one, 16: at batch 1 the stage is a few workgroups' latency, and 16 rows in flight
 * took it from 37.6 to 32.4 µs per call on the H100 (llama2-7b, S = 32k) against 4 (8 cost the
 * four-stage kernel 0.8 µs at S = 16k). With several, each row feeds one accumulator per head,
 * and 8 rows measured faster (llama3-8b: B=1 S=128k 121.8 → 118.6 µs, B=16 S=16k 162.9 → 161.3,
 * the decode step at S=16k 8.213 → 8.108 ms), most likely by the registers they free.
 *
 * @example
 * ```ts
 * import { attendValueRows } from "./sparq_attend.ts";
 * attendValueRows(4); // 8
 * ```
 */
export function attendValueRows(group: number): number {
  return group > 1 ? 8 : 16;
}

/**
 * Workgroup shape and tile of stage 3; `extraBytes` of workgroup memory are taken by what runs
 * before it in the same kernel.
 *
 * @example
 * ```ts
 * import { attendLayout } from "./sparq_attend.ts";
 * attendLayout({ batch: 1, heads: 32, kvHeads: 8, headDim: 128, maxSeq: 4096,
 *   kvDtype: "f16", workgroupStorage: 49152 }).workgroup; // 256: 32 lanes × 8 slices
 * ```
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
 * Stage 3's logits of a tile where a K row is whole subgroup-wide loads (see
 * `subgroupRowsFit`): each subgroup takes a row at a time, every lane loads its quads of it —
 * one coalesced read of the row, where one invocation per row read it lane by lane — and the
 * dot products are summed over the subgroup (`subgroupDotSums`, as the dense kernel's).
 * Invocations are taken to form subgroups in order of `local_invocation_index`.
 */
function subgroupLogits(
  group: number,
  lanes: number,
  subgroupSize: number,
  handOff = false,
): string {
  const per = lanes / subgroupSize;
  const rowCount = subgroupRowCount(group, subgroupSize);
  const rows = [...Array(rowCount).keys()];
  const heads = [...Array(group).keys()];
  const parts = [...Array(per).keys()];
  const { lines: reduced, sum } = subgroupDotSums(
    rowCount,
    group,
    subgroupSize,
    "sg_lane",
    (h, u) =>
      parts.map((p) => `dot(q_sh[${h * lanes + p * subgroupSize}u + sg_lane], key${u}_${p})`)
        .join(" + "),
  );
  const lines = [
    ...rows.flatMap((u) => [
      `let r${u} = u0 + ${u}u * TEAMS + team;`,
      `let at${u} = (base + idx_sh[min(r${u}, count - 1u)]) * LANES + sg_lane;`,
      ...parts.map((p) => `let key${u}_${p} = vec4<f32>(k_cache[at${u} + ${p * subgroupSize}u]);`),
    ]),
    ...reduced,
    ...rows.flatMap((u) => heads.map((h) => `let s${h}_${u} = ${sum(h, u)};`)),
    "if (sg_lane == 0u) {",
    ...rows.flatMap((u) =>
      heads.map((h) => `  if (r${u} < count) { p_sh[${h}u * TILE + r${u}] = s${h}_${u} * SCALE; }`)
    ),
    "}",
  ];
  return `${
    handOff
      ? ""
      : "    for (var t = tid; t < count; t += WG) { idx_sh[t] = indices[row * KEPT + t0 + t]; }\n"
  }    workgroupBarrier();
    // The loop bound is uniform, so the subgroup sums run in uniform control flow; subgroups past
    // the tile's end reread its last row and drop the result.
    let sg_lane = tid % ${subgroupSize}u;
    let team = tid / ${subgroupSize}u;
    for (var u0 = 0u; u0 < count; u0 += TEAMS * ${rowCount}u) {
${indentLines(lines, "      ")}
    }`;
}

/**
 * Stage 3's logits of a tile by one invocation per K row (any subgroup size); with `handOff`,
 * the tile's indices are already in `idx_sh`.
 */
function invocationLogits(group: number, lanes: number, handOff: boolean): string {
  return `    for (var t = tid; t < count; t += WG) {
${
    handOff
      ? "      let pos = idx_sh[t];"
      : "      let pos = indices[row * KEPT + t0 + t];\n      idx_sh[t] = pos;"
  }
${
    rowDots({
      group,
      lanes,
      row: "k_cache[(base + pos) * LANES + {lane}]",
      store: (h, v) => `p_sh[${h}u * TILE + t] = ${v} * SCALE;`,
    })
  }
    }`;
}

/**
 * Stage 3's WGSL without an entry point: its workgroup memory and `fn attend_row(local_row, len,
 * tid)` (the kernel declares LANES, SLICES, TILE, SCALE and WG). With `handOff`, stage 2b ran in
 * the same workgroup and left the indices in `idx_sh` and alpha in `alpha_sh`, and `v_mean` is
 * read at the start: at one row per KV head that hides a latency, while in the kernel of stage 3
 * alone, over many rows, the register it holds cost more (H100, llama2-7b B=16 S=128k: 2935 →
 * 3014 µs). With `qFromStage1`, q is the (rotated) one stage 1 left in `q_group`.
 */
function attendParts(
  s: AttentionKernelShape,
  layout: ReturnType<typeof attendLayout>,
  handOff = false,
  qFromStage1 = false,
): string {
  const group = s.heads / s.kvHeads;
  const bySubgroups = subgroupRowsFit(s.headDim, s.subgroupSize ?? null);
  return `const LANES = ${layout.lanes}u;${
    bySubgroups ? `\nconst TEAMS = ${layout.workgroup / s.subgroupSize!}u;` : ""
  }
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

fn attend_row(local_row: u32, len: u32, tid: u32) {
  let row = params.first_row + local_row;
  let n = min(K_SEL, len);
  let head0 = row * GROUP;
  for (var i = tid; i < GROUP * LANES; i += WG) { q_sh[i] = ${
    qFromStage1 ? "q_group[i]" : "q[head0 * LANES + i]"
  }; }
  if (tid < GROUP) {
    run_max[tid] = NEG;
    run_sum[tid] = 0.0;
  }
  let lane = tid % LANES;
  let slice = tid / LANES;
  let base = local_row * MAX_SEQ;
${
    handOff
      ? `  // Loaded now, not after the last reduction, where it would be one more memory latency.
  let mean = v_mean[local_row * LANES + lane];`
      : ""
  }
${unroll(group, (h) => `var acc${h} = vec4<f32>(0.0);`, "  ")}

  for (var t0 = 0u; t0 < n; t0 += TILE) {
    let count = min(TILE, n - t0);
    workgroupBarrier();
${
    bySubgroups
      ? subgroupLogits(group, layout.lanes, s.subgroupSize!, handOff)
      : invocationLogits(group, layout.lanes, handOff)
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
${
    valueRows(
      group,
      "TILE",
      "(base + idx_sh[ROW]) * LANES + lane",
      "count",
      attendValueRows(group),
    )
  }
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
      let a = ${handOff ? `alpha_sh[${h}u]` : `alpha[head0 + ${h}u]`};
      y[(head0 + ${h}u) * LANES + lane] = a * (o / run_sum[${h}u]) +
        (1.0 - a) * ${handOff ? "mean" : "v_mean[local_row * LANES + lane]"};
    }
  }`)
  }
}
`;
}

/**
 * A kernel's prefetch of `words` vec4s where it has one: its binding and its WGSL (the sink:
 * alpha, which stage 2b writes).
 */
function prefetchParts(words: number | undefined): { storage: Binding[]; wgsl: string } {
  return words
    ? { storage: [[...PREFETCH_BINDING]], wgsl: `\n${prefetchWgsl(words, "alpha[0] = 0.0;")}` }
    : { storage: [], wgsl: "" };
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
${ROW_LENGTH_WGSL}
@compute @workgroup_size(WG)
fn main(
  ${MAIN_ARGS},
) {
  ${FLAT_ID}
  if (flat >= params.rows) { return; }
  attend_row(flat, row_length(params.first_row + flat), tid);
}
`;
  return spec("sparq_attend", source, ATTEND_BINDINGS);
}

/**
 * Whether stages 2b and 3 fit one kernel on a target: stage 3's workgroup is stage 2b's 256
 * invocations, the bindings of both fit the target's storage-buffer limit, and stage 2b's
 * selection and stage 3's tile fit its workgroup memory together. (The lowering also needs one
 * dispatch to cover every row: the caches in one binding each.)
 *
 * @example
 * ```ts
 * import { topkAttendFits } from "./sparq.ts";
 * topkAttendFits({ batch: 1, heads: 32, kvHeads: 32, headDim: 128, maxSeq: 4096,
 *   kvDtype: "f16", workgroupStorage: 49152 }, { block: 1024, attendWorkgroup: 256 }, 16,
 *   true); // true
 * ```
 */
export function topkAttendFits(
  s: AttentionKernelShape,
  c: SparqConfig,
  maxStorageBuffers: number,
  warm: boolean,
  prefetch = false,
): boolean {
  return fusedFits(s, c, topkAttendParts(s, warm, prefetch ? 1 : 0), maxStorageBuffers);
}

/** What a kernel that runs stage 3 after other stages takes: bindings, workgroup memory before. */
interface FusedParts {
  storage: Binding[];
  before: number;
}

/**
 * Stage 3's layout after `before` bytes of other stages' workgroup memory, in a kernel of stage
 * 2b's 256 invocations; a RangeError naming `kernel` where no tile fits or the workgroup differs.
 */
function fusedLayout(kernel: string, s: AttentionKernelShape, c: SparqConfig, before: number) {
  const layout = attendLayout(s, c, before);
  if (layout.workgroup !== SPARQ_TOPK_WORKGROUP) {
    throw new RangeError(`${kernel}: stage 3's workgroup must be stage 2b's 256`);
  }
  return layout;
}

/**
 * Stage 2b's WGSL for a kernel whose workgroup goes on to stage 3, and whether it hands stage 3
 * the indices and alpha in workgroup memory: where all k indices fit one tile of stage 3. Stage 3
 * then reads nothing back from memory, and no storage barrier separates the two. On the H100 that,
 * with the candidates held in registers, took llama2-7b's decode step (B=1) at S = 16k from 6.97
 * to 6.89 ms and at S = 4k from 6.61 to 6.57; for llama3-8b's grouped heads it took 0.5 µs off
 * the attention at B=1 and 4 µs at B=64 S=4k (docs/performance.md, issue 7 version 27).
 */
function fusedTopk(
  s: AttentionKernelShape,
  p: SparqKernelParams,
  c: SparqConfig,
  warm: boolean,
  layout: ReturnType<typeof attendLayout>,
  warmFromCaches = false,
): { wgsl: string; handOff: boolean } {
  const handOff = Math.min(p.k, s.maxSeq) <= layout.tile;
  const held = heldCandidatesOf(s, p, c);
  return { wgsl: topkParts(s, warm, { held, handOff, warmFromCaches }).wgsl, handOff };
}

/** Whether a fused kernel's bindings and workgroup memory fit the target. */
function fusedFits(
  s: AttentionKernelShape,
  c: SparqConfig,
  parts: FusedParts,
  maxStorageBuffers: number,
): boolean {
  if (parts.storage.length > maxStorageBuffers) return false;
  try {
    fusedLayout("", s, c, parts.before);
    return true;
  } catch (error) {
    if (error instanceof RangeError) return false;
    throw error;
  }
}

/** Stages 2b and 3 in one kernel: stage 2b's parts, the bindings and stage 2b's memory. */
function topkAttendParts(s: AttentionKernelShape, warm: boolean, prefetchWords = 0) {
  const storage = mergeBindings(
    topkParts(s, warm).storage,
    ATTEND_BINDINGS,
    prefetchParts(prefetchWords).storage,
  );
  return { storage, before: selectionBytes(s.heads / s.kvHeads) };
}

/**
 * Stages 2b and 3 in one kernel, per (sequence, KV head): the top k and alpha as in
 * {@link sparqTopkKernel} (still written out: they are the plan's outputs for checking), then
 * the attention of {@link sparqAttendKernel} over them (handed over as {@link fusedTopk} says,
 * else read back after a storage barrier) — one dependent dispatch fewer per layer. Bindings:
 * stage 2b's, then q, k_cache, v_cache, v_mean, y, with `prefetch` `prefetch` (the next kernel's
 * weights, read into the L2 by `prefetch.slices` workgroups dispatched after the rows' and the
 * warm-up's), params. Only where {@link topkAttendFits}.
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
  prefetch?: ExtraPrefetch,
): KernelSpec {
  const { storage, before } = topkAttendParts(s, warm, prefetch?.words);
  const layout = fusedLayout("sparq_topk_attend", s, c, before);
  const topk = fusedTopk(s, p, c, warm, layout);
  const source = `// sparqc SparQ stages 2b and 3: the top k and alpha, then attention over them${
    warm ? "; workgroups past the rows warm the K and V caches' translations" : ""
  }
${selectionPrelude(s, p, c, storage, true)}
${topk.wgsl}
${attendParts(s, layout, topk.handOff)}${prefetchParts(prefetch?.words).wgsl}
@compute @workgroup_size(WG)
fn main(
  ${MAIN_ARGS},
) {
  ${rowsOrWarm(warm, prefetch)}
  let len = row_length(flat);
  select_top_k(flat, len, tid);
${afterSelection(topk.handOff)}
  attend_row(flat, len, tid);
}
`;
  return spec("sparq_topk_attend", source, storage);
}

/** Stages 2a–3 in one kernel: stage 2a's and 2b's parts, the bindings, and their memory. */
function selectAttendParts(s: AttentionKernelShape, c: SparqConfig, warm: boolean) {
  const candidates = candidatesParts(s, c);
  const storage = mergeBindings(
    candidates.storage,
    topkParts(s, warm).storage,
    ATTEND_BINDINGS,
    [["arrivals", "read_write", "atomic<u32>"]],
  );
  return {
    candidates,
    storage,
    before: keysBytes(s, c) + selectionBytes(s.heads / s.kvHeads),
  };
}

/**
 * Whether stages 2a, 2b and 3 fit one kernel on a target: as {@link topkAttendFits}, with stage
 * 2a's keys in workgroup memory too.
 *
 * @example
 * ```ts
 * import { selectAttendFits } from "./sparq.ts";
 * selectAttendFits({ batch: 1, heads: 32, kvHeads: 32, headDim: 128, maxSeq: 32768,
 *   kvDtype: "f16", workgroupStorage: 49152 }, { block: 1024, attendWorkgroup: 256 }, 16,
 *   true); // true
 * ```
 */
export function selectAttendFits(
  s: AttentionKernelShape,
  c: SparqConfig,
  maxStorageBuffers: number,
  warm: boolean,
): boolean {
  return fusedFits(s, c, selectAttendParts(s, c, warm), maxStorageBuffers);
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
  const { candidates, storage, before } = selectAttendParts(s, c, warm);
  const layout = fusedLayout("sparq_select_attend", s, c, before);
  const topk = fusedTopk(s, p, c, warm, layout);
  const source =
    `// sparqc SparQ stages 2a, 2b and 3: each block's candidates; the row's last block to finish
// selects the top k and attends${
      warm ? "; workgroups past the blocks warm the K and V caches' translations" : ""
    }
${selectionPrelude(s, p, c, storage, true)}
${candidates.wgsl}
${topk.wgsl}
${attendParts(s, layout, topk.handOff)}
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
  let len = row_length(row);
  local_candidates(row, flat % CBLOCKS, tid);
  // Release this block's candidates at device scope before counting it.
  storageBarrier();
  if (tid == 0u) { last_block = select(0u, 1u, atomicAdd(&arrivals[row], 1u) == CBLOCKS - 1u); }
  if (workgroupUniformLoad(&last_block) == 0u) { return; }
  // Acquire the other blocks' candidates.
  storageBarrier();
  select_top_k(row, len, tid);
${afterSelection(topk.handOff)}
  attend_row(row, len, tid);
}
`;
  return spec("sparq_select_attend", source, storage);
}

/** Stages 1–3 in one kernel: stage 2b's parts, the bindings, and stage 1's memory. */
function scoresAttendParts(
  s: AttentionKernelShape,
  p: SparqKernelParams,
  c: SparqConfig,
  warm: boolean,
  prefetchWords = 0,
  rope?: RopeFold,
) {
  const storage = mergeBindings(
    scoresAttendBindings(s, c),
    topkParts(s, warm, { warmFromCaches: rope !== undefined }).storage,
    ATTEND_BINDINGS,
    rope ? appendBindings(scoresKtType(s, c)) : [],
    [["arrivals", "read_write", "atomic<u32>"]],
    prefetchParts(prefetchWords).storage,
  );
  return { storage, before: scoresCandidatesBytes(s, p, c) };
}

/**
 * Whether all four SparQ stages fit one kernel on a target ({@link sparqScoresAttendKernel}):
 * stage 2a inside stage 1, and stage 3's tile in the workgroup memory that stages 1–2b leave.
 *
 * @example
 * ```ts
 * import { scoresAttendFits } from "./sparq.ts";
 * scoresAttendFits({ batch: 1, heads: 32, kvHeads: 32, headDim: 128, maxSeq: 16384,
 *   kvDtype: "f16", workgroupStorage: 49152 }, { r: 32, k: 128, localWindow: 0 },
 *   { block: 2048, attendWorkgroup: 256, candidateBlock: 2048 }, 16, true); // true
 * ```
 */
export function scoresAttendFits(
  s: AttentionKernelShape,
  p: SparqKernelParams,
  c: SparqConfig,
  maxStorageBuffers: number,
  warm: boolean,
  prefetch = false,
  rope?: RopeFold,
): boolean {
  return scoresCandidatesFits(s, p, c) &&
    fusedFits(s, c, scoresAttendParts(s, p, c, warm, prefetch ? 1 : 0, rope), maxStorageBuffers);
}

/**
 * All four SparQ stages in one kernel, for one query head per KV head: each workgroup scores
 * one block and keeps its candidates as `sparq_scores_candidates` does, then counts itself in its
 * row's `arrivals`; the row's last block to arrive resets the counter, selects the top k and
 * attends as {@link sparqTopkAttendKernel}. One dispatch per layer; `arrivals` must be a buffer of
 * its own, zero before the first call. Dispatch rows · blocks workgroups (then the warm-up's).
 * Bindings: stage 1's (scores as f32), stage 2b's, stage 3's, arrivals, then with
 * `prefetchWords` `prefetch` (the next kernel's weights, whose first `prefetchWords` vec4s the
 * blocks that are not their row's last read into the L2 before they return), params. Only where
 * {@link scoresAttendFits}.
 *
 * @example
 * ```ts
 * import { sparqScoresAttendKernel } from "./sparq.ts";
 * sparqScoresAttendKernel({ batch: 1, heads: 32, kvHeads: 32, headDim: 128, maxSeq: 16384,
 *   kvDtype: "f16", workgroupStorage: 49152 }, { r: 32, k: 128, localWindow: 0 },
 *   { block: 2048, attendWorkgroup: 256, candidateBlock: 2048 }).name; // "sparq_scores_attend"
 * ```
 */
export function sparqScoresAttendKernel(
  s: AttentionKernelShape,
  p: SparqKernelParams,
  c: SparqConfig,
  warm = false,
  prefetchWords = 0,
  rope?: RopeFold,
): KernelSpec {
  const { storage, before } = scoresAttendParts(s, p, c, warm, prefetchWords, rope);
  const layout = fusedLayout("sparq_scores_attend", s, c, before);
  const topk = fusedTopk(s, p, c, warm, layout, rope !== undefined);
  const ropeWgsl = rope ? `\n${appendInKernelWgsl(s.headDim, rope, scoresKtType(s, c))}` : "";
  return scoresAttendKernel(s, p, c, {
    storage,
    warm,
    prefetch: prefetchWords > 0,
    handOff: topk.handOff,
    rope: rope !== undefined,
    declarations: `${selectionCommon(1)}\n${topk.wgsl}\n${
      attendParts(s, layout, topk.handOff, rope !== undefined)
    }${prefetchParts(prefetchWords).wgsl}${ropeWgsl}`,
  });
}
