import { deepStrictEqual } from "node:assert/strict";
import {
  scoresRolled,
  sparqScoresCandidatesKernel,
  sparqScoresVec4Kernel,
} from "./sparq_scores.ts";

const params = { r: 32, k: 128, localWindow: 0 };
const config = { block: 2048, attendWorkgroup: 256, candidateBlock: 2048 };
const shape = (batch: number, kvHeads: number, maxSeq: number) => ({
  batch,
  heads: 32,
  kvHeads,
  headDim: 128,
  maxSeq,
  kvDtype: "f16" as const,
  workgroupStorage: 49152,
});
const rolledLoop = "for (var i0 = 0u; i0 < r_end; i0 += 4u)";

Deno.test("stage 1 rolls its loop over Kᵀ rows only for grouped heads in few workgroups", () => {
  const grouped = [shape(1, 8, 16384), shape(16, 8, 4096), shape(64, 8, 4096)];
  deepStrictEqual(grouped.map((s) => scoresRolled(s, params, config)), [true, true, false]);
  deepStrictEqual(
    grouped.map((s) => sparqScoresVec4Kernel(s, params, config).source.includes(rolledLoop)),
    [true, true, false],
  );
  // One query head per KV head: straight-line at any size (the rolled loop lost in the decode step).
  const single = shape(1, 32, 16384);
  deepStrictEqual(scoresRolled(single, params, config), false);
  deepStrictEqual(
    sparqScoresCandidatesKernel(single, params, config).source.includes("r_end"),
    false,
  );
  // r not a whole number of trips: straight-line.
  deepStrictEqual(scoresRolled(shape(1, 8, 16384), { ...params, r: 30 }, config), false);
});
