/**
 * What SparQ's kernels share: their parameters and launch configuration, the arrangements a call
 * lowers to, the scratch sizes, the WGSL constants of a shape, and binding lists for fused
 * kernels.
 *
 * @module
 */
import { computeKernel, type KernelSpec, type StorageBinding } from "./kernel_spec.ts";
import { type AttentionKernelShape, PARAMS_DECL } from "./wgsl_common.ts";

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
  /** Positions each stage-2a workgroup ranks (default {@link CANDIDATE_BLOCK}; the lowering
   * picks it per call, see compiler/passes/lower_attention.ts). */
  candidateBlock?: number;
}

/**
 * The kernels a SparQ attention call can lower to, by how far its stages are fused: all four in
 * one (one query head per KV head, few rows), 1 and 2a in one (one query head per KV head), 2a–3
 * chained, 2b and 3 paired, all four apart (see compiler/passes/lower_attention.ts).
 */
export const SPARQ_ARRANGEMENTS: readonly (readonly string[])[] = [
  ["sparq_scores_attend"],
  ["sparq_scores_candidates", "sparq_topk_attend"],
  ["sparq_scores_candidates", "sparq_topk", "sparq_attend"],
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
/** Positions each `sparq_candidates` workgroup ranks in workgroup memory, by default. */
export const CANDIDATE_BLOCK = 4096;

/**
 * Positions each stage-2a workgroup ranks for a shape and launch: the launch's candidate block,
 * at most S.
 *
 * @example
 * ```ts
 * import { candidateBlockOf } from "./sparq_common.ts";
 * candidateBlockOf({ batch: 1, heads: 32, kvHeads: 8, headDim: 128, maxSeq: 1000,
 *   kvDtype: "f16", workgroupStorage: 49152 }, { block: 1024, attendWorkgroup: 256 }); // 1000
 * ```
 */
export function candidateBlockOf(s: AttentionKernelShape, c: SparqConfig): number {
  return Math.min(c.candidateBlock ?? CANDIDATE_BLOCK, s.maxSeq);
}

/**
 * Sizes of the SparQ scratch tensors for a shape.
 *
 * @example
 * ```ts
 * import { sparqScratch } from "./sparq_common.ts";
 * sparqScratch({ batch: 1, heads: 32, kvHeads: 8, headDim: 128, maxSeq: 4096,
 *   kvDtype: "f16", workgroupStorage: 49152 }, { r: 32, k: 128, localWindow: 0 }).indices;
 * // [1, 8, 128]
 * ```
 */
export function sparqScratch(
  s: AttentionKernelShape,
  p: SparqKernelParams,
  config: SparqConfig = SPARQ_DEFAULT,
) {
  const blocks = Math.ceil(s.maxSeq / config.block);
  const kept = Math.min(p.k, s.maxSeq);
  const candidateBlock = candidateBlockOf(s, config);
  const candidateBlocks = Math.ceil(s.maxSeq / candidateBlock);
  const perBlock = Math.min(p.k, candidateBlock);
  return {
    blocks,
    candidateBlocks,
    kept,
    scores: [s.batch, s.heads, s.maxSeq],
    blockStats: [s.batch, s.heads, blocks, 2],
    candidates: [s.batch, s.kvHeads, candidateBlocks * perBlock, 2],
    indices: [s.batch, s.kvHeads, kept],
    alpha: [s.batch, s.heads],
  };
}

/**
 * The WGSL constants of a SparQ kernel for a shape, parameters and launch (GROUP, BLOCK, CBLOCK,
 * CK, …) and the params uniform's struct.
 *
 * @example
 * ```ts
 * import { sparqConstants } from "./sparq_common.ts";
 * sparqConstants({ batch: 1, heads: 32, kvHeads: 8, headDim: 128, maxSeq: 4096,
 *   kvDtype: "f16", workgroupStorage: 49152 }, { r: 32, k: 128, localWindow: 0 },
 *   { block: 1024, attendWorkgroup: 256 }).includes("const GROUP = 4u;"); // true
 * ```
 */
export function sparqConstants(
  s: AttentionKernelShape,
  p: SparqKernelParams,
  c: SparqConfig,
): string {
  const sizes = sparqScratch(s, p, c);
  const candidateBlock = candidateBlockOf(s, c);
  return `const HEAD_DIM = ${s.headDim}u;
const GROUP = ${s.heads / s.kvHeads}u;
const HEADS = ${s.heads}u;
const KV_HEADS = ${s.kvHeads}u;
const MAX_SEQ = ${s.maxSeq}u;
const R = ${p.r}u;
const K_SEL = ${p.k}u;
const KEPT = ${sizes.kept}u;
const LOCAL_WINDOW = ${p.localWindow}u;
const BLOCK = ${c.block}u;
const BLOCKS = ${sizes.blocks}u;
const CBLOCK = ${candidateBlock}u;
const CBLOCKS = ${sizes.candidateBlocks}u;
const CK = ${Math.min(p.k, candidateBlock)}u;
${PARAMS_DECL}`;
}

/**
 * A SparQ kernel's spec: its name, its WGSL and its storage bindings (the params uniform last).
 *
 * @example
 * ```ts
 * import { sparqSpec } from "./sparq_common.ts";
 * sparqSpec("k", "@compute @workgroup_size(1) fn main() {}", []).op; // "attention"
 * ```
 */
export function sparqSpec(name: string, source: string, storage: StorageBinding[]): KernelSpec {
  return computeKernel(name, "attention", source, storage);
}

/** A storage binding of a SparQ kernel: its WGSL name, access and element type. */
export type Binding = [name: string, access: "read" | "read_write", type: string];

/**
 * The bindings of kernels fused into one: each name once, read_write where any part writes.
 *
 * @example
 * ```ts
 * import { mergeBindings } from "./sparq_common.ts";
 * mergeBindings([["x", "read", "f32"]], [["x", "read_write", "f32"], ["y", "read", "u32"]]);
 * // [["x", "read_write", "f32"], ["y", "read", "u32"]]
 * ```
 */
export function mergeBindings(...parts: Binding[][]): Binding[] {
  const merged = new Map<string, Binding>();
  for (const [name, access, type] of parts.flat()) {
    const before = merged.get(name);
    merged.set(name, [name, before?.[1] === "read_write" ? "read_write" : access, type]);
  }
  return [...merged.values()];
}
