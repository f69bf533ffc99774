/**
 * Which weights an attention node's kernels may read ahead into the L2: those of the matmul
 * that follows it (o_proj). SparQ's kernels at few rows end in a few workgroups per row that
 * select and gather while the rest of the GPU idles; workgroups that finish early, or that are
 * dispatched for it, read the weights meanwhile (kernels/l2_prefetch.ts). Dense attention is
 * bound by its bytes to its end, and reading o_proj inside it made the llama2-7b decode step
 * slower on the H100 (S = 16k: 9.01 → 9.41 ms), so its lowering takes none. Only on targets whose
 * L2 size is known, and only for a weight held in one buffer.
 *
 * @module
 */
import { prefetchBytes } from "../../kernels/l2_prefetch.ts";
import { dtypeBytes, type Graph } from "../ir.ts";
import type { Target } from "../target.ts";
import type { TensorTypes } from "./infer_shapes.ts";
import type { Shardings } from "./plan_shards.ts";

/** A weight tensor to read ahead, and how many of its first vec4s (16 bytes each). */
export interface Prefetch {
  tensor: string;
  words: number;
}

/**
 * The prefetch of node `at` of the graph: for an attention node on a target with a known L2,
 * the weight of the next matmul (or logits) node, as much of it as the L2 can take.
 *
 * @example
 * ```ts
 * import { prefetchAfter } from "./lower_prefetch.ts";
 * // prefetchAfter(graph, 3, types, shardings, h100); // { tensor: "layers.0.o_proj.weight", words: 2097152 }
 * ```
 */
export function prefetchAfter(
  graph: Graph,
  at: number,
  types: TensorTypes,
  shardings: Shardings,
  target: Target,
): Prefetch | undefined {
  if (!target.l2Bytes || graph.nodes[at].op !== "attention") return undefined;
  const next = graph.nodes.slice(at + 1).find((n) => n.op === "matmul" || n.op === "logits");
  const weight = next?.inputs[1];
  if (!weight || graph.tensors[weight]?.role !== "weight") return undefined;
  if ((shardings.get(weight)?.shards.length ?? 1) > 1) return undefined;
  const type = types.get(weight)!;
  const bytes = type.shape.reduce((a, b) => a * b, 1) * dtypeBytes(type.dtype);
  const words = prefetchBytes(bytes, target.l2Bytes) / 16;
  return words > 0 ? { tensor: weight, words } : undefined;
}
