/**
 * The graph IR: one transformer decode step as JSON-serialisable data. Declared tensors (inputs,
 * weights, state) carry their shape and dtype; every other tensor is the output of exactly one
 * node, and {@link inferShapes} works out its type. State tensors (the KV cache) are the one
 * exception to single assignment: `kv_append` updates them in place, and lists them as outputs so
 * that the order "append, then attend" is part of the graph.
 *
 * @module
 */
import { z } from "zod";

/** Element types of tensors. */
export const DType = z.enum(["f32", "f16", "i32", "u32"]);
/** An element type. */
export type DType = z.infer<typeof DType>;

/**
 * Bytes per element.
 *
 * @example
 * ```ts
 * import { dtypeBytes } from "./ir.ts";
 * dtypeBytes("f16"); // 2
 * ```
 */
export function dtypeBytes(dtype: DType): number {
  return dtype === "f16" ? 2 : 4;
}

/** What a declared tensor is: fed per step, fixed, or carried from step to step. */
export const TensorRole = z.enum(["input", "weight", "state"]);
/** The role of a declared tensor. */
export type TensorRole = z.infer<typeof TensorRole>;

/** A tensor's type. */
export const TensorType = z.strictObject({
  shape: z.array(z.int().positive()),
  dtype: DType,
});
/** A tensor's type. */
export type TensorType = z.infer<typeof TensorType>;

/** A tensor the graph declares rather than computes. */
export const TensorDecl = TensorType.extend({ role: TensorRole });
/** A tensor the graph declares rather than computes. */
export type TensorDecl = z.infer<typeof TensorDecl>;

/** The attention method of an attention node. */
export const AttentionMethod = z.discriminatedUnion("kind", [
  z.strictObject({ kind: z.literal("dense") }),
  z.strictObject({
    kind: z.literal("sparq"),
    /** Query components used to rank positions. */
    r: z.int().positive(),
    /** Positions attended exactly. */
    k: z.int().positive(),
    /** Newest positions always kept (they count towards k). */
    localWindow: z.int().nonnegative(),
  }),
]);
/** The attention method of an attention node. */
export type AttentionMethod = z.infer<typeof AttentionMethod>;

const nodeBase = {
  id: z.string().min(1),
  inputs: z.array(z.string().min(1)),
  outputs: z.array(z.string().min(1)),
};
const noAttrs = z.strictObject({});
const headAttrs = {
  heads: z.int().positive(),
  headDim: z.int().positive(),
};

function op<N extends string, A extends z.ZodType>(name: N, attrs: A) {
  return z.strictObject({ op: z.literal(name), ...nodeBase, attrs });
}

/** One node of the graph; `attrs` depend on `op`. */
export const Node = z.discriminatedUnion("op", [
  /** inputs: tokens [B] u32, table [V, D] → [B, D] f32 */
  op("embedding", z.strictObject({ scale: z.number().positive() })),
  /** inputs: x [B, D], weight [D] → [B, D]; y = x / rms(x) · (weight + weightOffset) */
  op("rms_norm", z.strictObject({ eps: z.number().positive(), weightOffset: z.number() })),
  /** inputs: x [B, D], weight [D], bias [D] → [B, D] */
  op("layer_norm", z.strictObject({ eps: z.number().positive() })),
  /** inputs: x [B, K], weight [N, K], optional bias [N] → [B, N] f32 */
  op("matmul", noAttrs),
  /** inputs: x [B, heads·headDim], positions [B] u32 → same; rotates the first rotaryDims */
  op(
    "rope",
    z.strictObject({
      ...headAttrs,
      theta: z.number().positive(),
      rotaryDims: z.int().positive(),
    }),
  ),
  /**
   * inputs: k [B, Hkv·d], v [B, Hkv·d], positions [B] u32, then the state it updates:
   * dense: K [B, Hkv, S, d], V [B, Hkv, S, d];
   * sparq: K, Kᵀ [B, Hkv, ⌈S/T⌉, d, T] (kernels/kt_layout.ts), V, V_mean [B, Hkv, d] f32.
   * outputs: the same state tensors.
   */
  op(
    "kv_append",
    z.strictObject({
      kvHeads: z.int().positive(),
      headDim: z.int().positive(),
      sparq: z.boolean(),
    }),
  ),
  /**
   * inputs: q [B, H·d], positions [B] u32, then dense: K, V; sparq: K, Kᵀ, V, V_mean.
   * The sequence length of row b is positions[b] + 1. → [B, H·d] f32
   */
  op(
    "attention",
    z.strictObject({
      ...headAttrs,
      kvHeads: z.int().positive(),
      scale: z.number().positive(),
      method: AttentionMethod,
    }),
  ),
  op("add", noAttrs),
  op("mul", noAttrs),
  op("silu", noAttrs),
  op("gelu", noAttrs),
  op("gelu_tanh", noAttrs),
  /** inputs: x [B, D], table [V, D] → [B, V] f32 */
  op("logits", noAttrs),
  /** inputs: logits [B, V] → [B] u32 */
  op("argmax", noAttrs),
]);
/** One node of the graph. */
export type Node = z.infer<typeof Node>;
/** The name of an op. */
export type OpName = Node["op"];
/** The node of one op. */
export type NodeOf<O extends OpName> = Extract<Node, { op: O }>;

/** One decode step of a model. */
export const Graph = z.strictObject({
  version: z.literal(1),
  model: z.string(),
  batch: z.int().positive(),
  maxSeq: z.int().positive(),
  tensors: z.record(z.string(), TensorDecl),
  nodes: z.array(Node),
  outputs: z.array(z.string()),
});
/** One decode step of a model. */
export type Graph = z.infer<typeof Graph>;
