/**
 * Tuning choices as the compiler sees them: for each tunable kind of node and shape bucket, the
 * launch configuration to use. The runtime's tuner fills this from measurements (or its cache);
 * without an entry the lowering uses the kernel's default.
 *
 * @module
 */
import { z } from "zod";
import type { DenseConfig } from "../kernels/attention_dense.ts";
import type { Graph } from "./ir.ts";
import type { KvAppendConfig } from "../kernels/kv_append.ts";
import type { SparqConfig } from "../kernels/sparq.ts";
import type { AttentionShape } from "../kernels/wgsl_common.ts";

/** What is tuned as one unit: the kernels that share a launch parameter. */
export type TuningFamily = "kv_append" | "attention_dense" | "attention_sparq";

/** A tunable node's shape. */
export interface TuningProblem extends AttentionShape {
  family: TuningFamily;
  /** SparQ attention only. */
  sparq?: { r: number; k: number; localWindow: number };
  /** kv_append only: whether it writes SparQ's Kᵀ and V_mean too. */
  sparqLayout?: boolean;
}

/** A launch configuration of one family. */
export type TuningConfig = KvAppendConfig | DenseConfig | SparqConfig;

/** Chosen configurations by bucket (see {@link tuningBucket}). */
export type TuningChoices = ReadonlyMap<string, TuningConfig>;

const pow2 = (n: number) => 2 ** Math.ceil(Math.log2(Math.max(1, n)));

/**
 * The shape bucket of a problem: batch and context rounded up to powers of two, everything
 * else exact. Problems in one bucket share a tuning choice.
 *
 * @example
 * ```ts
 * import { tuningBucket } from "./tuning.ts";
 * tuningBucket({ family: "attention_dense", batch: 3, heads: 32, kvHeads: 8, headDim: 128,
 *   maxSeq: 5000, kvDtype: "f16" }); // "attention_dense B4 H32/8 d128 S8192 f16"
 * ```
 */
export function tuningBucket(p: TuningProblem): string {
  const base = `${p.family} B${pow2(p.batch)} H${p.heads}/${p.kvHeads} d${p.headDim} ` +
    `S${pow2(p.maxSeq)} ${p.kvDtype}`;
  if (p.sparq) return `${base} r${p.sparq.r} k${p.sparq.k} l${p.sparq.localWindow}`;
  return p.family === "kv_append" ? `${base} ${p.sparqLayout ? "sparq" : "dense"}` : base;
}

/**
 * The tunable problems of a graph, one per bucket: its attention and kv_append nodes.
 *
 * @example
 * ```ts
 * import { tuningProblems } from "./tuning.ts";
 * import { buildDecodeGraph } from "./build_graph.ts";
 * import { defaultOptions } from "./build_options.ts";
 * import { PRESETS } from "./presets.ts";
 * const model = PRESETS.get("llama3-8b")!;
 * tuningProblems(buildDecodeGraph(model, defaultOptions(model, "sparq"))).length; // 2
 * ```
 */
export function tuningProblems(graph: Graph): TuningProblem[] {
  const problems = new Map<string, TuningProblem>();
  for (const node of graph.nodes) {
    if (node.op !== "attention" && node.op !== "kv_append") continue;
    const cacheName = node.op === "attention" ? node.inputs[2] : node.inputs[3];
    const cache = graph.tensors[cacheName];
    const [batch, kvHeads, maxSeq, headDim] = cache.shape;
    const shape = { batch, kvHeads, maxSeq, headDim, kvDtype: cache.dtype as "f16" | "f32" };
    let problem: TuningProblem;
    if (node.op === "kv_append") {
      // kv_append is tuned alongside attention of the same layout; heads = KV heads is enough.
      problem = { family: "kv_append", heads: kvHeads, sparqLayout: node.attrs.sparq, ...shape };
    } else {
      const m = node.attrs.method;
      problem = m.kind === "dense"
        ? { family: "attention_dense", heads: node.attrs.heads, ...shape }
        : {
          family: "attention_sparq",
          heads: node.attrs.heads,
          sparq: { r: m.r, k: m.k, localWindow: m.localWindow },
          ...shape,
        };
    }
    problems.set(tuningBucket(problem), problem);
  }
  return [...problems.values()];
}

/** What the tuner did for one bucket, as the plan records it. */
export const TuningRecord = z.strictObject({
  bucket: z.string(),
  choice: z.record(z.string(), z.number()),
  defaultConfig: z.record(z.string(), z.number()),
  /** Median GPU time of the default configuration, ns. */
  defaultNs: z.number().positive(),
  /** Median GPU time of the choice, ns. */
  bestNs: z.number().positive(),
  /** Median GPU time of each kernel, ns, for the default and for the choice. */
  kernelsNs: z.strictObject({
    default: z.record(z.string(), z.number()),
    best: z.record(z.string(), z.number()),
  }),
  /** Measured by this compile, or taken from the tuning cache. */
  source: z.enum(["measured", "cache"]),
  candidates: z.int().positive(),
  /** Candidates dropped because their output differed from the default's. */
  rejected: z.array(z.string()),
});
/** What the tuner did for one bucket. */
export type TuningRecord = z.infer<typeof TuningRecord>;
