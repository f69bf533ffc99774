/**
 * Whole models on the local adapter against the float64 reference of their graph: seeded
 * random weights (read back, so both sides use the GPU's exact values), a ragged cache prefilled
 * on the host, then several decode steps, each step's logits compared.
 */
import { deepStrictEqual, ok } from "node:assert/strict";
import { buildDecodeGraph } from "../compiler/build_graph.ts";
import type { BuildOptions } from "../compiler/build_options.ts";
import { compile } from "../compiler/compile.ts";
import type { AttentionMethod, Graph } from "../compiler/ir.ts";
import type { ModelConfig } from "../compiler/model_config.ts";
import { PRESETS } from "../compiler/presets.ts";
import type { Target } from "../compiler/target.ts";
import { relativeL2 } from "../kernels/compare.ts";
import { argmaxReference } from "../kernels/decode_reference.ts";
import { runGraphReference, type TensorValues } from "../kernels/graph_reference.ts";
import { uniformStream } from "../kernels/random_problem.ts";
import { testGpu } from "./test_gpu.ts";
import { deviceTarget } from "./device_target.ts";
import { Decoder } from "./decoder.ts";
import { generate } from "./generation.ts";
import { transposeCache, valueMean } from "./run_attention.ts";

const gpu = await testGpu();
const target = deviceTarget(gpu, 4 * 1024 ** 3);
const STEPS = 4;

/** Fills positions 0 … lengths[b] − 1 of every layer's cache with host values, on both sides. */
function prefillCache(
  decoder: Decoder,
  graph: Graph,
  values: TensorValues,
  lengths: number[],
  seed: number,
): void {
  const next = uniformStream(seed);
  for (const node of graph.nodes) {
    if (node.op !== "kv_append") continue;
    const { kvHeads, headDim: d, sparq } = node.attrs;
    const [kName, ktName, vName, meanName] = sparq
      ? node.outputs
      : [node.outputs[0], undefined, node.outputs[1]];
    const S = graph.maxSeq;
    const round = graph.tensors[kName].dtype === "f16" ? Math.f16round : Math.fround;
    const draw = () => {
      const cache = new Float64Array(lengths.length * kvHeads * S * d);
      lengths.forEach((length, b) => {
        for (let g = 0; g < kvHeads; g++) {
          const base = (b * kvHeads + g) * S * d;
          for (let i = 0; i < length * d; i++) cache[base + i] = round(next() * 2 - 1);
        }
      });
      return cache;
    };
    const k = draw();
    const v = draw();
    const state: [string, Float64Array][] = [[kName, k], [vName, v]];
    if (ktName) state.push([ktName, transposeCache(k, lengths.length * kvHeads, S, d)]);
    if (meanName) {
      state.push([meanName, valueMean(v, lengths.length, kvHeads, S, d, lengths)]);
    }
    for (const [name, cache] of state) {
      decoder.executor.write(name, cache);
      values.set(name, cache);
    }
  }
}

/** The plan's weights as the GPU holds them. */
async function weightValues(decoder: Decoder): Promise<TensorValues> {
  const values: TensorValues = new Map();
  for (const name of decoder.tensorsOf("weight")) {
    values.set(name, Float64Array.from(await decoder.executor.read(name)));
  }
  return values;
}

interface Case {
  model: string;
  attention: AttentionMethod;
  dtype: "f16" | "f32";
  tolerance: number;
}

const dense: AttentionMethod = { kind: "dense" };
const cases: Case[] = [];
for (const model of ["tiny-llama", "tiny-neox", "tiny-qwen2", "tiny-gemma"]) {
  const d = PRESETS.get(model)!.headDim;
  for (
    const attention of [
      dense,
      { kind: "sparq", r: d / 4, k: 32, localWindow: 0 },
      { kind: "sparq", r: d / 4, k: 6, localWindow: 2 },
    ] as AttentionMethod[]
  ) {
    cases.push({ model, attention, dtype: "f32", tolerance: 1e-4 });
  }
}
// f16 weights and cache: both sides hold the same f16 values; only f32 vs float64 arithmetic
// (and a key rounded to f16 from either) differs.
cases.push({ model: "tiny-llama", attention: dense, dtype: "f16", tolerance: 2e-3 });
// SparQ with rope and the append folded into its kernel, on an f16 Kᵀ of 8 positions a load.
cases.push({
  model: "tiny-neox",
  attention: { kind: "sparq", r: 4, k: 6, localWindow: 2 },
  dtype: "f16",
  tolerance: 2e-3,
});

const LENGTHS = [5, 11];

/** tiny-llama with one query head per KV head, of 64 components (SparQ's one-kernel path). */
const TINY_MHA: ModelConfig = {
  ...PRESETS.get("tiny-llama")!,
  name: "tiny-mha",
  numHeads: 2,
  numKvHeads: 2,
  headDim: 64,
  hiddenSize: 128,
};

/**
 * Steps a model's compiled plan from a prefilled cache of `lengths` and checks each step's
 * logits against the float64 reference (and, for SparQ with k ≥ S, the dense graph's); with
 * `checkCaches`, also the caches the steps appended to. One key among thousands moves the logits
 * by less than the tolerance, the cache itself by far more: K, Kᵀ and V within 1% of their largest
 * value everywhere, V_mean (a running mean: each token moves it by 1/S) within a relative L2 of
 * 1e-3.
 */
async function expectReferenceLogits(
  config: ModelConfig,
  options: BuildOptions,
  t: Target,
  lengths: number[],
  steps: number,
  tolerance: number,
  checkCaches = false,
): Promise<void> {
  const plan = compile(config, options, t);
  const decoder = await Decoder.create(gpu, plan);
  try {
    decoder.randomWeights(7);
    const values = await weightValues(decoder);
    prefillCache(decoder, plan.graph, values, lengths, 11);
    // SparQ with k ≥ S must equal dense: check it against the dense graph's reference too.
    const attention = options.attention;
    const denseGraph = attention.kind === "sparq" && attention.k >= options.maxSeq
      ? buildDecodeGraph(config, { ...options, attention: dense })
      : undefined;
    const denseValues = denseGraph ? new Map(values) : undefined;
    if (denseValues) { for (const [n, v] of values) denseValues.set(n, Float64Array.from(v)); }

    const next = uniformStream(3);
    let tokens = lengths.map(() => Math.floor(next() * config.vocabSize));
    let positions = [...lengths];
    for (let step = 0; step < steps; step++) {
      decoder.step(tokens, positions);
      const logits = await decoder.logits();
      for (const [graph, vals] of [[plan.graph, values], [denseGraph, denseValues]] as const) {
        if (!graph || !vals) continue;
        vals.set("tokens", Float64Array.from(tokens));
        vals.set("positions", Float64Array.from(positions));
        const expected = runGraphReference(graph, vals).get("logits")!;
        const error = relativeL2(logits, expected);
        ok(
          error <= tolerance,
          `step ${step}${graph === denseGraph ? " vs dense" : ""}: relative L2 ${error}`,
        );
      }
      const chosen = await decoder.nextTokens();
      deepStrictEqual(chosen, argmaxReference(logits, config.vocabSize));
      tokens = chosen;
      positions = positions.map((p) => p + 1);
    }
    const states = Object.entries(plan.graph.tensors).filter(([, d]) => d.role === "state");
    for (const [name] of checkCaches ? states : []) {
      const actual = await decoder.executor.read(name);
      const expected = values.get(name)!;
      if (name.endsWith("v_mean")) {
        const error = relativeL2(actual, expected);
        ok(error <= 1e-3, `${name}: relative L2 ${error}`);
        continue;
      }
      let worst = 0;
      let largest = 0;
      expected.forEach((e, i) => {
        worst = Math.max(worst, Math.abs(actual[i] - e));
        largest = Math.max(largest, Math.abs(e));
      });
      ok(worst <= 0.01 * largest, `${name}: off by ${worst} (largest value ${largest})`);
    }
    deepStrictEqual(gpu.uncaptured, []);
  } finally {
    decoder.destroy();
  }
}

for (const c of cases) {
  const method = c.attention.kind === "dense"
    ? "dense"
    : `SparQ r=${c.attention.r} k=${c.attention.k}${
      c.attention.k >= 32 ? " (k ≥ S: dense)" : ` window ${c.attention.localWindow}`
    }`;
  Deno.test(`${c.model} ${c.dtype}, ${method}: logits equal the float64 reference over ${STEPS} steps`, async () => {
    if (c.dtype === "f16" && !gpu.features.has("shader-f16")) return;
    const options: BuildOptions = {
      batch: LENGTHS.length,
      maxSeq: 32,
      attention: c.attention,
      kvDtype: c.dtype,
      weightDtype: c.dtype,
    };
    await expectReferenceLogits(
      PRESETS.get(c.model)!,
      options,
      target,
      LENGTHS,
      STEPS,
      c.tolerance,
    );
  });
}

Deno.test("attention kernels that read o_proj into the L2 for the next matmul leave the logits exact", async () => {
  // Few rows, caches longer than a SparQ block (2048): SparQ's kernels end in a few workgroups
  // per row, and read as much of o_proj as a 64 KiB L2 takes (48 KiB of its 64) — all four
  // stages in one kernel (its blocks that are not their row's last read it), or stages 2b–3
  // (workgroups dispatched past the rows and the warm-up read it). Dense reads none.
  const mha = TINY_MHA;
  const sparq: AttentionMethod = { kind: "sparq", r: 16, k: 40, localWindow: 0 };
  const cases: [ModelConfig, AttentionMethod, number, string][] = [
    [mha, dense, 16, "attention_dense_partial_reduce"],
    [mha, sparq, 16, "sparq_scores_attend + o_proj"],
    [mha, sparq, 14, "sparq_scores_candidates, sparq_topk_attend + o_proj"],
  ];
  for (const [config, attention, storage, expected] of cases) {
    const withL2: Target = {
      ...target,
      limits: { ...target.limits, maxStorageBuffersPerShaderStage: storage },
      l2Bytes: 65536,
    };
    const options: BuildOptions = {
      batch: 2,
      maxSeq: 3072,
      attention,
      kvDtype: "f32",
      weightDtype: "f32",
    };
    const kernels = compile(config, options, withL2).schedule
      .filter((d) => d.node === "layers.0.attention")
      .map((d) =>
        `${d.kernel}${
          d.bindings.some((b) => b.tensor === "layers.0.o_proj.weight") ? " + o_proj" : ""
        }`
      );
    deepStrictEqual(kernels.join(", "), expected);
    await expectReferenceLogits(config, options, withL2, [2100, 3000], 2, 1e-4);
  }
});

Deno.test("SparQ rotates q and appends the new token itself, in whichever block holds it", async () => {
  // Caches of two stage-1 blocks (f16: 2048 positions each): one sequence's new token in the
  // first block, the other's in the second, and the steps cross from one into the other. One
  // query head per KV head with 16 storage buffers runs all four stages as one kernel; with 14,
  // stage 1 (with stage 2a) is a dispatch of its own that writes the rotated q out for stages 2b
  // and 3; grouped heads the same with stage 2a after stage 1. Dense keeps the append apart.
  if (!gpu.features.has("shader-f16")) return;
  const mha = TINY_MHA;
  const gqa: ModelConfig = { ...mha, name: "tiny-gqa", numHeads: 4, headDim: 32 };
  const sparq: AttentionMethod = { kind: "sparq", r: 16, k: 40, localWindow: 2 };
  const cases: [ModelConfig, AttentionMethod, number, string[]][] = [
    [mha, sparq, 16, ["sparq_scores_attend"]],
    [mha, sparq, 14, ["sparq_scores_candidates", "sparq_topk_attend"]],
    [gqa, sparq, 16, ["sparq_scores", "sparq_select_attend"]],
    [mha, dense, 16, ["rope_kv_append_dense", "attention_dense_partial_reduce"]],
  ];
  for (const [model, attention, storage, kernels] of cases) {
    const options: BuildOptions = {
      batch: 2,
      maxSeq: 4096,
      attention,
      kvDtype: "f16",
      weightDtype: "f16",
    };
    const limited: Target = {
      ...target,
      limits: { ...target.limits, maxStorageBuffersPerShaderStage: storage },
    };
    const schedule = compile(model, options, limited).schedule.filter((d) =>
      d.node.startsWith("layers.0.")
    );
    deepStrictEqual(schedule.map((d) => d.kernel).slice(1, kernels.length + 1), kernels);
    ok(
      schedule[1].bindings.some((b) => b.tensor === "layers.0.k_proj"),
      "the unrotated k is bound",
    );
    await expectReferenceLogits(model, options, limited, [1000, 2046], 4, 2e-3, true);
  }
});

Deno.test("generation on the GPU chooses the tokens a host loop chooses", async () => {
  const config = PRESETS.get("tiny-llama")!;
  const plan = compile(config, {
    batch: 2,
    maxSeq: 32,
    attention: { kind: "sparq", r: 4, k: 6, localWindow: 1 },
    kvDtype: "f32",
    weightDtype: "f32",
  }, target);
  const host = await Decoder.create(gpu, plan);
  const resident = await Decoder.create(gpu, plan);
  try {
    const steps = 7;
    const expected: number[][] = [];
    for (const decoder of [host, resident]) {
      decoder.randomWeights(5);
      decoder.randomCache(6);
    }
    let tokens = [3, 40];
    let positions = [4, 9];
    for (let step = 0; step < steps; step++) {
      host.step(tokens, positions);
      tokens = await host.nextTokens();
      positions = positions.map((p) => p + 1);
      expected.push(tokens);
    }
    const result = await generate(resident, {
      tokens: [3, 40],
      positions: [4, 9],
      steps,
      readEvery: 3,
    });
    deepStrictEqual(result.tokens, expected);
    deepStrictEqual(result.readBacks, 3);
    deepStrictEqual([...await resident.executor.read("positions")], positions);
  } finally {
    host.destroy();
    resident.destroy();
  }
});
