import { deepStrictEqual, ok, throws } from "node:assert/strict";
import { buildDecodeGraph } from "../build_graph.ts";
import { defaultOptions } from "../build_options.ts";
import { compile } from "../compile.ts";
import { PRESETS } from "../presets.ts";
import { TARGETS, withBudget } from "../target.ts";
import { UserError } from "../user_error.ts";
import { planShards } from "./plan_shards.ts";

const h100 = TARGETS.get("h100")!;
const llama2 = PRESETS.get("llama2-7b")!;

Deno.test("a 4 GiB K cache (B=64, S=4096) splits into two shards under the 2 GiB binding", () => {
  const options = { ...defaultOptions(llama2, "sparq"), batch: 64, maxSeq: 4096 };
  const shards = planShards(buildDecodeGraph(llama2, options), h100);
  const k = shards.get("layers.0.k_cache")!;
  deepStrictEqual(k.rowBytes, 4096 * 128 * 2);
  deepStrictEqual(k.shards.map((s) => [s.firstRow, s.rows]), [[0, 1024], [1024, 1024]]);
  // K, Kᵀ, V and V_mean of a layer share one row partition.
  for (const name of ["kt_cache", "v_cache", "v_mean"]) {
    deepStrictEqual(
      shards.get(`layers.0.${name}`)!.shards.map((s) => s.rows),
      [1024, 1024],
    );
  }
  for (const s of k.shards) ok(s.bytes <= h100.limits.maxStorageBufferBindingSize);
});

Deno.test("a sharded cache runs one dispatch per shard and stage, and fits in memory", () => {
  // One layer of the bench's B=64, S=4096 point: 4.3 GB per K, 12.9 GB of cache.
  const oneLayer = { ...llama2, numLayers: 1 };
  const plan = compile(
    oneLayer,
    { ...defaultOptions(llama2, "sparq"), batch: 64, maxSeq: 4096 },
    h100,
  );
  const stages = plan.schedule.filter((d) => d.node === "layers.0.attention");
  // Stage 1 (with 2a in it) and stage 3 read the sharded caches; 2b reads neither.
  deepStrictEqual(stages.map((d) => `${d.kernel}#${d.shard}`), [
    "sparq_scores_candidates#0",
    "sparq_scores_candidates#1",
    "sparq_topk#0",
    "sparq_attend#0",
    "sparq_attend#1",
  ]);
  deepStrictEqual(stages.map((d) => d.params.slice(0, 2)), [
    [0, 1024],
    [1024, 1024],
    [0, 2048],
    [0, 1024],
    [1024, 1024],
  ]);
  const kBuffers = plan.tensors["layers.0.k_cache"].shards.map((s) => s.buffer);
  deepStrictEqual(stages[3].bindings[2].buffer, kBuffers[0]);
  deepStrictEqual(stages[4].bindings[2].buffer, kBuffers[1]);
});

Deno.test("weights over one binding split by rows: the LM head under WebGPU's defaults", () => {
  const model = PRESETS.get("llama3-8b")!;
  const target = withBudget(TARGETS.get("webgpu-default")!, 64 * 1024 ** 3);
  const plan = compile(model, { ...defaultOptions(model, "dense"), maxSeq: 1024 }, target);
  // 128256 × 4096 × 2 bytes = 1.05 GB over 128 MiB bindings: 8 shards.
  const head = plan.tensors["lm_head.weight"].shards;
  deepStrictEqual(head.length, 8);
  deepStrictEqual(head.reduce((sum, s) => sum + s.rows, 0), 128256);
  deepStrictEqual(plan.schedule.filter((d) => d.node === "logits").length, 8);
  deepStrictEqual(plan.schedule.filter((d) => d.node === "embed").length, 8);
});

Deno.test("a slice that no split can fit into one binding is refused with the reason", () => {
  const model = PRESETS.get("tiny-llama")!;
  const options = { ...defaultOptions(model, "dense"), maxSeq: 4_500_000, kvDtype: "f32" as const };
  throws(
    () => planShards(buildDecodeGraph(model, options), TARGETS.get("webgpu-default")!),
    (error: unknown) =>
      error instanceof UserError &&
      error.message.startsWith(
        "tensor 'layers.0.k_cache' [1, 2, 4500000, 16] f32 cannot be split below " +
          "[4500000, 16] (288000000 bytes), which exceeds one binding on target webgpu-default",
      ),
  );
});
