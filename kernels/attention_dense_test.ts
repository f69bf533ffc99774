import { deepStrictEqual, throws } from "node:assert/strict";
import { denseLayout } from "./attention_dense.ts";
import { densePartialReduceFits, densePartialSubgroupKernel } from "./attention_dense_subgroup.ts";

const shape = (heads: number, kvHeads: number, headDim: number) => ({
  batch: 1,
  heads,
  kvHeads,
  headDim,
  maxSeq: 16384,
  kvDtype: "f16" as const,
  workgroupStorage: 49152,
});

Deno.test("grouped heads merge inside the partial kernel only where one pass covers them", () => {
  // llama3-8b: 4 heads × 32 (head, 4 outputs) pairs ≤ 256 invocations; 8 heads of d = 256: 512.
  const fits = shape(32, 8, 128);
  const over = shape(8, 1, 256);
  deepStrictEqual(
    [fits, over].map((s) => densePartialReduceFits(s, denseLayout(s), 32)),
    [true, false],
  );
  deepStrictEqual(
    densePartialSubgroupKernel(fits, denseLayout(fits), 32, 256, true).source
      .includes("if (tid < GROUP * LANES)"),
    true,
  );
  throws(() => densePartialSubgroupKernel(over, denseLayout(over), 32, 256, true), RangeError);
});
