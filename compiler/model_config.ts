/**
 * The model config: everything about a transformer that shapes one decode step, normalized across
 * architectures (Llama, Mistral, Gemma, GPT-NeoX, Qwen2). Presets and Hugging Face `config.json`
 * files both end up as this.
 *
 * @module
 */
import { z } from "zod";

const positiveInt = z.int().positive();

/** The schema of a normalized model config. */
export const ModelConfig = z.strictObject({
  name: z.string().min(1),
  /** The architecture family: decides biases, norms and the residual layout. */
  family: z.enum(["llama", "mistral", "gemma", "gpt_neox", "qwen2"]),
  vocabSize: positiveInt,
  hiddenSize: positiveInt,
  intermediateSize: positiveInt,
  numLayers: positiveInt,
  numHeads: positiveInt,
  /** Key/value heads; numHeads / numKvHeads query heads share one (grouped-query attention). */
  numKvHeads: positiveInt,
  headDim: positiveInt,
  norm: z.enum(["rms_norm", "layer_norm"]),
  normEps: z.number().positive(),
  /** Gemma scales by (1 + w) instead of w. */
  normWeightOffset: z.union([z.literal(0), z.literal(1)]),
  activation: z.enum(["silu", "gelu", "gelu_tanh"]),
  /** act(x·W_gate) ⊙ (x·W_up) (SwiGLU/GeGLU) instead of act(x·W_up). */
  gatedMlp: z.boolean(),
  /** GPT-NeoX: x + attn(ln1(x)) + mlp(ln2(x)). */
  parallelResidual: z.boolean(),
  qkvBias: z.boolean(),
  outBias: z.boolean(),
  mlpBias: z.boolean(),
  ropeTheta: z.number().positive(),
  /** Fraction of each head's dimensions that rotary embedding rotates (GPT-NeoX: 0.25). */
  rotaryFraction: z.number().gt(0).lte(1),
  tieWordEmbeddings: z.boolean(),
  /** Gemma multiplies embeddings by sqrt(hiddenSize). */
  embeddingScale: z.number().positive(),
  maxPositionEmbeddings: positiveInt,
}).superRefine((c, ctx) => {
  if (c.numHeads % c.numKvHeads !== 0) {
    ctx.addIssue({
      code: "custom",
      path: ["numKvHeads"],
      message: `${c.numHeads} attention heads cannot be shared evenly by ${c.numKvHeads} KV heads`,
    });
  }
  if (c.headDim % 4 !== 0) {
    ctx.addIssue({
      code: "custom",
      path: ["headDim"],
      message: `head dimension ${c.headDim} is not a multiple of 4, which the kernels need`,
    });
  }
  const rotary = rotaryDims(c);
  if (rotary < 2 || rotary % 2 !== 0) {
    ctx.addIssue({
      code: "custom",
      path: ["rotaryFraction"],
      message: `rotary fraction ${c.rotaryFraction} of head dimension ${c.headDim} gives ` +
        `${c.headDim * c.rotaryFraction} rotary dimensions; it must be a positive even number`,
    });
  }
});

/** A normalized model config. */
export type ModelConfig = z.infer<typeof ModelConfig>;

/**
 * The number of leading dimensions of each head that rotary embedding rotates.
 *
 * @example
 * ```ts
 * import { rotaryDims } from "./model_config.ts";
 * rotaryDims({ headDim: 128, rotaryFraction: 0.25 }); // 32
 * ```
 */
export function rotaryDims(c: Pick<ModelConfig, "headDim" | "rotaryFraction">): number {
  return Math.round(c.headDim * c.rotaryFraction);
}

/**
 * Query heads per KV head.
 *
 * @example
 * ```ts
 * import { groupSize } from "./model_config.ts";
 * groupSize({ numHeads: 32, numKvHeads: 8 }); // 4
 * ```
 */
export function groupSize(c: Pick<ModelConfig, "numHeads" | "numKvHeads">): number {
  return c.numHeads / c.numKvHeads;
}
