/**
 * The tuner: measures each tunable problem's candidate launch configurations on this adapter
 * and keeps the fastest whose output matches the default configuration's. Candidates run on
 * seeded GPU-generated data at the plan's own shapes; GPU time comes from timestamp queries
 * (median of the repetitions). Results go to the tuning cache, so the next compile for the same
 * adapter, kernels and shapes measures nothing.
 *
 * @module
 */
import { ATTENTION_TENSORS as T, buildAttentionGraph } from "../compiler/build_attention_graph.ts";
import { compileGraph } from "../compiler/compile.ts";
import type { Program } from "../compiler/plan.ts";
import type { AttentionMethod } from "../compiler/ir.ts";
import { dtypeBytes } from "../compiler/ir.ts";
import type { Target } from "../compiler/target.ts";
import { attentionTransferBytes } from "../compiler/transfer.ts";
import {
  tuningBucket,
  type TuningChoices,
  type TuningConfig,
  type TuningProblem,
  type TuningRecord,
} from "../compiler/tuning.ts";
import { defaultDenseConfig, DENSE_SPACE } from "../kernels/attention_dense.ts";
import { KV_APPEND_DEFAULT, KV_APPEND_SPACE } from "../kernels/kv_append.ts";
import { SPARQ_DEFAULT, SPARQ_SPACE } from "../kernels/sparq.ts";
import { relativeL2 } from "../kernels/compare.ts";
import type { Gpu } from "./device.ts";
import { Executor } from "./executor.ts";
import { L2Scrub } from "./l2_scrub.ts";
import { fillUniform } from "./fill.ts";
import { summarize } from "./stats.ts";
import { adapterId, type TuneCache } from "./tune_cache.ts";

/**
 * The search space of each family and the default an untuned plan takes for a problem (each
 * kernel file declares its own), which is the baseline the tuner measures against.
 */
export const SPACES: Record<
  TuningProblem["family"],
  { defaultFor: (p: TuningProblem) => TuningConfig; space: readonly TuningConfig[] }
> = {
  kv_append: { defaultFor: () => KV_APPEND_DEFAULT, space: KV_APPEND_SPACE },
  attention_dense: { defaultFor: (p) => defaultDenseConfig(p), space: DENSE_SPACE },
  attention_sparq: { defaultFor: () => SPARQ_DEFAULT, space: SPARQ_SPACE },
};

/** What the tuner did for one problem (the plan records these). */
export type TuneRecord = TuningRecord;

/** Options of {@link tune}. */
export interface TuneOptions {
  target: Target;
  cache: TuneCache;
  /**
   * Nanoseconds per timestamp tick; called once, before the first measurement (never when the
   * cache has every answer), since calibrating takes GPU time.
   */
  nsPerTick: () => Promise<number>;
  /** Timed repetitions per candidate. */
  reps?: number;
  /** Replaces the families' search spaces (tests use small ones). */
  spaces?: Partial<Record<TuningProblem["family"], TuningConfig[]>>;
  progress?: (line: string) => void;
}

/** The graph a problem is measured on, and which node and output to time and compare. */
function benchOf(p: TuningProblem) {
  const method: AttentionMethod = p.family === "attention_sparq"
    ? { kind: "sparq", ...p.sparq! }
    : p.family === "kv_append" && p.sparqLayout
    ? { kind: "sparq", r: Math.max(1, p.headDim / 4), k: 16, localWindow: 0 }
    : { kind: "dense" };
  const graph = buildAttentionGraph({
    batch: p.batch,
    heads: p.heads,
    kvHeads: p.kvHeads,
    headDim: p.headDim,
    maxSeq: p.maxSeq,
    kvDtype: p.kvDtype,
    method,
    append: p.family === "kv_append",
  });
  return p.family === "kv_append"
    ? { graph, node: "kv_append", output: T.kCache }
    : { graph, node: T.y, output: T.y };
}

/** SHA-256 of the default configuration's kernel sources: changes when the kernels change. */
async function sourceHash(sources: string[]): Promise<string> {
  const bytes = new TextEncoder().encode(sources.join("\n\0\n"));
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return Array.from(digest.slice(0, 12), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** The program a configuration compiles to on the problem's bench graph. */
function programOf(p: TuningProblem, config: TuningConfig, target: Target): Program {
  return compileGraph(benchOf(p).graph, target, new Map([[tuningBucket(p), config]]));
}

/**
 * What a program runs: its kernels' sources and its dispatches. Configurations with the same
 * signature run the same work (the lowering may override a field, as SparQ's stage-1 block where
 * stage 2a runs inside stage 1), so one measurement serves them all.
 */
function signature(program: Program): string {
  return JSON.stringify([
    program.kernels.map((k) => k.source),
    program.schedule.map((d) => [d.kernel, d.dispatch]),
  ]);
}

/** Runs one configuration: its output (after one run) and its GPU time samples. */
async function measure(
  gpu: Gpu,
  p: TuningProblem,
  program: Program,
  options: TuneOptions & { ticks: number; scrub?: L2Scrub },
): Promise<
  { output: Float32Array | Uint32Array | Int32Array; ns: number; kernelsNs: Record<string, number> }
> {
  const bench = benchOf(p);
  const executor = await Executor.create(gpu, program);
  try {
    let seed = 1;
    for (const [name, t] of Object.entries(program.tensors)) {
      if ((t.role === "input" || t.role === "state") && t.dtype !== "u32") {
        fillUniform(executor, name, seed++);
      }
    }
    executor.write(T.positions, Array(p.batch).fill(p.maxSeq - 1));
    executor.run(1);
    const output = await executor.read(bench.output);
    // About 100 ms of this work on a GPU, by the transfer model at 1 TB/s, before timing.
    const bytes = attentionTransferBytes({
      batch: p.batch,
      heads: p.heads,
      kvHeads: p.kvHeads,
      headDim: p.headDim,
      seqLen: p.maxSeq,
      kvBytes: dtypeBytes(p.kvDtype),
    }).dense;
    await executor.warmUp(gpu.info.isFallbackAdapter ? 0 : 100e6, bytes / 1e3);
    const profile = await executor.profile({
      reps: options.reps ?? 20,
      nsPerTick: options.ticks,
      nodes: new Set([bench.node]),
      stageOf: (d) => d.kernel,
      scrub: options.scrub,
    });
    const kernelsNs: Record<string, number> = {};
    for (const stage of profile.stages) {
      kernelsNs[stage.stage] = (kernelsNs[stage.stage] ?? 0) + summarize(stage.samplesNs).median;
    }
    return { output, ns: summarize(profile.totalNs).median, kernelsNs };
  } finally {
    executor.destroy();
  }
}

const describe = (c: TuningConfig) => Object.entries(c).map(([k, v]) => `${k} ${v}`).join(", ");

/** The fastest configuration of a search, with its time per kernel. */
interface Best {
  config: TuningConfig;
  ns: number;
  kernelsNs: Record<string, number>;
}

/**
 * Measures every candidate of `space` on problem `p` against `start` (the default configuration,
 * its program and its run), and returns the fastest whose output matches the default's, with the
 * candidates rejected for differing. Candidates the target cannot hold (workgroup memory) are
 * skipped; one that compiles to the same kernels and dispatches as one measured before is not
 * measured again. Progress lines start with `label`.
 */
async function searchSpace(
  gpu: Gpu,
  p: TuningProblem,
  space: TuningConfig[],
  start: { config: TuningConfig; program: Program; run: Awaited<ReturnType<typeof measure>> },
  measuring: TuneOptions & { ticks: number; scrub?: L2Scrub },
  label: string,
): Promise<{ best: Best; rejected: string[] }> {
  const progress = measuring.progress ?? (() => {});
  // Each signature measured once, by the first configuration that compiled to it.
  const seen = new Map([[signature(start.program), start.config]]);
  let best: Best = { config: start.config, ns: start.run.ns, kernelsNs: start.run.kernelsNs };
  const rejected: string[] = [];
  for (const [i, config] of space.entries()) {
    progress(`${label}: candidate ${i + 1}/${space.length} (${describe(config)})`);
    if (JSON.stringify(config) === JSON.stringify(start.config)) continue;
    let program;
    try {
      program = programOf(p, config, measuring.target);
    } catch (error) {
      if (error instanceof Error && /workgroup memory/.test(error.message)) continue;
      throw error;
    }
    const work = signature(program);
    const same = seen.get(work);
    if (same) {
      progress(`  the same kernels and dispatches as ${describe(same)}: not measured again`);
      continue;
    }
    seen.set(work, config);
    const result = await measure(gpu, p, program, measuring);
    const error = relativeL2(result.output, start.run.output);
    if (!(error <= 1e-4)) {
      rejected.push(`${describe(config)} (output differs: relative L2 ${error.toExponential(1)})`);
      continue;
    }
    if (result.ns < best.ns) best = { config, ns: result.ns, kernelsNs: result.kernelsNs };
  }
  return { best, rejected };
}

/**
 * Tunes every problem (or takes it from the cache) and returns the choices for the compiler
 * and a record of each; saves the cache when anything was measured.
 *
 * @example
 * ```ts
 * import { tune } from "./tuner.ts";
 * // const { choices, records } = await tune(gpu, tuningProblems(graph), {
 * //   target, cache, nsPerTick: () => Promise.resolve(1),
 * // });
 * ```
 */
export async function tune(
  gpu: Gpu,
  problems: TuningProblem[],
  options: TuneOptions,
): Promise<{ choices: TuningChoices; records: TuneRecord[] }> {
  const adapter = adapterId(gpu.info);
  const choices = new Map<string, TuningConfig>();
  const records: TuneRecord[] = [];
  const progress = options.progress ?? (() => {});
  let ticks: number | undefined;
  // Made with the first measurement, for all of them: a cold L2 before each timed repetition.
  let scrub: L2Scrub | undefined;
  try {
    for (const [index, p] of problems.entries()) {
      const bucket = tuningBucket(p);
      const label = `tuning ${index + 1}/${problems.length} ${bucket}`;
      const family = SPACES[p.family];
      const defaultConfig = family.defaultFor(p);
      const defaults = programOf(p, defaultConfig, options.target);
      const hash = await sourceHash(defaults.kernels.map((k) => k.source));
      const cached = options.cache.lookup(adapter, bucket, hash);
      if (cached) {
        choices.set(bucket, cached.choice as unknown as TuningConfig);
        records.push({
          bucket,
          choice: cached.choice,
          defaultConfig: { ...defaultConfig },
          defaultNs: cached.defaultNs,
          bestNs: cached.bestNs,
          kernelsNs: cached.kernelsNs,
          source: "cache",
          candidates: cached.candidates,
          rejected: [],
        });
        progress(`${label}: from the cache`);
        continue;
      }
      if (ticks === undefined) {
        ticks = await options.nsPerTick();
        scrub = L2Scrub.forTiming(gpu);
      }
      const measuring = { ...options, ticks, scrub };
      const base = await measure(gpu, p, defaults, measuring);
      const space = (options.spaces?.[p.family] ?? family.space).filter((c) =>
        Object.values(c).every((v) => v <= options.target.limits.maxComputeInvocationsPerWorkgroup)
      );
      const { best, rejected } = await searchSpace(
        gpu,
        p,
        space,
        { config: defaultConfig, program: defaults, run: base },
        measuring,
        label,
      );
      const defaultNs = base.ns;
      choices.set(bucket, best.config);
      records.push({
        bucket,
        choice: { ...best.config },
        defaultConfig: { ...defaultConfig },
        defaultNs,
        bestNs: best.ns,
        kernelsNs: { default: base.kernelsNs, best: best.kernelsNs },
        source: "measured",
        candidates: space.length,
        rejected,
      });
      options.cache.store({
        adapter,
        bucket,
        sourceHash: hash,
        choice: { ...best.config },
        defaultNs,
        bestNs: best.ns,
        kernelsNs: { default: base.kernelsNs, best: best.kernelsNs },
        candidates: space.length,
        measuredAt: new Date().toISOString(),
      });
    }
  } finally {
    // Freed on an error too: a caller that goes on keeps its GPU memory.
    scrub?.destroy();
  }
  if (ticks !== undefined) await options.cache.save();
  return { choices, records };
}
