import { deepStrictEqual, throws } from "node:assert/strict";
import { buildDecodeGraph } from "../build_graph.ts";
import { defaultOptions } from "../build_options.ts";
import type { Graph } from "../ir.ts";
import { PRESETS } from "../presets.ts";
import { UserError } from "../user_error.ts";
import { inferShapes } from "./infer_shapes.ts";
import { validate } from "./validate.ts";

const model = PRESETS.get("tiny-llama")!;
const fresh = (): Graph =>
  structuredClone(buildDecodeGraph(model, { ...defaultOptions(model, "sparq"), maxSeq: 32 }));

const byId = (g: Graph, id: string) => g.nodes.find((n) => n.id === `layers.0.${id}`)!;

function messageOf(fn: () => unknown): string {
  try {
    fn();
  } catch (error) {
    if (error instanceof UserError) return error.message;
    throw error;
  }
  throw new Error("expected an error");
}

Deno.test("a built graph validates", () => {
  const graph = fresh();
  deepStrictEqual(validate(graph).nodes.length, graph.nodes.length);
});

Deno.test("validation errors name the node", () => {
  let g = fresh();
  byId(g, "k_proj").id = "layers.0.q_proj";
  deepStrictEqual(
    messageOf(() => validate(g)),
    "node 'layers.0.q_proj' (matmul): duplicate node id",
  );

  g = fresh();
  byId(g, "q_proj").inputs[0] = "nowhere";
  deepStrictEqual(
    messageOf(() => validate(g)),
    "node 'layers.0.q_proj' (matmul): input 'nowhere' is not declared or computed before this node",
  );

  g = fresh();
  const append = g.nodes.findIndex((n) => n.op === "kv_append");
  [g.nodes[append], g.nodes[append + 1]] = [g.nodes[append + 1], g.nodes[append]];
  deepStrictEqual(
    messageOf(() => validate(g)),
    "node 'layers.0.attention' (attention): reads 'layers.0.k_cache' before any kv_append " +
      "writes this step's token into it",
  );

  g = fresh();
  const attention = g.nodes.find((n) => n.op === "attention")!;
  if (attention.op === "attention" && attention.attrs.method.kind === "sparq") {
    attention.attrs.method.r = 17;
  }
  deepStrictEqual(
    messageOf(() => validate(g)),
    "node 'layers.0.attention' (attention): r = 17 is outside 1..16 (the head dimension)",
  );

  g = fresh();
  byId(g, "q_proj").inputs.pop();
  deepStrictEqual(
    messageOf(() => validate(g)),
    "node 'layers.0.q_proj' (matmul): needs 2 or 3 inputs, got 1",
  );

  g = fresh();
  byId(g, "k_proj").outputs = ["layers.0.q_proj"];
  deepStrictEqual(
    messageOf(() => validate(g)),
    "node 'layers.0.k_proj' (matmul): output 'layers.0.q_proj' is already defined; tensors " +
      "are assigned once",
  );
});

Deno.test("malformed graph JSON is refused with the path of the fault", () => {
  const g = fresh() as unknown as { nodes: { op: string }[] };
  g.nodes[0].op = "softmax";
  throws(() => validate(g), /^UserError: graph: nodes\.0\.op/);
});

Deno.test("shape inference types every tensor and names the node on a mismatch", () => {
  const types = inferShapes(validate(fresh()));
  deepStrictEqual(types.get("layers.0.q_proj"), { shape: [1, 64], dtype: "f32" });
  deepStrictEqual(types.get("layers.1.attention"), { shape: [1, 64], dtype: "f32" });
  deepStrictEqual(types.get("next_tokens"), { shape: [1], dtype: "u32" });

  const g = fresh();
  g.tensors["layers.0.k_proj.weight"].shape = [32, 60];
  deepStrictEqual(
    messageOf(() => inferShapes(validate(g))),
    "node 'layers.0.k_proj' (matmul): weight 'layers.0.k_proj.weight' is [32, 60] f16, " +
      "expected [32, 64] f32|f16",
  );
  const h = fresh();
  h.tensors["layers.1.kt_cache"].shape = [1, 2, 32, 16];
  deepStrictEqual(
    messageOf(() => inferShapes(validate(h))),
    "node 'layers.1.kv_append' (kv_append): Kᵀ cache 'layers.1.kt_cache' is [1, 2, 32, 16] " +
      "f16, expected [1, 2, 1, 16, 32] f16",
  );
});
