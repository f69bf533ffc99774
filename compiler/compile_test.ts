import { deepStrictEqual, ok } from "node:assert/strict";
import { defaultOptions } from "./build_options.ts";
import { buildAttentionGraph } from "./build_attention_graph.ts";
import { compile, compileGraph } from "./compile.ts";
import { Plan } from "./plan.ts";
import { PRESETS } from "./presets.ts";
import { TARGETS, withBudget } from "./target.ts";
import { SPARQ_ARRANGEMENTS, SPARQ_TOPK_WORKGROUP } from "../kernels/sparq.ts";
import { rowLayout } from "../kernels/wgsl_common.ts";

const h100 = TARGETS.get("h100")!;

Deno.test("every preset compiles with both attention methods, and its plan round-trips", () => {
  for (const model of PRESETS.values()) {
    for (const method of ["dense", "sparq"] as const) {
      const plan = compile(model, defaultOptions(model, method), h100);
      deepStrictEqual(Plan.parse(JSON.parse(JSON.stringify(plan))), plan);
      deepStrictEqual(plan.stats.layers, model.numLayers);
      // Attention lowers to the split-K pair (dense) or SparQ's stages, fused where the target
      // and the shape allow, per layer.
      const attention = plan.schedule.filter((d) => d.node === "layers.0.attention");
      // Dense: the subgroup partial kernel where the h100 target's subgroups fit the rows, with
      // the reduction in it (batch 1: few rows; grouped heads at any rows). The presets whose
      // rows do not fit (small heads, caches of ≤ 2048 positions) have ≤ 8 chunks per row.
      const denseKernels = model.headDim % 128 !== 0
        ? ["attention_dense_partial", "attention_dense_reduce_few"]
        : ["attention_dense_partial_reduce"];
      const kernels = attention.map((d) => d.kernel);
      if (method === "dense") deepStrictEqual(kernels, denseKernels);
      else {
        ok(
          SPARQ_ARRANGEMENTS.some((arrangement) => arrangement.join() === kernels.join()),
          `${model.name}: ${kernels.join()}`,
        );
        // Stage 3's workgroup must be stage 2b's for any fusion of 2b or 3.
        if (rowLayout(model.headDim).workgroup !== SPARQ_TOPK_WORKGROUP) {
          deepStrictEqual(kernels.slice(-2), ["sparq_topk", "sparq_attend"]);
        }
        // One query head per KV head: stage 2a inside stage 1 (and at B=1 the rest after it).
        if (model.numHeads === model.numKvHeads) {
          ok(["sparq_scores_attend", "sparq_scores_candidates"].includes(kernels[0]), model.name);
        }
      }
      ok(plan.stats.kernels < plan.stats.dispatchesPerStep, "kernels are shared across layers");
    }
  }
});

Deno.test("every preset compiles with both methods under WebGPU's default limits", () => {
  // 16 KiB of workgroup memory and 8 storage buffers: stages 2b and 3 stay apart, and where stage
  // 2a runs alone its block shrinks to 2048 positions where 4096 keys would not fit.
  const defaults = withBudget(TARGETS.get("webgpu-default")!, 2 ** 40);
  for (const model of PRESETS.values()) {
    for (const method of ["dense", "sparq"] as const) {
      const plan = compile(model, defaultOptions(model, method), defaults);
      if (method === "dense") continue;
      const kernels = plan.schedule.filter((d) => d.node === "layers.0.attention")
        .map((d) => d.kernel);
      ok(SPARQ_ARRANGEMENTS.some((a) => a.join() === kernels.join()), model.name);
      deepStrictEqual(kernels.slice(-2), ["sparq_topk", "sparq_attend"], model.name);
    }
  }
});

Deno.test("SparQ's stage 2b warms the K and V caches' translations only where few rows gather", () => {
  const llama = PRESETS.get("llama2-7b")!;
  const topk = (batch: number) => {
    const plan = compile(llama, { ...defaultOptions(llama, "sparq"), batch }, h100);
    return plan.schedule.find((d) =>
      d.node === "layers.0.attention" && d.kernel !== "sparq_scores_candidates"
    )!;
  };
  // B=1: all four stages in one kernel, rope and the cache append folded in: it warms the K and V
  // caches through the bindings by which it writes them, bound once.
  const one = topk(1);
  deepStrictEqual(one.kernel, "sparq_scores_attend");
  const tensors = (d: typeof one) => d.bindings.map((b) => b.tensor);
  deepStrictEqual(tensors(one).filter((t) => t === "layers.0.k_cache").length, 1);
  ok(tensors(one).includes("layers.0.k_proj"), "the new key, unrotated");
  // Attention alone (the cache appended apart): after stage 1's six bindings and stage 2b's
  // indices and alpha, the K and V caches it warms (stage 3 binds them again).
  const alone = compileGraph(
    buildAttentionGraph({
      batch: 1,
      heads: 32,
      kvHeads: 32,
      headDim: 128,
      maxSeq: 4096,
      kvDtype: "f16",
      method: { kind: "sparq", r: 32, k: 128, localWindow: 0 },
      append: true,
    }),
    h100,
  ).schedule.find((d) => d.kernel === "sparq_scores_attend")!;
  deepStrictEqual(tensors(alone).slice(8, 10), ["k_cache", "v_cache"]);
  deepStrictEqual(tensors(alone).filter((t) => t === "k_cache").length, 2);
  // 32 rows of two stage-1 blocks, then one warm-up workgroup per 32 reads 512 KiB apart in a
  // 32 MiB K cache.
  deepStrictEqual(
    one.dispatch[0] * one.dispatch[1],
    32 * 2 + Math.ceil((32 * 4096 * 128 * 2) / (512 * 1024) / 32),
  );
  // At B·Hkv = 128 the kernel reads the caches for stage 3 only, and dispatches rows only.
  const four = topk(4);
  deepStrictEqual(four.kernel, "sparq_topk_attend");
  deepStrictEqual(tensors(four).filter((t) => t === "layers.0.k_cache").length, 1);
  deepStrictEqual(four.dispatch[0] * four.dispatch[1], 4 * 32);
});

Deno.test("SparQ's stage 2a: in stage 1 for one head per KV head, else blocks by rows", () => {
  const stage2a = (name: string, batch: number, maxSeq: number) => {
    const model = PRESETS.get(name)!;
    const plan = compile(model, { ...defaultOptions(model, "sparq"), batch, maxSeq }, h100);
    const attention = plan.schedule.filter((d) => d.node === "layers.0.attention");
    const kernel = attention.find((d) =>
      ["candidates", "select", "scores_attend"].some((part) => d.kernel.includes(part))
    )!;
    const source = plan.kernels.find((k) => k.id === kernel.kernel)!.source;
    return [
      kernel.kernel,
      Number(/const CBLOCK = (\d+)u;/.exec(source)![1]),
      kernel.dispatch[0] * kernel.dispatch[1],
    ];
  };
  // llama2-7b: stage 1's blocks of 2048 (256 invocations × 8 positions) keep their candidates;
  // at B=1 in the kernel that goes on to stages 2b and 3 (then 8 warm-up workgroups for a 128
  // MiB K cache: 256 reads 512 KiB apart, 32 each).
  deepStrictEqual(stage2a("llama2-7b", 1, 16384), ["sparq_scores_attend", 2048, 32 * 8 + 8]);
  deepStrictEqual(stage2a("llama2-7b", 16, 4096), ["sparq_scores_candidates", 2048, 512 * 2]);
  // From S = 32k, blocks of 4096: each invocation scores two slots of 8 positions (and stages 2b
  // and 3 have a kernel of their own).
  deepStrictEqual(stage2a("llama2-7b", 1, 32768), ["sparq_scores_candidates", 4096, 32 * 8]);
  deepStrictEqual(stage2a("llama2-7b", 4, 16384), ["sparq_scores_candidates", 2048, 128 * 8]);
  // llama3-8b, 8 rows at B=1: 32 blocks of 2048 chain (and 1 warm-up workgroup for its 16 MiB K
  // cache follows them); at S = 64k only blocks of 4096 chain (128, not 256); at 128k neither, and
  // stage 2b's few workgroups rank fewer candidates from blocks of 4096. 128 rows: 2048.
  deepStrictEqual(stage2a("llama3-8b", 1, 8192), ["sparq_select_attend", 2048, 32 + 1]);
  deepStrictEqual(stage2a("llama3-8b", 1, 65536)[1], 4096);
  deepStrictEqual(stage2a("llama3-8b", 1, 131072).slice(0, 2), ["sparq_candidates", 4096]);
  deepStrictEqual(stage2a("llama3-8b", 16, 4096).slice(0, 2), ["sparq_candidates", 2048]);
});

Deno.test("SparQ's stages 2b and 3 stay two kernels where the target allows 8 storage buffers", () => {
  const llama = PRESETS.get("llama3-8b")!;
  const narrow = { ...h100, limits: { ...h100.limits, maxStorageBuffersPerShaderStage: 8 } };
  for (const batch of [1, 4]) {
    const plan = compile(llama, { ...defaultOptions(llama, "sparq"), batch }, narrow);
    deepStrictEqual(
      plan.schedule.filter((d) => d.node === "layers.0.attention").map((d) => d.kernel),
      ["sparq_scores", "sparq_candidates", "sparq_topk", "sparq_attend"],
    );
  }
});

Deno.test("every binding points inside its buffer, params slots included", () => {
  const model = PRESETS.get("llama3-8b")!;
  const plan = compile(model, { ...defaultOptions(model, "sparq"), batch: 4 }, h100);
  const kernels = new Map(plan.kernels.map((k) => [k.id, k]));
  for (const d of plan.schedule) {
    deepStrictEqual(d.bindings.length, kernels.get(d.kernel)!.bindings.length);
    for (const b of d.bindings) ok(b.offset + b.size <= plan.buffers[b.buffer].bytes);
    deepStrictEqual(d.params.length, 4);
  }
});

Deno.test("memory: the Kᵀ copy makes SparQ's cache 1.5× dense's", () => {
  const model = PRESETS.get("llama2-7b")!;
  const base = { batch: 1, maxSeq: 4096 };
  const dense = compile(model, { ...defaultOptions(model, "dense"), ...base }, h100).stats.memory;
  const sparq = compile(model, { ...defaultOptions(model, "sparq"), ...base }, h100).stats.memory;
  const perTensor = 32 * 1 * 32 * 4096 * 128 * 2;
  deepStrictEqual([dense.kCache, dense.vCache, dense.ktCache], [perTensor, perTensor, 0]);
  deepStrictEqual([sparq.kCache, sparq.ktCache, sparq.vCache], [perTensor, perTensor, perTensor]);
  deepStrictEqual(sparq.vMean, 32 * 32 * 128 * 4);
  deepStrictEqual(dense.weights, sparq.weights);
});

Deno.test("transfer stats at the maximum context follow SPARQ.md", () => {
  const model = PRESETS.get("llama2-7b")!;
  const plan = compile(model, { ...defaultOptions(model, "sparq"), maxSeq: 4096 }, h100);
  const t = plan.stats.transfer;
  // Per head: 2·S·d·2 bytes dense, (S·r + 2·k·d)·2 SparQ, plus q and y (f32) and V_mean.
  deepStrictEqual(t.attentionDense, 32 * 32 * (2 * 4096 * 128 * 2 + 2 * 128 * 4));
  deepStrictEqual(
    t.attentionSparq,
    32 * 32 * ((4096 * 32 + 2 * 128 * 128) * 2 + 128 * 4 + 2 * 128 * 4),
  );
});

Deno.test("matmuls of the same x share one dispatch, within the target's binding limit", () => {
  const llama = PRESETS.get("llama2-7b")!;
  const plan = compile(llama, defaultOptions(llama, "dense"), TARGETS.get("h100")!);
  const layer0 = plan.schedule.filter((d) => d.node.startsWith("layers.0."));
  const qkv = layer0.find((d) => d.node === "layers.0.q_proj")!;
  // The attention norm is folded in: the matmul reads the residual stream and the norm's gain.
  deepStrictEqual(qkv.kernel, "rms_matmul_vec_x3");
  deepStrictEqual(
    qkv.bindings.map((b) => b.tensor).slice(0, 2),
    ["embed", "layers.0.attn_norm.weight"],
  );
  deepStrictEqual(
    qkv.bindings.map((b) => b.tensor).slice(2, -1),
    ["q_proj", "k_proj", "v_proj"].flatMap((m) => [`layers.0.${m}.weight`])
      .concat(["q_proj", "k_proj", "v_proj"].map((m) => `layers.0.${m}`)),
  );
  deepStrictEqual(layer0.find((d) => d.node === "layers.0.gate_proj")!.kernel, "rms_matmul_vec_x2");
  ok(
    !layer0.some((d) =>
      ["layers.0.k_proj", "layers.0.v_proj", "layers.0.up_proj"].includes(d.node)
    ),
  );
  // Residual adds ride on o_proj and down_proj; the norms on the matmuls they feed; the gated
  // MLP's act and mul are one kernel.
  deepStrictEqual(
    layer0.map((d) => d.kernel),
    [
      "rms_matmul_vec_x3",
      "rope_kv_append_dense", // rope of q and k, and the append of k and v
      "attention_dense_partial_reduce", // the last chunk of each row reduces it
      "matmul_vec_residual",
      "rms_matmul_vec_x2",
      "silu_mul",
      "matmul_vec_residual_2", // down_proj: the same kernel for another shape
    ],
  );
  deepStrictEqual(
    layer0.find((d) => d.node === "layers.0.o_proj")!.bindings.map((b) => b.tensor).slice(-3, -1),
    ["embed", "layers.0.attn_residual"],
  );

  // Qwen2's q, k, v carry biases: 1 + 3 × 3 storage bindings exceed WebGPU's default 8.
  const qwen = PRESETS.get("tiny-qwen2")!;
  const small = compile(qwen, defaultOptions(qwen, "dense"), TARGETS.get("webgpu-default")!);
  const kernels = small.schedule.filter((d) => d.node.startsWith("layers.0.")).map((d) => d.kernel);
  ok(kernels.includes("matmul_bias_vec_x2"), kernels.join());
});

Deno.test("SparQ at batch 1 reads o_proj ahead into a known L2; dense and many rows do not", () => {
  const llama = PRESETS.get("llama2-7b")!;
  const attention = (method: "dense" | "sparq", target = h100, batch = 1, maxSeq = 4096) =>
    compile(llama, { ...defaultOptions(llama, method), batch, maxSeq }, target).schedule
      .filter((d) => d.node === "layers.3.attention")
      .map((d) => ({
        kernel: d.kernel,
        prefetch: d.bindings.filter((b) => b.tensor.endsWith("o_proj.weight"))
          .map((b) => `${b.tensor} ${b.size}`),
      }));
  // All 32 MiB of o_proj fit three quarters of the H100's 50 MiB L2.
  const oProj = [`layers.3.o_proj.weight ${4096 * 4096 * 2}`];
  deepStrictEqual(attention("sparq"), [{ kernel: "sparq_scores_attend", prefetch: oProj }]);
  deepStrictEqual(attention("sparq", h100, 1, 32768), [
    { kernel: "sparq_scores_candidates", prefetch: [] },
    { kernel: "sparq_topk_attend", prefetch: oProj },
  ]);
  deepStrictEqual(attention("dense"), [{ kernel: "attention_dense_partial_reduce", prefetch: [] }]);
  // No L2 size known, or many rows (no kernel ends in a few workgroups): none.
  const { l2Bytes: _, ...unknown } = h100;
  deepStrictEqual(attention("sparq", unknown), [{ kernel: "sparq_scores_attend", prefetch: [] }]);
  deepStrictEqual(attention("sparq", h100, 16).flatMap((a) => a.prefetch), []);
});

Deno.test("no dispatch sets params.extra0, which guards the stores that keep warm-up and prefetch reads", () => {
  for (const model of ["llama2-7b", "llama3-8b"]) {
    const config = PRESETS.get(model)!;
    for (const method of ["dense", "sparq"] as const) {
      for (const batch of [1, 16]) {
        const plan = compile(config, { ...defaultOptions(config, method), batch }, h100);
        deepStrictEqual(plan.schedule.filter((d) => d.params[2] !== 0).map((d) => d.kernel), []);
      }
    }
  }
});
