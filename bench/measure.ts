/**
 * Measures one group of points: compiles each method's attention graph, fills it with the
 * bench's seeded data on the GPU, checks SparQ's output against dense attention on the same
 * data (both data modes), and times the call with timestamp queries — with an untimed pass
 * before each repetition that reads other data through the L2 (runtime/l2_scrub.ts), so every
 * repetition reads from memory, however few bytes it reads.
 *
 * @module
 */
import { ATTENTION_TENSORS as T, buildAttentionGraph } from "../compiler/build_attention_graph.ts";
import { compileGraph } from "../compiler/compile.ts";
import { dtypeBytes } from "../compiler/ir.ts";
import type { Program } from "../compiler/plan.ts";
import type { Target } from "../compiler/target.ts";
import { attentionTransferBytes } from "../compiler/transfer.ts";
import { UserError } from "../compiler/user_error.ts";
import { relativeL2 } from "../kernels/compare.ts";
import type { Gpu } from "../runtime/device.ts";
import { Executor } from "../runtime/executor.ts";
import type { L2Scrub } from "../runtime/l2_scrub.ts";
import { summarize } from "../runtime/stats.ts";
import { DATA_MODES, type DataMode, generateAttentionData } from "./data.ts";
import type { PointLine, ResultLine, RunHeader } from "./results.ts";
import type { Group, Point } from "./sweep.ts";

/** What a group's measurement needs from the run. */
export interface MeasureContext {
  gpu: Gpu;
  target: Target;
  header: RunHeader;
  /** Data mode the timings run on; errors are measured on every mode. */
  data: DataMode;
  seed: number;
  /** The cold-L2 pass before each timed repetition (none on a software adapter). */
  scrub?: L2Scrub;
}

function programOf(p: Point, target: Target): Program {
  const graph = buildAttentionGraph({
    batch: p.batch,
    heads: p.heads,
    kvHeads: p.kvHeads,
    headDim: p.headDim,
    maxSeq: p.seq,
    kvDtype: p.kvDtype,
    method: p.method === "dense"
      ? { kind: "dense" }
      : { kind: "sparq", r: p.r!, k: p.k!, localWindow: 0 },
    append: false,
  });
  return compileGraph(graph, target);
}

function bytesOf(p: Point): { dense: number; sparq: number } {
  return attentionTransferBytes(
    {
      batch: p.batch,
      heads: p.heads,
      kvHeads: p.kvHeads,
      headDim: p.headDim,
      seqLen: p.seq,
      kvBytes: dtypeBytes(p.kvDtype),
    },
    p.method === "sparq" ? { r: p.r!, k: p.k! } : undefined,
  );
}

interface Measured {
  time: ReturnType<typeof summarize>;
  stages: Record<string, ReturnType<typeof summarize>>;
  outputs: Record<string, Float32Array>;
  shards: number;
}

/** Runs one point's program: outputs on every data mode, then timings on the timing mode. */
async function runPoint(ctx: MeasureContext, p: Point, program: Program): Promise<Measured> {
  const executor = await Executor.create(ctx.gpu, program);
  try {
    const shape = {
      batch: p.batch,
      heads: p.heads,
      kvHeads: p.kvHeads,
      headDim: p.headDim,
      seq: p.seq,
    };
    const outputs: Record<string, Float32Array> = {};
    for (const mode of [...DATA_MODES.filter((m) => m !== ctx.data), ctx.data]) {
      generateAttentionData(executor, shape, mode, ctx.seed);
      executor.run(1);
      outputs[mode] = await executor.read(T.y) as Float32Array;
    }
    const estimateNs = bytesOf(p)[p.method] / (0.3 * ctx.header.roofline.gbps);
    const budgetNs = ctx.gpu.info.isFallbackAdapter ? 0.5e9 : 0.25e9;
    const reps = Math.max(
      ctx.gpu.info.isFallbackAdapter ? 3 : 5,
      Math.min(40, Math.floor(budgetNs / estimateNs)),
    );
    // Clocks up first: about 100 ms of this work on a GPU (a few runs on a software adapter).
    await executor.warmUp(ctx.gpu.info.isFallbackAdapter ? 0 : 100e6, estimateNs);
    const profile = await executor.profile({
      reps,
      nsPerTick: ctx.header.nsPerTick,
      stageOf: (d) => d.kernel,
      scrub: ctx.scrub,
    });
    const stages: Record<string, ReturnType<typeof summarize>> = {};
    for (const s of profile.stages) stages[s.stage] = summarize(s.samplesNs);
    return {
      time: summarize(profile.totalNs),
      stages,
      outputs,
      shards: program.tensors[T.kCache].shards.length,
    };
  } finally {
    executor.destroy();
  }
}

/**
 * The line of a point that was not run.
 *
 * @example
 * ```ts
 * // await emit(skipped(point, "needs 137 GiB, more than the 78.6 GiB budget"));
 * ```
 */
export function skipped(p: Point, reason: string): ResultLine {
  const { key: _, ...fields } = p;
  return { type: "skipped", key: p.key, ...fields, reason };
}

/** Why a program cannot run here, or undefined if it can. */
function unfit(program: Program, target: Target): string | undefined {
  const total = program.buffers.reduce((sum, b) => sum + b.bytes, 0);
  if (total > target.memoryBudget) {
    return `needs ${(total / 2 ** 30).toFixed(1)} GiB, more than the ${
      (target.memoryBudget / 2 ** 30).toFixed(1)
    } GiB budget`;
  }
  return undefined;
}

/**
 * Measures a group; calls `emit` with each line as soon as it is known, skipping points in
 * `done` (a resumed run), whose dense times come from `recordedDense`.
 *
 * @example
 * ```ts
 * // await measureGroup(ctx, group, done, recordedDense, (line) => writer.append(line));
 * ```
 */
export async function measureGroup(
  ctx: MeasureContext,
  group: Group,
  done: ReadonlySet<string>,
  recordedDense: ReadonlyMap<string, PointLine>,
  emit: (line: ResultLine) => Promise<void>,
): Promise<void> {
  const todo = [group.dense, ...group.sparq].filter((p) => !done.has(p.key));
  if (todo.length === 0) return;
  const programs = new Map<Point, Program | string>();
  for (const p of [group.dense, ...group.sparq]) {
    try {
      // Compile without the budget so that the bench, not the compiler, words the reason.
      const program = programOf(p, { ...ctx.target, memoryBudget: Number.MAX_SAFE_INTEGER });
      programs.set(p, unfit(program, ctx.target) ?? program);
    } catch (error) {
      if (!(error instanceof UserError)) throw error;
      programs.set(p, error.message);
    }
  }
  const denseProgram = programs.get(group.dense)!;
  if (typeof denseProgram === "string") {
    for (const p of todo) await emit(skipped(p, denseProgram));
    return;
  }
  let dense: Measured;
  try {
    dense = await runPoint(ctx, group.dense, denseProgram);
  } catch (error) {
    if (!(error instanceof UserError)) throw error;
    for (const p of todo) await emit(skipped(p, error.message));
    return;
  }
  const denseBytes = bytesOf(group.dense).dense;
  const roofline = ctx.header.roofline.gbps;
  const line = (
    p: Point,
    m: Measured,
    speedup: number,
    errors: Record<string, number>,
  ): PointLine => {
    const bytes = bytesOf(p)[p.method];
    const { key: _, ...fields } = p;
    return {
      type: "point",
      key: p.key,
      ...fields,
      time: m.time,
      stages: p.method === "sparq" ? m.stages : {},
      bytes,
      achievedGBps: bytes / m.time.median,
      denseEquivalentGBps: denseBytes / m.time.median,
      rooflinePercent: (100 * bytes / m.time.median) / roofline,
      speedup,
      theoreticalSpeedup: denseBytes / bytes,
      errorVsDense: errors,
      shards: m.shards,
      scrubL2Bytes: ctx.scrub?.bytes ?? 0,
    };
  };
  if (!done.has(group.dense.key)) await emit(line(group.dense, dense, 1, {}));
  const denseMedian = recordedDense.get(group.dense.key)?.time.median ?? dense.time.median;

  for (const p of group.sparq) {
    if (done.has(p.key)) continue;
    const program = programs.get(p)!;
    if (typeof program === "string") {
      await emit(skipped(p, program));
      continue;
    }
    let m: Measured;
    try {
      m = await runPoint(ctx, p, program);
    } catch (error) {
      if (!(error instanceof UserError)) throw error;
      await emit(skipped(p, error.message));
      continue;
    }
    const errors: Record<string, number> = {};
    for (const mode of DATA_MODES) errors[mode] = relativeL2(m.outputs[mode], dense.outputs[mode]);
    await emit(line(p, m, denseMedian / m.time.median, errors));
  }
}
