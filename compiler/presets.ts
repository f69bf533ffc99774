/**
 * Presets: the models of the SparQ paper at their published dimensions, and tiny models of each
 * family for tests (small enough for the software adapter).
 *
 * @module
 */
import { ModelConfig } from "./model_config.ts";

type Family = Pick<
  ModelConfig,
  | "family"
  | "norm"
  | "normEps"
  | "normWeightOffset"
  | "activation"
  | "gatedMlp"
  | "parallelResidual"
  | "qkvBias"
  | "outBias"
  | "mlpBias"
  | "ropeTheta"
  | "rotaryFraction"
  | "tieWordEmbeddings"
  | "embeddingScale"
>;

const llama: Family = {
  family: "llama",
  norm: "rms_norm",
  normEps: 1e-5,
  normWeightOffset: 0,
  activation: "silu",
  gatedMlp: true,
  parallelResidual: false,
  qkvBias: false,
  outBias: false,
  mlpBias: false,
  ropeTheta: 10000,
  rotaryFraction: 1,
  tieWordEmbeddings: false,
  embeddingScale: 1,
};
const mistral: Family = { ...llama, family: "mistral" };
const gemma: Family = {
  ...llama,
  family: "gemma",
  normEps: 1e-6,
  normWeightOffset: 1,
  activation: "gelu_tanh",
  tieWordEmbeddings: true,
};
const gptNeox: Family = {
  family: "gpt_neox",
  norm: "layer_norm",
  normEps: 1e-5,
  normWeightOffset: 0,
  activation: "gelu",
  gatedMlp: false,
  parallelResidual: true,
  qkvBias: true,
  outBias: true,
  mlpBias: true,
  ropeTheta: 10000,
  rotaryFraction: 0.25,
  tieWordEmbeddings: false,
  embeddingScale: 1,
};
const qwen2: Family = { ...llama, family: "qwen2", normEps: 1e-6, qkvBias: true };

type Dims = Pick<
  ModelConfig,
  | "vocabSize"
  | "hiddenSize"
  | "intermediateSize"
  | "numLayers"
  | "numHeads"
  | "numKvHeads"
  | "headDim"
  | "maxPositionEmbeddings"
>;

function preset(name: string, family: Family, dims: Dims, extra: Partial<ModelConfig> = {}) {
  return ModelConfig.parse({ name, ...family, ...dims, ...extra });
}

/** Every preset by name, in the order `--help` lists them. */
export const PRESETS: ReadonlyMap<string, ModelConfig> = new Map(
  [
    preset("llama2-7b", llama, {
      vocabSize: 32000,
      hiddenSize: 4096,
      intermediateSize: 11008,
      numLayers: 32,
      numHeads: 32,
      numKvHeads: 32,
      headDim: 128,
      maxPositionEmbeddings: 4096,
    }),
    preset("llama2-13b", llama, {
      vocabSize: 32000,
      hiddenSize: 5120,
      intermediateSize: 13824,
      numLayers: 40,
      numHeads: 40,
      numKvHeads: 40,
      headDim: 128,
      maxPositionEmbeddings: 4096,
    }),
    preset("llama3-8b", llama, {
      vocabSize: 128256,
      hiddenSize: 4096,
      intermediateSize: 14336,
      numLayers: 32,
      numHeads: 32,
      numKvHeads: 8,
      headDim: 128,
      maxPositionEmbeddings: 8192,
    }, { ropeTheta: 500000 }),
    preset("mistral-7b", mistral, {
      vocabSize: 32000,
      hiddenSize: 4096,
      intermediateSize: 14336,
      numLayers: 32,
      numHeads: 32,
      numKvHeads: 8,
      headDim: 128,
      maxPositionEmbeddings: 32768,
    }),
    preset("gemma-7b", gemma, {
      vocabSize: 256000,
      hiddenSize: 3072,
      intermediateSize: 24576,
      numLayers: 28,
      numHeads: 16,
      numKvHeads: 16,
      headDim: 256,
      maxPositionEmbeddings: 8192,
    }, { embeddingScale: Math.sqrt(3072) }),
    preset("pythia-1.4b", gptNeox, {
      vocabSize: 50304,
      hiddenSize: 2048,
      intermediateSize: 8192,
      numLayers: 24,
      numHeads: 16,
      numKvHeads: 16,
      headDim: 128,
      maxPositionEmbeddings: 2048,
    }),
    preset("pythia-2.8b", gptNeox, {
      vocabSize: 50304,
      hiddenSize: 2560,
      intermediateSize: 10240,
      numLayers: 32,
      numHeads: 32,
      numKvHeads: 32,
      headDim: 80,
      maxPositionEmbeddings: 2048,
    }),
    preset("pythia-6.9b", gptNeox, {
      vocabSize: 50432,
      hiddenSize: 4096,
      intermediateSize: 16384,
      numLayers: 32,
      numHeads: 32,
      numKvHeads: 32,
      headDim: 128,
      maxPositionEmbeddings: 2048,
    }),
    preset("tiny-llama", llama, {
      vocabSize: 96,
      hiddenSize: 64,
      intermediateSize: 112,
      numLayers: 2,
      numHeads: 4,
      numKvHeads: 2,
      headDim: 16,
      maxPositionEmbeddings: 512,
    }),
    preset("tiny-gemma", gemma, {
      vocabSize: 96,
      hiddenSize: 48,
      intermediateSize: 96,
      numLayers: 2,
      numHeads: 2,
      numKvHeads: 1,
      headDim: 32,
      maxPositionEmbeddings: 512,
    }, { embeddingScale: Math.sqrt(48) }),
    preset("tiny-neox", gptNeox, {
      vocabSize: 96,
      hiddenSize: 64,
      intermediateSize: 256,
      numLayers: 2,
      numHeads: 4,
      numKvHeads: 4,
      headDim: 16,
      maxPositionEmbeddings: 512,
    }),
    preset("tiny-qwen2", qwen2, {
      vocabSize: 96,
      hiddenSize: 112,
      intermediateSize: 160,
      numLayers: 2,
      numHeads: 7,
      numKvHeads: 1,
      headDim: 16,
      maxPositionEmbeddings: 512,
    }, { tieWordEmbeddings: true }),
  ].map((c) => [c.name, c]),
);
