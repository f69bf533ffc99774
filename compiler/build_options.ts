/**
 * What the user chooses besides the model: batch, context, attention method and dtypes.
 *
 * @module
 */
import { z } from "zod";
import { AttentionMethod } from "./ir.ts";
import type { ModelConfig } from "./model_config.ts";
import { UserError } from "./user_error.ts";

/** Options of one compiled decode step. */
export const BuildOptions = z.strictObject({
  batch: z.int().positive(),
  maxSeq: z.int().positive(),
  attention: AttentionMethod,
  kvDtype: z.enum(["f16", "f32"]),
  weightDtype: z.enum(["f16", "f32"]),
});
/** Options of one compiled decode step. */
export type BuildOptions = z.infer<typeof BuildOptions>;

/**
 * Defaults for a model: SparQ's r = d/4 and k = 128 (the paper's d = 128, r = 32, k = 128
 * operating point), f16 weights and KV, batch 1, the model's own maximum context.
 *
 * @example
 * ```ts
 * import { defaultOptions } from "./build_options.ts";
 * import { PRESETS } from "./presets.ts";
 * defaultOptions(PRESETS.get("llama2-7b")!, "sparq").attention; // { kind: "sparq", r: 32, ... }
 * ```
 */
export function defaultOptions(config: ModelConfig, method: "dense" | "sparq"): BuildOptions {
  return {
    batch: 1,
    maxSeq: config.maxPositionEmbeddings,
    attention: method === "dense"
      ? { kind: "dense" }
      : { kind: "sparq", r: Math.max(1, config.headDim / 4), k: 128, localWindow: 0 },
    kvDtype: "f16",
    weightDtype: "f16",
  };
}

/**
 * Checks options against the model, with messages in the CLI's terms.
 *
 * @example
 * ```ts
 * import { checkOptions, defaultOptions } from "./build_options.ts";
 * import { PRESETS } from "./presets.ts";
 * const model = PRESETS.get("llama2-7b")!;
 * checkOptions(model, defaultOptions(model, "sparq")); // passes
 * ```
 */
export function checkOptions(config: ModelConfig, options: BuildOptions): void {
  const a = options.attention;
  if (a.kind !== "sparq") return;
  if (a.r < 1 || a.r > config.headDim) {
    throw new UserError(
      `--r ${a.r} is outside 1..${config.headDim} (the head dimension of ${config.name})`,
    );
  }
  if (a.k < 1) throw new UserError(`--k must be at least 1, got ${a.k}`);
  if (a.localWindow > a.k) {
    throw new UserError(
      `--local-window ${a.localWindow} is larger than --k ${a.k}; the window counts towards k`,
    );
  }
}
