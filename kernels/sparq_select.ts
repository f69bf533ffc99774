/**
 * SparQ's selection: stage 2a (`sparq_candidates`, each block of 4096 positions keeps its local
 * top k) and stage 2b (`sparq_topk`, the top k among the candidates, and alpha), as kernels and
 * as parts that the fused kernels of sparq_attend.ts assemble.
 *
 * @module
 */
import type { ExtraPrefetch } from "./l2_prefetch.ts";
import { type KernelSpec } from "./kernel_spec.ts";
import {
  type AttentionKernelShape,
  bindingDeclarations,
  fitTile,
  FLAT_ID,
  kvPrelude,
  MAIN_ARGS,
  nextPowerOfTwo,
  reductions,
} from "./wgsl_common.ts";
import { indentLines, unroll } from "./unrolled.ts";
import {
  type Binding,
  candidateBlockOf,
  SPARQ_DEFAULT,
  SPARQ_TOPK_WORKGROUP,
  type SparqConfig,
  sparqConstants as constants,
  type SparqKernelParams,
  sparqScratch,
  sparqSpec as spec,
} from "./sparq_common.ts";

/** Boundary-bin items the binned selection ranks in workgroup memory (one per invocation). */
export const BOUNDARY_CAPACITY = 256;

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
 * The part of the selection that needs no scores: ranking keys from floats, their range, value
 * bins, the radix round, and the binned selection's workgroup memory (256 bins, the boundary bin's
 * items, counters). Needs a 256-invocation workgroup's reductions.
 *
 * @example
 * ```ts
 * import { rankingPrelude } from "./sparq_select.ts";
 * rankingPrelude().includes("fn radix_round"); // true
 * ```
 */
export function rankingPrelude(): string {
  return `var<workgroup> hist: array<atomic<u32>, 256>;
var<workgroup> chosen_bin: u32;
var<workgroup> chosen_left: u32;
var<workgroup> chosen_here: u32;
var<workgroup> boundary_key: array<u32, ${BOUNDARY_CAPACITY}>;
var<workgroup> boundary_position: array<u32, ${BOUNDARY_CAPACITY}>;
var<workgroup> boundary_count: atomic<u32>;
var<workgroup> taken_count: atomic<u32>;
const WINDOW_KEY = 0xffffffffu;

// The bits of a float, reordered so that unsigned order is the float order.
fn ordered_key(x: f32) -> u32 {
  let bits = bitcast<u32>(x);
  return select(bits | 0x80000000u, ~bits, (bits & 0x80000000u) != 0u);
}

fn key_value(key: u32) -> f32 {
  return bitcast<f32>(select(~key, key & 0x7fffffffu, (key & 0x80000000u) != 0u));
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
 * WGSL shared by the two selection stages: head statistics, ranking keys and {@link
 * rankingPrelude}. `group` decides the ranking key: with one query head per KV head, Σ_group ŝ is
 * monotone in the logit, so the logit itself ranks (no softmax needed). Needs a 256-invocation
 * workgroup's reductions and the SparQ constants.
 *
 * @example
 * ```ts
 * import { selectionCommon } from "./sparq_select.ts";
 * selectionCommon(1).includes("fn head_statistics"); // true
 * ```
 */
export function selectionCommon(group: number): string {
  if (group > SPARQ_TOPK_WORKGROUP) {
    throw new RangeError("SparQ: more query heads per KV head than 256");
  }
  const rankingValue = group === 1 ? "scores[head0 * MAX_SEQ + pos]" : `log_sum_shat(head0, pos)`;
  return `const STAT_LANES = ${SPARQ_TOPK_WORKGROUP / nextPowerOfTwo(group)}u;
var<workgroup> head_max: array<f32, GROUP>;
var<workgroup> head_inv: array<f32, GROUP>;
var<workgroup> head_log_inv: array<f32, GROUP>;
${rankingPrelude()}

fn shat(head: u32, pos: u32, h: u32) -> f32 {
  return exp(scores[head * MAX_SEQ + pos] - head_max[h]) * head_inv[h];
}

// ŝ of a candidate of the only head, from its ranking key where that is its logit: stage 1 with
// stage 2a in it writes only the local window's scores.
fn shat_of_key(key: u32, head: u32, pos: u32) -> f32 {
  var logit = key_value(key);
  if (key == WINDOW_KEY) { logit = scores[head * MAX_SEQ + pos]; }
  return exp(logit - head_max[0]) * head_inv[0];
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

// The ranking key of a position: a value monotone in Σ_group ŝ; the local window gets the largest.
fn ranking_key(head0: u32, pos: u32, len: u32) -> u32 {
  if (pos + LOCAL_WINDOW >= len) { return WINDOW_KEY; }
  return ordered_key(${rankingValue});
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
  p: {
    count: string;
    want: string;
    item: string;
    take: string;
    range: string;
    reset: string;
    each?: (body: string) => string;
  },
): string {
  const each = p.each ??
    ((body: string) =>
      `for (var i = tid; i < ${p.count}; i += WG) {
      ${p.item}
      ${body}
    }`);
  return `  {
    let lo = ${p.range}.x;
    let spread = ${p.range}.y - lo;
    let scale = select(0.0, 255.0 / spread, spread > 1e-30);
    if (tid == 0u) {
      atomicStore(&boundary_count, 0u);
      atomicStore(&taken_count, 0u);
    }
    ${each("if (valid) { atomicAdd(&hist[value_bin(key, lo, scale)], 1u); }")}
    workgroupBarrier();
    let edge = radix_round(${p.want}, tid);
    ${
    each(`let bin = value_bin(key, lo, scale);
      if (valid && bin > edge.x) {
        let slot = atomicAdd(&taken_count, 1u);
        if (slot < ${p.want}) { ${p.take} }
      } else if (valid && bin == edge.x) {
        let at = atomicAdd(&boundary_count, 1u);
        if (at < ${BOUNDARY_CAPACITY}u) {
          boundary_key[at] = key;
          boundary_position[at] = position;
        }
      }`)
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
 *
 * @example
 * ```ts
 * import { selectionPrelude } from "./sparq_select.ts";
 * selectionPrelude({ batch: 1, heads: 32, kvHeads: 8, headDim: 128, maxSeq: 4096,
 *   kvDtype: "f16", workgroupStorage: 49152 }, { r: 32, k: 128, localWindow: 0 },
 *   { block: 1024, attendWorkgroup: 256 }, [["scores", "read", "f32"]])
 *   .includes("fn radix_round"); // true
 * ```
 */
export function selectionPrelude(
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

/**
 * Workgroup memory of {@link selectionCommon} (bytes): head statistics, the 256 bins, the
 * boundary bin's items and counters (the reductions' scratch not included).
 *
 * @example
 * ```ts
 * import { selectionBytes } from "./sparq_select.ts";
 * selectionBytes(4); // 3156
 * ```
 */
export function selectionBytes(group: number): number {
  // Per head: max, 1/sum, log(1/sum), and alpha where stage 2b hands it to stage 3.
  return group * 16 + 256 * 4 + 12 + BOUNDARY_CAPACITY * 8 + 8;
}

/**
 * Workgroup memory of stage 2a's keys (bytes).
 *
 * @example
 * ```ts
 * import { keysBytes } from "./sparq_select.ts";
 * keysBytes({ batch: 1, heads: 32, kvHeads: 8, headDim: 128, maxSeq: 4096,
 *   kvDtype: "f16", workgroupStorage: 49152 }); // 17412: 4096 keys and a pad word per 16
 * ```
 */
export function keysBytes(s: AttentionKernelShape, c: SparqConfig = SPARQ_DEFAULT): number {
  const block = candidateBlockOf(s, c);
  return (block + block / 16 + 1) * 4;
}

/**
 * WGSL: stage 2a's keys in workgroup memory (CBLOCK of them) and `padded`, their index there.
 * One pad word after every 16 keys: the final passes of the selection give each invocation a
 * contiguous run of 16 keys, and unpadded, invocations 16 words apart would share two banks.
 */
export const KEYS_WGSL = `var<workgroup> keys: array<u32, CBLOCK + CBLOCK / 16u + 1u>;
fn padded(i: u32) -> u32 { return i + i / 16u; }`;

/**
 * WGSL statements that write a block's CK largest keys as its candidates (key, position), in no
 * particular order, then return: `keys` holds the block's `n` keys (positions `start` …),
 * `range` each invocation's range of their values, `out` the block's first candidate, and the
 * whole workgroup of 256 runs them (see {@link rankingPrelude}).
 *
 * @example
 * ```ts
 * import { keepCandidates } from "./sparq_select.ts";
 * keepCandidates().includes("radix_round(CK, tid)"); // true
 * ```
 */
export function keepCandidates(): string {
  return `  atomicStore(&hist[tid], 0u);
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
  }`;
}

/**
 * Stage 2a's WGSL without an entry point: its bindings, and `fn local_candidates(row, cblock,
 * tid)`, which writes one block's candidates (the kernel declares WG, the reductions and
 * {@link selectionCommon}).
 *
 * @example
 * ```ts
 * import { candidatesParts } from "./sparq_select.ts";
 * candidatesParts({ batch: 1, heads: 32, kvHeads: 8, headDim: 128, maxSeq: 4096,
 *   kvDtype: "f16", workgroupStorage: 49152 }).storage.length; // 4: scores … candidates
 * ```
 */
export function candidatesParts(
  s: AttentionKernelShape,
  c: SparqConfig = SPARQ_DEFAULT,
): { storage: Binding[]; wgsl: string } {
  const block = candidateBlockOf(s, c);
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
  const wgsl = `${KEYS_WGSL}

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
${keepCandidates()}
}`;
  return { storage, wgsl };
}

/**
 * Workgroup memory of {@link sparqCandidatesKernel} (bytes): the keys, the selection and the
 * reductions' scratch.
 *
 * @example
 * ```ts
 * import { candidatesBytes } from "./sparq_select.ts";
 * candidatesBytes({ batch: 1, heads: 32, kvHeads: 32, headDim: 128, maxSeq: 4096,
 *   kvDtype: "f16", workgroupStorage: 16384 }, { block: 1024, attendWorkgroup: 256,
 *   candidateBlock: 2048 }); // 14888
 * ```
 */
export function candidatesBytes(s: AttentionKernelShape, c: SparqConfig): number {
  return keysBytes(s, c) + selectionBytes(s.heads / s.kvHeads) + SPARQ_TOPK_WORKGROUP * 12;
}

/**
 * Stage 2a: each workgroup ranks `c.candidateBlock` positions of one (sequence, KV head) in
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
  const block = candidateBlockOf(s, c);
  fitTile(
    "sparq_candidates",
    s.workgroupStorage,
    () => candidatesBytes(s, c),
    [block],
  );
  const { storage, wgsl } = candidatesParts(s, c);
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
/**
 * The stride of the warm-up's reads: one per 512 KiB of the K and V caches. On the H100 (llama2-7b
 * decode step, B=1) SparQ's step at S = 16k / 32k took 7.136 / 8.044 ms with one read per 64 KiB,
 * 7.236 / 8.025 per 128 KiB, 7.016 / 7.793 per 256 KiB, 6.978 / 7.767 per 512 KiB, 6.987 / 7.753
 * per 1 MiB and 7.064 / 7.878 per 2 MiB (issue 7's version 23 in docs/performance.md): fewer reads
 * warm as much, and cost less.
 */
export const WARM_PAGE_BYTES = 512 * 1024;

/**
 * Workgroups that warm the address translations of a K (and V) cache of `cacheBytes` bytes.
 *
 * @example
 * ```ts
 * import { warmWorkgroups } from "./sparq.ts";
 * warmWorkgroups(268435456); // 16: a llama2-7b layer's K cache at S = 32k, 512 reads 512 KiB apart
 * ```
 */
export function warmWorkgroups(cacheBytes: number): number {
  return Math.ceil(cacheBytes / WARM_PAGE_BYTES / WARM_PAGES_PER_WORKGROUP);
}

/** What both warm-ups share: their constants and `fn warm_word(page)`. */
const WARM_PAGE_WGSL = `const WARM_PAGE_WORDS = ${WARM_PAGE_BYTES / 4}u;
const WARM_PAGES = ${WARM_PAGES_PER_WORKGROUP}u;
// The u32 word of page \`page\` that the warm-up reads: another 256-byte line of each page, so
// that the reads spread over memory channels.
fn warm_word(page: u32) -> u32 {
  return page * WARM_PAGE_WORDS + ((page * 2654435761u) % (WARM_PAGE_WORDS / 64u)) * 64u;
}`;

/**
 * The warm-up workgroups of stage 2b: one 4-byte read in each {@link WARM_PAGE_BYTES} of the K
 * and V caches, spread over several workgroups. At batch 1 stage 3 is a few workgroups, each
 * gathering k rows scattered over its head's cache, and on the H100 it took 31 µs inside a decode
 * step against 15 µs alone (llama2-7b, S = 32k): its first touch of each page was the cost. Reads
 * of the same pages made earlier by many SMs, while stage 2b's few workgroups select, took it back
 * to 15 µs; made by stage 2b's own 16 workgroups they cost 33 µs (misses queue per SM).
 */
const WARM_UP = `${WARM_PAGE_WGSL}
fn warm_translations(w: u32, tid: u32) {
  let at = warm_word(w * WARM_PAGES + tid % WARM_PAGES);
  var word = 0u;
  if (tid < WARM_PAGES) {
    if (at < arrayLength(&k_words)) { word = k_words[at]; }
  } else if (tid < 2u * WARM_PAGES) {
    if (at < arrayLength(&v_words)) { word = v_words[at]; }
  }
  // params.extra0 is 0 in every dispatch: the store never happens, yet the reads must stay.
  if (word == params.extra1 && params.extra0 == 1u) { alpha[0] = 0.0; }
}`;

/**
 * {@link WARM_UP} for a kernel that writes the new token into the caches it warms (SparQ with
 * rope and kv_append folded in): it reads them through their own read_write bindings (a second,
 * read-only binding of a buffer written in the same dispatch is invalid), and skips the lines near
 * each row's new position, so that no SM holds a copy of them in its L1 from before the append
 * when the row's last block reads them. Needs QUADS and KV4 (of `words` u32 words) from the kernel.
 */
function warmUpFromCaches(words: number): string {
  return `${WARM_PAGE_WGSL}
fn warm_translations(w: u32, tid: u32) {
  let quad = warm_word(w * WARM_PAGES + tid % WARM_PAGES) / ${words}u;
  let cache_row = quad / (MAX_SEQ * QUADS);
  let near_new = cache_row < params.rows &&
    ((quad / QUADS) % MAX_SEQ) / 16u == positions[cache_row / KV_HEADS] / 16u;
  var x = 0.0;
  if (tid < WARM_PAGES) {
    if (quad < arrayLength(&k_cache) && !near_new) { x = f32(k_cache[quad].x); }
  } else if (tid < 2u * WARM_PAGES) {
    if (quad < arrayLength(&v_cache) && !near_new) { x = f32(v_cache[quad].x); }
  }
  // params.extra0 is 0 in every dispatch: the store never happens, yet the reads must stay.
  if (x == f32(params.extra1) && params.extra0 == 1u) { alpha[0] = 0.0; }
}`;
}

/**
 * WGSL `fn row_length(row)`: the positions of a (sequence, KV head) row's cache that hold keys
 * (needs the `positions` binding and the SparQ constants). Stage 2b and stage 3 take it as an
 * argument, so that a kernel running both reads it once.
 */
export const ROW_LENGTH_WGSL = `// Positions of a (sequence, KV head) row's cache that hold keys.
fn row_length(row: u32) -> u32 {
  return min(positions[row / KV_HEADS] + 1u, MAX_SEQ);
}`;

/**
 * Candidates per invocation up to which stage 2b holds them all in registers (one query head per
 * KV head). On the H100 (llama2-7b, B=1) four held took the decode step at S = 16k from 6.98 to
 * 6.94 ms with nothing else changed; sixteen made S = 128k's attention slower (167 → 170.5 µs).
 * With grouped heads (llama3-8b) holding four made the attention 0.5–0.7 µs slower at S = 16k and
 * 32k: there stage 2b shares its kernel with stage 2a's blocks, which pay for its registers too.
 */
const HELD_CANDIDATES_MAX = 4;

/** Where stage 2b keeps its candidates and what it gives stage 3 (see {@link topkParts}). */
export interface TopkOptions {
  /** Candidates per invocation ({@link heldCandidatesOf}); held in registers where few enough. */
  held?: number;
  /**
   * Also write the indices to `idx_sh` and alpha to `alpha_sh` (workgroup memory), for stage 3 in
   * the same workgroup, which then needs neither a storage barrier nor a read of them.
   */
  handOff?: boolean;
  /**
   * The warm-up reads the K and V caches through the kernel's `k_cache` and `v_cache` (typed KV4)
   * rather than word views of its own: see {@link warmUpFromCaches}.
   */
  warmFromCaches?: boolean;
}

/**
 * Candidates each of stage 2b's invocations holds: all of a row's, spread over the workgroup.
 *
 * @example
 * ```ts
 * import { heldCandidatesOf } from "./sparq_select.ts";
 * heldCandidatesOf({ batch: 1, heads: 32, kvHeads: 32, headDim: 128, maxSeq: 16384,
 *   kvDtype: "f16", workgroupStorage: 49152 }, { r: 32, k: 128, localWindow: 0 },
 *   { block: 2048, attendWorkgroup: 256, candidateBlock: 2048 }); // 4: 8 blocks of 128
 * ```
 */
export function heldCandidatesOf(
  s: AttentionKernelShape,
  p: SparqKernelParams,
  c: SparqConfig,
): number {
  const perRow = sparqScratch(s, p, c).candidates[2];
  return Math.ceil(perRow / SPARQ_TOPK_WORKGROUP);
}

/**
 * WGSL: each invocation's `held` candidates (tid, tid + WG, …) loaded straight-line, every load
 * issued before any is used (`loads`), and the range widened by the valid ones (`ranges`), apart
 * so that other loads can go between them. A loop over them waited one memory latency per trip,
 * and each of stage 2b's three passes made that loop.
 */
function heldCandidates(held: number): { loads: string; ranges: string } {
  const last = "CBLOCKS * CK - 1u";
  const loads = unroll(
    held,
    (j) => `let held${j} = candidate_at(row, len, min(tid + ${j}u * WG, ${last}));`,
    "  ",
  );
  const ranges = unroll(
    held,
    (j) =>
      `let held_valid${j} = held${j}.z == 1u && tid + ${j}u * WG < count;
  if (held_valid${j}) { range = widen_range(range, held${j}.x); }`,
    "  ",
  );
  return { loads, ranges };
}

/** A selection pass's loop over the candidates {@link heldCandidates} holds, unrolled. */
function eachHeld(held: number): (body: string) => string {
  return (body) =>
    unroll(held, (j) =>
      `{
      let key = held${j}.x; let valid = held_valid${j}; let position = held${j}.y;
      ${body}
    }`, "    ").trimStart();
}

/**
 * Stage 2b's WGSL without an entry point: its bindings, `fn row_length(row)`, and `fn
 * select_top_k(row, len, tid)`, which writes the row's indices and alpha (and, with `warm`,
 * `warm_translations`); `options` as {@link TopkOptions}.
 *
 * @example
 * ```ts
 * import { topkParts } from "./sparq_select.ts";
 * topkParts({ batch: 1, heads: 32, kvHeads: 8, headDim: 128, maxSeq: 4096,
 *   kvDtype: "f16", workgroupStorage: 49152 }, true).storage.length; // 8: with the caches it warms
 * ```
 */
export function topkParts(
  s: AttentionKernelShape,
  warm: boolean,
  { held = 0, handOff = false, warmFromCaches = false }: TopkOptions = {},
): { storage: Binding[]; wgsl: string } {
  const group = s.heads / s.kvHeads;
  const inRegisters = group === 1 && held > 0 && held <= HELD_CANDIDATES_MAX;
  const heldWgsl = heldCandidates(held);
  const storage: Binding[] = [
    ["scores", "read", "f32"],
    ["block_stats", "read", "f32"],
    ["positions", "read", "u32"],
    ["candidates", "read", "vec2<u32>"],
    ["indices", "read_write", "u32"],
    ["alpha", "read_write", "f32"],
    ...(warm && !warmFromCaches
      ? [["k_words", "read", "u32"], ["v_words", "read", "u32"]] as Binding[]
      : []),
  ];
  const warmUp = warmFromCaches ? warmUpFromCaches(s.kvDtype === "f16" ? 2 : 4) : WARM_UP;
  const wgsl = `${warm ? warmUp : ""}${
    handOff ? "\nvar<workgroup> alpha_sh: array<f32, GROUP>;" : ""
  }
${ROW_LENGTH_WGSL}
// Candidate i of the row (i < count), in position order, and whether it exists.
fn candidate_valid(len: u32, i: u32) -> bool {
  let n = min(CBLOCK, len - min(len, (i / CK) * CBLOCK));
  return i % CK < min(CK, n);
}
fn candidate_at(row: u32, len: u32, i: u32) -> vec3<u32> {
  let c = candidates[row * CBLOCKS * CK + i];
  return vec3<u32>(c.x, c.y, select(0u, 1u, candidate_valid(len, i)));
}

fn select_top_k(row: u32, len: u32, tid: u32) {
  let head0 = row * GROUP;
  let out = row * KEPT;

  if (K_SEL >= len) {
    for (var i = tid; i < KEPT; i += WG) {
      indices[out + i] = select(0xffffffffu, i, i < len);${
    handOff ? "\n      idx_sh[i] = select(0xffffffffu, i, i < len);" : ""
  }
    }
    if (tid < GROUP) { alpha[head0 + tid] = 1.0;${handOff ? " alpha_sh[tid] = 1.0;" : ""} }
    return;
  }
  let count = ((len + CBLOCK - 1u) / CBLOCK) * CK;
  var range = NO_RANGE;
${
    inRegisters
      // The head statistics between the held candidates' loads and their first use, so that
      // their loads of block_stats need not wait for the candidates.
      ? `${heldWgsl.loads}
  head_statistics(head0, len, tid);
${heldWgsl.ranges}`
      : `  for (var i = tid; i < count; i += WG) {
    let c = candidate_at(row, len, i);
    if (c.z == 1u) { range = widen_range(range, c.x); }
  }
  head_statistics(head0, len, tid);`
  }
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
      take: `indices[out + slot] = position; ${handOff ? "idx_sh[slot] = position; " : ""}${
        group === 1
          ? "kept0 += shat_of_key(key, head0, position);"
          : unroll(group, (h) => `kept${h} += shat(head0 + ${h}u, position, ${h}u);`, "")
            .split("\n").join(" ")
      }`,
      range: "range",
      reset: unroll(group, (h) => `kept${h} = 0.0;`, "").split("\n").join(" "),
      each: inRegisters ? eachHeld(held) : undefined,
    })
  }
${
    unroll(group, (h) =>
      `  {
    let total = reduce_sum(kept${h}, tid);
    if (tid == 0u) { alpha[head0 + ${h}u] = total;${handOff ? ` alpha_sh[${h}u] = total;` : ""} }
  }`)
  }
}`;
  return { storage, wgsl };
}

/**
 * WGSL between stage 2b and stage 3 in one workgroup: a storage barrier where stage 3 reads the
 * indices and alpha back from memory, nothing where they are handed over in workgroup memory
 * ({@link TopkOptions}; stage 3's first workgroup barrier orders those).
 *
 * @example
 * ```ts
 * import { afterSelection } from "./sparq_select.ts";
 * afterSelection(false).includes("storageBarrier();"); // true
 * ```
 */
export function afterSelection(handOff: boolean): string {
  return handOff
    ? "  // Stage 3 takes the indices and alpha from workgroup memory."
    : `  // Stage 3 reads the indices and alpha that this workgroup's invocations just wrote.
  storageBarrier();`;
}

/**
 * The entry point's opening: workgroups past the rows warm translations (if any) and leave; with
 * `prefetch` (and `warm`), those past the warm-up's read their slice of the next kernel's weights
 * into the L2 first (`fn prefetch_slice`, l2_prefetch.ts).
 *
 * @example
 * ```ts
 * import { rowsOrWarm } from "./sparq_select.ts";
 * rowsOrWarm(false).includes("return;"); // true
 * ```
 */
export function rowsOrWarm(warm: boolean, prefetch?: ExtraPrefetch): string {
  const past = prefetch
    ? `
    let past = flat - params.rows;
    if (past < ${prefetch.after}u) { warm_translations(past, tid); } else {
      prefetch_slice(past - ${prefetch.after}u, ${prefetch.slices}u, tid);
    }
   `
    : warm
    ? " warm_translations(flat - params.rows, tid);"
    : "";
  return `${FLAT_ID}
  if (flat >= params.rows) {${past} return; }`;
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
  const { storage, wgsl } = topkParts(s, warm, { held: heldCandidatesOf(s, p, c) });
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
  select_top_k(flat, row_length(flat), tid);
}
`;
  // One name for both: reports compare stages across points, and a plan holds one of them.
  return spec("sparq_topk", source, storage);
}
