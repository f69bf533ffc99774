/**
 * Imports a Hugging Face `config.json` into a {@link ModelConfig}. Reads the fields those files
 * really carry, with the defaults `transformers` applies when a field is absent, for
 * `LlamaForCausalLM`, `MistralForCausalLM`, `GemmaForCausalLM`, `GPTNeoXForCausalLM` and
 * `Qwen2ForCausalLM`.
 *
 * @module
 */
import { z } from "zod";
import { ModelConfig } from "./model_config.ts";
import { UserError, zodErrorLine } from "./user_error.ts";

const positiveInt = z.int().positive();

/** Fields every supported architecture needs to be present: they fix the tensor shapes. */
const shapeFields = {
  vocab_size: positiveInt,
  hidden_size: positiveInt,
  intermediate_size: positiveInt,
  num_hidden_layers: positiveInt,
  num_attention_heads: positiveInt,
};

const llamaLike = z.looseObject({
  ...shapeFields,
  num_key_value_heads: positiveInt.nullish(),
  head_dim: positiveInt.nullish(),
  hidden_act: z.string().default("silu"),
  rms_norm_eps: z.number().positive().default(1e-6),
  rope_theta: z.number().positive().default(10000),
  max_position_embeddings: positiveInt.default(2048),
  tie_word_embeddings: z.boolean().default(false),
  attention_bias: z.boolean().default(false),
  mlp_bias: z.boolean().default(false),
});

const gemmaConfig = llamaLike.extend({
  head_dim: positiveInt.default(256),
  hidden_activation: z.string().nullish(),
  tie_word_embeddings: z.boolean().default(true),
  max_position_embeddings: positiveInt.default(8192),
});

const qwen2Config = llamaLike.extend({
  max_position_embeddings: positiveInt.default(32768),
});

const gptNeoxConfig = z.looseObject({
  ...shapeFields,
  hidden_act: z.string().default("gelu"),
  layer_norm_eps: z.number().positive().default(1e-5),
  rotary_pct: z.number().gt(0).lte(1).default(0.25),
  rotary_emb_base: z.number().positive().nullish(),
  rope_theta: z.number().positive().nullish(),
  use_parallel_residual: z.boolean().default(true),
  max_position_embeddings: positiveInt.default(2048),
  tie_word_embeddings: z.boolean().default(false),
  attention_bias: z.boolean().default(true),
});

/** The architectures sparqc imports, by their `architectures[0]` name. */
export const SUPPORTED_ARCHITECTURES = [
  "LlamaForCausalLM",
  "MistralForCausalLM",
  "GemmaForCausalLM",
  "GPTNeoXForCausalLM",
  "Qwen2ForCausalLM",
] as const;

/**
 * Maps a `hidden_act` name to the activation sparqc implements.
 *
 * @example
 * ```ts
 * import { activationOf } from "./hf_config.ts";
 * activationOf("gelu_pytorch_tanh", "config.json"); // "gelu_tanh"
 * ```
 */
export function activationOf(name: string, source: string): ModelConfig["activation"] {
  switch (name) {
    case "silu":
    case "swish":
      return "silu";
    case "gelu":
      return "gelu";
    case "gelu_new":
    case "gelu_fast":
    case "gelu_pytorch_tanh":
      return "gelu_tanh";
    default:
      throw new UserError(
        `${source}: activation '${name}' is not supported (supported: silu, gelu, gelu_new, ` +
          `gelu_pytorch_tanh)`,
      );
  }
}

function parse<T extends z.ZodType>(schema: T, raw: unknown, source: string): z.infer<T> {
  const result = schema.safeParse(raw);
  if (!result.success) {
    const field = result.error.issues[0]?.path[0];
    if (typeof field === "string" && (raw as Record<string, unknown>)[field] === undefined) {
      throw new UserError(`${source}: missing field '${field}'`);
    }
    throw new UserError(zodErrorLine(source, result.error));
  }
  return result.data;
}

function finish(config: unknown, source: string): ModelConfig {
  const result = ModelConfig.safeParse(config);
  if (!result.success) throw new UserError(zodErrorLine(source, result.error));
  return result.data;
}

function importLlamaLike(
  family: "llama" | "mistral" | "qwen2",
  raw: unknown,
  name: string,
  source: string,
): ModelConfig {
  const c = parse(family === "qwen2" ? qwen2Config : llamaLike, raw, source);
  return finish({
    name,
    family,
    vocabSize: c.vocab_size,
    hiddenSize: c.hidden_size,
    intermediateSize: c.intermediate_size,
    numLayers: c.num_hidden_layers,
    numHeads: c.num_attention_heads,
    numKvHeads: c.num_key_value_heads ?? c.num_attention_heads,
    headDim: c.head_dim ?? c.hidden_size / c.num_attention_heads,
    norm: "rms_norm",
    normEps: c.rms_norm_eps,
    normWeightOffset: 0,
    activation: activationOf(c.hidden_act, source),
    gatedMlp: true,
    parallelResidual: false,
    // Qwen2 always has q/k/v biases and none on o_proj; Llama and Mistral follow attention_bias.
    qkvBias: family === "qwen2" ? true : c.attention_bias,
    outBias: family === "qwen2" ? false : c.attention_bias,
    mlpBias: family === "qwen2" ? false : c.mlp_bias,
    ropeTheta: c.rope_theta,
    rotaryFraction: 1,
    tieWordEmbeddings: c.tie_word_embeddings,
    embeddingScale: 1,
    maxPositionEmbeddings: c.max_position_embeddings,
  }, source);
}

function importGemma(raw: unknown, name: string, source: string): ModelConfig {
  const c = parse(gemmaConfig, raw, source);
  // transformers runs Gemma with the tanh GELU unless hidden_activation says otherwise, even
  // where hidden_act reads "gelu".
  const activation = activationOf(c.hidden_activation ?? "gelu_pytorch_tanh", source);
  return finish({
    name,
    family: "gemma",
    vocabSize: c.vocab_size,
    hiddenSize: c.hidden_size,
    intermediateSize: c.intermediate_size,
    numLayers: c.num_hidden_layers,
    numHeads: c.num_attention_heads,
    numKvHeads: c.num_key_value_heads ?? c.num_attention_heads,
    headDim: c.head_dim,
    norm: "rms_norm",
    normEps: c.rms_norm_eps,
    normWeightOffset: 1,
    activation,
    gatedMlp: true,
    parallelResidual: false,
    qkvBias: c.attention_bias,
    outBias: c.attention_bias,
    mlpBias: false,
    ropeTheta: c.rope_theta,
    rotaryFraction: 1,
    tieWordEmbeddings: c.tie_word_embeddings,
    embeddingScale: Math.sqrt(c.hidden_size),
    maxPositionEmbeddings: c.max_position_embeddings,
  }, source);
}

function importGptNeox(raw: unknown, name: string, source: string): ModelConfig {
  const c = parse(gptNeoxConfig, raw, source);
  return finish({
    name,
    family: "gpt_neox",
    vocabSize: c.vocab_size,
    hiddenSize: c.hidden_size,
    intermediateSize: c.intermediate_size,
    numLayers: c.num_hidden_layers,
    numHeads: c.num_attention_heads,
    numKvHeads: c.num_attention_heads,
    headDim: c.hidden_size / c.num_attention_heads,
    norm: "layer_norm",
    normEps: c.layer_norm_eps,
    normWeightOffset: 0,
    activation: activationOf(c.hidden_act, source),
    gatedMlp: false,
    parallelResidual: c.use_parallel_residual,
    qkvBias: c.attention_bias,
    outBias: c.attention_bias,
    mlpBias: true,
    ropeTheta: c.rope_theta ?? c.rotary_emb_base ?? 10000,
    rotaryFraction: c.rotary_pct,
    tieWordEmbeddings: c.tie_word_embeddings,
    embeddingScale: 1,
    maxPositionEmbeddings: c.max_position_embeddings,
  }, source);
}

/** What an import yields: the config, and remarks on fields sparqc reads but does not model. */
export interface ImportedConfig {
  config: ModelConfig;
  warnings: string[];
}

/**
 * Converts the parsed JSON of a Hugging Face `config.json`.
 *
 * @param raw the parsed JSON
 * @param fallbackName the model's name when the file has no `_name_or_path`
 * @param source how errors name the file, e.g. its path
 *
 * @example
 * ```ts
 * import { importHfConfig } from "./hf_config.ts";
 * const { config } = importHfConfig({
 *   architectures: ["LlamaForCausalLM"], vocab_size: 32000, hidden_size: 4096,
 *   intermediate_size: 11008, num_hidden_layers: 32, num_attention_heads: 32,
 * }, "llama", "config.json");
 * config.numKvHeads; // 32: no num_key_value_heads means one KV head per query head
 * ```
 */
export function importHfConfig(raw: unknown, fallbackName: string, source: string): ImportedConfig {
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
    throw new UserError(`${source}: expected a JSON object`);
  }
  const record = raw as Record<string, unknown>;
  const architectures = record.architectures;
  if (!Array.isArray(architectures) || typeof architectures[0] !== "string") {
    throw new UserError(
      `${source}: missing field 'architectures' (e.g. ["LlamaForCausalLM"])`,
    );
  }
  const architecture = architectures[0];
  const name = typeof record._name_or_path === "string" && record._name_or_path.trim()
    ? record._name_or_path.trim()
    : fallbackName;
  const warnings: string[] = [];
  if (record.rope_scaling) {
    warnings.push(`${source}: rope_scaling is ignored; positions use plain RoPE frequencies`);
  }
  switch (architecture) {
    case "LlamaForCausalLM":
      return { config: importLlamaLike("llama", raw, name, source), warnings };
    case "MistralForCausalLM":
      return { config: importLlamaLike("mistral", raw, name, source), warnings };
    case "Qwen2ForCausalLM":
      return { config: importLlamaLike("qwen2", raw, name, source), warnings };
    case "GemmaForCausalLM":
      return { config: importGemma(raw, name, source), warnings };
    case "GPTNeoXForCausalLM":
      return { config: importGptNeox(raw, name, source), warnings };
    default:
      throw new UserError(
        `${source}: architecture '${architecture}' is not supported ` +
          `(supported: ${SUPPORTED_ARCHITECTURES.join(", ")})`,
      );
  }
}
