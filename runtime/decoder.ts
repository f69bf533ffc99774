/**
 * A compiled decode step made ready to run: the plan's program on a device, its weights (seeded
 * random by default, or loaded), its KV cache, and one step at a time fed from the host.
 * The GPU-resident loop that feeds argmax back without the host is in generation.ts.
 *
 * @module
 */
import type { Plan } from "../compiler/plan.ts";
import type { Gpu } from "./device.ts";
import { Executor } from "./executor.ts";
import { fillUniform } from "./fill.ts";

/** The decode graph's tensors that the runtime feeds and reads (see build_graph.ts). */
export const DECODE_TENSORS = {
  tokens: "tokens",
  positions: "positions",
  logits: "logits",
  nextTokens: "next_tokens",
} as const;

/** A stable 32-bit hash of a tensor's name, so that each weight gets its own random stream. */
function nameSeed(name: string, seed: number): number {
  let h = 0x811c9dc5 ^ seed;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

/**
 * The spread of a random weight: uniform in ±1/√fan-in for matrices (so activations keep
 * their scale through a layer, as trained weights do), ±1 for vectors (norm weights, biases).
 *
 * @example
 * ```ts
 * import { randomWeightScale } from "./decoder.ts";
 * randomWeightScale([4096, 4096]); // 0.015625
 * ```
 */
export function randomWeightScale(shape: readonly number[]): number {
  return shape.length >= 2 ? 1 / Math.sqrt(shape.at(-1)!) : 1;
}

/** A decode plan on a device. */
export class Decoder {
  private constructor(readonly plan: Plan, readonly executor: Executor) {}

  /**
   * Allocates the plan's buffers and builds its kernels. The plan was checked against its
   * target's memory budget when it was compiled, so a model that does not fit fails there,
   * before anything is allocated.
   *
   * @example
   * ```ts
   * import { Decoder } from "./decoder.ts";
   * // const decoder = await Decoder.create(gpu, plan);
   * ```
   */
  static async create(gpu: Gpu, plan: Plan): Promise<Decoder> {
    return new Decoder(plan, await Executor.create(gpu, plan));
  }

  /** Names of the plan's tensors of one role. */
  tensorsOf(role: "weight" | "state"): string[] {
    return Object.entries(this.plan.tensors).filter(([, t]) => t.role === role).map(([n]) => n);
  }

  /**
   * Fills every weight with seeded uniform values on the GPU ({@link randomWeightScale}); the
   * same seed gives the same weights on every device.
   *
   * @example
   * ```ts
   * // decoder.randomWeights(1);
   * ```
   */
  randomWeights(seed: number): void {
    for (const name of this.tensorsOf("weight")) {
      const t = this.plan.tensors[name];
      fillUniform(this.executor, name, nameSeed(name, seed), randomWeightScale(t.shape));
    }
  }

  /**
   * Fills the KV cache (and SparQ's Kᵀ and V_mean) with seeded uniform values on the GPU: data
   * to time a step at a context length without a prefill. The tensors are filled
   * independently (Kᵀ is not K transposed), which the timing does not depend on.
   *
   * @example
   * ```ts
   * // decoder.randomCache(2);
   * ```
   */
  randomCache(seed: number): void {
    for (const name of this.tensorsOf("state")) {
      fillUniform(this.executor, name, nameSeed(name, seed));
    }
  }

  /**
   * Runs one step: each sequence b reads token tokens[b] at position positions[b] (its cache
   * holds positions 0 … positions[b] − 1) and appends it.
   *
   * @example
   * ```ts
   * // decoder.step([1], [0]); const logits = await decoder.logits();
   * ```
   */
  step(tokens: readonly number[], positions: readonly number[]): void {
    const { batch, maxSeq } = this.plan.options;
    if (tokens.length !== batch || positions.length !== batch) {
      throw new Error(`the plan decodes ${batch} sequences; got ${tokens.length} tokens`);
    }
    const beyond = positions.find((p) => p >= maxSeq);
    if (beyond !== undefined) {
      throw new Error(`position ${beyond} is beyond the plan's context of ${maxSeq}`);
    }
    this.executor.write(DECODE_TENSORS.tokens, tokens);
    this.executor.write(DECODE_TENSORS.positions, positions);
    this.executor.run();
  }

  /** The last step's logits [B, vocab]. */
  async logits(): Promise<Float32Array> {
    return await this.executor.read(DECODE_TENSORS.logits) as Float32Array;
  }

  /** The last step's greedy next tokens [B]. */
  async nextTokens(): Promise<number[]> {
    return [...await this.executor.read(DECODE_TENSORS.nextTokens)];
  }

  /** Frees the GPU buffers. */
  destroy(): void {
    this.executor.destroy();
  }
}
