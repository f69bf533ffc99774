/**
 * Lowering of the KV append and of attention: dense as the flash-decoding split-K pair (partial
 * max, Σexp and output per chunk of positions, then a reduction), SparQ as four stages (scores
 * from the Kᵀ rows of i1, each workgroup picking i1 and q[i1]/τ itself; local top-k candidates
 * per block of positions; the final top-k, whose spare workgroups warm the cache's address
 * translations at small batch; exact attention over the gathered K and V rows with the
 * mean-value reallocation), fused where the shape and target allow (see `candidateLayout`). Cache
 * operands may be split into shards; each shard gets its own dispatch of the stages that read the
 * cache.
 *
 * @module
 */
import {
  type DenseConfig,
  denseLayout,
  densePartialKernel,
} from "../../kernels/attention_dense.ts";
import {
  DENSE_REDUCE_WIDE_WORKGROUP,
  DENSE_REDUCE_WORKGROUP,
  denseReduceFewKernel,
  denseReduceFewWorkgroups,
  denseReduceKernel,
  FEW_CHUNKS,
} from "../../kernels/attention_dense_reduce.ts";
import {
  densePartialReduceFits,
  densePartialSubgroupKernel,
} from "../../kernels/attention_dense_subgroup.ts";
import { subgroupRowsFit } from "../../kernels/subgroup_rows.ts";
import { grid1d } from "../../kernels/grid.ts";
import { type ExtraPrefetch, prefetchWorkgroups } from "../../kernels/l2_prefetch.ts";
import {
  KV_APPEND_DEFAULT,
  type KvAppendConfig,
  kvAppendKernel,
  type RopeFold,
} from "../../kernels/kv_append.ts";
import {
  candidatesBytes,
  scoresAttendFits,
  scoresCandidatesFits,
  scoresWidth,
  selectAttendFits,
  SPARQ_DEFAULT,
  SPARQ_TOPK_WORKGROUP,
  sparqAttendKernel,
  sparqCandidatesKernel,
  type SparqConfig,
  type SparqKernelParams,
  sparqScoresAttendKernel,
  sparqScoresCandidatesKernel,
  sparqScoresKernel,
  sparqScoresVec4Kernel,
  sparqScratch,
  sparqSelectAttendKernel,
  sparqTopkAttendKernel,
  sparqTopkKernel,
  topkAttendFits,
  warmWorkgroups,
} from "../../kernels/sparq.ts";
import type { AttentionKernelShape, KvDtype } from "../../kernels/wgsl_common.ts";
import { dtypeBytes, type NodeOf } from "../ir.ts";
import { tuningBucket, type TuningFamily, type TuningProblem } from "../tuning.ts";
import { NodeError } from "./graph_error.ts";
import { type Invocation, type LowerContext, shardRanges } from "./lower_context.ts";

function shapeOf(ctx: LowerContext, kCache: string, heads: number): AttentionKernelShape {
  const t = ctx.types.get(kCache)!;
  const [batch, kvHeads, maxSeq, headDim] = t.shape;
  return {
    batch,
    heads,
    kvHeads,
    headDim,
    maxSeq,
    kvDtype: t.dtype as KvDtype,
    workgroupStorage: ctx.target.limits.maxComputeWorkgroupStorageSize,
    subgroupSize: ctx.target.subgroupSize,
  };
}

/** The tuned configuration of a node, if the tuning table has one for its bucket. */
function tuned<C>(
  ctx: LowerContext,
  family: TuningFamily,
  shape: AttentionKernelShape,
  extra: Pick<TuningProblem, "sparq" | "sparqLayout"> = {},
): C | undefined {
  return ctx.tuning?.get(tuningBucket({ family, ...shape, ...extra })) as C | undefined;
}

/** Kernel generators throw RangeError when a shape cannot fit the target; name the node. */
function build<T>(ctx: LowerContext, make: () => T): T {
  try {
    return make();
  } catch (error) {
    if (error instanceof RangeError) throw new NodeError(ctx.node, error.message);
    throw error;
  }
}

/** kv_append: one dispatch per cache shard, one invocation per (row, component). */
export function lowerKvAppend(ctx: LowerContext, node: NodeOf<"kv_append">): Invocation[] {
  const state = node.inputs.slice(3);
  const shape = shapeOf(ctx, state[0], node.attrs.kvHeads);
  const config = tuned<KvAppendConfig>(ctx, "kv_append", shape, {
    sparqLayout: node.attrs.sparq,
  });
  const kernel = kvAppendKernel({ ...shape, sparq: node.attrs.sparq }, config);
  const maxPerDim = ctx.target.limits.maxComputeWorkgroupsPerDimension;
  return shardRanges(ctx, state).map((range, shard) => {
    const rows = range.rows || shape.batch * shape.kvHeads;
    return {
      node: node.id,
      kernel,
      args: node.inputs,
      shard,
      params: [range.firstRow, rows, 0, 0],
      dispatch: grid1d(
        Math.ceil((rows * shape.headDim) / (config ?? KV_APPEND_DEFAULT).workgroup),
        maxPerDim,
      ),
    };
  });
}

/**
 * (sequence, KV head) rows up to which SparQ's stage 2b warms the K and V caches' address
 * translations for stage 3 (see `warmWorkgroups`): at batch 1 on the H100 the gather's first
 * touch of each page took half its time in a decode step.
 */
const WARM_ROWS = 64;

/**
 * (sequence, KV head) rows from which SparQ's stages 2b and 3 run as two dispatches with several
 * query heads per KV head, even where one kernel would fit. The fused kernel with grouped heads
 * is heavy, and on the H100 (llama3-8b, r=32, k=128) its time jumped from 35 µs at 384 rows to
 * 58 at 512, likely a second wave of its workgroups; apart, B=64 S=4k took 189.1 → 177.7 µs and
 * S=8k 287.9 → 275.1, while at 384 rows and fewer the fused kernel stayed 7–8 µs faster
 * (B=48 S=4k 149.3 against 156.9). With one query head per KV head it stayed faster at 512
 * (llama2-7b B=16 S=4k: 110.0 against 116.0).
 */
const GROUPED_APART_ROWS = 512;

/**
 * Most stage-2a blocks (rows · ⌈S / candidate block⌉) for which stages 2a–3 chain in one
 * dispatch: one wave on the H100's 132 SMs. Measured there (llama2-7b, B=1): the decode step
 * 0.07–0.15 ms faster at S=16k–32k, but alone at S=32k (256 blocks) the chained attention took
 * 88.5 µs against 80.9 and at S=128k (1024 blocks) 235 against 193: the chained kernel's
 * workgroup memory leaves fewer blocks in flight per SM.
 */
const CHAIN_BLOCKS = 128;

/**
 * Stage 2a's blocks. Many rows: 2048 positions, which took stage 2a 20–25% less time than 4096 at
 * llama2-7b B=64 S=4k and B=16 S=32k (H100, docs/performance.md: half the workgroup memory a
 * block, more blocks in flight). Few rows (warm): the smallest block that lets stages 2a–3 chain,
 * else 4096 — there stage 2b's few workgroups rank every block's candidates, and twice as many
 * cost it more than stage 2a saved (llama3-8b B=1 S=128k 127.9 → 130.6 µs).
 */
const CANDIDATE_BLOCKS = [2048, 4096];

/**
 * Cache capacity from which stage 1 with stage 2a in it takes blocks of two slots per invocation
 * (4096 positions for an f16 cache): half the candidates for stage 2b, and at B=1 half the
 * workgroups of stage 1, which then run in one wave. H100, llama2-7b (docs/performance.md): B=1
 * S=32k 80.4 → 68.4 µs, S=64k 113.5 → 106.6, S=128k 175.6 → 172.8, B=16 S=32k 767.6 → 709.1;
 * at S=24k equal, and shorter rows lose (B=64 S=4k 348.7 → 362.8; re-measured with a cold L2,
 * B=1 in the four-stage kernel: S=8k 41.9 → 45.8 µs, 16k 48.8 → 73.3).
 */
const LONG_ROW = 32768;

/**
 * Largest cache (positions) for which all four SparQ stages run as one kernel at few rows, one
 * query head per KV head. H100, llama2-7b, against stage 1 + 2a then 2b + 3 (docs/performance.md),
 * with a cold L2: B=1 S=4k 45.2 → 39.4 µs, 8k 48.1 → 41.9, 16k 66.0 → 48.8; the decode step at S=4k
 * 6.78 → 6.72 ms (16k unchanged); at S=32k (stage 1's blocks of two slots) 68.7 → 86.2 µs, 128k
 * 172.7 → 203.3 (those two with the L2 rotation of the time, whose B=1 figures up to 16k were warm).
 */
const FUSED_MAX_SEQ = 16384;

/** Where stage 2a runs: inside stage 1, chained with 2b and 3, or in a dispatch of its own. */
type Stage2a = "in_scores" | "chained" | "apart";

/**
 * The launch with its stage-2a block, and where stage 2a runs. With one query head per KV head,
 * inside stage 1 wherever it fits: the logit is the ranking key there, so stage 2a neither reads
 * the scores back nor takes a dispatch; stage 1's block is then the candidate block, 256
 * invocations wide (H100, llama2-7b: B=64 S=4k 408 → 385 µs, B=1 S=16k 52 → 44). Caches of at least
 * {@link LONG_ROW} positions take blocks of two slots per invocation (512 · positions per load).
 */
function candidateLayout(
  shape: AttentionKernelShape,
  method: SparqKernelParams,
  launch: SparqConfig,
  rows: number,
  warm: boolean,
  maxStorage: number,
): { config: SparqConfig; stage2a: Stage2a } {
  const slots = shape.maxSeq >= LONG_ROW ? [2, 1] : [1];
  const inScores = [8, 4].flatMap((width) => slots.map((n) => n * SPARQ_TOPK_WORKGROUP * width))
    .map((block) => ({ ...launch, block, candidateBlock: block }))
    .find((c) => scoresCandidatesFits(shape, method, c));
  if (inScores) return { config: inScores, stage2a: "in_scores" };
  const [small, large] = CANDIDATE_BLOCKS.map((candidateBlock) => ({ ...launch, candidateBlock }));
  if (!warm) return { config: small, stage2a: "apart" };
  const config = [small, large].find((c) =>
    rows * sparqScratch(shape, method, c).candidateBlocks <= CHAIN_BLOCKS &&
    selectAttendFits(shape, c, maxStorage, warm)
  );
  if (config) return { config, stage2a: "chained" };
  // A target with little workgroup memory may hold only the smaller block's keys.
  const fits = candidatesBytes(shape, large) <= shape.workgroupStorage;
  return { config: fits ? large : small, stage2a: "apart" };
}

/**
 * (sequence, query head) rows up to which dense attention's reduction runs inside the partial
 * kernel at one query head per KV head (the last chunk of each row to finish reduces it: one
 * dispatch fewer where a few workgroups' latency is the reduction's whole cost), or else takes
 * wide workgroups.
 */
const WIDE_REDUCE_ROWS = 128;

/** attention: the dense split-K pair, or the four SparQ stages. */
export function lowerAttention(ctx: LowerContext, node: NodeOf<"attention">): Invocation[] {
  return lowerFolding(ctx, node)!;
}

/**
 * {@link lowerAttention}, with `fold` folded into the kernel that first reads the cache where
 * that kernel takes it; undefined where `fold` is given and it does not.
 */
function lowerFolding(
  ctx: LowerContext,
  node: NodeOf<"attention">,
  fold?: AppendFold,
): Invocation[] | undefined {
  const [q, positions, ...cache] = node.inputs;
  const y = node.outputs[0];
  const { method } = node.attrs;
  const shape = shapeOf(ctx, cache[0], node.attrs.heads);
  const { batch: B, heads: H, kvHeads } = shape;
  const allRows = B * kvHeads;
  const ranges = shardRanges(ctx, cache);
  const maxPerDim = ctx.target.limits.maxComputeWorkgroupsPerDimension;
  const scratch = (
    suffix: string,
    tensorShape: number[],
    dtype: "f32" | "u32",
    persistent = false,
  ) => scratchTensor(ctx, node, suffix, tensorShape, dtype, persistent);
  const perShard = (
    kernel: Invocation["kernel"],
    args: string[],
    workgroups: (rows: number) => number,
  ): Invocation[] =>
    ranges.map((range, shard) => {
      const rows = range.rows || allRows;
      return {
        node: node.id,
        kernel,
        args,
        shard,
        params: [range.firstRow, rows, 0, 0],
        dispatch: grid1d(workgroups(rows), maxPerDim),
      };
    });
  /** A dispatch over all rows at once (kernels that read no sharded operand). */
  const whole = (
    kernel: Invocation["kernel"],
    args: string[],
    rows: number,
    workgroups = rows,
  ): Invocation => ({
    node: node.id,
    kernel,
    args,
    shard: 0,
    params: [0, rows, 0, 0],
    dispatch: grid1d(workgroups, maxPerDim),
  });

  // Dense keeps the append apart: K and V writable made its reads of them slower than the
  // dispatch it saves (docs/performance.md, issue 7 version 35).
  if (method.kind === "dense" && fold) return undefined;
  if (method.kind === "dense") {
    const [kCache, vCache] = cache;
    const config = tuned<DenseConfig>(ctx, "attention_dense", shape);
    const layout = build(ctx, () => denseLayout(shape, config));
    const partials = scratch("partials", [B, H, layout.chunks, shape.headDim + 2], "f32");
    const sg = ctx.target.subgroupSize;
    // The subgroup kernel wherever the rows fit its lanes: with several query heads per KV
    // head it sums all heads' dot products with one shuffle each (see transposeSums).
    const bySubgroups = subgroupRowsFit(shape.headDim, sg);
    // One shard: the last chunk of each row to finish reduces it, one dispatch fewer. With one
    // query head per KV head at few rows, by a tree over the workgroup (H100, llama2-7b: B=1 S=4k
    // 40.7 → 35.1 µs, 16k 106.1 → 100.1, 128k 716 → 710; the decode step −0.1 ms). With a group
    // of heads at any rows, all heads at once in registers (llama3-8b: B=1 S=4k 32.3 → 27.1 µs,
    // 128k 199.5 → 196.4, B=16 S=4k 108.9 → 104.7, B=16 S=32k 733.5 → 729.1); the tree, head by
    // head, lost there (B=1 S=16k 51.1 → 53.5 µs).
    if (
      bySubgroups && (H > kvHeads || B * H <= WIDE_REDUCE_ROWS) && ranges.length === 1 &&
      densePartialReduceFits(shape, layout, sg!, config?.workgroup)
    ) {
      const counters = scratch("arrivals", [allRows], "u32", true);
      // No prefetch of o_proj here (lower_prefetch.ts): dense is bound by its bytes to the end.
      return perShard(
        densePartialSubgroupKernel(shape, layout, sg!, config?.workgroup, true),
        [q, positions, kCache, vCache, partials, y, counters],
        (rows) => layout.chunks * rows,
      );
    }
    const partialKernel = bySubgroups
      ? densePartialSubgroupKernel(shape, layout, sg!, config?.workgroup)
      : densePartialKernel(shape, layout);
    // Few chunks per row: one invocation per 4 outputs merges them, no barriers (H100, llama3-8b
    // B=64 S=4k: 388.4 → 378.2 µs; llama2-7b B=64 S=4k 1423.5 → 1414.3).
    const reduce = layout.chunks <= FEW_CHUNKS
      ? whole(
        denseReduceFewKernel(shape, layout),
        [partials, positions, y],
        B * H,
        denseReduceFewWorkgroups(B * H, shape.headDim),
      )
      : whole(
        denseReduceKernel(
          shape,
          layout,
          // Wide only where few workgroups run: at B·H = 2048 it cost dense 2.5–6% (H100).
          B * H <= WIDE_REDUCE_ROWS
            ? Math.min(
              DENSE_REDUCE_WIDE_WORKGROUP,
              ctx.target.limits.maxComputeInvocationsPerWorkgroup,
            )
            : DENSE_REDUCE_WORKGROUP,
        ),
        [partials, positions, y],
        B * H,
      );
    return [
      ...perShard(
        partialKernel,
        [q, positions, kCache, vCache, partials],
        (rows) => layout.chunks * rows,
      ),
      reduce,
    ];
  }

  const [kCache, , vCache, vMean] = cache;
  const layout = sparqLayout(ctx, node);
  const { warm, config, stage2a, maxStorage, sizes } = layout;
  const chained = stage2a === "chained";
  // Few rows and positions, one query head per KV head: all four stages in one dispatch.
  if (allInOne(layout, fold)) return [scoresAttendInvocation(ctx, node, layout, fold)];
  // Where only the fold keeps the four stages from one kernel, one kernel without it is better;
  // else stage 1's vec4 kernel takes the fold.
  if (fold && (allInOne(layout) || scoresWidth(shape, config) === null)) return undefined;
  const scoresKernel = build(
    ctx,
    () =>
      stage2a === "in_scores"
        ? sparqScoresCandidatesKernel(shape, method, config, fold?.rope)
        // Four or eight positions per invocation where S allows (measured faster on the H100 for
        // both one and several query heads per KV head; see sparqScoresVec4Kernel).
        : scoresWidth(shape, config) !== null
        ? sparqScoresVec4Kernel(shape, method, config, chained, fold?.rope)
        : sparqScoresKernel(shape, method, config, chained),
  );
  if (fold && storageNames(scoresKernel).length > maxStorage) return undefined;
  const tensors = sparqTensors(ctx, node, layout, fold);
  const { scores, block_stats: blockStats, candidates, indices, alpha } = tensors;
  const warmCount = warm ? warmWorkgroups(cacheBytesOf(ctx, kCache)) : 0;
  const topkArgs = [
    scores,
    blockStats,
    positions,
    candidates,
    indices,
    alpha,
    ...(warm ? [kCache, vCache] : []),
  ];
  const candidateBlocks = allRows * sizes.candidateBlocks;
  const arrivals = chained ? [scratch("arrivals", [allRows], "u32")] : [];
  const stage1Tensors: Record<string, string> = {
    ...tensors,
    ...(chained ? { arrivals: arrivals[0] } : {}),
  };
  const scores1 = perShard(
    scoresKernel,
    storageNames(scoresKernel).map((name) => stage1Tensors[name]),
    (rows) => sizes.blocks * rows,
  );
  if (chained) {
    // No prefetch of o_proj here: dispatched with stage 2a's blocks, its workgroups made the
    // llama3-8b decode step slower at S = 4k and 16k (H100: 8.05 → 8.25, 8.14 → 8.27 ms).
    return [
      ...scores1,
      whole(
        build(ctx, () => sparqSelectAttendKernel(shape, method, config, warm)),
        [...topkArgs, q, kCache, vCache, vMean, y, ...arrivals],
        allRows,
        candidateBlocks + warmCount,
      ),
    ];
  }
  // Stages 2b and 3 end in a few workgroups per row: workgroups dispatched after the warm-up's
  // read the next matmul's weights into the L2 while those select and gather.
  const topkPrefetch: ExtraPrefetch | undefined =
    ctx.prefetch && warm && topkAttendFits(shape, config, maxStorage, warm, true)
      ? {
        words: ctx.prefetch.words,
        after: warmCount,
        slices: prefetchWorkgroups(ctx.prefetch.words),
      }
      : undefined;
  return [
    ...scores1,
    ...(stage2a === "apart"
      ? [whole(
        build(ctx, () => sparqCandidatesKernel(shape, method, config)),
        [scores, blockStats, positions, candidates],
        allRows,
        candidateBlocks,
      )]
      : []),
    ...(topkAttendFits(shape, config, maxStorage, warm) && ranges.length === 1 &&
        (H === kvHeads || allRows < GROUPED_APART_ROWS)
      // Stages 2b and 3 in one dispatch where their bindings fit (one dependent dispatch fewer).
      ? [whole(
        build(ctx, () => sparqTopkAttendKernel(shape, method, config, warm, topkPrefetch)),
        [...topkArgs, q, kCache, vCache, vMean, y, ...(topkPrefetch ? [ctx.prefetch!.tensor] : [])],
        allRows,
        allRows + warmCount + (topkPrefetch?.slices ?? 0),
      )]
      : [
        whole(sparqTopkKernel(shape, method, config, warm), topkArgs, allRows, allRows + warmCount),
        ...perShard(
          build(ctx, () => sparqAttendKernel(shape, method, config)),
          [q, positions, kCache, vCache, vMean, indices, alpha, y],
          (rows) => rows,
        ),
      ]),
  ];
}

/** The names of a kernel's storage bindings, in binding order (the order of its arguments). */
function storageNames(kernel: Invocation["kernel"]): string[] {
  return kernel.bindings.filter((b) => b.access !== "uniform").map((b) => b.name);
}

/** Declares a tensor that lives only inside `node`'s kernels, and names it. */
function scratchTensor(
  ctx: LowerContext,
  node: NodeOf<"attention">,
  suffix: string,
  shape: number[],
  dtype: "f32" | "u32",
  persistent = false,
): string {
  const name = `${node.id}.${suffix}`;
  ctx.scratch.set(name, { shape, dtype, node: node.id, ...(persistent ? { persistent } : {}) });
  return name;
}

/** The bytes of one cache tensor. */
function cacheBytesOf(ctx: LowerContext, cache: string): number {
  const type = ctx.types.get(cache)!;
  return type.shape.reduce((a, b) => a * b, 1) * dtypeBytes(type.dtype);
}

/**
 * The tensors SparQ's kernels bind, by their binding names: the node's operands, the caches once
 * more as the warm-up's word views, the scratch every arrangement has (declared here), and with
 * `fold` the unrotated q as `q`, the rotated one as `q_out`, the new key and value.
 */
function sparqTensors(
  ctx: LowerContext,
  node: NodeOf<"attention">,
  layout: SparqLayout,
  fold?: AppendFold,
): Record<string, string> {
  const [q, positions, kCache, ktCache, vCache, vMean] = node.inputs;
  const { sizes } = layout;
  const scratch = (suffix: string, shape: number[], dtype: "f32" | "u32") =>
    scratchTensor(ctx, node, suffix, shape, dtype);
  return {
    q: fold?.q ?? q,
    positions,
    kt_cache: ktCache,
    k_cache: kCache,
    v_cache: vCache,
    v_mean: vMean,
    y: node.outputs[0],
    k_words: kCache,
    v_words: vCache,
    scores: scratch("scores", sizes.scores, "f32"),
    block_stats: scratch("block_stats", sizes.blockStats, "f32"),
    candidates: scratch("candidates", sizes.candidates, "u32"),
    indices: scratch("indices", sizes.indices, "u32"),
    alpha: scratch("alpha", sizes.alpha, "f32"),
    ...(fold ? { q_out: q, k_new: fold.k, v_new: fold.v } : {}),
  };
}

/** How SparQ attention is laid out for a node: its shape, launch, and where stage 2a runs. */
interface SparqLayout {
  shape: AttentionKernelShape;
  method: SparqKernelParams;
  config: SparqConfig;
  stage2a: Stage2a;
  /** Few gathering workgroups: stage 2b's spare SMs warm the translations of the cache they read. */
  warm: boolean;
  rows: number;
  maxStorage: number;
  /** The sizes of its scratch tensors. */
  sizes: ReturnType<typeof sparqScratch>;
}

/** The SparQ layout of an attention node: tuned launch, warm-up, where stage 2a runs. */
function sparqLayout(ctx: LowerContext, node: NodeOf<"attention">): SparqLayout {
  const method = node.attrs.method as SparqKernelParams;
  const cache = node.inputs.slice(2);
  const shape = shapeOf(ctx, cache[0], node.attrs.heads);
  const launch = tuned<SparqConfig>(ctx, "attention_sparq", shape, {
    sparq: { r: method.r, k: method.k, localWindow: method.localWindow },
  }) ?? SPARQ_DEFAULT;
  const rows = shape.batch * shape.kvHeads;
  const warm = rows <= WARM_ROWS && shardRanges(ctx, cache).length === 1;
  const maxStorage = ctx.target.limits.maxStorageBuffersPerShaderStage;
  // Few blocks: each stage is a few workgroups' latency, so 2a–3 chain in one dispatch (the last
  // block of a row to finish goes on), counting arrivals in counters that stage 1 zeroes.
  const { config, stage2a } = candidateLayout(shape, method, launch, rows, warm, maxStorage);
  const sizes = sparqScratch(shape, method, config);
  return { shape, method, config, stage2a, warm, rows, maxStorage, sizes };
}

/**
 * Whether all four SparQ stages run in one kernel (few rows and positions, one query head per KV
 * head), with `fold` folded in too where given.
 */
function allInOne(layout: SparqLayout, fold?: AppendFold): boolean {
  const { shape, method, config, stage2a, warm, maxStorage } = layout;
  return stage2a === "in_scores" && warm && shape.maxSeq <= FUSED_MAX_SEQ &&
    scoresAttendFits(shape, method, config, maxStorage, warm, false, fold?.rope);
}

/**
 * All four SparQ stages in one dispatch, the last block of each row going on to stages 2b and
 * 3; with `fold`, also the rope of q and k and the append of the new token. Its counters live
 * from call to call (the last block resets them), in a buffer of their own. Only where
 * {@link allInOne}.
 */
function scoresAttendInvocation(
  ctx: LowerContext,
  node: NodeOf<"attention">,
  layout: SparqLayout,
  fold?: AppendFold,
): Invocation {
  const { shape, method, config, warm, rows, maxStorage, sizes } = layout;
  // The blocks that finish before their row's last read the next matmul's weights.
  const prefetch = ctx.prefetch &&
      scoresAttendFits(shape, method, config, maxStorage, warm, true, fold?.rope)
    ? ctx.prefetch
    : undefined;
  const kernel = build(
    ctx,
    () => sparqScoresAttendKernel(shape, method, config, warm, prefetch?.words, fold?.rope),
  );
  const tensorOf: Record<string, string> = {
    ...sparqTensors(ctx, node, layout, fold),
    arrivals: scratchTensor(ctx, node, "arrivals", [rows], "u32", true),
    ...(prefetch ? { prefetch: prefetch.tensor } : {}),
  };
  const warmCount = warm ? warmWorkgroups(cacheBytesOf(ctx, tensorOf.k_cache)) : 0;
  return {
    node: node.id,
    kernel,
    args: storageNames(kernel).map((name) => tensorOf[name]),
    shard: 0,
    params: [0, rows, 0, 0],
    dispatch: grid1d(
      sizes.blocks * rows + warmCount,
      ctx.target.limits.maxComputeWorkgroupsPerDimension,
    ),
  };
}

/**
 * What attention takes in place of the rope of q and k and the kv_append before it, when it folds
 * them in (lower_fuse.ts): the unrotated q, the new key (unrotated) and value, and the rotation.
 */
export interface AppendFold {
  q: string;
  k: string;
  v: string;
  rope: RopeFold;
}

/**
 * Attention with the rope of q and k and the kv_append of the new token folded in, where a kernel
 * takes them; else undefined. The workgroups that read the cache rotate q as they load it, and
 * the one whose block of positions holds the new token appends it before reading the cache: one
 * dispatch fewer per layer. SparQ: in the four stages' one kernel, stage 3 takes q from stage 1's
 * workgroup memory; where stage 1 is a dispatch of its own (its vec4 kernel, with stage 2a in it
 * or not), its first block of each row writes the rotated q out for the stages after it. Dense
 * keeps the append apart.
 *
 * @example
 * ```ts
 * // lowerAttentionWithAppend(ctx, attention, { q, k, v, rope: { rotaryDims: 128, theta: 1e4 } });
 * ```
 */
export function lowerAttentionWithAppend(
  ctx: LowerContext,
  node: NodeOf<"attention">,
  fold: AppendFold,
): Invocation[] | undefined {
  return lowerFolding(ctx, node, fold);
}
