/**
 * Pass 5: buffer planning. Every weight and state shard gets a buffer of its own; graph inputs
 * and persistent scratch tensors get theirs; activations and other scratch tensors share a pool,
 * a buffer being reused once the last dispatch that reads its tenant is done (never within one
 * dispatch, where WebGPU forbids a writable binding to alias another). All dispatch params live
 * in one uniform buffer, one 256-byte slot per dispatch. The total is checked against the
 * target's memory budget.
 *
 * @module
 */
import { dtypeBytes, type Graph, type TensorType } from "../ir.ts";
import type { Target } from "../target.ts";
import { UserError } from "../user_error.ts";
import type { Lowered } from "./lower_context.ts";
import { bindingLimit, type Shardings, wordAligned } from "./plan_shards.ts";

/** What a buffer holds. */
export type BufferRole = "weight" | "state" | "input" | "activation" | "params";

/** One GPU buffer of the plan. */
export interface PlannedBuffer {
  id: number;
  label: string;
  role: BufferRole;
  bytes: number;
}

/** Where a tensor's rows live. */
export interface PlacedShard {
  buffer: number;
  firstRow: number;
  rows: number;
  bytes: number;
}

/** A tensor and the buffers that hold it. */
export interface PlacedTensor extends TensorType {
  role: "input" | "weight" | "state" | "activation" | "scratch";
  shards: PlacedShard[];
}

/** The output of buffer planning. */
export interface BufferPlan {
  buffers: PlannedBuffer[];
  tensors: Map<string, PlacedTensor>;
  /** The params uniform buffer; dispatch i uses bytes [i·PARAMS_SLOT, +16). */
  paramsBuffer: number;
}

/** Bytes between two dispatches' params in the uniform buffer (WebGPU's largest alignment). */
export const PARAMS_SLOT = 256;

const elements = (t: TensorType) => t.shape.reduce((a, b) => a * b, 1);
const tensorBytes = (t: TensorType) => wordAligned(elements(t) * dtypeBytes(t.dtype));

/**
 * Formats bytes in binary units, e.g. `12.6 GiB`.
 *
 * @example
 * ```ts
 * import { formatBytes } from "./plan_buffers.ts";
 * formatBytes(3 * 1024 ** 3); // "3.00 GiB"
 * ```
 */
export function formatBytes(bytes: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${bytes} B` : `${value.toFixed(value < 10 ? 2 : 1)} ${units[unit]}`;
}

/**
 * Plans the buffers of a lowered graph.
 *
 * @example
 * ```ts
 * import { planBuffers } from "./plan_buffers.ts";
 * import { inferShapes } from "./infer_shapes.ts";
 * import { lower } from "./lower.ts";
 * import { planShards } from "./plan_shards.ts";
 * import { validate } from "./validate.ts";
 * import { buildDecodeGraph } from "../build_graph.ts";
 * import { defaultOptions } from "../build_options.ts";
 * import { PRESETS } from "../presets.ts";
 * import { TARGETS } from "../target.ts";
 * const model = PRESETS.get("tiny-llama")!;
 * const target = TARGETS.get("h100")!;
 * const graph = validate(buildDecodeGraph(model, defaultOptions(model, "sparq")));
 * const types = inferShapes(graph);
 * const shards = planShards(graph, target);
 * const plan = planBuffers(graph, types, shards, lower(graph, types, shards, target), target);
 * ```
 */
export function planBuffers(
  graph: Graph,
  types: Map<string, TensorType>,
  shardings: Shardings,
  lowered: Lowered,
  target: Target,
): BufferPlan {
  const buffers: PlannedBuffer[] = [];
  const tensors = new Map<string, PlacedTensor>();
  const newBuffer = (label: string, role: BufferRole, bytes: number) => {
    const buffer = { id: buffers.length, label, role, bytes };
    buffers.push(buffer);
    return buffer;
  };

  for (const [name, decl] of Object.entries(graph.tensors)) {
    const type = { shape: decl.shape, dtype: decl.dtype };
    const sharding = shardings.get(name);
    if (sharding) {
      const many = sharding.shards.length > 1;
      tensors.set(name, {
        ...type,
        role: decl.role,
        shards: sharding.shards.map((s, i) => ({
          ...s,
          buffer: newBuffer(many ? `${name}#${i}` : name, decl.role, s.bytes).id,
        })),
      });
    } else {
      const bytes = tensorBytes(type);
      tensors.set(name, {
        ...type,
        role: decl.role,
        shards: [{ buffer: newBuffer(name, decl.role, bytes).id, firstRow: 0, rows: 1, bytes }],
      });
    }
  }

  planPool(graph, types, lowered, target, tensors, newBuffer);
  const paramsBuffer = newBuffer(
    "params",
    "params",
    Math.max(1, lowered.invocations.length) * PARAMS_SLOT,
  ).id;

  const total = buffers.reduce((sum, b) => sum + b.bytes, 0);
  if (total > target.memoryBudget) {
    const by = (role: BufferRole) =>
      formatBytes(buffers.filter((b) => b.role === role).reduce((s, b) => s + b.bytes, 0));
    throw new UserError(
      `the plan needs ${formatBytes(total)} (weights ${by("weight")}, KV cache ${by("state")}, ` +
        `activations ${by("activation")}) but target ${target.name} has ` +
        `${formatBytes(target.memoryBudget)}; lower --batch or --max-seq, or set --memory-budget`,
    );
  }
  return { buffers, tensors, paramsBuffer };
}

/** Places activations and scratch tensors in reused pool buffers, by liveness. */
function planPool(
  graph: Graph,
  types: Map<string, TensorType>,
  lowered: Lowered,
  target: Target,
  tensors: Map<string, PlacedTensor>,
  newBuffer: (label: string, role: BufferRole, bytes: number) => PlannedBuffer,
): void {
  const firstUse = new Map<string, number>();
  const lastUse = new Map<string, number>();
  lowered.invocations.forEach((inv, step) => {
    for (const name of inv.args) {
      if (graph.tensors[name]) continue;
      if (!firstUse.has(name)) firstUse.set(name, step);
      lastUse.set(name, step);
    }
  });
  for (const output of graph.outputs) lastUse.set(output, Infinity);

  const limit = bindingLimit(target);
  const pool: { buffer: PlannedBuffer; freeAfter: number }[] = [];
  const order = [...firstUse.entries()].sort((a, b) => a[1] - b[1]);
  for (const [name, step] of order) {
    const scratch = lowered.scratch.get(name);
    const type = scratch ?? types.get(name)!;
    const bytes = tensorBytes(type);
    if (bytes > limit) {
      throw new UserError(
        `${scratch ? `scratch tensor of node '${scratch.node}'` : "activation"} '${name}' ` +
          `[${type.shape.join(", ")}] needs ${formatBytes(bytes)}, more than one binding on ` +
          `target ${target.name} (${formatBytes(limit)}); lower --batch or --max-seq`,
      );
    }
    if (scratch?.persistent) {
      const buffer = newBuffer(name, "activation", bytes);
      tensors.set(name, {
        shape: type.shape,
        dtype: type.dtype,
        role: "scratch",
        shards: [{ buffer: buffer.id, firstRow: 0, rows: 1, bytes }],
      });
      continue;
    }
    // Best fit among free buffers; else grow the largest free one; else a new buffer.
    const free = pool.filter((entry) => entry.freeAfter < step);
    const fits = free.filter((e) => e.buffer.bytes >= bytes)
      .sort((a, b) => a.buffer.bytes - b.buffer.bytes)[0];
    let entry = fits ?? free.sort((a, b) => b.buffer.bytes - a.buffer.bytes)[0];
    if (!entry) {
      entry = { buffer: newBuffer(`pool.${pool.length}`, "activation", bytes), freeAfter: 0 };
      pool.push(entry);
    }
    entry.buffer.bytes = Math.max(entry.buffer.bytes, bytes);
    entry.freeAfter = lastUse.get(name)!;
    tensors.set(name, {
      shape: type.shape,
      dtype: type.dtype,
      role: scratch ? "scratch" : "activation",
      shards: [{ buffer: entry.buffer.id, firstRow: 0, rows: 1, bytes }],
    });
  }
}
