/**
 * The compiler: config and options → graph → passes → plan. Each pass is one file under
 * `passes/`; this chains them.
 *
 * @module
 */
import { buildDecodeGraph } from "./build_graph.ts";
import { type BuildOptions, checkOptions } from "./build_options.ts";
import type { ModelConfig } from "./model_config.ts";
import { emitPlan, emitProgram } from "./passes/emit_plan.ts";
import { inferShapes } from "./passes/infer_shapes.ts";
import { lower } from "./passes/lower.ts";
import { planBuffers } from "./passes/plan_buffers.ts";
import { planShards } from "./passes/plan_shards.ts";
import { validate } from "./passes/validate.ts";
import type { Graph } from "./ir.ts";
import type { Plan, Program } from "./plan.ts";
import type { Target } from "./target.ts";
import type { TuningChoices, TuningRecord } from "./tuning.ts";

/**
 * Compiles one decode step of a model for a target.
 *
 * @example
 * ```ts
 * import { compile } from "./compile.ts";
 * import { defaultOptions } from "./build_options.ts";
 * import { PRESETS } from "./presets.ts";
 * import { TARGETS } from "./target.ts";
 * const model = PRESETS.get("llama3-8b")!;
 * const plan = compile(model, defaultOptions(model, "sparq"), TARGETS.get("h100")!);
 * plan.stats.dispatchesPerStep; // every dispatch of one decode step
 * ```
 */
export function compile(
  config: ModelConfig,
  options: BuildOptions,
  target: Target,
  tuning?: { choices: TuningChoices; records: TuningRecord[] },
): Plan {
  checkOptions(config, options);
  const graph = validate(buildDecodeGraph(config, options));
  const types = inferShapes(graph);
  const shardings = planShards(graph, target);
  const lowered = lower(graph, types, shardings, target, tuning?.choices);
  const buffers = planBuffers(graph, types, shardings, lowered, target);
  return emitPlan({ config, options, target, graph, lowered, buffers, tuning: tuning?.records });
}

/**
 * Compiles any graph (for instance one attention call) into a program, without the decode
 * step's metadata.
 *
 * @example
 * ```ts
 * import { compileGraph } from "./compile.ts";
 * import { buildAttentionGraph } from "./build_attention_graph.ts";
 * import { TARGETS } from "./target.ts";
 * const graph = buildAttentionGraph({
 *   batch: 1, heads: 8, kvHeads: 2, headDim: 64, maxSeq: 256, kvDtype: "f32",
 *   method: { kind: "dense" }, append: false,
 * });
 * compileGraph(graph, TARGETS.get("h100")!).schedule.length; // 2
 * ```
 */
export function compileGraph(raw: Graph, target: Target, tuning?: TuningChoices): Program {
  const graph = validate(raw);
  const types = inferShapes(graph);
  const shardings = planShards(graph, target);
  const lowered = lower(graph, types, shardings, target, tuning);
  return emitProgram(lowered, planBuffers(graph, types, shardings, lowered, target));
}
