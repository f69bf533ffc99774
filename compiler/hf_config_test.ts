import { deepStrictEqual, throws } from "node:assert/strict";
import { importHfConfig } from "./hf_config.ts";
import { UserError } from "./user_error.ts";

// Field values as the models' published config.json files have them.
const llama2 = {
  architectures: ["LlamaForCausalLM"],
  bos_token_id: 1,
  eos_token_id: 2,
  hidden_act: "silu",
  hidden_size: 4096,
  initializer_range: 0.02,
  intermediate_size: 11008,
  max_position_embeddings: 4096,
  model_type: "llama",
  num_attention_heads: 32,
  num_hidden_layers: 32,
  num_key_value_heads: 32,
  pretraining_tp: 1,
  rms_norm_eps: 1e-5,
  rope_scaling: null,
  tie_word_embeddings: false,
  torch_dtype: "float16",
  vocab_size: 32000,
};
const mistral = {
  architectures: ["MistralForCausalLM"],
  hidden_act: "silu",
  hidden_size: 4096,
  intermediate_size: 14336,
  max_position_embeddings: 32768,
  model_type: "mistral",
  num_attention_heads: 32,
  num_hidden_layers: 32,
  num_key_value_heads: 8,
  rms_norm_eps: 1e-5,
  rope_theta: 10000.0,
  sliding_window: 4096,
  tie_word_embeddings: false,
  vocab_size: 32000,
};
const gemma = {
  architectures: ["GemmaForCausalLM"],
  head_dim: 256,
  hidden_act: "gelu",
  hidden_size: 3072,
  intermediate_size: 24576,
  max_position_embeddings: 8192,
  model_type: "gemma",
  num_attention_heads: 16,
  num_hidden_layers: 28,
  num_key_value_heads: 16,
  rms_norm_eps: 1e-6,
  rope_theta: 10000.0,
  vocab_size: 256000,
};
const pythia = {
  architectures: ["GPTNeoXForCausalLM"],
  hidden_act: "gelu",
  hidden_size: 2048,
  intermediate_size: 8192,
  layer_norm_eps: 1e-5,
  max_position_embeddings: 2048,
  model_type: "gpt_neox",
  num_attention_heads: 16,
  num_hidden_layers: 24,
  rotary_emb_base: 10000,
  rotary_pct: 0.25,
  tie_word_embeddings: false,
  use_parallel_residual: true,
  vocab_size: 50304,
};
const qwen2 = {
  architectures: ["Qwen2ForCausalLM"],
  hidden_act: "silu",
  hidden_size: 3584,
  intermediate_size: 18944,
  max_position_embeddings: 131072,
  model_type: "qwen2",
  num_attention_heads: 28,
  num_hidden_layers: 28,
  num_key_value_heads: 4,
  rms_norm_eps: 1e-6,
  rope_theta: 1000000.0,
  sliding_window: 131072,
  tie_word_embeddings: false,
  use_sliding_window: false,
  vocab_size: 152064,
};

const load = (raw: unknown) => importHfConfig(raw, "model", "config.json").config;

Deno.test("Llama 2: MHA, rms norm, SwiGLU, no biases", () => {
  const c = load(llama2);
  deepStrictEqual(c.family, "llama");
  deepStrictEqual([c.numHeads, c.numKvHeads, c.headDim, c.normEps], [32, 32, 128, 1e-5]);
  deepStrictEqual([c.activation, c.gatedMlp, c.qkvBias, c.tieWordEmbeddings], [
    "silu",
    true,
    false,
    false,
  ]);
  deepStrictEqual(c.name, "model");
});

Deno.test("absent num_key_value_heads means one KV head per query head", () => {
  const { num_key_value_heads: _, ...mha } = llama2;
  deepStrictEqual(load(mha).numKvHeads, 32);
});

Deno.test("Mistral: grouped-query attention with 8 KV heads", () => {
  const c = load(mistral);
  deepStrictEqual([c.family, c.numKvHeads, c.maxPositionEmbeddings], ["mistral", 8, 32768]);
});

Deno.test("Gemma: head_dim 256, GeGLU with tanh GELU, (1 + w) norm, tied embeddings", () => {
  const c = load(gemma);
  deepStrictEqual([c.headDim, c.activation, c.normWeightOffset, c.tieWordEmbeddings], [
    256,
    "gelu_tanh",
    1,
    true,
  ]);
  deepStrictEqual(c.embeddingScale, Math.sqrt(3072));
  deepStrictEqual(load({ ...gemma, hidden_activation: "gelu" }).activation, "gelu");
});

Deno.test("GPT-NeoX: layer norm, parallel residual, 25% rotary, GELU, biases", () => {
  const c = load(pythia);
  deepStrictEqual([c.norm, c.parallelResidual, c.rotaryFraction, c.activation], [
    "layer_norm",
    true,
    0.25,
    "gelu",
  ]);
  deepStrictEqual([c.qkvBias, c.outBias, c.mlpBias, c.gatedMlp, c.headDim], [
    true,
    true,
    true,
    false,
    128,
  ]);
  deepStrictEqual(load({ ...pythia, use_parallel_residual: false }).parallelResidual, false);
  deepStrictEqual(load({ ...pythia, rope_theta: 5000 }).ropeTheta, 5000);
});

Deno.test("Qwen2: q/k/v biases and 7 query heads per KV head", () => {
  const c = load(qwen2);
  deepStrictEqual([c.family, c.numHeads / c.numKvHeads, c.qkvBias, c.outBias], [
    "qwen2",
    7,
    true,
    false,
  ]);
  deepStrictEqual([c.ropeTheta, c.normEps, c.headDim], [1000000, 1e-6, 128]);
});

Deno.test("head_dim is read when present, else hidden / heads", () => {
  deepStrictEqual(load({ ...llama2, head_dim: 64 }).headDim, 64);
  deepStrictEqual(load(llama2).headDim, 128);
});

Deno.test("_name_or_path names the model; rope_scaling gives a warning", () => {
  const imported = importHfConfig(
    { ...llama2, _name_or_path: "meta-llama/Llama-2-7b-hf", rope_scaling: { type: "llama3" } },
    "x",
    "config.json",
  );
  deepStrictEqual(imported.config.name, "meta-llama/Llama-2-7b-hf");
  deepStrictEqual(imported.warnings.length, 1);
});

Deno.test("bad configs give one clear line", () => {
  const message = (raw: unknown) => {
    try {
      load(raw);
    } catch (error) {
      if (error instanceof UserError) return error.message;
      throw error;
    }
    throw new Error("no error");
  };
  deepStrictEqual(
    message({ ...llama2, architectures: ["FalconForCausalLM"] }),
    "config.json: architecture 'FalconForCausalLM' is not supported (supported: " +
      "LlamaForCausalLM, MistralForCausalLM, GemmaForCausalLM, GPTNeoXForCausalLM, " +
      "Qwen2ForCausalLM)",
  );
  const { hidden_size: _, ...noHidden } = llama2;
  deepStrictEqual(message(noHidden), "config.json: missing field 'hidden_size'");
  deepStrictEqual(
    message({ ...llama2, num_attention_heads: "32" }).startsWith(
      "config.json: num_attention_heads:",
    ),
    true,
  );
  deepStrictEqual(
    message({ ...llama2, hidden_act: "relu" }).includes("activation 'relu' is not supported"),
    true,
  );
  deepStrictEqual(
    message({ ...mistral, num_key_value_heads: 5 }).includes("cannot be shared evenly"),
    true,
  );
  deepStrictEqual(message([]), "config.json: expected a JSON object");
  deepStrictEqual(
    message({ hidden_size: 1 }),
    `config.json: missing field 'architectures' (e.g. ["LlamaForCausalLM"])`,
  );
  throws(() => load({ ...llama2, num_hidden_layers: 0 }), UserError);
});
