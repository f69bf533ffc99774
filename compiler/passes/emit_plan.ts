/**
 * Pass 6: emission. Deduplicates kernels (same source, entry point and constants → one kernel,
 * however many layers use it), resolves every binding of every dispatch to a buffer range, and
 * assembles the versioned plan, validated against its schema.
 *
 * @module
 */
import type { KernelSpec } from "../../kernels/kernel_spec.ts";
import type { BuildOptions } from "../build_options.ts";
import type { Graph } from "../ir.ts";
import type { ModelConfig } from "../model_config.ts";
import { Plan, PLAN_VERSION, type PlanDispatch, type PlanKernel, Program } from "../plan.ts";
import { planStats } from "../plan_stats.ts";
import type { Target } from "../target.ts";
import type { TuningRecord } from "../tuning.ts";
import type { Lowered } from "./lower_context.ts";
import { type BufferPlan, PARAMS_SLOT } from "./plan_buffers.ts";

/** Everything the earlier passes produced. */
export interface EmitInput {
  config: ModelConfig;
  options: BuildOptions;
  target: Target;
  graph: Graph;
  lowered: Lowered;
  buffers: BufferPlan;
  tuning?: TuningRecord[];
}

function kernelTable() {
  const byKey = new Map<string, PlanKernel>();
  const usedIds = new Set<string>();
  return {
    kernels: () => [...byKey.values()],
    idOf(spec: KernelSpec): string {
      const key = JSON.stringify([spec.source, spec.entryPoint, spec.constants]);
      const known = byKey.get(key);
      if (known) return known.id;
      let id = spec.name;
      for (let n = 2; usedIds.has(id); n++) id = `${spec.name}_${n}`;
      usedIds.add(id);
      byKey.set(key, { id, file: `${id}.wgsl`, ...spec });
      return id;
    },
  };
}

/**
 * Builds the program — deduplicated kernels, buffers, tensor placement and the schedule with
 * every binding resolved — from the lowering and the buffer plan.
 *
 * @example
 * ```ts
 * import { emitProgram } from "./emit_plan.ts";
 * // emitProgram(lowered, buffers).schedule.length
 * ```
 */
export function emitProgram(lowered: Lowered, buffers: BufferPlan): Program {
  const table = kernelTable();
  const schedule: PlanDispatch[] = lowered.invocations.map((inv, step) => {
    const bindings = inv.args.map((name, binding) => {
      const shards = buffers.tensors.get(name)!.shards;
      const shard = shards.length > 1 ? shards[inv.shard] : shards[0];
      return { binding, tensor: name, buffer: shard.buffer, offset: 0, size: shard.bytes };
    });
    bindings.push({
      binding: inv.args.length,
      tensor: "params",
      buffer: buffers.paramsBuffer,
      offset: step * PARAMS_SLOT,
      size: 16,
    });
    return {
      kernel: table.idOf(inv.kernel),
      node: inv.node,
      shard: inv.shard,
      dispatch: inv.dispatch,
      bindings,
      params: inv.params,
    };
  });
  return Program.parse({
    kernels: table.kernels(),
    buffers: buffers.buffers,
    tensors: Object.fromEntries(
      [...buffers.tensors].map(([name, t]) => [name, {
        shape: t.shape,
        dtype: t.dtype,
        role: t.role,
        shards: t.shards,
      }]),
    ),
    schedule,
  });
}

/**
 * Builds the plan of a decode step: its program, what it was compiled from, its figures.
 *
 * @example
 * ```ts
 * import { emitPlan } from "./emit_plan.ts";
 * // emitPlan({ config, options, target, graph, lowered, buffers }).stats.dispatchesPerStep
 * ```
 */
export function emitPlan(input: EmitInput): Plan {
  const program = emitProgram(input.lowered, input.buffers);
  return Plan.parse({
    format: "sparqc-plan",
    version: PLAN_VERSION,
    model: input.config,
    options: input.options,
    target: input.target,
    graph: input.graph,
    ...program,
    tuning: input.tuning ?? [],
    stats: planStats({
      ...input,
      kernels: program.kernels,
      dispatches: program.schedule.length,
    }),
  });
}
