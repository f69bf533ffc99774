/**
 * Pass 2: shape and dtype inference. Works out the type of every computed tensor from its
 * node's operands, and checks that the operands agree (a matmul's inner dimension, a cache's
 * layout, dtypes). Activations are f32; weights may be f16 or f32.
 *
 * @module
 */
import { ktShape } from "../../kernels/kt_layout.ts";
import type { DType, Graph, Node, TensorType } from "../ir.ts";
import { NodeError } from "./graph_error.ts";

/** The type of every tensor of a graph, declared or computed. */
export type TensorTypes = Map<string, TensorType>;

const show = (t: TensorType) => `[${t.shape.join(", ")}] ${t.dtype}`;
const sameShape = (a: number[], b: number[]) =>
  a.length === b.length && a.every((n, i) => n === b[i]);

class Checker {
  constructor(readonly node: Node, readonly types: TensorTypes) {}

  operand(index: number): TensorType {
    return this.types.get(this.node.inputs[index])!;
  }

  expect(index: number, what: string, shape: number[], dtypes: readonly DType[]): TensorType {
    const t = this.operand(index);
    const name = this.node.inputs[index];
    if (!sameShape(t.shape, shape) || !dtypes.includes(t.dtype)) {
      throw new NodeError(
        this.node,
        `${what} '${name}' is ${show(t)}, expected [${shape.join(", ")}] ${dtypes.join("|")}`,
      );
    }
    return t;
  }

  matrix(index: number, what: string): [number, number] {
    const t = this.operand(index);
    if (t.shape.length !== 2) {
      throw new NodeError(
        this.node,
        `${what} '${this.node.inputs[index]}' is ${show(t)}, expected 2-D`,
      );
    }
    return [t.shape[0], t.shape[1]];
  }
}

const FLOAT = ["f32", "f16"] as const;
const ACT = ["f32"] as const;
const U32 = ["u32"] as const;

function inferNode(c: Checker, batch: number): TensorType[] {
  const node = c.node;
  switch (node.op) {
    case "embedding": {
      c.expect(0, "tokens", [batch], U32);
      const [, D] = c.matrix(1, "table");
      c.expect(1, "table", c.operand(1).shape, FLOAT);
      return [{ shape: [batch, D], dtype: "f32" }];
    }
    case "rms_norm":
    case "layer_norm": {
      const [B, D] = c.matrix(0, "input");
      c.expect(0, "input", [B, D], ACT);
      c.expect(1, "weight", [D], FLOAT);
      if (node.op === "layer_norm") c.expect(2, "bias", [D], FLOAT);
      return [{ shape: [B, D], dtype: "f32" }];
    }
    case "matmul": {
      const [B, K] = c.matrix(0, "input");
      c.expect(0, "input", [B, K], ACT);
      const [N] = c.matrix(1, "weight");
      c.expect(1, "weight", [N, K], FLOAT);
      if (node.inputs.length === 3) c.expect(2, "bias", [N], FLOAT);
      return [{ shape: [B, N], dtype: "f32" }];
    }
    case "rope": {
      const { heads, headDim } = node.attrs;
      const x = c.expect(0, "input", [batch, heads * headDim], ACT);
      c.expect(1, "positions", [batch], U32);
      return [x];
    }
    case "kv_append": {
      const { kvHeads: Hkv, headDim: d, sparq } = node.attrs;
      c.expect(0, "k", [batch, Hkv * d], ACT);
      c.expect(1, "v", [batch, Hkv * d], ACT);
      c.expect(2, "positions", [batch], U32);
      checkCache(c, 3, Hkv, d, sparq, batch);
      return node.outputs.map((name) => c.types.get(name)!);
    }
    case "attention": {
      const { heads: H, kvHeads: Hkv, headDim: d, method } = node.attrs;
      c.expect(0, "q", [batch, H * d], ACT);
      c.expect(1, "positions", [batch], U32);
      checkCache(c, 2, Hkv, d, method.kind === "sparq", batch);
      return [{ shape: [batch, H * d], dtype: "f32" }];
    }
    case "add":
    case "mul": {
      const a = c.expect(0, "left", c.operand(0).shape, ACT);
      c.expect(1, "right", a.shape, ACT);
      return [a];
    }
    case "silu":
    case "gelu":
    case "gelu_tanh":
      return [c.expect(0, "input", c.operand(0).shape, ACT)];
    case "logits": {
      const [B, D] = c.matrix(0, "input");
      c.expect(0, "input", [B, D], ACT);
      const [V] = c.matrix(1, "table");
      c.expect(1, "table", [V, D], FLOAT);
      return [{ shape: [B, V], dtype: "f32" }];
    }
    case "argmax": {
      const [B] = c.matrix(0, "logits");
      return [{ shape: [B], dtype: "u32" }];
    }
  }
}

/** Checks the cache operands from `first` on: K, (Kᵀ), V, (V_mean). */
function checkCache(c: Checker, first: number, Hkv: number, d: number, sparq: boolean, B: number) {
  const k = c.operand(first);
  const S = k.shape[2] ?? 0;
  const kv = [k.dtype] as const;
  c.expect(first, "K cache", [B, Hkv, S, d], FLOAT);
  if (sparq) {
    c.expect(first + 1, "Kᵀ cache", ktShape(B, Hkv, d, S), kv);
    c.expect(first + 2, "V cache", [B, Hkv, S, d], kv);
    c.expect(first + 3, "V mean", [B, Hkv, d], ACT);
  } else {
    c.expect(first + 1, "V cache", [B, Hkv, S, d], kv);
  }
}

/**
 * Infers the type of every tensor of a validated graph.
 *
 * @example
 * ```ts
 * import { inferShapes } from "./infer_shapes.ts";
 * import { validate } from "./validate.ts";
 * import { buildDecodeGraph } from "../build_graph.ts";
 * import { defaultOptions } from "../build_options.ts";
 * import { PRESETS } from "../presets.ts";
 * const model = PRESETS.get("tiny-llama")!;
 * const types = inferShapes(validate(buildDecodeGraph(model, defaultOptions(model, "dense"))));
 * types.get("logits"); // { shape: [1, 96], dtype: "f32" }
 * ```
 */
export function inferShapes(graph: Graph): TensorTypes {
  const types: TensorTypes = new Map();
  for (const [name, decl] of Object.entries(graph.tensors)) {
    types.set(name, { shape: decl.shape, dtype: decl.dtype });
  }
  for (const node of graph.nodes) {
    const outputs = inferNode(new Checker(node, types), graph.batch);
    node.outputs.forEach((name, i) => types.set(name, outputs[i]));
  }
  return types;
}
