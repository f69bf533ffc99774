import { deepStrictEqual, ok } from "node:assert/strict";
import { attentionTransferBytes, headTransferElements } from "./transfer.ts";

Deno.test("head transfer ratios match SPARQ.md's hand-computed values", () => {
  const ratio = (seqLen: number) => {
    const t = headTransferElements({ seqLen, headDim: 128, r: 32, k: 128 });
    return t.dense / t.sparq;
  };
  // 2·4096·128 = 1,048,576 against 4096·32 + 2·128·128 = 163,840.
  deepStrictEqual(headTransferElements({ seqLen: 4096, headDim: 128, r: 32, k: 128 }), {
    dense: 1048576,
    sparq: 163840,
  });
  deepStrictEqual(ratio(4096), 6.4);
  ok(Math.abs(ratio(16384) - 1 / (32 / 256 + 128 / 16384)) < 1e-12); // 7.53
  deepStrictEqual(ratio(16384).toFixed(1), "7.5");
  deepStrictEqual(ratio(32768).toFixed(1), "7.8");
  // r = d/8, k = S/16 is the paper's 1/8 compression.
  const eighth = headTransferElements({ seqLen: 16384, headDim: 128, r: 16, k: 1024 });
  deepStrictEqual(eighth.dense / eighth.sparq, 8);
});

Deno.test("k beyond the sequence gathers every row once", () => {
  const t = headTransferElements({ seqLen: 100, headDim: 64, r: 64, k: 1000 });
  deepStrictEqual(t.sparq, 100 * 64 + 2 * 100 * 64);
});

Deno.test("attention bytes count KV once per KV head and q, y per query head", () => {
  // llama3-8b shape, B = 1, S = 4096, f16: K and V per KV head, f32 q and y per query head.
  const shape = { batch: 1, heads: 32, kvHeads: 8, headDim: 128, seqLen: 4096, kvBytes: 2 };
  const b = attentionTransferBytes(shape, { r: 32, k: 128 });
  const qAndY = 32 * 2 * 128 * 4;
  deepStrictEqual(b.dense, 8 * 2 * 4096 * 128 * 2 + qAndY);
  deepStrictEqual(b.sparq, 8 * ((4096 * 32 + 2 * 128 * 128) * 2 + 128 * 4) + qAndY);
  deepStrictEqual(attentionTransferBytes(shape).sparq, b.dense);
});
