/**
 * The compiled plan: everything a runtime needs to run one decode step on WebGPU — kernels
 * (WGSL, entry point, override constants, bindings), buffers, where each tensor lives, and the
 * ordered schedule of dispatches — plus the graph and statistics for reports. Versioned and
 * validated with zod on the way out and on the way in.
 *
 * @module
 */
import { z } from "zod";
import { BuildOptions } from "./build_options.ts";
import { DType, Graph } from "./ir.ts";
import { ModelConfig } from "./model_config.ts";
import { Target } from "./target.ts";
import { TuningRecord } from "./tuning.ts";

/** The plan format's version; a runtime refuses plans of another. */
export const PLAN_VERSION = 1;

const count = z.int().nonnegative();
const positive = z.int().positive();

/** A kernel of the plan. */
export const PlanKernel = z.strictObject({
  id: z.string(),
  name: z.string(),
  op: z.string(),
  /** The `.wgsl` file `deno task compile` writes beside plan.json. */
  file: z.string(),
  source: z.string(),
  entryPoint: z.string(),
  constants: z.record(z.string(), z.number()),
  bindings: z.array(z.strictObject({
    name: z.string(),
    access: z.enum(["read", "read_write", "uniform"]),
  })),
  placeholder: z.boolean(),
});
/** A kernel of the plan. */
export type PlanKernel = z.infer<typeof PlanKernel>;

/** A buffer of the plan. */
export const PlanBuffer = z.strictObject({
  id: count,
  label: z.string(),
  role: z.enum(["weight", "state", "input", "activation", "params"]),
  bytes: positive,
});
/** A buffer of the plan. */
export type PlanBuffer = z.infer<typeof PlanBuffer>;

/** A tensor and the buffers holding its rows. */
export const PlanTensor = z.strictObject({
  shape: z.array(positive),
  dtype: DType,
  role: z.enum(["input", "weight", "state", "activation", "scratch"]),
  shards: z.array(
    z.strictObject({ buffer: count, firstRow: count, rows: positive, bytes: positive }),
  )
    .min(1),
});
/** A tensor and the buffers holding its rows. */
export type PlanTensor = z.infer<typeof PlanTensor>;

/** One dispatch of the schedule. */
export const PlanDispatch = z.strictObject({
  kernel: z.string(),
  node: z.string(),
  shard: count,
  dispatch: z.tuple([positive, positive, positive]),
  bindings: z.array(z.strictObject({
    binding: count,
    /** The tensor bound here, or "params" for the params uniform. */
    tensor: z.string(),
    buffer: count,
    offset: count,
    size: positive,
  })),
  /** The u32 values of the kernel's params uniform. */
  params: z.array(count),
});
/** One dispatch of the schedule. */
export type PlanDispatch = z.infer<typeof PlanDispatch>;

/** Figures about the plan, for the summary and reports. */
export const PlanStats = z.strictObject({
  layers: positive,
  nodes: positive,
  kernels: positive,
  placeholderKernels: count,
  dispatchesPerStep: positive,
  memory: z.strictObject({
    weights: count,
    kCache: count,
    ktCache: count,
    vCache: count,
    vMean: count,
    activations: count,
    inputs: count,
    params: count,
    total: count,
    budget: positive,
  }),
  /** Bytes per decode step by the transfer model, at the maximum context. */
  transfer: z.strictObject({
    seqLen: positive,
    sparq: z.strictObject({ r: positive, k: positive }),
    attentionDense: count,
    attentionSparq: count,
    weights: count,
  }),
});
/** Figures about the plan. */
export type PlanStats = z.infer<typeof PlanStats>;

/** What a runtime executes: kernels, buffers, where tensors live, and the dispatch order. */
export const Program = z.strictObject({
  kernels: z.array(PlanKernel),
  buffers: z.array(PlanBuffer),
  tensors: z.record(z.string(), PlanTensor),
  schedule: z.array(PlanDispatch),
});
/** What a runtime executes. */
export type Program = z.infer<typeof Program>;

/** A compiled decode step: the program plus what it was compiled from and its figures. */
export const Plan = Program.extend({
  format: z.literal("sparqc-plan"),
  version: z.literal(PLAN_VERSION),
  model: ModelConfig,
  options: BuildOptions,
  target: Target,
  graph: Graph,
  stats: PlanStats,
  /** Launch configurations the tuner chose (empty when compiled with the defaults). */
  tuning: z.array(TuningRecord),
});
/** A compiled decode step. */
export type Plan = z.infer<typeof Plan>;
