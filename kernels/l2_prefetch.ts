/**
 * Reading the next kernel's weights into the L2 while a latency-bound kernel ends. At batch 1
 * SparQ's attention ends in one workgroup per row that selects and gathers for microseconds while
 * the rest of the GPU idles; workgroups that finish early, or are dispatched for it, read the
 * weights of the matmul that follows, so that it finds them in the L2 instead of memory. On the
 * H100 (50 MB L2) o_proj of llama2-7b (32 MiB) took 18.4 µs cold and 13.0 µs after a read of its
 * weights (bench/l2_probe.ts), and the decode step at S = 16k went 7.262 → 7.148 ms with SparQ's
 * early blocks reading it (issue 7's version 22 in docs/performance.md).
 *
 * @module
 */

/** The binding the weights are read through: their bytes as vec4<u32>. */
export const PREFETCH_BINDING = ["prefetch", "read", "vec4<u32>"] as const;

/** Loads each invocation keeps in flight: a few workgroups must read megabytes. */
const PREFETCH_LOADS = 8;

/**
 * The most bytes one workgroup prefetches: a workgroup reading more outlasted the kernel it
 * rode on (H100, llama2-7b at S = 4k: 32 early blocks of SparQ's fused kernel reading 1 MiB of
 * o_proj each made the decode step 0.11 ms slower; 224 reading 150 KiB at 16k made it 0.12 ms
 * faster). Where the workgroups are too few, the weights' first rows are read.
 */
export const PREFETCH_SLICE_BYTES = 160 * 1024;

/**
 * Workgroups that prefetch `words` vec4s in slices of at most {@link PREFETCH_SLICE_BYTES}.
 *
 * @example
 * ```ts
 * import { prefetchWorkgroups } from "./l2_prefetch.ts";
 * prefetchWorkgroups(2097152); // 205: llama2-7b's o_proj
 * ```
 */
export function prefetchWorkgroups(words: number): number {
  return Math.ceil((words * 16) / PREFETCH_SLICE_BYTES);
}

/**
 * The share of the L2 a prefetch may fill: the rest holds what the running kernel still reads
 * and what the matmul writes.
 */
const L2_SHARE = 0.75;

/**
 * Bytes of a weight tensor to read ahead into an L2 of `l2Bytes`: all of it where it fits the
 * L2's share, else its first rows (the matmul's first workgroups read them first). A multiple
 * of 16 (one vec4<u32>).
 *
 * @example
 * ```ts
 * import { prefetchBytes } from "./l2_prefetch.ts";
 * prefetchBytes(33554432, 50 * 2 ** 20); // 33554432: llama2-7b's o_proj in an H100's L2
 * ```
 */
export function prefetchBytes(weightBytes: number, l2Bytes: number): number {
  return Math.floor(Math.min(weightBytes, l2Bytes * L2_SHARE) / 16) * 16;
}

/**
 * WGSL of the prefetch (the kernel declares `prefetch` as {@link PREFETCH_BINDING}, `params`
 * and its workgroup size `WG`): `fn prefetch_sum(slice, slices, tid)`, which reads this
 * invocation's share of slice `slice` of `slices` over the first `words` vec4s and returns their
 * wrapping sum, and `fn prefetch_slice(slice, slices, tid)`, which keeps the reads alive with a
 * store (`sink`, a WGSL statement) that never happens: params.extra0 is 0 in every dispatch.
 * Slices are whole rounds of WG · 8 vec4s, so the last slices may have none, and at most
 * {@link PREFETCH_SLICE_BYTES}: with too few slices, the first of the `words` are read.
 *
 * @example
 * ```ts
 * import { prefetchWgsl } from "./l2_prefetch.ts";
 * const wgsl = prefetchWgsl(2097152, "y[0] = 0.0;");
 * ```
 */
export function prefetchWgsl(words: number, sink: string): string {
  const loads = [...Array(PREFETCH_LOADS).keys()];
  return `const PREFETCH_WORDS = ${words}u;
const PREFETCH_ROUND = WG * ${PREFETCH_LOADS}u;
const PREFETCH_SLICE_MAX = max(1u, ${PREFETCH_SLICE_BYTES / 16}u / PREFETCH_ROUND) * PREFETCH_ROUND;
fn prefetch_sum(slice: u32, slices: u32, tid: u32) -> vec4<u32> {
  let per = min(
    ((PREFETCH_WORDS + slices - 1u) / slices + PREFETCH_ROUND - 1u) / PREFETCH_ROUND *
      PREFETCH_ROUND,
    PREFETCH_SLICE_MAX,
  );
  let first = min(slice * per, PREFETCH_WORDS);
  let last = min(first + per, PREFETCH_WORDS);
  var sum = vec4<u32>(0u);
  // Every load issued before any is used (clamped, and masked past the end).
  for (var at = first + tid; at < last; at += PREFETCH_ROUND) {
${
    loads.map((i) => `    let a${i} = prefetch[min(at + ${i}u * WG, last - 1u)];`).join(
      "\n",
    )
  }
${
    loads.map((i) => `    sum += select(vec4<u32>(0u), a${i}, at + ${i}u * WG < last);`)
      .join("\n")
  }
  }
  return sum;
}
fn prefetch_slice(slice: u32, slices: u32, tid: u32) {
  let sum = prefetch_sum(slice, slices, tid);
  if (sum.x == params.extra1 && params.extra0 == 1u) { ${sink} }
}`;
}

/**
 * A prefetch by workgroups dispatched past a kernel's own: the weights' vec4s to read, the
 * workgroups dispatched before them past the kernel's own (a warm-up's), and their number.
 */
export interface ExtraPrefetch {
  words: number;
  after: number;
  slices: number;
}

/**
 * The early-arrival hook of `lastArrivalGoesOn` (wgsl_common.ts) that prefetches: the
 * workgroups of a row that are not its last (`others`, this one arrived `order`-th) share the
 * slices with those of the dispatch's other rows (`local_row` of `params.rows`).
 *
 * @example
 * ```ts
 * import { prefetchOnArrival } from "./l2_prefetch.ts";
 * prefetchOnArrival("order", "others");
 * // "prefetch_slice(local_row * others + order, params.rows * others, tid);"
 * ```
 */
export function prefetchOnArrival(order: string, others: string): string {
  return `prefetch_slice(local_row * ${others} + ${order}, params.rows * ${others}, tid);`;
}
