import { deepStrictEqual } from "node:assert/strict";
import { groupSize, ModelConfig, rotaryDims } from "./model_config.ts";
import { PRESETS } from "./presets.ts";

Deno.test("every preset is a valid model config", () => {
  for (const config of PRESETS.values()) ModelConfig.parse(config);
});

Deno.test("presets carry the paper's models at their published dimensions", () => {
  const p = (name: string) => PRESETS.get(name)!;
  deepStrictEqual(
    [p("llama2-7b").hiddenSize, p("llama2-7b").numLayers, p("llama2-7b").intermediateSize],
    [4096, 32, 11008],
  );
  deepStrictEqual([p("llama2-13b").hiddenSize, p("llama2-13b").numHeads], [5120, 40]);
  deepStrictEqual(
    [p("llama3-8b").numKvHeads, groupSize(p("llama3-8b")), p("llama3-8b").vocabSize],
    [
      8,
      4,
      128256,
    ],
  );
  deepStrictEqual([p("mistral-7b").numKvHeads, p("mistral-7b").intermediateSize], [8, 14336]);
  deepStrictEqual([p("gemma-7b").headDim, p("gemma-7b").numHeads, p("gemma-7b").hiddenSize], [
    256,
    16,
    3072,
  ]);
  deepStrictEqual([p("gemma-7b").activation, p("gemma-7b").gatedMlp], ["gelu_tanh", true]);
  for (const name of ["pythia-1.4b", "pythia-2.8b", "pythia-6.9b"]) {
    const c = p(name);
    deepStrictEqual([c.norm, c.parallelResidual, c.activation, c.gatedMlp], [
      "layer_norm",
      true,
      "gelu",
      false,
    ]);
    deepStrictEqual(rotaryDims(c), c.headDim / 4);
  }
  deepStrictEqual([p("pythia-2.8b").headDim, p("pythia-6.9b").vocabSize], [80, 50432]);
  deepStrictEqual(groupSize(p("tiny-qwen2")), 7);
});
