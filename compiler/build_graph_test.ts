import { deepStrictEqual, ok } from "node:assert/strict";
import { buildDecodeGraph } from "./build_graph.ts";
import { defaultOptions } from "./build_options.ts";
import { PRESETS } from "./presets.ts";

const graphOf = (name: string, method: "dense" | "sparq") => {
  const model = PRESETS.get(name)!;
  return buildDecodeGraph(model, { ...defaultOptions(model, method), maxSeq: 64 });
};
const ops = (name: string, method: "dense" | "sparq", layer = 0) =>
  graphOf(name, method).nodes.filter((n) => n.id.startsWith(`layers.${layer}.`)).map((n) => n.op);

Deno.test("a Llama layer: norm, q/k/v, rope, append, attention, o, SwiGLU, two residuals", () => {
  deepStrictEqual(ops("tiny-llama", "sparq"), [
    "rms_norm",
    "matmul",
    "matmul",
    "matmul",
    "rope",
    "rope",
    "kv_append",
    "attention",
    "matmul",
    "add",
    "rms_norm",
    "matmul",
    "matmul",
    "silu",
    "mul",
    "matmul",
    "add",
  ]);
});

Deno.test("a GPT-NeoX layer: layer norms on the same input, GELU MLP, parallel residual", () => {
  const graph = graphOf("tiny-neox", "dense");
  const byId = new Map(graph.nodes.map((n) => [n.id, n]));
  const attnNorm = byId.get("layers.1.attn_norm")!;
  const mlpNorm = byId.get("layers.1.mlp_norm")!;
  deepStrictEqual([attnNorm.op, mlpNorm.op], ["layer_norm", "layer_norm"]);
  deepStrictEqual(attnNorm.inputs[0], mlpNorm.inputs[0]);
  deepStrictEqual(byId.get("layers.1.mlp_act")!.op, "gelu");
  deepStrictEqual(byId.get("layers.1.q_proj")!.inputs.length, 3);
  const rope = byId.get("layers.0.q_rope")!;
  deepStrictEqual(rope.op === "rope" && rope.attrs.rotaryDims, 4);
});

Deno.test("SparQ layers keep K, Kᵀ, V and V_mean; dense ones K and V", () => {
  const sparq = graphOf("tiny-llama", "sparq");
  const dense = graphOf("tiny-llama", "dense");
  deepStrictEqual(sparq.nodes.find((n) => n.op === "kv_append")!.outputs, [
    "layers.0.k_cache",
    "layers.0.kt_cache",
    "layers.0.v_cache",
    "layers.0.v_mean",
  ]);
  // Kᵀ in tiles of positions (kernels/kt_layout.ts): one tile of 64 here.
  deepStrictEqual(sparq.tensors["layers.0.kt_cache"].shape, [1, 2, 1, 16, 64]);
  deepStrictEqual(sparq.tensors["layers.0.v_mean"].dtype, "f32");
  deepStrictEqual(dense.nodes.find((n) => n.op === "kv_append")!.outputs, [
    "layers.0.k_cache",
    "layers.0.v_cache",
  ]);
});

Deno.test("tied embeddings reuse the table for the logits; untied ones have lm_head", () => {
  const tied = graphOf("tiny-qwen2", "dense");
  ok(!("lm_head.weight" in tied.tensors));
  deepStrictEqual(tied.nodes.find((n) => n.op === "logits")!.inputs[1], "embed.weight");
  ok("lm_head.weight" in graphOf("tiny-llama", "dense").tensors);
  deepStrictEqual(tied.outputs, ["logits", "next_tokens"]);
});

Deno.test("the graph survives a JSON round trip unchanged", () => {
  const graph = graphOf("tiny-gemma", "sparq");
  deepStrictEqual(JSON.parse(JSON.stringify(graph)), graph);
});
