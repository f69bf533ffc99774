/**
 * SparQ stage 1 (`sparq_scores`): per (block of positions, sequence, KV head), i1 and each
 * head's q[i1] / tau, then the approximate logits from the contiguous Kᵀ rows, and each block's
 * softmax statistics.
 *
 * @module
 */
import { appendBindings, appendInKernelWgsl, type RopeFold } from "./kv_append.ts";
import { ktIndexWgsl } from "./kt_layout.ts";
import { prefetchOnArrival } from "./l2_prefetch.ts";
import { type KernelSpec } from "./kernel_spec.ts";
import {
  type AttentionKernelShape,
  bindingDeclarations,
  fitTile,
  FLAT_ID,
  kvPrelude,
  LAST_ARRIVAL_DECL,
  lastArrivalGoesOn,
  MAIN_ARGS,
  reductions,
} from "./wgsl_common.ts";
import { indentLines, unroll } from "./unrolled.ts";
import {
  afterSelection,
  keepCandidates,
  KEYS_WGSL,
  keysBytes,
  rankingPrelude,
  selectionBytes,
} from "./sparq_select.ts";
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
  s: AttentionKernelShape,
  storage: Binding[],
  workgroup: number,
  extra: ScoresExtra,
  declarations = "",
  warm = false,
  rope = false,
  qOut = false,
): string {
  const quads = s.headDim / 4;
  // Quads of |q| each ranking round loads at once: 4 where they divide the head (d = 128: 32).
  const RANK_QUADS = [4, 2, 1].find((n) => quads % n === 0)!;
  return `${bindingDeclarations(storage)}

const QUADS = HEAD_DIM / 4u;
const TAU_PARTS = ${TAU_PARTS}u;
const TAU_QUADS = (QUADS + TAU_PARTS - 1u) / TAU_PARTS;
var<workgroup> q_group: array<vec4<f32>, GROUP * QUADS>;
var<workgroup> abs_q: array<vec4<f32>, QUADS>;
var<workgroup> i1: array<u32, R>;
var<workgroup> picked_mask: array<f32, HEAD_DIM>;
var<workgroup> abs_sums: array<vec2<f32>, GROUP * TAU_PARTS>;
var<workgroup> q_sel: array<f32, GROUP * R>;
${reductions(workgroup, s.subgroupSize ?? null)}
${declarations}
// Which of quad c's four components outrank component j (value aj): larger, or equal and lower.
fn outranks(a: vec4<f32>, c: u32, aj: vec4<f32>, j: u32) -> vec4<u32> {
  let i = vec4<u32>(c * 4u) + vec4<u32>(0u, 1u, 2u, 3u);
  return select(vec4<u32>(0u), vec4<u32>(1u), a > aj | (a == aj & i < vec4<u32>(j)));
}
@compute @workgroup_size(WG)
fn main(
  ${MAIN_ARGS},
) {
  ${FLAT_ID}
  let block = flat % BLOCKS;
  let local_row = flat / BLOCKS;
  if (local_row >= params.rows) {${
    warm ? " warm_translations(flat - params.rows * BLOCKS, tid);" : ""
  } return; }
  let row = params.first_row + local_row;
${
    extra === "arrivals"
      ? "  // The next dispatch counts its blocks' arrivals per row here (see sparqSelectAttendKernel).\n" +
        "  if (block == 0u && tid == 0u) { arrivals[row] = 0u; }\n"
      : ""
  }  let head0 = row * GROUP;
${
    rope
      ? "  // q arrives unrotated: each workgroup rotates it at the new token's position.\n" +
        "  let now = positions[row / KV_HEADS];\n"
      : ""
  }  // Loops over vec4s of workgroup memory, not unrolled scalar lines: fully unrolled, the
  // compiler hoisted every load into registers and the scores loop lost occupancy. Before the
  // length is read, so that the query's loads need not wait for positions.
  for (var c = tid; c < QUADS; c += WG) {
    var a = vec4<f32>(0.0);
    for (var h = 0u; h < GROUP; h++) {
      let x = ${rope ? "rotated_q4((head0 + h) * QUADS, c, now)" : "q[(head0 + h) * QUADS + c]"};
      q_group[h * QUADS + c] = x;${
    qOut
      ? "\n      // For stage 3, in a dispatch of its own.\n" +
        "      if (block == 0u) { q_out[(head0 + h) * QUADS + c] = x; }"
      : ""
  }
      a += abs(x);
    }
    abs_q[c] = a;
  }
  let len = min(${rope ? "now" : "positions[row / KV_HEADS]"} + 1u, MAX_SEQ);
  let start = block * BLOCK;
  if (start >= len) { return; }${
    rope
      ? `
  // The block that holds the new position appends the new key and value, its stores going out
  // while the query is selected; its own reads of Kᵀ wait for them at the end of the selection,
  // the row's last block's reads of K, V and V_mean for the arrivals' release and acquire.
  let holds_new = now < min(start + BLOCK, MAX_SEQ);
  if (holds_new) { append_new(local_row, row, now, tid); }`
      : ""
  }
  workgroupBarrier();
  for (var j = tid; j < HEAD_DIM; j += WG) {
    let aj = vec4<f32>(abs_q[j / 4u][j % 4u]);
    var ranks = vec4<u32>(0u);
    // ${RANK_QUADS} quads a round: their loads issued together (one a round took ~2 µs per workgroup
    // of waiting on workgroup memory at B=1).
    for (var c = 0u; c < QUADS; c += ${RANK_QUADS}u) {
${unroll(RANK_QUADS, (u) => `let a${u} = abs_q[c + ${u}u];`, "      ")}
${unroll(RANK_QUADS, (u) => `ranks += outranks(a${u}, c + ${u}u, aj, j);`, "      ")}
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
  workgroupBarrier();${rope ? "\n  if (holds_new) { storageBarrier(); }" : ""}`;
}

/**
 * What a stage-1 kernel writes besides the scores and block statistics: nothing, the arrival
 * counters it zeroes for the chained kernel, or each block's candidates (stage 2a fused in; with
 * a {@link ScoresTail}, the row's last block then goes on to stages 2b and 3).
 */
type ScoresExtra = null | "arrivals" | "candidates";

/**
 * What a kernel that runs stages 2b and 3 after stage 1 and 2a, in the last block of each row to
 * finish (sparq_attend.ts), adds to stage 1: its bindings (all the kernel's, stage 1's among them
 * with `scores` as f32, and `arrivals`), its WGSL declarations (the selection's and stage 3's,
 * `fn select_top_k` and `fn attend_row`; stage 1 brings the reductions and the keys), whether
 * workgroups past the blocks warm the caches' translations (`fn warm_translations`), and whether
 * the blocks that are not their row's last prefetch the next kernel's weights (`fn prefetch_slice`,
 * l2_prefetch.ts) before they return.
 */
export interface ScoresTail {
  storage: Binding[];
  declarations: string;
  warm: boolean;
  prefetch: boolean;
  /** Stage 2b hands stage 3 its indices and alpha in workgroup memory (no storage barrier). */
  handOff?: boolean;
  /**
   * q arrives unrotated and the new token is not yet in the cache: stage 1 rotates q (`fn
   * rotated_q4`) and the block that holds the new position appends it (`fn append_new`), both
   * declared in `declarations`.
   */
  rope?: boolean;
}

/** How a vec4 stage-1 kernel reads Kᵀ: 8 f16 positions as one vec4<u32>, else 4 as one KV4. */
function vecKtType(width: number | null): "vec4<u32>" | "KV4" {
  return width === 8 ? "vec4<u32>" : "KV4";
}

/**
 * The type by which the vec4 stage-1 kernel of a shape and launch binds Kᵀ (see
 * {@link scoresWidth}).
 *
 * @example
 * ```ts
 * import { scoresKtType } from "./sparq_scores.ts";
 * scoresKtType({ batch: 1, heads: 32, kvHeads: 32, headDim: 128, maxSeq: 16384,
 *   kvDtype: "f16", workgroupStorage: 49152 }, { block: 2048, attendWorkgroup: 256 }); // "vec4<u32>"
 * ```
 */
export function scoresKtType(s: AttentionKernelShape, c: SparqConfig): "vec4<u32>" | "KV4" {
  return vecKtType(scoresWidth(s, c));
}

/** The bindings of the stage-1 kernels (Kᵀ and the scores typed per kernel). */
function scoresBindings(ktType: string, scoresType: string, extra: ScoresExtra): Binding[] {
  const extras: Binding[] = extra === "arrivals"
    ? [["arrivals", "read_write", "u32"]]
    : extra === "candidates"
    ? [["candidates", "read_write", "vec2<u32>"]]
    : [];
  return [
    ["q", "read", "vec4<f32>"],
    ["positions", "read", "u32"],
    ["kt_cache", "read", ktType],
    ["scores", "read_write", scoresType],
    ["block_stats", "read_write", "f32"],
    ...extras,
  ];
}

/**
 * Stage 1's workgroup: up to 256 invocations, each scoring `block / workgroup` positions.
 *
 * @example
 * ```ts
 * import { scoresLayout } from "./sparq_scores.ts";
 * scoresLayout({ block: 1024, attendWorkgroup: 256 }); // { workgroup: 256, perThread: 4 }
 * ```
 */
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
  const extra = arrivals ? "arrivals" : null;
  const storage = scoresBindings("KV", "f32", extra);
  const source = `// sparqc SparQ stage 1: approximate scores from the Kᵀ runs of i1
${kvPrelude(s.kvDtype)}
${constants(s, p, c)}
${ktIndexWgsl(s.headDim, s.maxSeq)}
const WG = ${workgroup}u;
const PER = ${perThread}u;
${scoresPreamble(s, storage, workgroup, extra)}

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
  return spec("sparq_scores", source, storage);
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

/** {@link keepCandidates} as `fn keep_block_candidates`, whose returns leave only the function. */
function keepCandidatesFunction(): string {
  return `fn keep_block_candidates(block_range: vec2<f32>, n: u32, out: u32, start: u32, tid: u32) {
  var range = block_range;
${keepCandidates()}
}`;
}

/** Kᵀ rows whose loads stage 1 issues before it uses any of them. */
const ROWS_IN_FLIGHT = 8;
/** Kᵀ rows a trip of stage 1's rolled loop loads (see {@link scoresRolled}). */
const ROLLED_ROWS = 4;
/** Stage-1 workgroups up to which stage 1 loads its Kᵀ rows in a rolled loop. */
const ROLLED_MAX_WORKGROUPS = 512;

/**
 * Whether stage 1 loads its Kᵀ rows in a rolled loop of {@link ROLLED_ROWS} rows a trip, rather
 * than as straight-line WGSL: with several query heads per KV head (an accumulator per head
 * besides the loads) where it runs at most {@link ROLLED_MAX_WORKGROUPS} workgroups (about one
 * wave on the H100). Unrolled, the compiler hoists loads across the rounds and holds more
 * registers. On the H100, llama3-8b: B=1 S=4k–32k 67.3 / 70.1 / 75.1 → 62.3 / 65.3 / 70.6 µs,
 * B=16 S=4k 82.9 → 78.8 µs, its SparQ decode step 0.18–0.20 ms faster; S=128k unchanged. One
 * head per KV head gains in the attention bench (llama2-7b B=1 S=16k 48.0 → 44.8 µs) but loses
 * in the decode step (S=16k 6.90 → 7.03 ms); many workgroups lose too (llama2-7b B=64 S=4k
 * 336.7 → 371.8 µs).
 *
 * @example
 * ```ts
 * import { scoresRolled } from "./sparq_scores.ts";
 * const shape = { batch: 1, heads: 32, kvHeads: 8, headDim: 128, maxSeq: 16384,
 *   kvDtype: "f16" as const, workgroupStorage: 49152 };
 * scoresRolled(shape, { r: 32, k: 128, localWindow: 0 }, { block: 2048, attendWorkgroup: 256 });
 * // true: 8 rows of 8 blocks, 4 query heads per KV head
 * ```
 */
export function scoresRolled(
  s: AttentionKernelShape,
  p: SparqKernelParams,
  c: SparqConfig,
): boolean {
  const workgroups = s.batch * s.kvHeads * Math.ceil(s.maxSeq / c.block);
  return s.heads > s.kvHeads && p.r % ROLLED_ROWS === 0 && workgroups <= ROLLED_MAX_WORKGROUPS;
}

/**
 * Stage 1 where S is a multiple of 4: each invocation scores 4 or 8 consecutive positions (see
 * {@link scoresWidth}) with one load per Kᵀ row. The generator unrolls the loop over the r rows
 * into straight-line WGSL with one `let` per load and one `var` per accumulator: the loads of
 * {@link ROWS_IN_FLIGHT} rows are issued before any is used, and no private array exists that
 * the driver could place in local memory (the looped form measured 2–3× slower on the H100,
 * docs/performance.md). Where {@link scoresRolled}, a rolled loop of a few rows a trip, its loads
 * still in `let`s. Same bindings as {@link sparqScoresKernel}; with `rope`, q arrives unrotated
 * and the kernel also appends the new token, with the bindings of kv_append.ts' `appendBindings`
 * and `q_out`, where its first block of each row writes the rotated q.
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
  rope?: RopeFold,
): KernelSpec {
  return scoresVec4(s, p, c, arrivals ? "arrivals" : null, undefined, rope);
}

/**
 * Stage 1 with stage 2a fused in, for one query head per KV head (where the logit itself is the
 * ranking key): {@link sparqScoresVec4Kernel}, and each block's logits also go to workgroup
 * memory as keys, from which the block keeps its k largest as candidates, as
 * `sparq_candidates` would from the scores it reads back. The block is the candidate block, and
 * the workgroup the selection's 256 invocations: `c.block` = `c.candidateBlock`, a whole number
 * of 256 · the positions per load (each invocation scores that many slots). Bindings q,
 * positions, kt_cache, scores, block_stats, candidates, params. Only where
 * {@link scoresCandidatesFits}.
 *
 * @example
 * ```ts
 * import { sparqScoresCandidatesKernel } from "./sparq.ts";
 * sparqScoresCandidatesKernel({ batch: 1, heads: 32, kvHeads: 32, headDim: 128, maxSeq: 4096,
 *   kvDtype: "f16", workgroupStorage: 49152 }, { r: 32, k: 128, localWindow: 0 },
 *   { block: 2048, attendWorkgroup: 256, candidateBlock: 2048 }).name; // "sparq_scores_candidates"
 * ```
 */
export function sparqScoresCandidatesKernel(
  s: AttentionKernelShape,
  p: SparqKernelParams,
  c: SparqConfig,
  rope?: RopeFold,
): KernelSpec {
  requireCandidatesFit("sparq_scores_candidates", s, p, c);
  return scoresVec4(s, p, c, "candidates", undefined, rope);
}

/** A RangeError naming `kernel` unless {@link scoresCandidatesFits}. */
function requireCandidatesFit(
  kernel: string,
  s: AttentionKernelShape,
  p: SparqKernelParams,
  c: SparqConfig,
): void {
  if (!scoresCandidatesFits(s, p, c)) {
    throw new RangeError(
      `${kernel}: needs one query head per KV head, a block of whole 256-invocation slots ` +
        "that is the candidate block, and room for its keys",
    );
  }
}

/**
 * Whether stage 2a fits into stage 1 ({@link sparqScoresCandidatesKernel}) for a shape and launch.
 *
 * @example
 * ```ts
 * import { scoresCandidatesFits } from "./sparq.ts";
 * scoresCandidatesFits({ batch: 1, heads: 32, kvHeads: 8, headDim: 128, maxSeq: 4096,
 *   kvDtype: "f16", workgroupStorage: 49152 }, { r: 32, k: 128, localWindow: 0 },
 *   { block: 2048, attendWorkgroup: 256, candidateBlock: 2048 }); // false: 4 heads per KV head
 * ```
 */
export function scoresCandidatesFits(
  s: AttentionKernelShape,
  p: SparqKernelParams,
  c: SparqConfig,
): boolean {
  const width = scoresWidth(s, c);
  return s.heads === s.kvHeads && width !== null &&
    c.block % (SPARQ_TOPK_WORKGROUP * width) === 0 &&
    c.candidateBlock === c.block &&
    scoresBytes(s, p, c, "candidates") <= s.workgroupStorage;
}

/**
 * Stage 1 with stage 2a in it ({@link sparqScoresCandidatesKernel}), then, in the last block of
 * each row to finish, stages 2b and 3 as `tail` declares them (sparq_attend.ts assembles it:
 * `sparqScoresAttendKernel`). Blocks count themselves in `arrivals`, whose buffer must be the
 * kernel's alone and zero at the first call: the last block resets its row's counter.
 *
 * @example
 * ```ts
 * import { sparqScoresAttendKernel } from "./sparq.ts";
 * sparqScoresAttendKernel({ batch: 1, heads: 32, kvHeads: 32, headDim: 128, maxSeq: 16384,
 *   kvDtype: "f16", workgroupStorage: 49152 }, { r: 32, k: 128, localWindow: 0 },
 *   { block: 2048, attendWorkgroup: 256, candidateBlock: 2048 }).name; // "sparq_scores_attend"
 * ```
 */
export function scoresAttendKernel(
  s: AttentionKernelShape,
  p: SparqKernelParams,
  c: SparqConfig,
  tail: ScoresTail,
): KernelSpec {
  requireCandidatesFit("sparq_scores_attend", s, p, c);
  return scoresVec4(s, p, c, "candidates", tail);
}

/**
 * Stage 1's bindings where stages 2b and 3 follow it in the same kernel: as
 * {@link sparqScoresCandidatesKernel}'s, with the scores as the f32 array the selection reads.
 *
 * @example
 * ```ts
 * import { scoresAttendBindings } from "./sparq_scores.ts";
 * scoresAttendBindings({ batch: 1, heads: 32, kvHeads: 32, headDim: 128, maxSeq: 16384,
 *   kvDtype: "f16", workgroupStorage: 49152 }, { block: 2048, attendWorkgroup: 256 })[3];
 * // ["scores", "read_write", "f32"]
 * ```
 */
export function scoresAttendBindings(s: AttentionKernelShape, c: SparqConfig): Binding[] {
  return scoresBindings(scoresKtType(s, c), "f32", "candidates");
}

/**
 * Workgroup memory of stage 1 with stage 2a in it (bytes): what comes before stage 3's in a kernel
 * that goes on to it.
 *
 * @example
 * ```ts
 * import { scoresCandidatesBytes } from "./sparq_scores.ts";
 * scoresCandidatesBytes({ batch: 1, heads: 32, kvHeads: 32, headDim: 128, maxSeq: 16384,
 *   kvDtype: "f16", workgroupStorage: 49152 }, { r: 32, k: 128, localWindow: 0 },
 *   { block: 2048, attendWorkgroup: 256, candidateBlock: 2048 }) > 8192; // true: 2048 keys
 * ```
 */
export function scoresCandidatesBytes(
  s: AttentionKernelShape,
  p: SparqKernelParams,
  c: SparqConfig,
): number {
  return scoresBytes(s, p, c, "candidates");
}

/** Workgroup memory of a vec4 stage-1 kernel (bytes). */
function scoresBytes(
  s: AttentionKernelShape,
  p: SparqKernelParams,
  c: SparqConfig,
  extra: ScoresExtra,
): number {
  const workgroup = Math.min(256, c.block / (scoresWidth(s, c) ?? 4));
  const selection = extra === "candidates" ? keysBytes(s, c) + selectionBytes(1) : 0;
  return querySelectionBytes(s, p.r) + workgroup * 12 + selection;
}

/**
 * The vec4 stage-1 kernel, writing `extra` besides the scores and block statistics; `tail` (with
 * the candidates) completes it with stages 2b and 3.
 */
function scoresVec4(
  s: AttentionKernelShape,
  p: SparqKernelParams,
  c: SparqConfig,
  extra: ScoresExtra,
  tail?: ScoresTail,
  rope?: RopeFold,
): KernelSpec {
  const group = s.heads / s.kvHeads;
  const width = scoresWidth(s, c);
  if (width === null) throw new RangeError("sparq_scores: S and the block must be multiples of 4");
  const workgroup = Math.min(256, c.block / width);
  fitTile("sparq_scores", s.workgroupStorage, () => scoresBytes(s, p, c, extra), [c.block]);
  const candidates = extra === "candidates";
  const ktType = vecKtType(width);
  // With rope folded in and no tail, the rotated q goes out for stage 3 (`q_out`).
  const storage = tail?.storage ?? mergeBindings(
    scoresBindings(ktType, "vec4<f32>", extra),
    rope ? [...appendBindings(ktType), ["q_out", "read_write", "vec4<f32>"]] : [],
  );
  const vecs = width / 4;
  const heads = [...Array(group).keys()];
  const parts = [...Array(vecs).keys()];
  const acc = (h: number, v: number) => `z${h}_${v}`;
  const rowsOf = (first: number, n: number) => [...Array(n).keys()].map((j) => first + j);
  /** A round of Kᵀ rows: every row's load, then its products; `row(j)`, `qAt(h, j)` in WGSL. */
  const scoreRound = (
    rows: number[],
    row: (j: number) => string,
    qAt: (h: number, j: number) => string,
  ) => [
    ...rows.map((j) => `let k${j} = kt_cache[(kt_tile + i1[${row(j)}]) * TILE_LOADS + column];`),
    ...rows.flatMap((j) => {
      const names = width === 8 ? [`lo${j}`, `hi${j}`] : [`vec4<f32>(k${j})`];
      const unpacked = width === 8
        ? [
          `let lo${j} = vec4<f32>(unpack2x16float(k${j}.x), unpack2x16float(k${j}.y));`,
          `let hi${j} = vec4<f32>(unpack2x16float(k${j}.z), unpack2x16float(k${j}.w));`,
        ]
        : [];
      return [
        ...unpacked,
        ...heads.flatMap((h) =>
          parts.map((v) => `${acc(h, v)} += q_sel[${qAt(h, j)}] * ${names[v]};`)
        ),
      ];
    }),
  ];
  const lines = scoresRolled(s, p, c)
    ? [
      // R in a form the compiler cannot fold (rows ≥ 1 past the early return), so that it keeps
      // the loop rolled rather than unroll it and hoist every row's load.
      "let r_end = select(R, 0u, params.rows == 0u);",
      `for (var i0 = 0u; i0 < r_end; i0 += ${ROLLED_ROWS}u) {`,
      ...indentLines(
        scoreRound(
          rowsOf(0, ROLLED_ROWS),
          (j) => `i0 + ${j}u`,
          (h, j) => `${h * p.r}u + i0 + ${j}u`,
        ),
        "  ",
      ).split("\n"),
      "}",
    ]
    : rowsOf(0, Math.ceil(p.r / ROWS_IN_FLIGHT)).flatMap((round) => {
      const first = round * ROWS_IN_FLIGHT;
      const rows = rowsOf(first, Math.min(ROWS_IN_FLIGHT, p.r - first));
      return scoreRound(rows, (i) => `${i}u`, (h, i) => `${h * p.r + i}u`);
    });
  const components = ["x", "y", "z", "w"];
  // Stage 2a fused in (one head): each logit, or the window's key, to workgroup memory.
  const keys = !candidates ? [] : parts.flatMap((v) =>
    components.map((x, e) => {
      const at = `pos0 + ${v * 4 + e}u`;
      const key = `key_${v}${x}`;
      return `if (${at} < len) { let ${key} = select(ordered_key(${acc(0, v)}.${x}), WINDOW_KEY, ` +
        `${at} + LOCAL_WINDOW >= len); keys[padded(${at} - start)] = ${key}; ` +
        `range = widen_range(range, ${key}); }`;
    })
  );
  // With stage 2a in, stage 2b takes each candidate's logit from its key: only the local
  // window's keys (any of whose four positions is in it) need the scores.
  // With stages 2b and 3 in the kernel, scores is bound as their f32 array: four stores.
  const store = (h: number, v: number) =>
    tail
      ? components.map((x, e) =>
        `scores[(head0 + ${h}u) * MAX_SEQ + pos0 + ${v * 4 + e}u] = ${acc(h, v)}.${x};`
      ).join(" ")
      : `scores[((head0 + ${h}u) * MAX_SEQ + pos0) / 4u + ${v}u] = ${acc(h, v)};`;
  const statistics = heads.flatMap((h) => [
    ...parts.map((v) =>
      candidates
        ? `if (pos0 + ${v * 4 + 3}u + LOCAL_WINDOW >= len) { ${store(h, v)} }`
        : store(h, v)
    ),
    ...parts.flatMap((v) =>
      components.map((x, e) =>
        `if (pos0 + ${v * 4 + e}u < len) { let m${h}_${v}${x} = online_update(stat_max[${h}u], ` +
        `stat_sum[${h}u], ${acc(h, v)}.${x}); stat_max[${h}u] = m${h}_${v}${x}.x; ` +
        `stat_sum[${h}u] = m${h}_${v}${x}.y; }`
      )
    ),
  ]);
  const source =
    `// sparqc SparQ stage 1 (${width} positions per invocation, unrolled over r): approximate scores${
      candidates ? ", and stage 2a: each block's candidates" : ""
    }${tail ? "; the row's last block to finish selects the top k and attends" : ""}
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
        s,
        storage,
        workgroup,
        extra,
        tail
          ? `${KEYS_WGSL}\n${keepCandidatesFunction()}\n${tail.declarations}\n${LAST_ARRIVAL_DECL}`
          : `${candidates ? `${rankingPrelude()}\n${KEYS_WGSL}` : ""}${
            rope ? `\n${appendInKernelWgsl(s.headDim, rope, ktType)}` : ""
          }`,
        tail?.warm,
        tail?.rope ?? rope !== undefined,
        rope !== undefined,
      )
    }

  var stat_max = array<f32, GROUP>();${candidates ? "\n  var range = NO_RANGE;" : ""}
  var stat_sum = array<f32, GROUP>();
  for (var h = 0u; h < GROUP; h++) { stat_max[h] = NEG; }
  for (var slot = 0u; slot < PER; slot++) {
    let pos0 = start + (slot * WG + tid) * WIDTH;
    if (pos0 >= len) { break; }
    // The tile of pos0 (a whole WIDTH of positions never straddles two) and the load within it.
    let kt_tile = (local_row * KT_TILES + pos0 / KT_TILE) * HEAD_DIM;
    let column = (pos0 % KT_TILE) / WIDTH;
${indentLines(heads.flatMap((h) => parts.map((v) => `var ${acc(h, v)} = vec4<f32>(0.0);`)), "    ")}
${indentLines(lines, "    ")}
${indentLines([...statistics, ...keys], "    ")}
  }
  for (var h = 0u; h < GROUP; h++) {
    let stats = reduce_softmax(stat_max[h], stat_sum[h], tid);
    if (tid == 0u) {
      block_stats[((head0 + h) * BLOCKS + block) * 2u] = stats.x;
      block_stats[((head0 + h) * BLOCKS + block) * 2u + 1u] = stats.y;
    }
  }${
      tail
        ? `
  // Stage 2a on the block's keys (k ≥ length: stage 2b takes every position; nothing to rank).
  if (K_SEL < len) {
    keep_block_candidates(range, min(CBLOCK, len - start), (row * CBLOCKS + block) * CK, start, tid);
  }
  // The last of the row's ⌈len / BLOCK⌉ blocks to finish goes on with all their candidates.
${
          lastArrivalGoesOn(
            "(len + BLOCK - 1u) / BLOCK",
            tail.prefetch ? prefetchOnArrival : undefined,
          )
        }
  select_top_k(row, len, tid);
${afterSelection(tail.handOff ?? false)}
  attend_row(local_row, len, tid);`
        : candidates
        ? `
  // Stage 2a on the block's keys (k ≥ length: stage 2b takes every position; nothing to rank).
  if (K_SEL >= len) { return; }
  let n = min(CBLOCK, len - start);
  let out = (row * CBLOCKS + block) * CK;
${keepCandidates()}`
        : ""
    }
}
`;
  const name = tail
    ? "sparq_scores_attend"
    : candidates
    ? "sparq_scores_candidates"
    : "sparq_scores";
  return spec(name, source, storage);
}
