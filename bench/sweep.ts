/**
 * The points of a sweep: for each model's attention shape, batch and context, dense and every
 * SparQ (r, k). A group (model, batch, context) is measured together, dense first, so that each
 * SparQ point has its dense time and output at hand.
 *
 * @module
 */
import type { ModelConfig } from "../compiler/model_config.ts";
import type { SweepOptions } from "./results.ts";

/** One point of the sweep. */
export interface Point {
  key: string;
  model: string;
  heads: number;
  kvHeads: number;
  headDim: number;
  batch: number;
  seq: number;
  method: "dense" | "sparq";
  r?: number;
  k?: number;
  kvDtype: "f16" | "f32";
}

/** The points sharing a model, batch and context. */
export interface Group {
  dense: Point;
  sparq: Point[];
}

/** Point keys: unique within a run, readable in logs. */
export function pointKey(p: Omit<Point, "key">): string {
  const base = `${p.model} B${p.batch} S${p.seq} ${p.kvDtype}`;
  return p.method === "dense" ? `${base} dense` : `${base} sparq r${p.r} k${p.k}`;
}

/**
 * The groups of a sweep, smallest work first within each model.
 *
 * @example
 * ```ts
 * import { sweepGroups } from "./sweep.ts";
 * import { PRESETS } from "../compiler/presets.ts";
 * const groups = sweepGroups(new Map([["llama3-8b", PRESETS.get("llama3-8b")!]]), {
 *   models: ["llama3-8b"], seqs: [4096], batches: [1], methods: ["dense", "sparq"],
 *   rs: [32], ks: [128], kvDtype: "f16", data: "realistic", memoryBudget: 2 ** 36,
 * });
 * groups[0].sparq[0].key; // "llama3-8b B1 S4096 f16 sparq r32 k128"
 * ```
 */
export function sweepGroups(models: Map<string, ModelConfig>, o: SweepOptions): Group[] {
  const groups: Group[] = [];
  for (const name of o.models) {
    const m = models.get(name)!;
    const cells = o.batches.flatMap((batch) => o.seqs.map((seq) => ({ batch, seq })))
      .sort((a, b) => a.batch * a.seq - b.batch * b.seq || a.batch - b.batch);
    for (const { batch, seq } of cells) {
      const base = {
        model: name,
        heads: m.numHeads,
        kvHeads: m.numKvHeads,
        headDim: m.headDim,
        batch,
        seq,
        kvDtype: o.kvDtype,
      };
      const dense = { ...base, method: "dense" as const };
      const sparq = o.methods.includes("sparq")
        ? o.rs.filter((r) => r <= m.headDim).flatMap((r) =>
          o.ks.map((k) => {
            const p = { ...base, method: "sparq" as const, r, k };
            return { ...p, key: pointKey(p) };
          })
        )
        : [];
      groups.push({ dense: { ...dense, key: pointKey(dense) }, sparq });
    }
  }
  return groups;
}
