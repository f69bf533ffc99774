import { deepStrictEqual, ok } from "node:assert/strict";
import { ATTENTION_TENSORS as T, buildAttentionGraph } from "../compiler/build_attention_graph.ts";
import { compileGraph } from "../compiler/compile.ts";
import { testGpu } from "../runtime/test_gpu.ts";
import { deviceTarget } from "../runtime/device_target.ts";
import { Executor } from "../runtime/executor.ts";
import { transposeCache, valueMean } from "../runtime/run_attention.ts";
import { DATA_MODES, generateAttentionData } from "./data.ts";

const gpu = await testGpu();
const target = deviceTarget(gpu, 2 ** 30);

// 2100 positions: the tiled Kᵀ has a padded last tile; 40: one short tile.
for (const seq of [2100, 40]) {
  Deno.test(`generated data at S=${seq}: Kᵀ is K in the tiled layout, V_mean the mean of V`, async () => {
    const shape = { batch: 2, heads: 4, kvHeads: 2, headDim: 16, seq };
    const graph = buildAttentionGraph({
      ...shape,
      maxSeq: seq,
      kvDtype: "f32",
      method: { kind: "sparq", r: 4, k: 8, localWindow: 0 },
      append: false,
    });
    const executor = await Executor.create(gpu, compileGraph(graph, target));
    try {
      for (const mode of DATA_MODES) {
        generateAttentionData(executor, shape, mode, 9);
        const k = await executor.read(T.kCache);
        const kt = await executor.read(T.ktCache);
        deepStrictEqual([...kt], [...transposeCache(k, 4, seq, 16)], mode);
        const mean = await executor.read(T.vMean);
        const expected = valueMean(await executor.read(T.vCache), 2, 2, seq, 16, [seq, seq]);
        ok(mean.every((m, i) => Math.abs(m - expected[i]) <= 1e-5 * (1 + Math.abs(expected[i]))));
      }
    } finally {
      executor.destroy();
    }
  });
}
