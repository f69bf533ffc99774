/**
 * The float64 reference of a whole graph: runs a decode step node by node on the CPU with the
 * per-op references (decode_reference.ts) and the attention references (reference.ts). It is
 * the yardstick of a compiled model: the same graph, the same weights and cache, every value in
 * float64 — except what the graph itself stores in a narrower type (a KV cache in f16 keeps f16
 * values on both sides).
 *
 * @module
 */
import type { Graph, Node, NodeOf } from "../compiler/ir.ts";
import { inferShapes } from "../compiler/passes/infer_shapes.ts";
import {
  ACTIVATION_REFERENCES,
  argmaxReference,
  layerNormReference,
  matmulReference,
  rmsNormReference,
  ropeReference,
} from "./decode_reference.ts";
import { ktIndex } from "./kt_layout.ts";
import { type AttentionProblem, denseReference, sparqReference } from "./reference.ts";

/** Values of tensors by name, row-major. */
export type TensorValues = Map<string, Float64Array>;

const ROUND = {
  f16: Math.f16round,
  f32: Math.fround,
  u32: (x: number) => x,
  i32: (x: number) => x,
} as const;

/**
 * Runs one step of `graph` on `values` (inputs, weights and state by name). State tensors are
 * updated in place, as the GPU updates its cache; every computed tensor is added to `values`.
 *
 * @example
 * ```ts
 * import { runGraphReference } from "./graph_reference.ts";
 * import type { Graph } from "../compiler/ir.ts";
 * const graph: Graph = {
 *   version: 1, model: "m", batch: 1, maxSeq: 1, outputs: ["y"],
 *   tensors: { x: { shape: [1, 2], dtype: "f32", role: "input" } },
 *   nodes: [{ op: "silu", id: "y", inputs: ["x"], outputs: ["y"], attrs: {} }],
 * };
 * const values = new Map([["x", Float64Array.of(0, 1)]]);
 * runGraphReference(graph, values).get("y"); // [0, 0.731…]
 * ```
 */
export function runGraphReference(graph: Graph, values: TensorValues): TensorValues {
  const types = inferShapes(graph);
  const shapeOf = (name: string) => types.get(name)!.shape;
  const get = (name: string) => {
    const v = values.get(name);
    if (!v) throw new Error(`the reference has no values for tensor '${name}'`);
    return v;
  };
  for (const node of graph.nodes) {
    const inputs = node.inputs.map(get);
    const out = evaluate(node, inputs, node.inputs.map(shapeOf), graph);
    if (out) values.set(node.outputs[0], out);
  }
  return values;
}

function evaluate(
  node: Node,
  x: Float64Array[],
  shapes: number[][],
  graph: Graph,
): Float64Array | undefined {
  const rows = (i: number) => shapes[i][0];
  const last = (i: number) => shapes[i].at(-1)!;
  switch (node.op) {
    case "embedding": {
      const [tokens, table] = x;
      const hidden = last(1);
      const y = new Float64Array(tokens.length * hidden);
      tokens.forEach((token, b) => {
        for (let j = 0; j < hidden; j++) {
          y[b * hidden + j] = table[token * hidden + j] * node.attrs.scale;
        }
      });
      return y;
    }
    case "rms_norm":
      return rmsNormReference(x[0], x[1], last(0), node.attrs.eps, node.attrs.weightOffset);
    case "layer_norm":
      return layerNormReference(x[0], x[1], x[2], last(0), node.attrs.eps);
    case "matmul":
      return matmulReference(x[0], x[1], rows(0), last(0), rows(1), x[2]);
    case "logits":
      return matmulReference(x[0], x[1], rows(0), last(0), rows(1));
    case "rope": {
      const a = node.attrs;
      return ropeReference(x[0], x[1], a.heads, a.headDim, a.rotaryDims, a.theta);
    }
    case "kv_append":
      appendReference(node, x, graph);
      return undefined;
    case "attention":
      return attentionReference(node, x, graph);
    case "add":
      return x[0].map((v, i) => v + x[1][i]);
    case "mul":
      return x[0].map((v, i) => v * x[1][i]);
    case "silu":
    case "gelu":
    case "gelu_tanh":
      return x[0].map(ACTIVATION_REFERENCES[node.op]);
    case "argmax":
      return Float64Array.from(argmaxReference(x[0], last(0)));
  }
}

/** Writes each sequence's new key and value at its position (and Kᵀ, V_mean for SparQ). */
function appendReference(node: NodeOf<"kv_append">, x: Float64Array[], graph: Graph): void {
  const { kvHeads, headDim: d, sparq } = node.attrs;
  const [k, v, positions, ...cache] = x;
  const [kCache, ktCache, vCache, vMean] = sparq ? cache : [cache[0], undefined, cache[1]];
  const S = graph.maxSeq;
  const round = ROUND[graph.tensors[node.inputs[3]].dtype];
  positions.forEach((pos, b) => {
    for (let g = 0; g < kvHeads; g++) {
      const row = b * kvHeads + g;
      for (let j = 0; j < d; j++) {
        const key = round(k[row * d + j]);
        const value = round(v[row * d + j]);
        kCache[(row * S + pos) * d + j] = key;
        vCache[(row * S + pos) * d + j] = value;
        if (ktCache) ktCache[ktIndex(row, j, pos, d, S)] = key;
        if (vMean) vMean[row * d + j] += (value - vMean[row * d + j]) / (pos + 1);
      }
    }
  });
}

/** Attention of each sequence over its first positions[b] + 1 cache rows. */
function attentionReference(
  node: NodeOf<"attention">,
  x: Float64Array[],
  graph: Graph,
): Float64Array {
  const { heads, kvHeads, headDim, method } = node.attrs;
  if (Math.abs(node.attrs.scale * Math.sqrt(headDim) - 1) > 1e-12) {
    throw new Error(`the attention reference scales by 1/sqrt(d); node '${node.id}' does not`);
  }
  const [q, positions, ...cache] = x;
  const sparq = method.kind === "sparq";
  const problem: AttentionProblem = {
    batch: positions.length,
    heads,
    kvHeads,
    seqCapacity: graph.maxSeq,
    headDim,
    q,
    k: cache[0],
    v: sparq ? cache[2] : cache[1],
    lengths: positions.map((p) => p + 1),
  };
  return method.kind === "sparq" ? sparqReference(problem, method).y : denseReference(problem);
}
