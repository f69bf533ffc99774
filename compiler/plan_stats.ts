/**
 * The statistics a plan carries: counts, memory by kind, and the bytes one decode step moves
 * by the transfer model (dense against SparQ) at the maximum context.
 *
 * @module
 */
import type { BuildOptions } from "./build_options.ts";
import { dtypeBytes, type Graph } from "./ir.ts";
import type { ModelConfig } from "./model_config.ts";
import type { BufferPlan } from "./passes/plan_buffers.ts";
import type { PlanStats } from "./plan.ts";
import type { Target } from "./target.ts";
import { attentionTransferBytes } from "./transfer.ts";

/**
 * The memory of each kind of buffer, the KV cache tensors told apart by their place among a
 * kv_append node's outputs (dense: K, V; SparQ: K, Kᵀ, V, V_mean).
 */
function memoryOf(graph: Graph, buffers: BufferPlan, target: Target): PlanStats["memory"] {
  const cacheKind = new Map<string, "kCache" | "ktCache" | "vCache" | "vMean">();
  for (const node of graph.nodes) {
    if (node.op !== "kv_append") continue;
    const kinds = node.attrs.sparq
      ? (["kCache", "ktCache", "vCache", "vMean"] as const)
      : (["kCache", "vCache"] as const);
    node.outputs.forEach((name, i) => cacheKind.set(name, kinds[i]));
  }
  const memory = {
    weights: 0,
    kCache: 0,
    ktCache: 0,
    vCache: 0,
    vMean: 0,
    activations: 0,
    inputs: 0,
    params: 0,
    total: 0,
    budget: target.memoryBudget,
  };
  for (const [name, tensor] of buffers.tensors) {
    const kind = cacheKind.get(name);
    if (kind) memory[kind] += tensor.shards.reduce((s, shard) => s + shard.bytes, 0);
  }
  for (const buffer of buffers.buffers) {
    memory.total += buffer.bytes;
    if (buffer.role === "weight") memory.weights += buffer.bytes;
    if (buffer.role === "activation") memory.activations += buffer.bytes;
    if (buffer.role === "input") memory.inputs += buffer.bytes;
    if (buffer.role === "params") memory.params += buffer.bytes;
  }
  return memory;
}

/**
 * Weight bytes one step reads: every weight once, except that the embedding lookup reads only
 * the batch's rows (the logits read a tied table in full).
 */
function weightBytesPerStep(graph: Graph, config: ModelConfig, options: BuildOptions): number {
  let bytes = 0;
  for (const [name, t] of Object.entries(graph.tensors)) {
    if (t.role !== "weight") continue;
    const size = t.shape.reduce((a, b) => a * b, 1) * dtypeBytes(t.dtype);
    if (name !== "embed.weight" || config.tieWordEmbeddings) bytes += size;
  }
  return bytes + options.batch * config.hiddenSize * dtypeBytes(options.weightDtype);
}

/**
 * Computes a plan's statistics.
 *
 * @example
 * ```ts
 * import { planStats } from "./plan_stats.ts";
 * // planStats(config, options, target, graph, buffers, kernelCount, placeholderCount, dispatches)
 * ```
 */
export function planStats(
  input: {
    config: ModelConfig;
    options: BuildOptions;
    target: Target;
    graph: Graph;
    buffers: BufferPlan;
    kernels: { placeholder: boolean }[];
    dispatches: number;
  },
): PlanStats {
  const { config, options, graph } = input;
  const sparq = options.attention.kind === "sparq"
    ? { r: options.attention.r, k: options.attention.k }
    : { r: Math.max(1, config.headDim / 4), k: 128 };
  const perLayer = attentionTransferBytes({
    batch: options.batch,
    heads: config.numHeads,
    kvHeads: config.numKvHeads,
    headDim: config.headDim,
    seqLen: options.maxSeq,
    kvBytes: dtypeBytes(options.kvDtype),
  }, sparq);
  return {
    layers: config.numLayers,
    nodes: graph.nodes.length,
    kernels: input.kernels.length,
    placeholderKernels: input.kernels.filter((k) => k.placeholder).length,
    dispatchesPerStep: input.dispatches,
    memory: memoryOf(graph, input.buffers, input.target),
    transfer: {
      seqLen: options.maxSeq,
      sparq,
      attentionDense: perLayer.dense * config.numLayers,
      attentionSparq: perLayer.sparq * config.numLayers,
      weights: weightBytesPerStep(graph, config, options),
    },
  };
}
