/**
 * Loading a Hugging Face checkpoint's safetensors into a decode plan: each plan weight is
 * named after its place in the graph (build_graph.ts), so a family's naming scheme maps HF
 * names onto it — Llama, Mistral, Gemma and Qwen2 share one; GPT-NeoX stores q, k and v fused
 * per head, which the loader splits. F16, BF16 and F32 tensors convert to the plan's weight
 * type on the way.
 *
 * @module
 */
import { join } from "node:path";
import { z } from "zod";
import type { ModelConfig } from "../compiler/model_config.ts";
import { UserError, zodErrorLine } from "../compiler/user_error.ts";
import type { Decoder } from "./decoder.ts";
import { openSafetensors, type SafetensorsFile, tensorValues } from "./safetensors.ts";

/** Where a plan weight comes from: an HF tensor, or one part of GPT-NeoX's fused QKV. */
export interface WeightSource {
  hf: string;
  /** q, k or v rows of a fused [heads · 3 · headDim, …] tensor. */
  fused?: { part: 0 | 1 | 2; heads: number; headDim: number };
}

const LLAMA_LAYER: Record<string, string> = {
  attn_norm: "input_layernorm",
  mlp_norm: "post_attention_layernorm",
  q_proj: "self_attn.q_proj",
  k_proj: "self_attn.k_proj",
  v_proj: "self_attn.v_proj",
  o_proj: "self_attn.o_proj",
  gate_proj: "mlp.gate_proj",
  up_proj: "mlp.up_proj",
  down_proj: "mlp.down_proj",
};
const NEOX_LAYER: Record<string, string> = {
  attn_norm: "input_layernorm",
  mlp_norm: "post_attention_layernorm",
  o_proj: "attention.dense",
  up_proj: "mlp.dense_h_to_4h",
  down_proj: "mlp.dense_4h_to_h",
};
const QKV_PART = { q_proj: 0, k_proj: 1, v_proj: 2 } as const;

/**
 * The HF tensor each plan weight is read from.
 *
 * @example
 * ```ts
 * import { hfWeightSource } from "./hf_weights.ts";
 * import { PRESETS } from "../compiler/presets.ts";
 * hfWeightSource(PRESETS.get("llama2-7b")!, "layers.3.q_proj.weight").hf;
 * // "model.layers.3.self_attn.q_proj.weight"
 * ```
 */
export function hfWeightSource(config: ModelConfig, weight: string): WeightSource {
  const neox = config.family === "gpt_neox";
  const fixed: Record<string, string> = neox
    ? {
      "embed.weight": "gpt_neox.embed_in.weight",
      "lm_head.weight": "embed_out.weight",
      "final_norm.weight": "gpt_neox.final_layer_norm.weight",
      "final_norm.bias": "gpt_neox.final_layer_norm.bias",
    }
    : {
      "embed.weight": "model.embed_tokens.weight",
      "lm_head.weight": "lm_head.weight",
      "final_norm.weight": "model.norm.weight",
    };
  if (fixed[weight]) return { hf: fixed[weight] };
  const match = /^layers\.(\d+)\.(\w+)\.(weight|bias)$/.exec(weight);
  if (match) {
    const [, layer, module, kind] = match;
    if (neox && module in QKV_PART) {
      return {
        hf: `gpt_neox.layers.${layer}.attention.query_key_value.${kind}`,
        fused: {
          part: QKV_PART[module as keyof typeof QKV_PART],
          heads: config.numHeads,
          headDim: config.headDim,
        },
      };
    }
    const hf = (neox ? NEOX_LAYER : LLAMA_LAYER)[module];
    if (hf) return { hf: `${neox ? "gpt_neox" : "model"}.layers.${layer}.${hf}.${kind}` };
  }
  throw new Error(`no Hugging Face name is known for weight '${weight}' of ${config.family}`);
}

/** The rows of part `part` of a fused [heads, 3, headDim, …] tensor, as a flat copy. */
function fusedPart(values: Float64Array, s: NonNullable<WeightSource["fused"]>): Float64Array {
  const rowValues = values.length / (3 * s.heads * s.headDim);
  const out = new Float64Array(s.heads * s.headDim * rowValues);
  const block = s.headDim * rowValues;
  for (let h = 0; h < s.heads; h++) {
    const from = (h * 3 + s.part) * block;
    out.set(values.subarray(from, from + block), h * block);
  }
  return out;
}

const IndexFile = z.object({ weight_map: z.record(z.string(), z.string()) });

/**
 * The safetensors files of a checkpoint: a `.safetensors` file, or a folder with
 * `model.safetensors.index.json` (sharded) or `model.safetensors`.
 */
async function checkpointFiles(path: string): Promise<string[]> {
  if (path.endsWith(".safetensors")) return [path];
  const index = join(path, "model.safetensors.index.json");
  let text: string | undefined;
  try {
    text = await Deno.readTextFile(index);
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
  if (text === undefined) {
    const single = join(path, "model.safetensors");
    try {
      await Deno.stat(single);
    } catch {
      throw new UserError(
        `${path} has neither model.safetensors nor model.safetensors.index.json; ` +
          "give --weights a checkpoint folder or a .safetensors file",
      );
    }
    return [single];
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    throw new UserError(`${index} is not JSON`);
  }
  const parsed = IndexFile.safeParse(raw);
  if (!parsed.success) throw new UserError(zodErrorLine(index, parsed.error));
  return [...new Set(Object.values(parsed.data.weight_map))].map((f) => join(path, f));
}

/** What {@link loadHfWeights} loaded. */
export interface LoadedWeights {
  tensors: number;
  /** Bytes read from the checkpoint. */
  bytes: number;
}

/**
 * Loads every weight of the decoder's plan from a Hugging Face checkpoint (a folder or one
 * `.safetensors` file). A missing tensor, a wrong shape or an unsupported dtype is a
 * {@link UserError} naming it; tensors the plan does not use are ignored.
 *
 * @example
 * ```ts
 * import { loadHfWeights } from "./hf_weights.ts";
 * // await loadHfWeights(decoder, "checkpoints/Llama-2-7b-hf", (done, total) => {});
 * ```
 */
export async function loadHfWeights(
  decoder: Decoder,
  path: string,
  onProgress: (done: number, total: number, name: string) => void = () => {},
): Promise<LoadedWeights> {
  const files: SafetensorsFile[] = [];
  try {
    for (const file of await checkpointFiles(path)) files.push(await openSafetensors(file));
    const where = new Map<string, SafetensorsFile>();
    for (const file of files) for (const name of file.entries.keys()) where.set(name, file);
    const config = decoder.plan.model;
    const weights = decoder.tensorsOf("weight");
    let bytes = 0;
    for (const [i, weight] of weights.entries()) {
      const source = hfWeightSource(config, weight);
      const file = where.get(source.hf);
      if (!file) {
        throw new UserError(
          `${path} has no tensor '${source.hf}' (for ${weight}); is it a ${config.family} ` +
            `checkpoint of ${config.name}?`,
        );
      }
      const expected = decoder.plan.tensors[weight].shape;
      const stored = file.entries.get(source.hf)!;
      const shape = source.fused ? [expected[0] * 3, ...expected.slice(1)] : expected;
      if (stored.shape.join() !== shape.join()) {
        throw new UserError(
          `${file.path}: '${source.hf}' is [${stored.shape.join(", ")}]; ${config.name} needs ` +
            `[${shape.join(", ")}]`,
        );
      }
      if (!["F16", "BF16", "F32"].includes(stored.dtype)) {
        throw new UserError(
          `${file.path}: '${source.hf}' is ${stored.dtype}; sparqc loads F16, BF16 and F32`,
        );
      }
      const tensor = await file.read(source.hf);
      const values = tensorValues(tensor, source.hf);
      decoder.executor.write(weight, source.fused ? fusedPart(values, source.fused) : values);
      bytes += tensor.bytes.byteLength;
      onProgress(i + 1, weights.length, weight);
    }
    return { tensors: weights.length, bytes };
  } finally {
    for (const file of files) file.close();
  }
}
