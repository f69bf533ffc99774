/**
 * `bench --decode`: whole decode steps of a model, dense against SparQ, at each batch and
 * context. Each point compiles the model's plan for the device (a plan over the memory budget
 * is reported as skipped before anything is allocated), fills the weights (seeded random, or a
 * checkpoint) and the KV cache on the GPU, times the step with timestamp queries — once as one
 * pass, once split by kind of kernel — and times greedy generation with tokens read back every
 * step and every N steps.
 *
 * @module
 */
import { compile } from "../compiler/compile.ts";
import type { ModelConfig } from "../compiler/model_config.ts";
import type { Plan } from "../compiler/plan.ts";
import type { Target } from "../compiler/target.ts";
import { UserError } from "../compiler/user_error.ts";
import { uniformStream } from "../kernels/random_problem.ts";
import { Decoder } from "../runtime/decoder.ts";
import type { Gpu } from "../runtime/device.ts";
import { generate } from "../runtime/generation.ts";
import { loadHfWeights } from "../runtime/hf_weights.ts";
import { summarize } from "../runtime/stats.ts";
import { skipped } from "./measure.ts";
import type { DecodeLine, GenerationTiming, ResultLine, RunHeader } from "./results.ts";
import type { Group, Point } from "./sweep.ts";

/** What a decode group's measurement needs from the run. */
export interface DecodeContext {
  gpu: Gpu;
  target: Target;
  header: RunHeader;
  models: ReadonlyMap<string, ModelConfig>;
  seed: number;
  /** Progress lines (weight loading). */
  log: (line: string) => void;
}

/**
 * Runs of each generation loop timed (its wall clock moved by ~8% between single runs on the
 * H100: llama2-7b S=4k SparQ, 112 against 121 tokens/s reading every 32).
 */
const GENERATION_RUNS = 3;

/** The kind of kernel a dispatch belongs to, for the step's breakdown. */
function kindOf(op: string): string {
  if (op === "logits") return "matmul";
  return ["attention", "kv_append", "matmul"].includes(op) ? op : "other";
}

/**
 * Decode keys: the attention sweep's keys with a "decode" prefix, so both kinds of line can
 * share a run without clashing.
 *
 * @example
 * ```ts
 * import { decodeGroups } from "./decode.ts";
 * // decodeGroups(sweepGroups(models, options))[0].dense.key; // "decode llama2-7b B1 S4096 f16 dense"
 * ```
 */
export function decodeGroups(groups: Group[]): Group[] {
  const prefixed = (p: Point): Point => ({ ...p, key: `decode ${p.key}` });
  return groups.map((g) => ({ dense: prefixed(g.dense), sparq: g.sparq.map(prefixed) }));
}

function planOf(ctx: DecodeContext, p: Point): Plan {
  const config = ctx.models.get(p.model)!;
  const decode = ctx.header.options.decode!;
  return compile(config, {
    batch: p.batch,
    maxSeq: p.seq,
    attention: p.method === "dense"
      ? { kind: "dense" }
      : { kind: "sparq", r: p.r!, k: p.k!, localWindow: 0 },
    kvDtype: p.kvDtype,
    weightDtype: decode.weightDtype,
  }, ctx.target);
}

type Measured = Omit<DecodeLine, "speedup" | "theoreticalSpeedup">;

async function measurePoint(ctx: DecodeContext, p: Point, plan: Plan): Promise<Measured> {
  const decode = ctx.header.options.decode!;
  const decoder = await Decoder.create(ctx.gpu, plan);
  try {
    if (decode.weights) {
      ctx.log(`loading ${decode.weights} into ${p.key}`);
      await loadHfWeights(decoder, decode.weights);
    } else {
      decoder.randomWeights(ctx.seed);
    }
    decoder.randomCache(ctx.seed + 1);
    const next = uniformStream(ctx.seed + 2);
    const vocab = plan.model.vocabSize;
    const tokens = Array.from({ length: p.batch }, () => Math.floor(next() * vocab));
    // The cache holds seq − 1 positions; the step appends the last one and attends over seq.
    decoder.executor.write("tokens", tokens);
    decoder.executor.write("positions", Array(p.batch).fill(p.seq - 1));

    const bytes = {
      weights: plan.stats.transfer.weights,
      kv: p.method === "dense"
        ? plan.stats.transfer.attentionDense
        : plan.stats.transfer.attentionSparq,
    };
    const fallback = ctx.gpu.info.isFallbackAdapter;
    const estimateNs = (bytes.weights + bytes.kv) / (0.5 * ctx.header.roofline.gbps);
    await decoder.executor.warmUp(fallback ? 0 : 200e6, estimateNs);
    const reps = Math.max(
      fallback ? 3 : 8,
      Math.min(30, Math.floor((fallback ? 1e9 : 0.5e9) / estimateNs)),
    );
    const whole = await decoder.executor.profile({
      reps,
      nsPerTick: ctx.header.nsPerTick,
      stageOf: () => "step",
    });
    const opOf = new Map(plan.kernels.map((k) => [k.id, k.op]));
    const split = await decoder.executor.profile({
      reps: Math.max(3, Math.ceil(reps / 3)),
      nsPerTick: ctx.header.nsPerTick,
      stageOf: (d) => kindOf(opOf.get(d.kernel)!),
    });
    const byKind = new Map<string, number[]>();
    for (const stage of split.stages) {
      const sums = byKind.get(stage.stage) ?? stage.samplesNs.map(() => 0);
      stage.samplesNs.forEach((ns, i) => sums[i] += ns);
      byKind.set(stage.stage, sums);
    }
    const stages = Object.fromEntries([...byKind].map(([kind, ns]) => [kind, summarize(ns)]));
    const perKernel = await decoder.executor.profile({
      reps: 3,
      nsPerTick: ctx.header.nsPerTick,
      stageOf: (d) => d.kernel,
    });
    const kernels: Record<string, { ns: number; calls: number }> = {};
    for (const d of plan.schedule) (kernels[d.kernel] ??= { ns: 0, calls: 0 }).calls++;
    for (const stage of perKernel.stages) {
      kernels[stage.stage].ns += summarize(stage.samplesNs).median;
    }
    const splitTotal = summarize(split.totalNs).median;
    const time = summarize(whole.totalNs);

    const generation: GenerationTiming[] = [];
    const steps = Math.min(decode.generateSteps, p.seq - 1);
    if (steps > 0) {
      for (const readEvery of [1, steps]) {
        const start = Array(p.batch).fill(p.seq - steps);
        // Wall-clock time varies from run to run (CPU encoding, map latency): the median of a few.
        const runsMs: number[] = [];
        for (let run = 0; run < GENERATION_RUNS; run++) {
          const { wallMs } = await generate(decoder, {
            tokens,
            positions: start,
            steps,
            readEvery,
          });
          runsMs.push(wallMs);
        }
        const wallMs = summarize(runsMs).median;
        generation.push({
          readEvery,
          steps,
          wallMs,
          tokensPerSecond: (p.batch * steps * 1e3) / wallMs,
          runsMs,
        });
        if (steps === 1) break;
      }
    }
    const { key: _, ...fields } = p;
    const total = bytes.weights + bytes.kv;
    return {
      type: "decode",
      key: p.key,
      ...fields,
      layers: plan.model.numLayers,
      weightDtype: decode.weightDtype,
      time,
      stages,
      kernels,
      attentionShare: (stages.attention?.median ?? 0) / splitTotal,
      tokensPerSecond: (p.batch * 1e9) / time.median,
      bytes,
      achievedGBps: total / time.median,
      rooflinePercent: (100 * total / time.median) / ctx.header.roofline.gbps,
      generation,
    };
  } finally {
    decoder.destroy();
  }
}

/**
 * Measures a decode group (one model, batch and context; dense first), calling `emit` with
 * each line as soon as it is known and skipping points in `done` (a resumed run).
 *
 * @example
 * ```ts
 * // await measureDecodeGroup(ctx, group, done, recordedDense, (line) => writer.append(line));
 * ```
 */
export async function measureDecodeGroup(
  ctx: DecodeContext,
  group: Group,
  done: ReadonlySet<string>,
  recordedDense: ReadonlyMap<string, DecodeLine>,
  emit: (line: ResultLine) => Promise<void>,
): Promise<void> {
  const todo = [group.dense, ...group.sparq].filter((p) => !done.has(p.key));
  if (todo.length === 0) return;
  let dense: Measured | undefined = recordedDense.get(group.dense.key);
  for (const p of [group.dense, ...group.sparq]) {
    if (done.has(p.key)) continue;
    let measured: Measured;
    try {
      // Compiling checks the plan against the memory budget before anything is allocated.
      measured = await measurePoint(ctx, p, planOf(ctx, p));
    } catch (error) {
      if (!(error instanceof UserError)) throw error;
      if (p === group.dense) {
        for (const q of todo) await emit(skipped(q, error.message));
        return;
      }
      await emit(skipped(p, error.message));
      continue;
    }
    if (p === group.dense) dense = measured;
    const denseStepBytes = dense!.bytes.weights + dense!.bytes.kv;
    await emit({
      ...measured,
      speedup: dense!.time.median / measured.time.median,
      theoreticalSpeedup: denseStepBytes / (measured.bytes.weights + measured.bytes.kv),
    });
  }
}
