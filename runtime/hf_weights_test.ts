import { deepStrictEqual, rejects } from "node:assert/strict";
import { join } from "node:path";
import { compile } from "../compiler/compile.ts";
import { PRESETS } from "../compiler/presets.ts";
import { UserError } from "../compiler/user_error.ts";
import { uniformStream } from "../kernels/random_problem.ts";
import { testGpu } from "./test_gpu.ts";
import { deviceTarget } from "./device_target.ts";
import { Decoder } from "./decoder.ts";
import { hfWeightSource, loadHfWeights } from "./hf_weights.ts";
import { encodeSafetensors, type TensorToWrite } from "./safetensors.ts";

const gpu = await testGpu();
const target = deviceTarget(gpu, 4 * 1024 ** 3);
const DTYPES = ["F32", "F16", "BF16"] as const;

async function decoderFor(model: string, weightDtype: "f16" | "f32"): Promise<Decoder> {
  const config = PRESETS.get(model)!;
  return await Decoder.create(
    gpu,
    compile(config, {
      batch: 1,
      maxSeq: 8,
      attention: { kind: "dense" },
      kvDtype: "f32",
      weightDtype,
    }, target),
  );
}

/**
 * A checkpoint of HF-named tensors for the decoder's plan, in three shards of three dtypes;
 * values are multiples of 1/8 in [−1, 1], exact in all of them. Returns the values each plan
 * weight should receive.
 */
async function writeCheckpoint(decoder: Decoder, dir: string): Promise<Map<string, number[]>> {
  const next = uniformStream(99);
  const config = decoder.plan.model;
  const expected = new Map<string, number[]>();
  const fused = new Map<string, { shape: number[]; parts: number[][] }>();
  const tensors = new Map<string, Omit<TensorToWrite, "dtype">>();
  for (const weight of decoder.tensorsOf("weight")) {
    const shape = decoder.plan.tensors[weight].shape;
    const values = Array.from(
      { length: shape.reduce((a, b) => a * b) },
      () => Math.round(next() * 16 - 8) / 8,
    );
    expected.set(weight, values);
    const source = hfWeightSource(config, weight);
    if (!source.fused) {
      tensors.set(source.hf, { shape, values });
      continue;
    }
    const entry = fused.get(source.hf) ?? { shape: [shape[0] * 3, ...shape.slice(1)], parts: [] };
    entry.parts[source.fused.part] = values;
    fused.set(source.hf, entry);
  }
  for (const [hf, { shape, parts }] of fused) {
    // [heads, 3, headDim, …]: each head's q, k and v rows in turn.
    const block = parts[0].length / config.numHeads;
    const values: number[] = [];
    for (let h = 0; h < config.numHeads; h++) {
      for (const part of parts) values.push(...part.slice(h * block, (h + 1) * block));
    }
    tensors.set(hf, { shape, values });
  }
  const weightMap: Record<string, string> = {};
  const shards = DTYPES.map(() => new Map<string, TensorToWrite>());
  [...tensors].forEach(([name, t], i) => {
    const shard = i % DTYPES.length;
    shards[shard].set(name, { ...t, dtype: DTYPES[shard] });
    weightMap[name] = `model-0000${shard + 1}-of-00003.safetensors`;
  });
  for (const [i, shard] of shards.entries()) {
    await Deno.writeFile(
      join(dir, `model-0000${i + 1}-of-00003.safetensors`),
      encodeSafetensors(shard),
    );
  }
  await Deno.writeTextFile(
    join(dir, "model.safetensors.index.json"),
    JSON.stringify({ metadata: {}, weight_map: weightMap }),
  );
  return expected;
}

for (
  const [model, dtype] of [["tiny-llama", "f32"], ["tiny-neox", "f16"], [
    "tiny-qwen2",
    "f32",
  ]] as const
) {
  Deno.test(`${model}: a sharded F32/F16/BF16 checkpoint loads into ${dtype} weights`, async () => {
    const dir = await Deno.makeTempDir();
    const decoder = await decoderFor(model, dtype);
    try {
      const expected = await writeCheckpoint(decoder, dir);
      const progress: number[] = [];
      const loaded = await loadHfWeights(decoder, dir, (done) => progress.push(done));
      deepStrictEqual(loaded.tensors, expected.size);
      deepStrictEqual(progress.at(-1), expected.size);
      for (const [weight, values] of expected) {
        deepStrictEqual([...await decoder.executor.read(weight)], values, weight);
      }
    } finally {
      decoder.destroy();
      await Deno.remove(dir, { recursive: true });
    }
  });
}

Deno.test("a checkpoint that does not fit the model says which tensor and why", async () => {
  const dir = await Deno.makeTempDir();
  const decoder = await decoderFor("tiny-llama", "f32");
  try {
    const file = join(dir, "model.safetensors");
    const write = (tensors: [string, TensorToWrite][]) =>
      Deno.writeFile(file, encodeSafetensors(new Map(tensors)));
    await write([["model.embed_tokens.weight", { dtype: "F32", shape: [2], values: [1, 2] }]]);
    await rejects(
      loadHfWeights(decoder, dir),
      (e: Error) =>
        e instanceof UserError &&
        /'model\.embed_tokens\.weight' is \[2\]; tiny-llama needs \[96, 64\]$/.test(e.message),
    );
    await write([["lm_head.weight", { dtype: "I32", shape: [1], values: [1] }]]);
    await rejects(
      loadHfWeights(decoder, dir),
      (e: Error) =>
        e instanceof UserError &&
        e.message.includes("has no tensor 'model.embed_tokens.weight' (for embed.weight)"),
    );
    await rejects(
      loadHfWeights(decoder, join(dir, "nothing-here")),
      (e: Error) => e instanceof UserError && e.message.includes("neither model.safetensors"),
    );
  } finally {
    decoder.destroy();
    await Deno.remove(dir, { recursive: true });
  }
});
