/**
 * Pass 3: sharding. A WebGPU binding holds at most `maxStorageBufferBindingSize` bytes (2 GiB on
 * the H100), yet a batch-64 KV cache at S = 4096 is 4.3 GB per K. Weights and KV state larger than
 * one binding are split along their leading axes into shards, each its own buffer; the lowering
 * then emits one dispatch per shard. Weights split by rows (axis 0); a layer's cache tensors
 * (K, Kᵀ, V, V_mean) split together over (sequence, KV head) rows so that one dispatch sees
 * matching slices of all four.
 *
 * @module
 */
import { dtypeBytes, type Graph, type TensorDecl } from "../ir.ts";
import type { Target } from "../target.ts";
import { UserError } from "../user_error.ts";

/** A contiguous range of rows of a tensor stored in one buffer. */
export interface Shard {
  firstRow: number;
  rows: number;
  bytes: number;
}

/** How a tensor is split: rows over the leading `splitAxes` axes. */
export interface Sharding {
  splitAxes: number;
  totalRows: number;
  rowBytes: number;
  shards: Shard[];
}

/** The sharding of every weight and state tensor. */
export type Shardings = Map<string, Sharding>;

const product = (xs: number[]) => xs.reduce((a, b) => a * b, 1);

/** The most bytes one buffer binding may hold on the target, a multiple of 4. */
export function bindingLimit(target: Target): number {
  const { maxStorageBufferBindingSize, maxBufferSize } = target.limits;
  return Math.floor(Math.min(maxStorageBufferBindingSize, maxBufferSize) / 4) * 4;
}

/** Bytes rounded up to a whole 4-byte word, as storage bindings require. */
export function wordAligned(bytes: number): number {
  return Math.ceil(bytes / 4) * 4;
}

function splitAxesOf(decl: TensorDecl): number {
  if (decl.role === "weight") return 1;
  if (decl.role === "state") return Math.min(2, decl.shape.length - 1);
  return 0;
}

function describe(name: string, decl: TensorDecl): string {
  return `'${name}' [${decl.shape.join(", ")}] ${decl.dtype}`;
}

function shardsFor(totalRows: number, rowBytes: number, count: number): Shard[] {
  const per = Math.ceil(totalRows / count);
  const shards: Shard[] = [];
  for (let first = 0; first < totalRows; first += per) {
    const rows = Math.min(per, totalRows - first);
    shards.push({ firstRow: first, rows, bytes: wordAligned(rows * rowBytes) });
  }
  return shards;
}

/**
 * The state tensors that must share one row partition: those a kv_append or an attention node
 * takes together (a layer's K, Kᵀ, V, V_mean), merged where nodes share a tensor; every other
 * state tensor alone.
 */
function cacheGroups(graph: Graph): string[][] {
  const parent = new Map<string, string>();
  const find = (x: string): string => {
    const p = parent.get(x)!;
    if (p === x) return x;
    const root = find(p);
    parent.set(x, root);
    return root;
  };
  for (const [name, decl] of Object.entries(graph.tensors)) {
    if (decl.role === "state") parent.set(name, name);
  }
  for (const node of graph.nodes) {
    if (node.op !== "kv_append" && node.op !== "attention") continue;
    const state = node.inputs.filter((name) => parent.has(name));
    for (const name of state.slice(1)) parent.set(find(name), find(state[0]));
  }
  const groups = new Map<string, string[]>();
  for (const name of parent.keys()) {
    const root = find(name);
    groups.set(root, [...(groups.get(root) ?? []), name]);
  }
  return [...groups.values()];
}

/**
 * Plans the shards of the graph's weight and state tensors for the target.
 *
 * @example
 * ```ts
 * import { planShards } from "./plan_shards.ts";
 * import { buildDecodeGraph } from "../build_graph.ts";
 * import { defaultOptions } from "../build_options.ts";
 * import { PRESETS } from "../presets.ts";
 * import { TARGETS } from "../target.ts";
 * const model = PRESETS.get("llama2-7b")!;
 * const graph = buildDecodeGraph(model, { ...defaultOptions(model, "dense"), batch: 64 });
 * planShards(graph, TARGETS.get("h100")!).get("layers.0.k_cache")!.shards.length; // 2
 * ```
 */
export function planShards(graph: Graph, target: Target): Shardings {
  const limit = bindingLimit(target);
  const shardings: Shardings = new Map();

  const groups = [...cacheGroups(graph)];
  for (const [name, decl] of Object.entries(graph.tensors)) {
    if (decl.role === "weight") groups.push([name]);
  }

  for (const group of groups) {
    const decls = group.map((name) => {
      const decl = graph.tensors[name];
      const axes = splitAxesOf(decl);
      const rowBytes = product(decl.shape.slice(axes)) * dtypeBytes(decl.dtype);
      if (rowBytes > limit) {
        throw new UserError(
          `tensor ${describe(name, decl)} cannot be split below ` +
            `[${decl.shape.slice(axes).join(", ")}] (${rowBytes} bytes), which exceeds one ` +
            `binding on target ${target.name} (${limit} bytes); lower --max-seq or use ` +
            `--kv-dtype f16`,
        );
      }
      return { name, axes, rowBytes, totalRows: product(decl.shape.slice(0, axes)) };
    });
    // One shard count for the whole group, so that its tensors share one row partition.
    const count = Math.max(
      ...decls.map((t) => Math.ceil(t.totalRows / Math.floor(limit / t.rowBytes))),
    );
    for (const t of decls) {
      shardings.set(t.name, {
        splitAxes: t.axes,
        totalRows: t.totalRows,
        rowBytes: t.rowBytes,
        shards: shardsFor(t.totalRows, t.rowBytes, count),
      });
    }
  }
  return shardings;
}
